"""The transports' exception tables (`_MAPPING` in streamkit/transports/aiohttp.py and httpx.py), entry by
entry, with real sockets: what each failure of the connection becomes, on every (event loop, transport).

Before a 2xx head, `ConnectError`, `ConnectTimeout` and `ReadError` are retried (DESIGN.md), so each test
sets `max_retries` and checks how many requests the server saw; after the head nothing is retried, and the
error carries `.partial`.
"""

from __future__ import annotations

import contextlib
import gc
import re
import socket
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import anyio
import httpx
import pytest

import streamkit
from streamkit.transports.aiohttp import AiohttpTransport
from streamkit.transports.aiohttp import _mapped as aiohttp_mapped
from streamkit.transports.httpx import HttpxTransport
from tests.client.conftest import HI
from tests.hostile import (
    Close,
    HostileServer,
    Pause,
    Reset,
    Script,
    Send,
    Stall,
    chunk,
    head,
    no_leaks,
    sse_event,
)

pytestmark = pytest.mark.anyio

GUARD = 20.0
LIMITS = streamkit.Timeout(connect=2, idle=1, total=10)
CHUNKED = "Transfer-Encoding: chunked"
SSE_HEAD = head("200 OK", "Content-Type: text/event-stream", CHUNKED)
HEL = sse_event("Hel", role="assistant")


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streamkit.client.BACKOFF_START", 0.01, raising=False)


@pytest.fixture(autouse=True)
async def nothing_left(hostile_server: HostileServer, anyio_backend_name: str) -> AsyncIterator[None]:
    async with no_leaks(hostile_server, anyio_backend_name):
        yield


async def fail(
    base_url: str,
    transport: Any,
    *,
    timeout: streamkit.Timeout = LIMITS,
    max_retries: int = 2,
    **params: Any,
) -> streamkit.StreamkitError:
    """The error a streamed call raises, consumed to its end; the test fails if it succeeds or raises
    anything else."""
    with anyio.fail_after(GUARD):
        async with streamkit.AsyncClient(
            base_url=base_url,
            api_key="sk-test",
            transport=transport,
            timeout=timeout,
            max_retries=max_retries,
        ) as client:
            with pytest.raises(streamkit.StreamkitError) as caught:
                stream = await client.chat.completions.create(model="m", messages=HI, stream=True, **params)
                async with stream:
                    async for _ in stream:
                        pass
                await stream.get_final_completion()
    return caught.value


def serve(server: HostileServer, script: Script) -> tuple[str, str]:
    name = uuid.uuid4().hex
    return server.add(script, name), name


def content(error: streamkit.StreamkitError) -> str | None:
    partial = error.partial
    assert isinstance(partial, streamkit.ChatCompletion), repr(error)
    return partial.choices[0].message.content if partial.choices else ""


# Connecting


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port that is bound but not listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port that listens but never accepts, its backlog full: the kernel drops new connections' SYNs, so
    connecting to it takes until the client gives up."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        yield port


async def test_connection_refused_is_a_connect_error(refusing_port: int, transport: str) -> None:
    error = await fail(f"http://127.0.0.1:{refusing_port}/v1", transport)
    assert type(error) is streamkit.ConnectError and error.partial is None


async def test_connect_timeout(full_backlog: int, transport: str) -> None:
    timeout = streamkit.Timeout(connect=0.3, idle=1, total=10)
    error = await fail(f"http://127.0.0.1:{full_backlog}/v1", transport, timeout=timeout, max_retries=0)
    assert type(error) is streamkit.ConnectTimeout and error.partial is None
    assert isinstance(error, TimeoutError)


@pytest.mark.parametrize(
    "base_url", ["http://[::1/v1", "ftp://127.0.0.1/v1", "127.0.0.1:8000/v1", "http://exa mple.com/v1"]
)
async def test_a_base_url_that_cannot_be_reached_is_a_connect_error(base_url: str, transport: str) -> None:
    error = await fail(base_url, transport, max_retries=0)
    assert type(error) is streamkit.ConnectError and error.partial is None


