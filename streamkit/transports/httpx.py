"""The httpx transport, built on httpx-sse's request setup; it runs on asyncio and on trio.

Streamed requests are opened with `httpx_sse.aconnect_sse`, which sets `Accept: text/event-stream` and
`Cache-Control: no-store`. The body's raw bytes then go to streamkit's own `SSEDecoder`, not to
httpx-sse's, which departs from the SSE rules: it keeps a leading BOM (so the first event is lost), dispatches
an event whose data buffer is empty (`event: x` or `id: 5` then a blank line), accepts `retry` values that
are not only ASCII digits (`+5`), and decodes with the response's charset rather than always UTF-8.

`Request.idle` becomes httpx's `read` limit, and `Request.connect` its `connect` and `pool` limits.

A compressed body is undone here, not by httpx, which inflates each read whole: gzip and deflate grow up to a
thousandfold, so one 64 KiB read of a gzip bomb would be 64 MiB at once. `_Inflater` hands on at most
`INFLATE_LIMIT` bytes per read and keeps the rest compressed until the next, so the SSE decoder's event bound
stops a bomb at a cost of a few MiB past it, as on aiohttp. The requests ask for gzip and deflate alone, and a
body in another coding that httpx would decode in one piece (`br`, `zstd`) is refused with a `ReadError`.

No cookies are kept: the transport's own client has a jar that stores none, so that no answer carries state
into the next request. A client given by the caller keeps its own jar, as the caller set it up.
"""

from __future__ import annotations

import contextlib
import functools
import http.cookiejar
import ssl
import zlib
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
from streamkit.transports.base import BROKE, CONNECT, DRAIN_BYTES, DRAIN_SECONDS, Request, mapped_error

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
    (httpx.ConnectError, ConnectError, CONNECT),
    (httpx.RemoteProtocolError, ReadError, BROKE),
    (httpx.ReadError, ReadError, BROKE),
    (httpx.WriteError, ReadError, "the connection broke while the request was sent"),
    # A body whose Content-Encoding lies (a gzip header on bytes that are not gzip): broken as a body
    # with a bad chunk size is, and so a `ReadError`, as aiohttp's ClientPayloadError is.
    (httpx.DecodingError, ReadError, "the body could not be decoded"),
    (zlib.error, ReadError, "the body could not be decoded"),  # from `_Inflater`
    # UnsupportedProtocol (a base_url of ftp://, say), LocalProtocolError, ProxyError.
    (httpx.TransportError, ConnectError, "the request failed"),
    (httpx.InvalidURL, ConnectError, "invalid URL"),  # not an httpx.HTTPError
)


# The most bytes one read hands on from a compressed body: aiohttp's read size, which it inflates by too.
INFLATE_LIMIT = 64 * 1024
# The codings `_Inflater` undoes, which the requests ask for; httpx's default would add `br` and `zstd` where
# their packages are installed.
ACCEPT_ENCODING = "gzip, deflate"
# Codings httpx decodes (with their packages) but only a whole read at a time: refused, not passed on as they
# came, which would hand the SSE decoder compressed bytes. Any other coding httpx passes on as it came.
REFUSED_CODINGS = frozenset({"br", "zstd"})


class _Inflate:
    """One gzip or deflate coding undone, at most `INFLATE_LIMIT` bytes at a time: what an input inflates to
    beyond that waits, still compressed, for the next call."""

    __slots__ = ("_first", "_zlib", "pending")

    def __init__(self, coding: str) -> None:
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16 if coding == "gzip" else zlib.MAX_WBITS)
        self._first = coding == "deflate"  # the first byte of a `deflate` body is yet to come
        # The last output stopped at the limit: the input already taken may have more to give, from
        # `unconsumed_tail` or from inside zlib (a copy cut short, bits not yet decoded) where it took all the
        # input. Left there, that would wait for the next network read: an event would too.
        self.pending = False

    def inflate(self, data: bytes) -> bytes:
        """The next bytes from `data` (or, given none, from what is `pending`). Raises `zlib.error`."""
        if self._first:
            self._first = False
            # `deflate` is zlib's format, whose first byte names deflate (8) in its low four bits; some
            # servers send raw deflate, whose first byte never does. Taken as raw then, as aiohttp does.
            if data[0] & 0x0F != 8:
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
        inflater = self._zlib
        # What follows the compressed stream is ignored, as httpx does; zlib would keep it all, joined again
        # at every read, in `unused_data`.
        out = b"" if inflater.eof else inflater.decompress(data or inflater.unconsumed_tail, INFLATE_LIMIT)
        self.pending = len(out) == INFLATE_LIMIT
        return out

    def flush(self) -> bytes:
        """What is left once the input has ended and nothing is pending: no more than a window's worth."""
        return self._zlib.flush()


