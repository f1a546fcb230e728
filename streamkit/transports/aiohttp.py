"""The default transport, on aiohttp (asyncio only).

One `ClientSession` over a `TCPConnector` with no connection cap (aiohttp's default caps at 100), so one
client can hold thousands of concurrent streams. `Request.idle` becomes aiohttp's `sock_read` limit, which
covers the wait for the response head and every read of the body at no cost per read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from streamkit.errors import ConnectError, ConnectTimeout, IdleTimeout, ReadError, StreamkitError
from streamkit.transports.base import DRAIN_BYTES, DRAIN_SECONDS, Request

__all__ = ["AiohttpTransport"]


def _mapped(exc: BaseException, reading: bool) -> StreamkitError | None:
    """streamkit's exception for one of aiohttp's, or None for an exception that is not aiohttp's.

    `reading`: the response head had arrived, so a broken connection is a `ReadError`.
    """
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeout(f"connecting timed out: {exc}")
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return IdleTimeout(f"no data for the idle timeout: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"could not connect: {exc}")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return ReadError(f"the connection broke: {exc}")
    if isinstance(exc, aiohttp.ClientError | OSError):
        what = "the connection broke" if reading else "the request failed"
        return ReadError(f"{what}: {exc}") if reading else ConnectError(f"{what}: {exc}")
    return None


class AiohttpResponse:
    __slots__ = ("_closed", "_content", "_response")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._content = response.content
        self._closed = False

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        try:
            return await self._content.readany()
        except Exception as exc:
            mapped = _mapped(exc, reading=True)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
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
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
        await self.aclose()


class AiohttpTransport:
    """Sends requests with one pooled `aiohttp.ClientSession`, made on first use in the running loop."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owned = session is None

    def _open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        # No cookies: an API client must not carry state from one answer into the next request.
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    async def send(self, request: Request) -> AiohttpResponse:
        session = self._session
        if session is None:
            session = self._session = self._open_session()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=request.connect, sock_read=request.idle)
        try:
            response = await session.request(
                request.method, request.url, data=request.content, headers=request.headers, timeout=timeout
            )
        except Exception as exc:
            mapped = _mapped(exc, reading=False)
            if mapped is None:
                raise
            raise mapped from exc
        return AiohttpResponse(response)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owned:
            await session.close()
