"""The transport interface: one request in, one response head out, then the body's bytes as they arrive.

A transport does the HTTP and nothing else. It turns every exception of its library into streamkit's tree
(`ConnectError`, `ConnectTimeout`, `ReadError`, `IdleTimeout`) in one table of its own, applied both where the
request is sent and where the body is read. Everything else (redirects, retries, deadlines, SSE, chunks,
errors from the API) lives above it, once for all transports.

A transport never follows a redirect: a 3xx comes back as any other answer. The client follows it, and decides
which headers go to the next origin (the libraries each keep some credentials across hosts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Request", "Response", "Transport"]


@dataclass(frozen=True)
class Request:
    """One HTTP request. `connect` and `idle` are the transport's own time limits, in seconds (None: none).

    `idle` bounds every wait for bytes: the response head, then each read of the body.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    content: bytes = b""
    stream: bool = False
    connect: float | None = None
    idle: float | None = None

    def __repr__(self) -> str:  # the headers hold the API key
        return f"Request({self.method!r}, {self.url!r})"


class Response(Protocol):
    """A response whose head has arrived. `headers` is case-insensitive."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes:
        """The next bytes of the body as they come off the connection, or b"" at its end.

        Raises `ReadError` if the connection breaks and `IdleTimeout` if nothing arrives within `idle`.
        """
        ...

    async def aclose(self) -> None:
        """Close the response at once, dropping its connection unless the body was read to its end.
        Idempotent."""
        ...

    async def release(self) -> None:
        """The stream ended (`[DONE]`): read what little may follow, briefly, so that the connection can go
        back to the pool, then close. Never waits long."""
        ...


class Transport(Protocol):
    """What `AsyncClient` sends requests through."""

    async def send(self, request: Request) -> Response:
        """Send the request and wait for the response head, never following a redirect. Raises
        `ConnectError`, `ConnectTimeout`, `ReadError` (the server closed before answering) or
        `IdleTimeout`."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection. Idempotent."""
        ...


# How long `release` waits for the end of a body after `[DONE]`: the terminating chunk normally arrives with
# it or just after; a server that keeps sending costs its connection, never the caller's time.
DRAIN_SECONDS = 0.05
# How much `release` reads past `[DONE]` before it gives the connection up.
DRAIN_BYTES = 64 * 1024
