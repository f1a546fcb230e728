"""Every fault of the built-in server, through each transport, raises the documented error with `.partial`."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest

import streamkit
from streamkit.server import ServerThread
from streamkit.server.app import SERVER_ERROR
from tests.client.conftest import HI, comparable, fault, timing

pytestmark = pytest.mark.anyio


async def stream_with(client: streamkit.AsyncClient, headers: dict[str, str], **params: Any) -> Any:
    return await client.chat.completions.create(
        model="scripted", messages=HI, stream=True, extra_headers=headers, **params
    )


def content(error: streamkit.StreamkitError) -> str | None:
    assert isinstance(error.partial, streamkit.ChatCompletion)
    return error.partial.choices[0].message.content if error.partial.choices else None


def unique(spec: str) -> tuple[dict[str, str], str]:
    """A `status` fault whose attempts are counted apart from every other test's, and its counter's key."""
    key = uuid.uuid4().hex
    return fault(f"{spec},key={key}"), key


async def test_drop_raises_read_error_with_what_came_before(client: streamkit.AsyncClient) -> None:
    whole = await client.chat.completions.create(model="scripted", messages=HI)
    stream = await stream_with(client, fault("drop=3"))
    chunks: list[streamkit.ChatCompletionChunk] = []
    with pytest.raises(streamkit.ReadError) as caught:
        async for chunk in stream:
            chunks.append(chunk)  # noqa: PERF401 (the chunks before the error are the point)
    assert len(chunks) == 3  # role, then two tokens: every chunk that arrived is yielded before the error
    expected = whole.choices[0].message.content or ""
    got = content(caught.value)
    assert got and expected.startswith(got)
    # The stream remembers: the final raises the same error again.
    with pytest.raises(streamkit.ReadError) as again:
        await stream.get_final_completion()
    assert again.value is caught.value


async def test_truncated_body_raises_incomplete_stream_error(client: streamkit.AsyncClient) -> None:
    stream = await stream_with(client, fault("truncate=4"))
    with pytest.raises(streamkit.IncompleteStreamError) as caught:
        await stream.get_final_completion()
    partial = caught.value.partial
    assert isinstance(partial, streamkit.ChatCompletion) and partial.choices[0].finish_reason is None
    assert content(caught.value)


async def test_empty_body_raises_incomplete_stream_error(client: streamkit.AsyncClient) -> None:
    stream = await stream_with(client, fault("truncate=0"))
    with pytest.raises(streamkit.IncompleteStreamError) as caught:
        await stream.get_final_completion()
    partial = caught.value.partial
    assert isinstance(partial, streamkit.ChatCompletion) and partial.choices == []


async def test_finished_stream_without_done_ends_normally(client: streamkit.AsyncClient) -> None:
    whole = await client.chat.completions.create(model="scripted", messages=HI, n=2)
    stream = await stream_with(client, fault("no_done"), n=2)
    assert comparable(await stream.get_final_completion(), False) == comparable(whole, False)


@pytest.mark.parametrize("form", ["object", "string", "event"])
async def test_error_in_the_stream_raises_stream_api_error(client: streamkit.AsyncClient, form: str) -> None:
    stream = await stream_with(client, fault(f"error={form},error_after=3"))
    chunks: list[streamkit.ChatCompletionChunk] = []
    with pytest.raises(streamkit.StreamAPIError) as caught:
        async for chunk in stream:
            chunks.append(chunk)  # noqa: PERF401
    error = caught.value
    assert len(chunks) == 3
    assert error.message == SERVER_ERROR["message"]
    assert SERVER_ERROR["message"] in error.raw
    if form != "string":
        assert (error.type, error.code) == ("server_error", "internal_error")
    assert content(error)


async def test_malformed_chunk_raises_chunk_decode_error(client: streamkit.AsyncClient) -> None:
    stream = await stream_with(client, fault("malformed=2"))
    with pytest.raises(streamkit.ChunkDecodeError) as caught:
        await stream.get_final_completion()
    assert caught.value.raw.startswith('{"id": "chatcmpl-broken"')
    assert isinstance(caught.value, ValueError) and content(caught.value)


async def test_html_page_raises_unexpected_content_type(client: streamkit.AsyncClient) -> None:
    with pytest.raises(streamkit.UnexpectedContentType) as caught:
        await stream_with(client, fault("html"))
    assert caught.value.content_type.startswith("text/html")
    assert caught.value.raw.startswith("<!DOCTYPE html>") and "502 Bad Gateway" in caught.value.raw


@pytest.mark.parametrize(
    "spec", ["framing=crlf", "framing=cr", "bom", "keepalive=0.005", "ping=0.005", "split=1", "split=7,bom"]
)
async def test_framing_faults_give_the_comparable(client: streamkit.AsyncClient, spec: str) -> None:
    whole = await client.chat.completions.create(model="scripted", messages=HI, n=2, seed=5)
    stream = await stream_with(client, {**fault(spec), **timing("itl=0.002")}, n=2, seed=5)
    assert comparable(await stream.get_final_completion(), False) == comparable(whole, False)


# Retries, before the response head only


async def test_rate_limit_is_retried_after_retry_after_ms(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    headers, key = unique("status=429,retry_after_ms=20,fail_times=2")
    start = anyio.current_time()
    stream = await stream_with(client, headers)
    assert (await stream.get_final_completion()).choices[0].finish_reason == "stop"
    assert streamkit_server.stats.attempts[key] == 3
    assert anyio.current_time() - start >= 0.04


@pytest.mark.parametrize("status", [408, 409, 500, 503])
async def test_retried_statuses(client: streamkit.AsyncClient, status: int) -> None:
    stream = await stream_with(client, unique(f"status={status}:1,retry_after=0")[0])
    assert (await stream.get_final_completion()).choices


async def test_server_errors_raise_after_max_retries(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    headers, key = unique("status=500,retry_after=0,fail_times=9")
    with pytest.raises(streamkit.InternalServerError) as caught:
        await stream_with(client, headers)
    error = caught.value
    assert streamkit_server.stats.attempts[key] == 3  # max_retries=2
    assert (error.status_code, error.message, error.type, error.code) == (
        500,
        SERVER_ERROR["message"],
        "server_error",
        "internal_error",
    )
    assert error.partial is None


async def test_a_long_retry_after_is_not_slept(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    headers, key = unique("status=429,retry_after=120")
    with anyio.fail_after(5), pytest.raises(streamkit.RateLimitError) as caught:
        await stream_with(client, headers)
    assert caught.value.headers["retry-after"] == "120" and caught.value.code == "rate_limit_exceeded"
    assert streamkit_server.stats.attempts[key] == 1


async def test_client_errors_are_not_retried(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    headers, key = unique("status=400")
    with pytest.raises(streamkit.BadRequestError):
        await stream_with(client, headers)
    assert streamkit_server.stats.attempts[key] == 1


async def test_validation_errors_carry_type_code_and_param(client: streamkit.AsyncClient) -> None:
    with pytest.raises(streamkit.BadRequestError) as caught:
        await client.chat.completions.create(model="scripted", messages=HI, stream=True, top_logprobs=3)
    error = caught.value
    assert (error.type, error.param, error.code) == ("invalid_request_error", "top_logprobs", "invalid_value")
    assert "'logprobs' must be set to true" in error.message


async def test_nothing_is_retried_after_the_head(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    before = streamkit_server.stats.requests
    stream = await stream_with(client, fault("drop=2"))
    with pytest.raises(streamkit.ReadError):
        await stream.get_final_completion()
    assert streamkit_server.stats.requests == before + 1


# Timeouts


async def test_idle_timeout_before_the_head(streamkit_server: ServerThread, transport: Any) -> None:
    timeout = streamkit.Timeout(idle=0.1)
    async with streamkit.AsyncClient(
        base_url=streamkit_server.base_url, transport=transport, timeout=timeout
    ) as c:
        with pytest.raises(streamkit.IdleTimeout) as caught:
            await stream_with(c, fault("stall_head=1"))
    assert isinstance(caught.value, TimeoutError) and caught.value.partial is None


async def test_idle_timeout_mid_stream_keeps_the_partial(client: streamkit.AsyncClient) -> None:
    stream = await stream_with(client, fault("stall=3:1"), timeout=streamkit.Timeout(idle=0.1))
    with pytest.raises(streamkit.IdleTimeout) as caught:
        await stream.get_final_completion()
    assert content(caught.value)


async def test_comments_and_pings_keep_a_stream_alive(client: streamkit.AsyncClient) -> None:
    for spec in ("stall=2:0.4,keepalive=0.05", "stall=2:0.4,ping=0.05"):
        stream = await stream_with(client, fault(spec), timeout=streamkit.Timeout(idle=0.2))
        assert (await stream.get_final_completion()).choices[0].finish_reason


async def test_first_token_timeout(client: streamkit.AsyncClient) -> None:
    # Keep-alive comments keep the idle timer happy; only the first-token limit can fire.
    stream = await stream_with(
        client, {**timing("ttft=1"), **fault("keepalive=0.02")}, timeout=streamkit.Timeout(first_token=0.15)
    )
    with pytest.raises(streamkit.FirstTokenTimeout) as caught:
        await stream.get_final_completion()
    assert caught.value.partial is not None and not content(caught.value)  # only the role chunk came


async def test_first_token_limit_ends_at_the_first_token(client: streamkit.AsyncClient) -> None:
    stream = await stream_with(
        client, timing("ttft=0.01,itl=0.05,tokens=6"), timeout=streamkit.Timeout(first_token=0.1)
    )
    assert (await stream.get_final_completion()).choices[0].finish_reason == "stop"


async def test_total_timeout_covers_the_body(client: streamkit.AsyncClient) -> None:
    stream = await stream_with(client, timing("itl=0.05,tokens=40"), timeout=streamkit.Timeout(total=0.3))
    with pytest.raises(streamkit.TotalTimeout) as caught:
        await stream.get_final_completion()
    assert content(caught.value)


async def test_total_timeout_covers_retries(client: streamkit.AsyncClient) -> None:
    headers, _ = unique("status=503,retry_after=0.2,fail_times=9")
    start = anyio.current_time()
    with pytest.raises(streamkit.TotalTimeout):
        await stream_with(client, headers, timeout=streamkit.Timeout(total=0.3))
    assert anyio.current_time() - start < 1


async def test_connect_errors_are_retried_then_raised(
    transport: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("streamkit.client.BACKOFF_START", 0.01)
    with anyio.fail_after(5):
        async with streamkit.AsyncClient(base_url="http://127.0.0.1:9/v1", transport=transport) as c:
            with pytest.raises(streamkit.ConnectError) as caught:
                await stream_with(c, {})
    assert caught.value.partial is None
