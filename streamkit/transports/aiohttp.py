"""The default transport, on aiohttp (asyncio only).

One `ClientSession` over a `TCPConnector` with no connection cap (aiohttp's default caps at 100), so one
client can hold thousands of concurrent streams. `Request.idle` becomes aiohttp's `sock_read` limit, which
covers the wait for the response head and every read of the body at no cost per read. `Request.connect` bounds
opening a connection, and the wait for a free one where a session given by the caller caps its pool.

aiohttp undoes a Content-Encoding itself, 64 KiB at a time from 3.13.3 on (each read whole before, which let a
gzip bomb take gigabytes: CVE-2025-69223), so that the SSE decoder's event bound stops a bomb. The transport's
own session keeps no cookies (`DummyCookieJar`); a session given by the caller keeps its own jar.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping
from types import SimpleNamespace

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from streamkit.errors import (
    ConnectError,
    ConnectTimeout,
    IdleTimeout,
    ReadError,
    StreamkitError,
)
from streamkit.transports.base import BROKE, CONNECT, DRAIN_BYTES, DRAIN_SECONDS, Request, mapped_error

__all__ = ["AiohttpTransport"]

_LARGE_BODY = 1 << 20  # aiohttp.payload.TOO_LARGE_BYTES_BODY


# aiohttp's exceptions in the order to test them: subclasses first. Where the response head has arrived,
# `read` turns a `ConnectError` from this table into a `ReadError`. A connection that opened and then broke
# (reset, closed before answering, a status line or head that is not HTTP, which aiohttp reports as a
# ClientResponseError) is a `ReadError` from the start, as it is on httpx: the client retries both alike
# before a 2xx head, and only a `ConnectError` says that no connection could be had.
_MAPPING: tuple[tuple[type[BaseException], type[StreamkitError], str], ...] = (
    (aiohttp.ConnectionTimeoutError, ConnectTimeout, "connecting timed out"),
    (aiohttp.ServerTimeoutError, IdleTimeout, "no data for the idle timeout"),
    (aiohttp.ClientConnectorError, ConnectError, CONNECT),
    (aiohttp.ServerFingerprintMismatch, ConnectError, CONNECT),
    # A base_url that is not an http(s) URL (redirects are the client's, never aiohttp's).
    (aiohttp.InvalidURL, ConnectError, "invalid URL"),
    (aiohttp.NonHttpUrlClientError, ConnectError, "the request failed"),
    (aiohttp.ClientError, ReadError, BROKE),
    # What aiohttp's pure-Python parser (AIOHTTP_NO_EXTENSIONS, PyPy) raises from a body it cannot parse.
    (HttpProcessingError, ReadError, BROKE),
    (OSError, ReadError, BROKE),
)


def _mapped(exc: BaseException, url: str | None = None) -> StreamkitError | None:
    """streamkit's exception for one of aiohttp's, or None for an exception that is not aiohttp's; `url` is
    the request's while it is sent, None once the head has arrived (`mapped_error`)."""
    for foreign, ours, what in _MAPPING:
        if isinstance(exc, foreign):
            # A ClientResponseError's str() starts with the status aiohttp's parser gives a bad response
            # (400), which the server never sent; its message alone says what happened.
            detail = (
                exc.message
                if isinstance(exc, aiohttp.ClientResponseError | HttpProcessingError)
                else str(exc)
            )
            return mapped_error(ours, what, detail or type(exc).__name__, exc, url)
    return None


# How a connection that the server closed breaks a request sent on it.
_BROKEN = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class _Attempt:
    """One request's trace context: whether aiohttp sent it on a connection from its pool."""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


async def _on_reuse(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceConnectionReuseconnParams
) -> None:
    attempt = context.trace_request_ctx
    if isinstance(attempt, _Attempt):
        attempt.reused = True


def _retrieve(lost: asyncio.Future[None]) -> None:
    """Mark the exception of a connection's `closed` future as seen, so asyncio never logs it as lost."""
    if not lost.cancelled():
        lost.exception()


