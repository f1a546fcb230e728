"""Whatever a server sends, a call ends within its time limits with the right answer or a `StreamkitError`
that says what happened (with `.partial` once the response started); nothing foreign escapes, nothing hangs,
and no connection, socket or task is left behind.

Each case is a script for the hostile server (`tests/hostile.py`) with the outcome expected of a streamed call
and, where it makes sense, of a whole one (`stream=False`), on every (event loop, transport) of conftest.py.
Before a 2xx head, a broken connection is retried (DESIGN.md), so those cases also check how many requests
the server saw.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import anyio
import pytest

import streamkit
from tests.client.conftest import HI
from tests.hostile import (
    Close,
    HalfClose,
    HostileServer,
    Pause,
    Repeat,
    Reset,
    Script,
    Send,
    Stall,
    Step,
    chunk,
    chunked,
    head,
    no_leaks,
    open_sockets,
    sse_event,
    wait_for,
)

pytestmark = pytest.mark.anyio

# Small limits, so that a hang shows as a timeout error; the guard around each call is far larger, so that a
# call that ignores them fails the test instead of blocking it.
LIMITS = streamkit.Timeout(connect=2, idle=1, total=5)
STALL_LIMITS = streamkit.Timeout(connect=2, idle=0.2, total=5)
GUARD = 30.0
RETRIED = 3  # attempts with max_retries=2


HEL = sse_event("Hel", role="assistant")
EVENTS = [HEL, sse_event("lo"), sse_event(finish="stop"), b"data: [DONE]\n\n"]
WHOLE = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}
        ],
    }
).encode()

SSE = "Content-Type: text/event-stream"
CHUNKED = "Transfer-Encoding: chunked"
SSE_HEAD = head("200 OK", SSE, CHUNKED)
SSE_HEAD_UNTIL_CLOSE = head("200 OK", SSE, "Connection: close")  # no length: the body ends at the close
JSON_HEAD = head("200 OK", "Content-Type: application/json", f"Content-Length: {len(WHOLE)}")
DEEP = b"[" * 100_000 + b"]" * 100_000


def sse(*events: bytes) -> Script:
    """A chunked event stream of these events, on a connection kept alive."""
    return Script([Send(SSE_HEAD + chunked(*events))])


def status(line: str, *headers: str, body: bytes = b"{}") -> Script:
    return Script([Send(head(line, *headers, f"Content-Length: {len(body)}") + body)])


@dataclass(frozen=True)
class Ok:
    """The call succeeds with this content."""

    content: str


@dataclass(frozen=True)
class Fails:
    """The call raises exactly `error` (not a subclass), with a `.partial` whose content is `partial` (""
    for a partial with no choices yet) or no partial (None, before the response started), after `attempts`
    requests (or at most `at_most`)."""

    error: type[streamkit.StreamkitError]
    partial: str | None = None
    check_partial: bool = True
    exact: bool = True  # False: `error` or a subclass
    attempts: int | None = None
    at_most: int | None = None
    check: Callable[[streamkit.StreamkitError], bool] | None = None


Expected = Ok | Fails


@dataclass(frozen=True, repr=False)
class Case:
    id: str
    script: Script | Callable[[str], Script]  # a callable gets the script's name (for a redirect to itself)
    stream: Expected
    whole: Expected | None = None  # stream=False; None: not tried
    limits: streamkit.Timeout = LIMITS
    xfail: str | None = None

    def __repr__(self) -> str:  # short, for the tracebacks of failed tests: some scripts send megabytes
        return f"Case({self.id!r})"


def after_pause(*steps: Step) -> list[Step]:
    """The head and the first event, then (once the client surely has them) `steps`."""
    return [Send(SSE_HEAD + chunk(HEL)), Pause(0.1), *steps]


def bounded(limit: int) -> Callable[[streamkit.StreamkitError], bool]:
    def check(error: streamkit.StreamkitError) -> bool:
        return len(error.message) <= limit

    return check


def body_is(expected: object) -> Callable[[streamkit.StreamkitError], bool]:
    def check(error: streamkit.StreamkitError) -> bool:
        return (
            isinstance(error, streamkit.APIError) and error.body == expected and "HTTP 400" in error.message
        )

    return check


def status_is(code: int) -> Callable[[streamkit.StreamkitError], bool]:
    def check(error: streamkit.StreamkitError) -> bool:
        return isinstance(error, streamkit.APIStatusError) and error.status_code == code

    return check


def raw_is(expected: str) -> Callable[[streamkit.StreamkitError], bool]:
    def check(error: streamkit.StreamkitError) -> bool:
        return isinstance(error, streamkit.ChunkDecodeError) and error.raw == expected

    return check


def redirect_loop(name: str) -> Script:
    location = f"Location: /case/{name}/v1/chat/completions"
    return Script([Send(head("307 Temporary Redirect", location, "Content-Length: 0"))])


def retry_after(header: str) -> Script:
    return status("429 Too Many Requests", header)


def many_data_lines(total: int) -> bytes:
    line = b"data: " + b"x" * 1000 + b"\n"
    return line * (total // len(line) + 1)


HTML_10MB = b"<!DOCTYPE html><html><body>" + b"x" * 10_000_000 + b"</body></html>"
RANDOM = random.Random(12).randbytes(64 * 1024)
CLIENT_PY = "client.py"

CASES = [
    # Broken status lines, and bytes that are not HTTP at all: the connection broke before the head.
    *(
        Case(f"status-line-{i}", Script([Send(line), Close()]), Fails(streamkit.ReadError, attempts=RETRIED))
        for i, line in enumerate(
            [
                b"HTTP/1.1 OK\r\n\r\n",
                b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 42 Too short\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nno colon in this header\r\n\r\n",
                b"HTTP/1.1 200 OK\r\n",  # the head never ends
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            ]
        )
    ),
    Case(
        "non-http",
        Script([Send(b"SSH-2.0-OpenSSH_9.6\r\n"), Close()]),
        Fails(streamkit.ReadError, attempts=RETRIED),
    ),
    Case(
        "non-http-then-stall",
        Script([Send(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"), Stall()]),
        Fails(streamkit.ReadError, attempts=RETRIED),
    ),
    Case("close-before-head", Script([Close()]), Fails(streamkit.ReadError, attempts=RETRIED)),
    Case("reset-before-head", Script([Reset()]), Fails(streamkit.ReadError, attempts=RETRIED)),
    # A head, then the connection closes.
    Case(
        "head-then-close-chunked",
        Script([Send(SSE_HEAD), Close()]),
        Fails(streamkit.ReadError, partial="", attempts=1),
        whole=Fails(streamkit.ReadError, attempts=1),
    ),
    Case(
        "head-then-close-until-close",  # an empty body is an incomplete stream
        Script([Send(SSE_HEAD_UNTIL_CLOSE), Close()]),
        Fails(streamkit.IncompleteStreamError, partial="", attempts=1),
        whole=Fails(streamkit.ChunkDecodeError, attempts=1),
    ),
    Case(
        "head-then-reset",
        Script([Send(SSE_HEAD), Pause(0.05), Reset()]),
        Fails(streamkit.ReadError, partial="", attempts=1),
    ),
    # Chunked encoding that breaks.
    Case(
        "bad-chunk-size",
        Script(after_pause(Send(b"zz\r\n" + sse_event("lo") + b"\r\n"), Close())),
        Fails(streamkit.ReadError, partial="Hel", attempts=1),
        whole=Fails(streamkit.ReadError),
    ),
    Case(
        "negative-chunk-size",
        Script(after_pause(Send(b"-5\r\nxx\r\n"), Stall())),
        Fails(streamkit.ReadError, partial="Hel", attempts=1),
    ),
    Case(
        # In the head's own packet aiohttp fails before it returns the head, so the request is retried: no
        # chunk ever reached the user, and no 2xx head the client, so DESIGN.md's rule holds.
        "bad-chunk-size-with-the-head",
        Script([Send(SSE_HEAD + b"zz\r\n\r\n"), Close()]),
        Fails(streamkit.ReadError, check_partial=False),
    ),
    Case(
        "short-chunk-then-close",
        Script(after_pause(Send(b"400\r\n" + sse_event("lo")), Close())),
        Fails(streamkit.ReadError, partial="Hello", attempts=1),
    ),
    Case(
        "short-chunk-then-stall",
        Script(after_pause(Send(b"400\r\n" + sse_event("lo")), Stall())),
        Fails(streamkit.IdleTimeout, partial="Hello", attempts=1),
        limits=STALL_LIMITS,
    ),
    Case(
        "short-content-length",
        Script([Send(head("200 OK", SSE, "Content-Length: 5000") + HEL), Pause(0.05), Close()]),
        Fails(streamkit.ReadError, partial="Hel", attempts=1),
        whole=Fails(streamkit.ReadError, attempts=1),
    ),
    Case(
        "header-200kb",
        Script([Send(head("200 OK", SSE, "X-Big: " + "a" * 200_000, CHUNKED) + chunked(*EVENTS))]),
        Fails(streamkit.ReadError, attempts=RETRIED),
    ),
    # Bodies that are not what they claim.
    Case(
        "random-binary-body",
        Script([Send(SSE_HEAD_UNTIL_CLOSE + RANDOM), Close()]),
        Fails(streamkit.IncompleteStreamError, partial="", attempts=1),
        whole=Fails(streamkit.ChunkDecodeError, attempts=1),
    ),
    Case(
        "lying-content-encoding",
        Script([Send(head("200 OK", SSE, "Content-Encoding: gzip", CHUNKED) + chunked(*EVENTS))]),
        Fails(streamkit.ReadError, partial="", attempts=1),
        whole=Fails(streamkit.ReadError, attempts=1),
    ),
    Case(
        "html-200",
        Script(
            [
                Send(
                    head("200 OK", "Content-Type: text/html", "Content-Length: 20")
                    + b"<html>hello</html>\r\n"
                )
            ]
        ),
        Fails(streamkit.UnexpectedContentType, attempts=1),
        whole=Fails(streamkit.ChunkDecodeError, attempts=1),
    ),
    # Events that are not chunks.
    *(
        Case(
            f"wrong-json-types-{i}",
            sse(HEL, b"data: " + data + b"\n\n", *EVENTS[1:]),
            Fails(streamkit.ChunkDecodeError, partial="Hel", attempts=1, check=raw_is(data.decode())),
        )
        for i, data in enumerate(
            [
                b'{"choices": "x"}',
                b'{"choices": [{"index": "0", "delta": {}}]}',
                b'{"choices": [{"index": 0, "delta": {"content": 5}}]}',
                b'{"choices": [], "usage": "lots"}',
                b"[1, 2]",
                b'"text"',
                b"null",
            ]
        )
    ),
    Case(
        "json-100000-deep",
        sse(HEL, b"data: " + DEEP + b"\n\n", *EVENTS[1:]),
        Fails(streamkit.ChunkDecodeError, partial="Hel", attempts=1),
    ),
    Case(
        "json-100000-deep-in-an-unknown-field",
        sse(HEL, b'data: {"choices": [], "x": ' + DEEP + b"}\n\n", *EVENTS[1:]),
        Fails(streamkit.ChunkDecodeError, partial="Hel", attempts=1),
    ),
    Case(
        "json-100000-deep-in-an-error-event",
        sse(HEL, b"event: error\ndata: " + DEEP + b"\n\n", *EVENTS[1:]),
        Fails(streamkit.StreamAPIError, partial="Hel", attempts=1),
    ),
    Case(
        "json-100000-deep-error-body",
        status("400 Bad Request", "Content-Type: application/json", body=DEEP),
        Fails(streamkit.BadRequestError, attempts=1),
        whole=Fails(streamkit.BadRequestError, attempts=1),
    ),
    Case(
        "nul-escaped-in-content",
        sse(HEL, sse_event("\x00"), *EVENTS[1:]),
        Ok("Hel\x00lo"),
    ),
    Case(
        "nul-raw-in-json",
        sse(HEL, sse_event("\x00").replace(b"\\u0000", b"\x00"), *EVENTS[1:]),
        Fails(streamkit.ChunkDecodeError, partial="Hel", attempts=1),
    ),
    Case(
        "nul-as-data",
        sse(HEL, b"data: \x00\n\n", *EVENTS[1:]),
        Fails(streamkit.ChunkDecodeError, partial="Hel", attempts=1, check=raw_is("\x00")),
    ),
    # Stalls.
    Case(
        "stall-before-head",
        Script([Stall()]),
        Fails(streamkit.IdleTimeout, attempts=1),
        whole=Fails(streamkit.IdleTimeout, attempts=1),
        limits=STALL_LIMITS,
    ),
    Case(
        "stall-after-head",
        Script([Send(SSE_HEAD), Stall()]),
        Fails(streamkit.IdleTimeout, partial="", attempts=1),
        whole=Fails(streamkit.IdleTimeout, attempts=1),
        limits=STALL_LIMITS,
    ),
    Case(
        "stall-after-a-token",
        Script([Send(SSE_HEAD + chunk(HEL)), Stall()]),
        Fails(streamkit.IdleTimeout, partial="Hel", attempts=1),
        limits=STALL_LIMITS,
    ),
    Case(
        "keep-alive-comments-forever-first-token",
        Script(
            [
                Send(SSE_HEAD + chunk(sse_event(role="assistant"))),
                Repeat((Send(chunk(b": ping\n\n")), Pause(0.05))),
            ]
        ),
        Fails(streamkit.FirstTokenTimeout, partial="", attempts=1),
        limits=streamkit.Timeout(connect=2, idle=1, first_token=0.3, total=5),
    ),
    Case(
        "keep-alive-comments-forever-total",
        Script([Send(SSE_HEAD), Repeat((Send(chunk(b": ping\n\n")), Pause(0.05)))]),
        Fails(streamkit.TotalTimeout, partial="", attempts=1),
        whole=Fails(streamkit.TotalTimeout, attempts=1),
        limits=streamkit.Timeout(connect=2, idle=1, total=0.5),
    ),
    Case(
        "pings-forever-first-token",
        Script([Send(SSE_HEAD), Repeat((Send(chunk(b"event: ping\ndata: {}\n\n")), Pause(0.05)))]),
        Fails(streamkit.FirstTokenTimeout, partial="", attempts=1),
        limits=streamkit.Timeout(connect=2, idle=1, first_token=0.3, total=5),
    ),
    Case(
        "event-line-20mib",
        Script([Send(SSE_HEAD_UNTIL_CLOSE + HEL + b"data: " + b"x" * (20 << 20) + b"\n\n"), Close()]),
        Fails(streamkit.SSEProtocolError, partial="Hel", attempts=1),
    ),
    Case(
        "event-20mib-of-short-lines",
        Script([Send(SSE_HEAD_UNTIL_CLOSE + HEL + many_data_lines(20 << 20) + b"\n"), Close()]),
        Fails(streamkit.SSEProtocolError, partial="Hel", attempts=1),
    ),
    # Retry-After values that are not a sane number of seconds: never a ValueError, never a long sleep. What
    # HTTP does not allow is ignored (ordinary backoff, then retried); a wait over the cap raises at once.
    *(
        Case(
            f"retry-after-{value}",
            retry_after(f"Retry-After: {value}"),
            Fails(streamkit.RateLimitError, attempts=attempts),
            whole=Fails(streamkit.RateLimitError, attempts=attempts) if value == "nan" else None,
        )
        for value, attempts in [
            ("nan", RETRIED),
            ("-5", RETRIED),  # a sign: not delay-seconds
            ("-inf", RETRIED),
            ("1e300", RETRIED),  # an exponent: not delay-seconds either
            ("1_0", RETRIED),  # float() reads 10 s
            ("inf", RETRIED),
            ("garbage", RETRIED),
            ("", RETRIED),
            ("100000000000", 1),  # valid, and over the cap
            ("120", 1),
            ("Fri, 31 Dec 9999 23:59:59 GMT", 1),
            ("Friday, 31-Dec-49 23:59:59 GMT", 1),  # rfc850-date: 2049
            ("Fri Dec 31 23:59:59 9999", 1),  # asctime-date
            ("Mon, 01 Jan 0001 00:00:00 GMT", RETRIED),  # in the past: no wait
            ("Friday, 31-Dec-99 23:59:59 GMT", RETRIED),  # 1999: 2099 would be more than 50 years ahead
        ]
    ),
    *(
        Case(
            f"retry-after-ms-{value}",
            retry_after(f"retry-after-ms: {value}"),
            Fails(streamkit.RateLimitError, attempts=attempts),
        )
        for value, attempts in [
            ("nan", RETRIED),
            ("-1", RETRIED),
            ("1e400", RETRIED),
            ("120000", 1),
        ]
    ),
    # An invalid retry-after-ms gives way to Retry-After, here over the cap: raised at once.
    Case(
        "retry-after-ms-invalid-then-retry-after",
        status("429 Too Many Requests", "retry-after-ms: -1", "Retry-After: 120"),
        Fails(streamkit.RateLimitError, attempts=1),
    ),
    # Statuses.
    Case(
        "redirect-loop",  # not retried: a loop would only loop again
        redirect_loop,
        Fails(streamkit.ProtocolError, at_most=21),
        whole=Fails(streamkit.ProtocolError, at_most=21),
    ),
    # A Location that is not an http(s) URL: the server's mistake, not retried (the client follows redirects).
    Case(
        "redirect-to-ftp",
        status("307 Temporary Redirect", "Location: ftp://127.0.0.1/x"),
        Fails(streamkit.ProtocolError, attempts=1),
        whole=Fails(streamkit.ProtocolError, attempts=1),
    ),
    Case(
        "redirect-to-an-invalid-url",
        status("307 Temporary Redirect", "Location: http://[::1/x"),
        Fails(streamkit.ProtocolError, attempts=1),
        whole=Fails(streamkit.ProtocolError, attempts=1),
    ),
    Case(
        "switching-protocols-unasked",
        Script(
            [
                Send(
                    head("101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade")
                    + b"\x81\x02hi"
                ),
                Stall(),
            ]
        ),
        Fails(streamkit.ReadError, attempts=RETRIED),
        whole=Fails(streamkit.ReadError, attempts=RETRIED),
    ),
    Case(
        "html-500-of-10mb",
        status("500 Internal Server Error", "Content-Type: text/html", body=HTML_10MB),
        Fails(streamkit.InternalServerError, attempts=RETRIED, check=bounded(2048)),
        whole=Fails(streamkit.InternalServerError, attempts=RETRIED, check=bounded(2048)),
    ),
    *(
        Case(
            f"json-error-body-{name}",
            status("400 Bad Request", "Content-Type: application/json", body=body),
            Fails(streamkit.BadRequestError, attempts=1, check=body_is(value)),
            whole=Fails(streamkit.BadRequestError, attempts=1, check=body_is(value)),
        )
        for name, body, value in [
            ("list", b"[1,2]", [1, 2]),
            ("string", b'"text"', "text"),
            ("null", b"null", None),
        ]
    ),
    Case(
        "status-999",  # an APIStatusError; whether it is a server error is the next test's question
        status("999 Unheard Of"),
        Fails(streamkit.APIStatusError, exact=False, check=status_is(999)),
    ),
    Case(
        "status-999-is-not-a-server-error",
        status("999 Unheard Of"),
        Fails(streamkit.APIStatusError, attempts=1),
    ),
    # Legitimate answers that must succeed.
    Case(
        "charset-utf-16-is-ignored",
        Script([Send(head("200 OK", f"{SSE}; charset=utf-16", CHUNKED) + chunked(*EVENTS))]),
        Ok("Hello"),
    ),
    Case(
        "chunk-extensions-and-trailers",
        Script(
            [
                Send(
                    SSE_HEAD
                    + b"".join(b"%x;name=value;flag\r\n%s\r\n" % (len(e), e) for e in EVENTS)
                    + b"0;last=1\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n"
                )
            ]
        ),
        Ok("Hello"),
    ),
    Case(
        "http-1.0-until-close",
        Script([Send(head("200 OK", SSE, version="HTTP/1.0") + b"".join(EVENTS)), Close()]),
        Ok("Hello"),
    ),
    Case(
        "http-1.1-until-close-in-pieces",
        Script(
            [
                Send(SSE_HEAD_UNTIL_CLOSE),
                *(Send(bytes([b])) for b in b"".join(EVENTS)[:300]),
                Send(b"".join(EVENTS)[300:]),
                Close(),
            ]
        ),
        Ok("Hello"),
    ),
    Case(
        "reset-right-after-done",
        Script([Send(SSE_HEAD + b"".join(chunk(e) for e in EVENTS)), Reset()]),
        Ok("Hello"),
    ),
    Case("half-close-after-the-body", Script([Send(SSE_HEAD + chunked(*EVENTS)), HalfClose()]), Ok("Hello")),
]

WHOLE_OK = [
    Case(
        "whole-until-close",
        Script([Send(head("200 OK", "Content-Type: application/json", version="HTTP/1.0") + WHOLE), Close()]),
        Ok("Hello"),
        whole=Ok("Hello"),
    ),
    Case(
        "whole-chunk-extensions-and-trailers",
        Script(
            [
                Send(
                    head("200 OK", "Content-Type: application/json", CHUNKED)
                    + b"%x;a=b\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n" % (len(WHOLE), WHOLE)
                )
            ]
        ),
        Ok("Hello"),
        whole=Ok("Hello"),
    ),
    Case(
        "whole-charset-utf-16-is-ignored",
        Script(
            [
                Send(
                    head(
                        "200 OK",
                        "Content-Type: application/json; charset=utf-16",
                        f"Content-Length: {len(WHOLE)}",
                    )
                    + WHOLE
                )
            ]
        ),
        Ok("Hello"),
        whole=Ok("Hello"),
    ),
    Case(
        "whole-reset-after-the-body",
        Script([Send(JSON_HEAD + WHOLE), Pause(0.05), Reset()]),
        Ok("Hello"),
        whole=Ok("Hello"),
    ),
]


def params(cases: Sequence[Case], whole: bool) -> list[object]:
    return [
        pytest.param(
            case,
            id=case.id,
            marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else [],
        )
        for case in cases
        if not whole or case.whole is not None
    ]


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streamkit.client.BACKOFF_START", 0.01, raising=False)


@pytest.fixture(autouse=True)
async def nothing_left(hostile_server: HostileServer, anyio_backend_name: str) -> AsyncIterator[None]:
    """After each test: the server saw every connection closed, and no socket or asyncio task is left."""
    async with no_leaks(hostile_server, anyio_backend_name):
        yield


async def call(client: streamkit.AsyncClient, stream: bool) -> streamkit.ChatCompletion:
    """One call, its stream consumed chunk by chunk."""
    if not stream:
        return await client.chat.completions.create(model="m", messages=HI)
    answer = await client.chat.completions.create(model="m", messages=HI, stream=True)
    async with answer:
        async for _ in answer:
            pass
    return await answer.get_final_completion()


def content_of(completion: object) -> str:
    assert isinstance(completion, streamkit.ChatCompletion)
    return (completion.choices[0].message.content or "") if completion.choices else ""


async def play(server: HostileServer, case: Case, transport: str, stream: bool) -> None:
    expected = case.stream if stream else case.whole
    assert expected is not None
    name = uuid.uuid4().hex
    script = case.script(name) if callable(case.script) else case.script
    base_url = server.add(script, name)
    with anyio.fail_after(GUARD):
        async with streamkit.AsyncClient(
            base_url=base_url,
            api_key="sk-test",
            transport=transport,  # type: ignore[arg-type]
            timeout=case.limits,
            max_retries=2,
        ) as client:
            if isinstance(expected, Ok):
                assert content_of(await call(client, stream)) == expected.content
            else:
                with pytest.raises(streamkit.StreamkitError) as caught:
                    await call(client, stream)
                error = caught.value
                if expected.exact:
                    assert type(error) is expected.error, repr(error)
                else:
                    assert isinstance(error, expected.error), repr(error)
                if expected.check_partial:
                    if expected.partial is None or not stream:
                        assert error.partial is None
                    else:
                        assert error.partial is not None, repr(error)
                        assert content_of(error.partial) == expected.partial
                if expected.check is not None:
                    assert expected.check(error), repr(error)
    if isinstance(expected, Fails):
        if expected.attempts is not None:
            assert server.requests[name] == expected.attempts
        if expected.at_most is not None:
            assert 1 <= server.requests[name] <= expected.at_most


@pytest.mark.parametrize("hostile", params(CASES, whole=False))
async def test_stream(hostile_server: HostileServer, transport: str, hostile: Case) -> None:
    await play(hostile_server, hostile, transport, stream=True)


@pytest.mark.parametrize("hostile", params([*CASES, *WHOLE_OK], whole=True))
async def test_whole(hostile_server: HostileServer, transport: str, hostile: Case) -> None:
    await play(hostile_server, hostile, transport, stream=False)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_server_leaves_no_thread_and_no_socket_behind() -> None:
    """A server of its own, left while a connection stalls: leaving it closes that connection and ends its
    thread."""
    sockets = open_sockets()
    with socket.socket() as client:
        with HostileServer() as server:
            path = server.add(Script([Stall()]), "stall").partition(f":{server.port}")[2]
            client.connect((server.host, server.port))
            client.sendall(f"POST {path}/chat/completions HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode())
            assert await wait_for(lambda: server.requests["stall"] == 1)
        assert server.thread is not None and not server.thread.is_alive()
        assert server.open == 0
        client.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert client.recv(1) == b""  # the server's end is closed
    assert open_sockets() <= sockets