async def test_pool_timeout(hostile_server: HostileServer, transport: str) -> None:
    """A client whose pool holds one connection, held by a stream, waits for a free one no longer than
    `connect` (httpx's PoolTimeout; aiohttp's connect timeout)."""
    base_url, name = serve(hostile_server, Script([Send(SSE_HEAD + chunk(HEL)), Stall()]))
    mine: AiohttpTransport | HttpxTransport
    if transport == "aiohttp":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        mine, closing = AiohttpTransport(session), session.close
    else:
        pool = httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=None)
        mine, closing = HttpxTransport(pool), pool.aclose
    try:
        with anyio.fail_after(GUARD):
            timeout = streamkit.Timeout(connect=0.3, idle=5, total=10)
            async with streamkit.AsyncClient(
                base_url=base_url, transport=mine, timeout=timeout, max_retries=0
            ) as client:
                holding = await client.chat.completions.create(model="m", messages=HI, stream=True)
                async with holding:
                    with pytest.raises(streamkit.ConnectTimeout) as caught:
                        await client.chat.completions.create(model="m", messages=HI, stream=True)
    finally:
        await closing()
    assert caught.value.partial is None and hostile_server.requests[name] == 1


# Sending


async def test_a_connection_broken_while_the_request_is_sent_is_a_read_error(
    hostile_server: HostileServer, transport: str
) -> None:
    """The server resets the connection as soon as it has the head, while the client still sends 8 MB."""
    base_url, name = serve(hostile_server, Script([Reset()], read_body=False))
    with warnings.catch_warnings():
        # httpcore leaves httpx's request-body generator suspended when a write fails, and trio warns when
        # the collector finds it: collected here, under this filter, rather than in some later test.
        warnings.filterwarnings("ignore", "Async generator 'httpx._content.ByteStream", ResourceWarning)
        error = await fail(base_url, transport, extra_body={"padding": "x" * (8 << 20)})
        kind, partial = type(error), error.partial
        del error
        gc.collect()
    assert kind is streamkit.ReadError and partial is None
    assert hostile_server.requests[name] == 3  # retried


# Before the head: retried, then raised


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(Script([Close()]), id="closed-without-an-answer"),
        pytest.param(Script([Reset()]), id="reset-without-an-answer"),
        pytest.param(Script([Send(b"HTTP/1.1 200 OK\r\nContent-Type: text/e"), Close()]), id="half-a-head"),
        pytest.param(Script([Send(b"HTTP/1.1 2OO OK\r\n\r\n"), Close()]), id="bad-status-line"),
        pytest.param(Script([Send(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"), Stall()]), id="bad-header"),
        pytest.param(Script([Send(b"\x00\x01\x02\x03" * 64), Stall()]), id="not-http"),
    ],
)
async def test_a_connection_broken_before_the_head_is_retried_then_a_read_error(
    hostile_server: HostileServer, transport: str, script: Script
) -> None:
    base_url, name = serve(hostile_server, script)
    error = await fail(base_url, transport)
    assert type(error) is streamkit.ReadError and error.partial is None
    assert hostile_server.requests[name] == 3


async def test_idle_timeout_before_the_head_is_not_retried(
    hostile_server: HostileServer, transport: str
) -> None:
    base_url, name = serve(hostile_server, Script([Stall()]))
    error = await fail(base_url, transport, timeout=streamkit.Timeout(connect=2, idle=0.2, total=10))
    assert type(error) is streamkit.IdleTimeout and error.partial is None
    assert hostile_server.requests[name] == 1


async def test_too_many_redirects_is_a_protocol_error(hostile_server: HostileServer, transport: str) -> None:
    name = uuid.uuid4().hex
    location = f"Location: /case/{name}/v1/chat/completions"
    base_url = hostile_server.add(
        Script([Send(head("307 Temporary Redirect", location, "Content-Length: 0"))]), name
    )
    error = await fail(base_url, transport)
    assert type(error) is streamkit.ProtocolError and error.partial is None
    assert error.message == "the server redirected too many times"
    assert hostile_server.requests[name] == 21  # the request and 20 redirects, once: not retried


# A Location that is not an http(s) URL is the server's mistake, whichever transport reads it: a
# ProtocolError that names the reason, never retried (it once was a ConnectError or ReadError, and retried).
@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://[::1/x", "invalid URL"),
        ("http://127.0.0.1:99999/x", "invalid URL"),
        ("ftp://127.0.0.1/x", "not an http[(]s[)] URL"),
        # httpx itself fails on this one before the client sees it, and says it is invalid.
        ("mailto:someone@example.com", "not an http[(]s[)] URL|invalid URL"),
    ],
    ids=["invalid-url", "port-out-of-range", "ftp", "mailto"],
)
async def test_a_redirect_that_cannot_be_followed(
    hostile_server: HostileServer, transport: str, location: str, reason: str
) -> None:
    base_url, name = serve(
        hostile_server,
        Script([Send(head("307 Temporary Redirect", f"Location: {location}", "Content-Length: 0"))]),
    )
    error = await fail(base_url, transport, max_retries=2)
    assert type(error) is streamkit.ProtocolError and error.partial is None
    assert re.match(f"the server redirected .*({reason})", error.message), error.message
    assert hostile_server.requests[name] == 1


