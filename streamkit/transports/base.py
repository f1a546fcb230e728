"""The transport interface: one request in, one response head out, then the body's bytes as they arrive.

A transport does the HTTP and nothing else. It turns every exception of its library into streamkit's tree
(`ConnectError`, `ConnectTimeout`, `ReadError`, `IdleTimeout`) in one table of its own, applied both where the
request is sent and where the body is read. Everything else (redirects, retries, deadlines, SSE, chunks,
errors from the API) lives above it, once for all transports.

A transport never follows a redirect: a 3xx comes back as any other answer. The client follows it, and decides
which headers go to the next origin (the libraries each keep some credentials across hosts).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from streamkit.errors import ConnectError, ReadError, StreamkitError

__all__ = [
    "BROKE",
    "CONNECT",
    "DeadlineExpired",
    "Request",
    "Response",
    "SyncResponse",
    "SyncTransport",
    "Transport",
    "mapped_error",
    "origin",
    "reason",
]


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


class DeadlineExpired(Exception):
    """A blocking read that a stream's deadline (its first token's, or the call's total) cut short. The stream
    raises its own `FirstTokenTimeout` or `TotalTimeout` in its place."""


class SyncResponse(Protocol):
    """A response whose head has arrived, read by blocking: `Response` for synchronous code."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def read(self, deadline: float | None = None) -> bytes:
        """The next bytes of the body as they come off the connection, or b"" at its end. `deadline`, on
        `time.monotonic()`'s clock, bounds the wait as well as `idle` does.

        Raises `ReadError` if the connection breaks, `IdleTimeout` if nothing arrives within `idle`, and
        `DeadlineExpired` if nothing arrives before `deadline`.
        """
        ...

    def close(self) -> None:
        """Close the response at once, dropping its connection unless the body was read to its end.
        Idempotent."""
        ...

    def release(self) -> None:
        """The stream ended: read what little may follow, briefly, so that the connection can go back to the
        pool, then close. Never waits long."""
        ...


class SyncTransport(Protocol):
    """What `streamkit.Client` sends requests through."""

    def send(self, request: Request, deadline: float | None = None) -> SyncResponse:
        """Send the request and wait for the response head, never following a redirect, within `deadline`
        (on `time.monotonic()`'s clock) as well as the request's own limits. Raises `ConnectError`,
        `ConnectTimeout`, `ReadError`, `IdleTimeout` or `DeadlineExpired`."""
        ...

    def close(self) -> None:
        """Close every pooled connection. Idempotent."""
        ...


# How long `release` waits for the end of a body after `[DONE]`: the terminating chunk normally arrives with
# it or just after; a server that keeps sending costs its connection, never the caller's time.
DRAIN_SECONDS = 0.05
# How much `release` reads past `[DONE]` before it gives the connection up.
DRAIN_BYTES = 64 * 1024


def origin(url: str) -> str:
    """The scheme, host and port of `url`, as an error names where it could not connect (never its path or
    query, which may hold a key, nor its user info)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "the URL"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + ("" if port is None else f":{port}")


def reason(exc: BaseException) -> str | None:
    """What went wrong at the socket under a library's exception, in a few words (`connection refused`), or
    None where its chain holds no such cause. The libraries' own texts name what they tried (aiohttp's
    "ssl:default" on an http URL, httpx's "All connection attempts failed"), not what happened."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and all(cause is not seen for seen in chain):
        chain.append(cause)
        cause = getattr(cause, "os_error", None) or cause.__cause__ or cause.__context__
    for cause in chain:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "the connection was reset"
        if isinstance(cause, socket.gaierror):
            return "the host name could not be resolved"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"the server's TLS certificate was not trusted ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({cause.reason or cause})"
        if isinstance(cause, TimeoutError):
            return "timed out"
    for cause in reversed(chain):
        if isinstance(cause, OSError) and cause.errno is not None and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
    return None


# The phrases of the transports' tables that `mapped_error` words anew.
BROKE = "the connection broke"
CONNECT = "could not connect"


def mapped_error(
    ours: type[StreamkitError], what: str, detail: str, exc: BaseException, url: str | None
) -> StreamkitError:
    """streamkit's error for one of a library's, in streamkit's words: `ours` and `what` from the transport's
    table, `detail` the library's text. `url` is the request's while it is sent, None once its head has
    arrived, where any failure is a broken read. The socket's own reason, where the chain has one, goes in
    `reason` and takes the place of the library's text; the exception itself stays the `__cause__`."""
    why = reason(exc)
    if url is None and (ours is ConnectError or what == BROKE):
        message = f"{BROKE} mid-answer: {why}" if why else "the server closed the connection mid-answer"
        ours = ReadError
    elif what == CONNECT and url is not None:
        message = f"{CONNECT} to {origin(url)}: {why or detail}"
    else:
        message = f"{what}: {why or detail}"
    error = ours(message)
    if isinstance(error, ConnectError | ReadError):
        error.reason = why
    return error
