"""An in-process transport for unit tests: a handler function answers each request, byte pieces and all.

    async def handler(request: Request) -> MockResponse:
        return MockResponse(200, [b"data: {...}\\n\\n", b"data: [DONE]\\n\\n"])

    client = streamkit.AsyncClient(transport=MockTransport(handler), api_key="test")

Each item of `body` is returned by one `read()`, so a test decides exactly how the bytes are cut. An item that
is an exception is raised by that read instead, so a test can break the connection anywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from streamkit.errors import StreamkitError
from streamkit.transports.base import DRAIN_BYTES, Request

__all__ = ["MockResponse", "MockTransport"]


class MockResponse:
    """A canned response: status, headers and the body's pieces (bytes, or exceptions to raise)."""

    def __init__(
        self,
        status: int = 200,
        body: bytes | Iterable[bytes | BaseException] = b"",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self._headers = {k.lower(): v for k, v in (headers or {"content-type": "text/event-stream"}).items()}
        self._body = iter([body] if isinstance(body, bytes) else body)
        self.closed = False
        self.released = False

    @property
    def headers(self) -> Mapping[str, str]:
        return _Headers(self._headers)

    async def read(self) -> bytes:
        for piece in self._body:
            if isinstance(piece, BaseException):
                raise piece
            if piece:
                return piece
        return b""

    async def aclose(self) -> None:
        self.closed = True

    async def release(self) -> None:
        """As the real transports do after `[DONE]`: read what little follows, a broken connection there
        costing the connection only, then close."""
        self.released = True
        drained = 0
        with contextlib.suppress(StreamkitError):
            while drained <= DRAIN_BYTES and (data := await self.read()):
                drained += len(data)
        await self.aclose()


class _Headers(dict[str, str]):
    """Case-insensitive lookups over lower-case keys, as real transports give."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


Handler = Callable[[Request], "MockResponse | Awaitable[MockResponse]"]


class MockTransport:
    """Answers every request by calling `handler(request)`; records the requests in `requests`."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[Request] = []

    async def send(self, request: Request) -> MockResponse:
        self.requests.append(request)
        response = self._handler(request)
        if not isinstance(response, MockResponse):
            response = await response
        return response

    async def aclose(self) -> None:
        pass
