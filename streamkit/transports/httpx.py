"""The httpx transport, built on httpx-sse's request setup; it runs on asyncio and on trio.

Streamed requests are opened with `httpx_sse.aconnect_sse`, which sets `Accept: text/event-stream` and
`Cache-Control: no-store`. The body's raw bytes then go to streamkit's own `SSEDecoder`, not to
httpx-sse's, which departs from the SSE rules: it keeps a leading BOM (so the first event is lost), dispatches
an event whose data buffer is empty (`event: x` or `id: 5` then a blank line), accepts `retry` values that
are not only ASCII digits (`+5`), and decodes with the response's charset rather than always UTF-8.

`Request.idle` becomes httpx's `read` limit, and `Request.connect` its `connect` and `pool` limits.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Mapping

import anyio
import httpx
from httpx_sse import aconnect_sse

from streamkit.errors import (
    ConnectError,
    ConnectTimeout,
    IdleTimeout,
    ProtocolError,
    ReadError,
    StreamkitError,
)
from streamkit.transports.base import DRAIN_BYTES, DRAIN_SECONDS, Request

__all__ = ["HttpxTransport"]

# httpx's exceptions in the order to test them: subclasses first. Where the response head has arrived, `read`
# turns a `ConnectError` from this table into a `ReadError`. A connection that opened and then broke, however
# (reset, closed early, bytes that are not HTTP), is a `ReadError` from the start: the client retries both
# alike before a 2xx head, and only a `ConnectError` says that no connection could be had.
_MAPPING: tuple[tuple[type[Exception], type[StreamkitError], str], ...] = (
    (httpx.ConnectTimeout, ConnectTimeout, "connecting timed out"),
    (httpx.PoolTimeout, ConnectTimeout, "no connection was free in time"),
    (httpx.ReadTimeout, IdleTimeout, "no data for the idle timeout"),
    (httpx.WriteTimeout, IdleTimeout, "sending the request timed out"),
    (httpx.ConnectError, ConnectError, "could not connect"),
    (httpx.RemoteProtocolError, ReadError, "the connection broke"),
    (httpx.ReadError, ReadError, "the connection broke"),
    (httpx.WriteError, ReadError, "the connection broke while the request was sent"),
    # A body whose Content-Encoding lies (a gzip header on bytes that are not gzip): broken as a body
    # with a bad chunk size is, and so a `ReadError`, as aiohttp's ClientPayloadError is.
    (httpx.DecodingError, ReadError, "the body could not be decoded"),
    # UnsupportedProtocol (a base_url of ftp://, say), LocalProtocolError, ProxyError.
    (httpx.TransportError, ConnectError, "the request failed"),
    (httpx.InvalidURL, ConnectError, "invalid URL"),  # not an httpx.HTTPError
)


def _mapped(exc: Exception) -> StreamkitError | None:
    """streamkit's exception for one of httpx's, or None for an exception that is not httpx's."""
    for foreign, ours, what in _MAPPING:
        if isinstance(exc, foreign):
            return ours(f"{what}: {exc or type(exc).__name__}")
    return None