class _Inflater:
    """A body's codings undone, in the reverse of the order they were applied, so that each read gives at most
    `INFLATE_LIMIT` bytes however much its input inflates to: a coding with input pending gives its next piece
    before any new input is taken, the last such coding first."""

    __slots__ = ("_flushed", "_stages", "ended", "refused")

    def __init__(self, codings: list[str], refused: str | None) -> None:
        self._stages = [_Inflate(c) for c in codings]
        self.refused = refused  # a coding that is not undone, and fails the body
        self.ended = False  # the input has ended
        self._flushed = 0  # how many codings are flushed, after the end of the input

    @classmethod
    def of(cls, response: httpx.Response) -> _Inflater | None:
        """What undoes the response's Content-Encoding; None where there is nothing to undo (`identity`,
        or a coding httpx does not know either, which is passed on as it came, as httpx does)."""
        if "content-encoding" not in response.headers:
            return None
        applied = response.headers.get_list("content-encoding", split_commas=True)
        codings = [c.strip().lower() for c in reversed(applied)]
        refused = next((c for c in codings if c in REFUSED_CODINGS), None)
        codings = [c for c in codings if c in ("gzip", "deflate")]
        return cls(codings, refused) if codings or refused else None

    def take(self, data: bytes) -> bytes:
        """The first bytes that new input gives (b"" when it gives none yet)."""
        return self._through(0, data)

    def more(self) -> bytes | None:
        """The next bytes that input already taken gives, or None where it needs more input (or, once
        `ended`, has given all)."""
        stages = self._stages
        for i in range(len(stages) - 1, -1, -1):
            if stages[i].pending:
                return self._through(i + 1, stages[i].inflate(b""))
        if self.ended and self._flushed < len(stages):
            self._flushed += 1
            return self._through(self._flushed, stages[self._flushed - 1].flush())
        return None

    def _through(self, start: int, data: bytes) -> bytes:
        for stage in self._stages[start:]:
            if not data:
                break
            data = stage.inflate(data)
        return data


class _NoCookies(http.cookiejar.CookieJar):
    """A cookie jar that keeps none: an API client must not carry state from one answer into the next
    request."""

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        pass


def _mapped(exc: Exception, url: str | None = None) -> StreamkitError | None:
    """streamkit's exception for one of httpx's, or None for an exception that is not httpx's; `url` is the
    request's while it is sent, None once the head has arrived (`mapped_error`)."""
    for foreign, ours, what in _MAPPING:
        if isinstance(exc, foreign):
            return mapped_error(ours, what, str(exc) or type(exc).__name__, exc, url)
    return None


class HttpxResponse:
    __slots__ = ("_closed", "_exit", "_inflater", "_raw", "_response")

    def __init__(self, response: httpx.Response, exit: contextlib.AsyncExitStack) -> None:
        self._response = response
        self._exit = exit
        # The body's raw bytes, its Content-Encoding undone here (`_Inflater`), a bounded piece at a time.
        # Read from `aiter_raw` rather than `aiter_bytes` also so that a body that fails to decode (a lying
        # gzip header) leaves the chain of generators under it in our hands, for `aclose` to finish: trio
        # warns about any the garbage collector finds suspended.
        self._raw: AsyncIterator[bytes] = response.aiter_raw()
        self._inflater = _Inflater.of(response)
        self._closed = False

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        try:
            inflater = self._inflater
            if inflater is None:
                return await self._raw.__anext__()
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
                        data = inflater.take(await self._raw.__anext__())
                    except StopAsyncIteration:
                        inflater.ended = True  # `more` now flushes each coding in turn
                        continue
                if data:
                    return data
        except StopAsyncIteration:
            return b""
        except Exception as exc:
            mapped = _mapped(exc)  # the head has arrived: any failure now is a broken read
            if mapped is None:
                raise
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
        self.seen(event)

    def seen(self, event: str) -> None:
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
            cookies=_NoCookies(),
        )

    async def send(self, request: Request) -> HttpxResponse:
        timeout = httpx.Timeout(None, connect=request.connect, pool=request.connect, read=request.idle)
        headers = dict(request.headers)
        if not any(name.lower() == "accept-encoding" for name in headers):
            headers["Accept-Encoding"] = ACCEPT_ENCODING  # over the client's, which may ask for more
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
                        headers=headers,
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
                        headers=headers,
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
            mapped = _mapped(exc, request.url)
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