class AiohttpResponse:
    __slots__ = ("_closed", "_content", "_lost", "_response")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._content = content = response.content
        self._closed = False
        # aiohttp's C parser, on a body it cannot parse (a bad chunk size, say), closes the connection but
        # leaves the body's stream neither ended nor failed, and stops the sock_read timer: a read would wait
        # forever. So the connection's end is watched, and fails a body that it left unfinished.
        self._lost: asyncio.Future[None] | None = None
        connection = response.connection
        protocol = None if connection is None else connection.protocol
        if protocol is not None and not content.is_eof():
            lost = protocol.closed
            if lost is None:  # already lost
                self._on_lost(None)
            else:
                lost.add_done_callback(self._on_lost)
                self._lost = lost

    def _on_lost(self, lost: asyncio.Future[None] | None) -> None:
        if lost is not None:
            _retrieve(lost)
        content = self._content
        if not content.is_eof() and content.exception() is None:
            content.set_exception(aiohttp.ClientPayloadError("the connection closed before the body ended"))

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        try:
            return await self._content.readany()
        except RuntimeError as exc:
            # A connection its session closed (aiohttp forgets the body it was reading): a read that starts
            # before the connection's end is seen gets a bare RuntimeError("Connection closed.").
            connection = self._response.connection
            protocol = None if connection is None else connection.protocol
            if protocol is not None and protocol.connected:
                raise  # not the connection: two readers at once, say
            raise ReadError("the connection was closed mid-answer") from exc
        except Exception as exc:
            mapped = _mapped(exc)  # the head has arrived: any failure now is a broken read
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            lost, self._lost = self._lost, None
            if lost is not None:
                lost.remove_done_callback(self._on_lost)
                if not lost.done():  # the connection may go back to the pool and be lost there
                    lost.remove_done_callback(_retrieve)
                    lost.add_done_callback(_retrieve)
            if self._content.at_eof():
                self._response.release()
            else:
                self._response.close()

    async def release(self) -> None:
        content = self._content
        if not content.at_eof():
            drained = 0
            try:
                async with asyncio.timeout(DRAIN_SECONDS):
                    while drained <= DRAIN_BYTES and (data := await content.readany()):
                        drained += len(data)
            except (TimeoutError, aiohttp.ClientError, HttpProcessingError, OSError):
                pass
        await self.aclose()


class AiohttpTransport:
    """Sends requests with one pooled `aiohttp.ClientSession`, made on first use in the running loop."""

    asyncio_only = True  # AsyncClient refuses to run it under trio, with a message that says what to do

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owned = session is None

    def _open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        # Whether a request went out on a pooled connection tells a stale one (see `TransportError.stale`).
        trace = aiohttp.TraceConfig()
        trace.on_connection_reuseconn.append(_on_reuse)
        # No cookies: an API client must not carry state from one answer into the next request.
        return aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trace_configs=[trace]
        )

    async def send(self, request: Request) -> AiohttpResponse:
        session = self._session
        if session is None:
            session = self._session = self._open_session()
        # `connect` bounds the wait for a free connection of a capped pool too, as httpx's `pool` limit does.
        timeout = aiohttp.ClientTimeout(
            total=None, connect=request.connect, sock_connect=request.connect, sock_read=request.idle
        )
        content = request.content
        # aiohttp warns (a ResourceWarning) about a body of over 1 MiB given as bytes, and writes a BytesIO in
        # pieces: long prompts, and images in them, make such bodies.
        data = content if len(content) <= _LARGE_BODY else io.BytesIO(content)
        attempt = _Attempt()
        try:
            response = await session.request(
                request.method,
                request.url,
                data=data,
                headers=request.headers,
                timeout=timeout,
                allow_redirects=False,  # the client follows them (`Transport`)
                trace_request_ctx=attempt,
            )
        except Exception as exc:
            mapped = _mapped(exc, request.url)
            if mapped is None:
                raise
            if attempt.reused and isinstance(exc, _BROKEN) and isinstance(mapped, ReadError):
                # A pooled connection that broke before the answer began: the server had closed it.
                mapped.stale = True
            raise mapped from exc
        if response.status == 101:
            # Switching protocols, which the request never asked for (RFC 9110 §15.2.2): what follows is not
            # HTTP. h11 refuses it as a protocol error, so httpx raises the same `ReadError`.
            response.close()
            raise ReadError("the connection broke: the server switched protocols unasked (101)")
        return AiohttpResponse(response)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owned:
            await session.close()