class HttpxResponse:
    __slots__ = ("_closed", "_decoder", "_ended", "_exit", "_raw", "_response")

    def __init__(self, response: httpx.Response, exit: contextlib.AsyncExitStack) -> None:
        self._response = response
        self._exit = exit
        # The body as `aiter_bytes` gives it: raw bytes, then httpx's own decoder for any Content-Encoding.
        # Done here rather than by `aiter_bytes`, so that a body that fails to decode (a lying gzip header)
        # leaves the chain of generators under `aiter_raw` in our hands, for `aclose` to finish: trio warns
        # about any the garbage collector finds suspended.
        self._raw: AsyncIterator[bytes] = response.aiter_raw()
        encoded = "content-encoding" in response.headers
        self._decoder = response._get_content_decoder() if encoded else None
        self._ended = False
        self._closed = False

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        try:
            decoder = self._decoder
            if decoder is None:
                return await self._raw.__anext__()
            while not self._ended:
                try:
                    data = decoder.decode(await self._raw.__anext__())
                except StopAsyncIteration:
                    self._ended = True
                    return decoder.flush()
                if data:
                    return data
            return b""
        except StopAsyncIteration:
            return b""
        except Exception as exc:
            mapped = _mapped(exc)
            if mapped is None:
                raise
            if isinstance(mapped, ConnectError):  # the head has arrived: any failure now is a broken read
                mapped = ReadError(str(mapped))
            raise mapped from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await self._exit.aclose()
                # httpx reads through a chain of async generators, which closing the response leaves
                # suspended; trio warns about each one the garbage collector finds. Resumed now, on a closed
                # connection, they end at once, and none is left behind.
                with anyio.move_on_after(DRAIN_SECONDS), contextlib.suppress(Exception):
                    while True:
                        await self._raw.__anext__()

    async def release(self) -> None:
        drained = 0
        # `read` has already turned httpx's exceptions into streamkit's: a connection reset just after
        # `[DONE]` must cost the connection, never the finished stream.
        with anyio.move_on_after(DRAIN_SECONDS), contextlib.suppress(StreamkitError):
            while drained <= DRAIN_BYTES and (data := await self.read()):
                drained += len(data)
        await self.aclose()


# How a connection that the server closed breaks a request sent on it.
_BROKEN = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
# httpx reads a redirect's Location even where it does not follow it, and fails on one that is no URL it can
# use (InvalidURL, or a RemoteProtocolError as if the connection broke), after the head has arrived. It is the
# server's mistake, as every other bad redirect is (see `AsyncClient`): a ProtocolError, not retried.
_BAD_LOCATION = (httpx.InvalidURL, httpx.RemoteProtocolError)


class _Trace:
    """httpcore's trace of one request: whether it opened a connection, or took one from the pool, and
    whether the response head arrived."""

    __slots__ = ("answered", "connected")

    def __init__(self) -> None:
        self.connected = False
        self.answered = False

    async def __call__(self, event: str, info: Mapping[str, object]) -> None:
        if event.startswith("connection.connect_tcp."):
            self.connected = True
        elif event.endswith(".receive_response_headers.complete"):
            self.answered = True


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, made once per process: loading its CA bundle takes tens of milliseconds,
    which every client would pay again, and a context serves any number of clients."""
    return httpx.create_ssl_context()


class HttpxTransport:
    """Sends requests with one pooled `httpx.AsyncClient`, with no cap on connections."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._owned = client is None
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=1000),
            timeout=None,
            verify=_tls_context(),
        )

    async def send(self, request: Request) -> HttpxResponse:
        timeout = httpx.Timeout(None, connect=request.connect, pool=request.connect, read=request.idle)
        stack = contextlib.AsyncExitStack()
        trace = _Trace()
        try:
            if request.stream:
                source = await stack.enter_async_context(
                    aconnect_sse(
                        self._client,
                        request.method,
                        request.url,
                        content=request.content,
                        headers=dict(request.headers),
                        timeout=timeout,
                        follow_redirects=False,  # the client follows them (`Transport`)
                        extensions={"trace": trace},
                    )
                )
                response = source.response
            else:
                response = await stack.enter_async_context(
                    self._client.stream(
                        request.method,
                        request.url,
                        content=request.content,
                        headers=request.headers,
                        timeout=timeout,
                        follow_redirects=False,
                        extensions={"trace": trace},
                    )
                )
        except Exception as exc:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            if trace.answered and isinstance(exc, _BAD_LOCATION):
                raise ProtocolError(f"the server redirected to an invalid URL ({exc})") from exc
            mapped = _mapped(exc)
            if mapped is None:
                raise
            if not trace.connected and isinstance(exc, _BROKEN) and isinstance(mapped, ReadError):
                # A pooled connection that broke before the answer began: the server had closed it.
                mapped.stale = True
            raise mapped from exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise
        return HttpxResponse(response, stack)

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()
