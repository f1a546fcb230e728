"""The four time limits of `streamkit.Timeout` through the sync client, whose reads block: each raises its
own error, whatever the server does meanwhile (stalls, keep-alive comments). Only the type of the error is
asserted, never how fast it came."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

import streamkit
from streamkit.server import ServerThread
from tests.sync.conftest import (
    APIS,
    HI,
    UNFINISHED,
    body_of,
    create,
    fault,
    finish_of,
    planned,
    text_of,
    timing,
    unique,
)

# A stall far longer than any limit below: only the limit can end the wait.
STALL = 30


@pytest.fixture
def limited(sync_server: ServerThread) -> Iterator[streamkit.Client]:
    """A client with no retries, and none of the limits but `connect` (each test sets its own)."""
    timeout = streamkit.Timeout(connect=5.0, idle=None)
    with streamkit.Client(base_url=sync_server.base_url, api_key="k", timeout=timeout, max_retries=0) as c:
        yield c


@pytest.mark.parametrize("api", APIS)
def test_idle_timeout_mid_stream_keeps_the_partial(limited: streamkit.Client, api: str) -> None:
    stream = create(
        limited,
        api,
        stream=True,
        extra_headers=fault(f"stall=6:{STALL}"),
        timeout=streamkit.Timeout(idle=0.2),
    )
    with pytest.raises(streamkit.IdleTimeout) as caught:
        stream.get_final()
    assert isinstance(caught.value, TimeoutError)
    assert text_of(caught.value.partial) == planned(api, body_of(api)).text_after(6) != ""
    assert finish_of(caught.value.partial) == UNFINISHED[api]


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_idle_timeout_before_the_head(limited: streamkit.Client, stream: bool) -> None:
    with pytest.raises(streamkit.IdleTimeout) as caught:
        create(
            limited,
            "chat",
            stream=stream,
            extra_headers=fault(f"stall_head={STALL}"),
            timeout=streamkit.Timeout(idle=0.2),
        )
    assert caught.value.partial is None


def test_comments_keep_a_stream_alive(limited: streamkit.Client) -> None:
    stream = create(
        limited,
        "chat",
        stream=True,
        extra_headers=fault("stall=2:0.4,keepalive=0.05"),
        timeout=streamkit.Timeout(idle=0.2),
    )
    assert stream.get_final().choices[0].finish_reason == "stop"


@pytest.mark.parametrize("api", APIS)
def test_first_token_timeout(limited: streamkit.Client, api: str) -> None:
    # Keep-alive comments keep the idle limit happy; only the first-token limit can fire.
    headers = {**timing(f"ttft={STALL}"), **fault("keepalive=0.02")}
    stream = create(
        limited, api, stream=True, extra_headers=headers, timeout=streamkit.Timeout(idle=1.0, first_token=0.3)
    )
    with pytest.raises(streamkit.FirstTokenTimeout) as caught:
        stream.get_final()
    assert caught.value.partial is not None and text_of(caught.value.partial) == ""


def test_the_first_token_limit_ends_at_the_first_token(limited: streamkit.Client) -> None:
    # Each token after the first comes later than the first-token limit after the request: no error.
    stream = create(
        limited,
        "chat",
        stream=True,
        extra_headers=timing("ttft=0.01,itl=0.1,tokens=4"),
        timeout=streamkit.Timeout(first_token=0.05),
    )
    assert stream.get_final().choices[0].finish_reason == "stop"


@pytest.mark.parametrize("api", APIS)
def test_total_timeout_covers_the_body(limited: streamkit.Client, api: str) -> None:
    stream = create(
        limited,
        api,
        stream=True,
        extra_headers=fault(f"stall=6:{STALL},keepalive=0.02"),
        timeout=streamkit.Timeout(idle=1.0, total=0.5),
    )
    with pytest.raises(streamkit.TotalTimeout) as caught:
        stream.get_final()
    assert text_of(caught.value.partial) == planned(api, body_of(api)).text_after(6) != ""


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_total_timeout_covers_the_wait_for_the_head(limited: streamkit.Client, stream: bool) -> None:
    with pytest.raises(streamkit.TotalTimeout):
        create(
            limited,
            "chat",
            stream=stream,
            extra_headers=fault(f"stall_head={STALL}"),
            timeout=streamkit.Timeout(total=0.3),
        )


def test_total_timeout_covers_retries(sync_server: ServerThread) -> None:
    headers, _ = unique("status=503,retry_after=0.2")
    with (
        streamkit.Client(base_url=sync_server.base_url, api_key="k", max_retries=5) as client,
        pytest.raises(streamkit.TotalTimeout),
    ):
        client.chat.completions.create(
            model="m", messages=HI, stream=True, extra_headers=headers, timeout=streamkit.Timeout(total=0.3)
        )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_closed_port_raises_connect_error(monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    monkeypatch.setattr("streamkit.client.BACKOFF_START", 0.01)  # the retries' waits
    with streamkit.Client(base_url=f"http://127.0.0.1:{closed_port()}/v1", api_key="k") as client:
        with pytest.raises(streamkit.ConnectError) as caught:
            create(client, "chat", stream=stream)
        with pytest.raises(streamkit.ConnectError):
            client.models.list()
    assert not isinstance(caught.value, streamkit.ConnectTimeout) and caught.value.partial is None


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port that listens but takes no more connections: its accept queue (a backlog of 0) is full
    of connections never accepted, so the kernel drops each new one's SYN and a connect waits. Skips where
    the kernel does not (some hold a few more connections; none holds 64)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        for _ in range(64):
            filler = socket.socket()
            fillers.append(filler)
            filler.settimeout(0.2)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break  # this one waits: so will the client's
        else:
            pytest.skip("the kernel accepted every connection of a full backlog")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_port_that_does_not_answer_raises_connect_timeout(stream: bool) -> None:
    with unanswered_port() as port:
        timeout = streamkit.Timeout(connect=0.2)
        with (
            streamkit.Client(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="k", timeout=timeout, max_retries=0
            ) as client,
            pytest.raises(streamkit.ConnectTimeout) as caught,
        ):
            create(client, "chat", stream=stream)
    assert isinstance(caught.value, TimeoutError) and caught.value.partial is None
