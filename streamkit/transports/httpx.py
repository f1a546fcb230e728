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
from collections.abc import AsyncIterator, Mapping

import anyio
import httpx
from httpx_sse import aconnect_sse

from streamkit.errors import ConnectError, ConnectTimeout, IdleTimeout, ReadError, StreamkitError
from streamkit.transports.base import DRAIN_BYTES, DRAIN_SECONDS, Request

__all__ = ["HttpxTransport"]

# httpx's exceptions in the order to test them: subclasses first.
_MAPPING: tuple[tuple[type[Exception], type[StreamkitError], str], ...] = (
    (httpx.ConnectTimeout, ConnectTimeout, "connecting timed out"),
    (httpx.PoolTimeout, ConnectTimeout, "no connection was free in time"),
    (httpx.ReadTimeout, IdleTimeout, "no data for the idle timeout"),
    (httpx.WriteTimeout, IdleTimeout, "sending the request timed out"),
    (httpx.ConnectError, ConnectError, "could not connect"),
    (httpx.RemoteProtocolError, ReadError, "the connection broke"),
    (httpx.ReadError, ReadError, "the connection broke"),
    (httpx.TransportError, ConnectError, "the request failed"),
)


def _mapped(exc: Exception) -> StreamkitError | None:
    """streamkit's exception for one of httpx's, or None for an exception that is not httpx's."""
    for foreign, ours, what in _MAPPING:
        if isinstance(exc, foreign):
            return ours(f"{what}: {exc or type(exc).__name__}")
    return None


class HttpxResponse:
    __slots__ = ("_body", "_closed", "_exit", "_response")

    def __init__(self, response: httpx.Response, exit: contextlib.AsyncExitStack) -> None:
        self._response = response
        self._exit = exit
        self._body: AsyncIterator[bytes] = response.aiter_bytes()  # undoes any Content-Encoding
        self._closed = False

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        try:
            return await self._body.__anext__()
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
                        await self._body.__anext__()

    async def release(self) -> None:
        drained = 0
        with anyio.move_on_after(DRAIN_SECONDS), contextlib.suppress(httpx.HTTPError):
            while drained <= DRAIN_BYTES and (data := await self.read()):
                drained += len(data)
        await self.aclose()


class HttpxTransport:
    """Sends requests with one pooled `httpx.AsyncClient`, with no cap on connections."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._owned = client is None
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=1000),
            timeout=None,
            follow_redirects=True,
        )

    async def send(self, request: Request) -> HttpxResponse:
        timeout = httpx.Timeout(None, connect=request.connect, pool=request.connect, read=request.idle)
        stack = contextlib.AsyncExitStack()
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
                    )
                )
        except Exception as exc:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            mapped = _mapped(exc)
            if mapped is None:
                raise
            raise mapped from exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise
        return HttpxResponse(response, stack)

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()