# After the head: never retried, and the error carries what came before it


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(Script([Send(SSE_HEAD + chunk(HEL)), Pause(0.05), Reset()]), id="reset"),
        pytest.param(
            Script([Send(SSE_HEAD + chunk(HEL)), Pause(0.05), Close()]), id="closed-mid-chunk-stream"
        ),
        pytest.param(
            Script([Send(SSE_HEAD + chunk(HEL)), Pause(0.1), Send(b"zz\r\n"), Stall()]), id="bad-chunk"
        ),
        pytest.param(
            Script(
                [
                    Send(head("200 OK", "Content-Type: text/event-stream", "Content-Length: 999") + HEL),
                    Close(),
                ]
            ),
            id="short-content-length",
        ),
        pytest.param(
            Script(
                [
                    Send(
                        head("200 OK", "Content-Type: text/event-stream", "Content-Encoding: gzip", CHUNKED)
                    ),
                    Send(chunk(HEL)),
                    Stall(),
                ]
            ),
            id="not-gzip",
        ),
    ],
)
async def test_a_connection_broken_after_the_head_is_a_read_error_with_the_partial(
    hostile_server: HostileServer, transport: str, script: Script
) -> None:
    base_url, name = serve(hostile_server, script)
    error = await fail(base_url, transport)
    assert type(error) is streamkit.ReadError, repr(error)
    assert content(error) in ("Hel", "")  # "" where the chunk could not be decoded at all (gzip)
    assert hostile_server.requests[name] == 1


async def test_idle_timeout_after_the_head_keeps_the_partial(
    hostile_server: HostileServer, transport: str
) -> None:
    base_url, name = serve(hostile_server, Script([Send(SSE_HEAD + chunk(HEL)), Stall()]))
    error = await fail(base_url, transport, timeout=streamkit.Timeout(connect=2, idle=0.2, total=10))
    assert type(error) is streamkit.IdleTimeout and content(error) == "Hel"
    assert hostile_server.requests[name] == 1


# What the suite cannot reach with sockets


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_aiohttp_pure_python_parser_errors_are_read_errors() -> None:
    """aiohttp's pure-Python parser (AIOHTTP_NO_EXTENSIONS, PyPy) raises its own HttpProcessingError from a
    body it cannot parse; the C parser, which these tests run, never does."""
    from aiohttp.http_exceptions import TransferEncodingError

    mapped = aiohttp_mapped(TransferEncodingError("zz"))  # read from a body whose head arrived
    assert type(mapped) is streamkit.ReadError
    assert str(mapped) == "the server closed the connection mid-answer"
    sent = aiohttp_mapped(TransferEncodingError("zz"), "http://h/v1/x")  # before any head
    assert type(sent) is streamkit.ReadError and str(sent) == "the connection broke: zz"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_read_of_a_connection_closed_under_it_is_a_read_error(hostile_server: HostileServer) -> None:
    """When its session closes a connection (the bench's client, closed by Ctrl-C with requests in flight),
    aiohttp forgets the body it was reading; a read that starts before the connection's end is seen gets
    aiohttp's bare RuntimeError("Connection closed."). The race, made certain: the connection is closed as
    the session would close it, and read at once."""
    base_url, _ = serve(hostile_server, Script([Send(SSE_HEAD + chunk(HEL)), Stall()]))
    async with streamkit.AsyncClient(base_url=base_url, transport="aiohttp", timeout=LIMITS) as client:
        stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
        async with stream:
            first = await stream.__anext__()
            assert first.choices[0].delta.content == "Hel"
            stream._response._response.connection.protocol.close()  # type: ignore[attr-defined]
            with pytest.raises(streamkit.ReadError) as caught:
                await stream.__anext__()
    assert content(caught.value) == "Hel"


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_an_aiohttp_transport_instance_under_trio_says_what_to_do(
    hostile_server: HostileServer,
) -> None:
    base_url, name = serve(hostile_server, Script([Close()]))
    async with streamkit.AsyncClient(base_url=base_url, transport=AiohttpTransport()) as client:
        with pytest.raises(RuntimeError, match="transport='httpx'"):
            await client.chat.completions.create(model="m", messages=HI, stream=True)
    assert hostile_server.requests[name] == 0
