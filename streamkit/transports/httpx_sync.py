"""The synchronous transport of `streamkit.Client`: httpx's `Client`, with httpx-sse's request setup.

It runs no event loop and starts no thread: each read blocks on the socket. It shares the async httpx
transport's table of exceptions, its bounded inflation of gzip and deflate (`_Inflater`) and its cookie jar
that keeps none.

A blocking read cannot be cancelled, so a stream's own limits (its first token's deadline, the call's total)
bound each read from below: the connections come from a network backend of httpcore's (`_TimedBackend`) whose
streams take their read timeout from the stream that owns them, the idle limit or the time left before the
deadline, whichever is shorter, at every read. A read that the deadline cut short raises `DeadlineExpired`,
which the stream turns into its `FirstTokenTimeout` or `TotalTimeout`. Through a proxy (`HTTPS_PROXY`, ...),
whose connections are not the backend's, the deadline is checked before each read, and each read is bounded
by the idle limit alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from time import monotonic

import httpcore
import httpx
from httpx_sse import connect_sse

from streamkit.errors import ProtocolError, ReadError, StreamkitError
from streamkit.transports.base import DRAIN_BYTES, DRAIN_SECONDS, DeadlineExpired, Request
from streamkit.transports.httpx import (
    _BAD_LOCATION,
    _BROKEN,
    ACCEPT_ENCODING,
    _Inflater,
    _mapped,
    _NoCookies,
    _tls_context,
    _Trace,
)

__all__ = ["HttpxSyncResponse", "HttpxSyncTransport"]


class _TimedStream(httpcore.NetworkStream):
    """A connection whose reads, while a streamkit response owns it (`owned`), wait at most its `idle` limit
    or until its `deadline` (on `time.monotonic()`'s clock), whichever comes first; httpcore's own read
    timeout, fixed for the whole request, applies otherwise (the response head's wait)."""

    __slots__ = ("_stream", "deadline", "idle", "owned")

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        self.owned = False
        self.idle: float | None = None
        self.deadline: float | None = None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self.owned:
            timeout = self.idle
            deadline = self.deadline
            if deadline is not None:
                left = deadline - monotonic()
                if timeout is None or left < timeout:
                    if left <= 0:
                        raise DeadlineExpired
                    try:
                        return self._stream.read(max_bytes, left)
                    except httpcore.ReadTimeout:
                        raise DeadlineExpired from None
        return self._stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: object, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _TimedStream(self._stream.start_tls(ssl_context, server_hostname, timeout))  # type: ignore[arg-type]

    def get_extra_info(self, info: str) -> object:
        return self._stream.get_extra_info(info)


class _TimedBackend(httpcore.NetworkBackend):
    """httpcore's own blocking backend, its connections wrapped in `_TimedStream`."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return _TimedStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return _TimedStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _SyncTrace(_Trace):
    """`_Trace` for httpcore's blocking connections, which call it without awaiting."""

    __slots__ = ()

    def __call__(self, event: str, info: Mapping[str, object]) -> None:  # type: ignore[override]
        self.seen(event)


class HttpxSyncResponse:
    __slots__ = ("_closed", "_exit", "_inflater", "_raw", "_response", "_timed")

    def __init__(self, response: httpx.Response, exit: contextlib.ExitStack, idle: float | None) -> None:
        self._response = response
        self._exit = exit
        self._raw: Iterator[bytes] = response.iter_raw()
        self._inflater = _Inflater.of(response)
        self._closed = False
        stream = response.extensions.get("network_stream")
        self._timed = stream if isinstance(stream, _TimedStream) else None
        if self._timed is not None:
            self._timed.owned, self._timed.idle, self._timed.deadline = True, idle, None

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    def read(self, deadline: float | None = None) -> bytes:
        timed = self._timed
        if timed is not None:
            timed.deadline = deadline
        elif deadline is not None and monotonic() >= deadline:
            raise DeadlineExpired
        try:
            inflater = self._inflater
            if inflater is None:
                return next(self._raw)
            if inflater.refused is not None:
                raise ReadError(
                    f"the body could not be decoded: its Content-Encoding {inflater.refused!r} was not asked "
                    f"for (Accept-Encoding: {ACCEPT_ENCODING})"
                )
            while True:
                data = inflater.more()
                if data is None:
                    if inflater.ended:
                        return b""
                    try:
                        data = inflater.take(next(self._raw))
                    except StopIteration:
                        inflater.ended = True  # `more` now flushes each coding in turn
                        continue
                if data:
                    return data
        except StopIteration:
            return b""
        except (DeadlineExpired, StreamkitError):
            raise
        except Exception as exc:
            mapped = _mapped(exc)  # the head has arrived: any failure now is a broken read
            if mapped is None:
                raise
            raise mapped from exc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._timed is not None:  # the connection may go back to the pool: its next request's
                self._timed.owned = False
            self._exit.close()

    def release(self) -> None:
        drained = 0
        deadline = monotonic() + DRAIN_SECONDS
        with contextlib.suppress(StreamkitError, DeadlineExpired):
            while drained <= DRAIN_BYTES and (data := self.read(deadline)):
                drained += len(data)
        self.close()


class HttpxSyncTransport:
    """Sends requests with one pooled `httpx.Client`, with no cap on connections; a read blocks the calling
    thread only. Streams of several threads share the pool, which holds its lock only to hand a connection out
    or take it back, never while one is read."""

    def __init__(self, client: httpx.Client | None = None) -> None:
        self._owned = client is None
        if client is None:
            transport = httpx.HTTPTransport(verify=_tls_context())
            # The pool httpx would make, on the backend that lets a stream bound its reads (`_TimedStream`).
            transport._pool = httpcore.ConnectionPool(
                ssl_context=_tls_context(),
                max_connections=None,
                max_keepalive_connections=1000,
                keepalive_expiry=5.0,
                network_backend=_TimedBackend(),
            )
            client = httpx.Client(transport=transport, timeout=None, cookies=_NoCookies())
        self._client = client

    def send(self, request: Request, deadline: float | None = None) -> HttpxSyncResponse:
        connect, read = request.connect, request.idle
        if deadline is not None:
            left = deadline - monotonic()
            if left <= 0:
                raise DeadlineExpired
            connect = left if connect is None else min(connect, left)
            read = left if read is None else min(read, left)
        timeout = httpx.Timeout(None, connect=connect, pool=connect, read=read)
        headers = dict(request.headers)
        if not any(name.lower() == "accept-encoding" for name in headers):
            headers["Accept-Encoding"] = ACCEPT_ENCODING  # over the client's, which may ask for more
        stack = contextlib.ExitStack()
        trace = _SyncTrace()
        options: dict[str, object] = {
            "content": request.content,
            "headers": headers,
            "timeout": timeout,
            "follow_redirects": False,  # the client follows them (`SyncTransport`)
            "extensions": {"trace": trace},
        }
        try:
            if request.stream:
                source = stack.enter_context(
                    connect_sse(self._client, request.method, request.url, **options)
                )
                response = source.response
            else:
                response = stack.enter_context(
                    self._client.stream(request.method, request.url, **options)  # type: ignore[arg-type]
                )
        except Exception as exc:
            stack.close()
            if deadline is not None and isinstance(exc, httpx.TimeoutException) and monotonic() >= deadline:
                raise DeadlineExpired from exc
            if trace.answered and isinstance(exc, _BAD_LOCATION):
                raise ProtocolError(f"the server redirected to an invalid URL ({exc})") from exc
            mapped = _mapped(exc, request.url)
            if mapped is None:
                raise
            if not trace.connected and isinstance(exc, _BROKEN) and isinstance(mapped, ReadError):
                mapped.stale = True  # a pooled connection that the server had closed
            raise mapped from exc
        except BaseException:
            stack.close()
            raise
        return HttpxSyncResponse(response, stack, request.idle)

    def close(self) -> None:
        if self._owned:
            self._client.close()
