"""What a hostile server can make the client hold, on every (event loop, transport): a compressed body
inflates a bounded piece per read, so a gzip bomb costs the SSE event bound and a few MiB; and no cookie it
sets is sent back."""

from __future__ import annotations

import itertools
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit
from streamkit.sse import DEFAULT_MAX_EVENT_SIZE
from streamkit.transports.base import Request, Transport
from streamkit.transports.httpx import ACCEPT_ENCODING, INFLATE_LIMIT, HttpxTransport
from tests.client.conftest import HI
from tests.client.webapp import serving

pytestmark = pytest.mark.anyio

MiB = 1 << 20


def zeros_compressed(mib: int, coding: str) -> bytes:
    """`data: ` then `mib` MiB of zeros (an event line that never ends), compressed, in a moment: after a
    full flush a compressor starts afresh, so each further MiB compresses to the same bytes, made once. The
    stream has no end: the client must stop long before it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31 if coding == "gzip" else 15)
    zeros = bytes(MiB)
    head = compressor.compress(b"data: " + zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    return head + again * (mib - 1)


def gzipped(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


# Each body inflates to 1 GiB of zeros (twice gzipped: first 1 GiB, then what that is, again).
BOMBS: dict[str, Callable[[], bytes]] = {
    "gzip": lambda: zeros_compressed(1024, "gzip"),
    "deflate": lambda: zeros_compressed(1024, "deflate"),
    "gzip, gzip": lambda: gzipped(zeros_compressed(1024, "gzip")),
}


CHUNK = b'{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}'
ANSWER = b"data: " + CHUNK + b"\n\ndata: [DONE]\n\n"


@pytest.fixture(scope="module")
def bomb_server() -> Iterator[str]:
    """A server whose chat stream is a compression bomb, in the Content-Encoding that the path names, sent in
    one write so that the client reads it as fast as its reads allow; at `/retry`, a stream that starts with
    a `retry:` of 5,000 digits."""
    bodies = {name: make() for name, make in BOMBS.items()}

    async def retry(request: web.Request) -> web.Response:
        body = b"retry: " + b"9" * 5000 + b"\n\n" + ANSWER
        return web.Response(body=body, headers={"Content-Type": "text/event-stream"})

    async def bomb(request: web.Request) -> web.StreamResponse:
        coding = request.match_info["coding"]
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Content-Encoding": coding}
        )
        await response.prepare(request)
        try:
            await response.write(bodies[coding])
            await response.write_eof()
        except ConnectionError:  # the client gave up on it, as it should
            pass
        return response

    app = web.Application()
    app.router.add_post("/retry/v1/chat/completions", retry)
    app.router.add_post("/{coding}/v1/chat/completions", bomb)
    with serving(("127.0.0.1", app)) as (port,):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("coding", BOMBS)
async def test_a_compression_bomb_costs_the_event_bound_and_a_few_mib(
    bomb_server: str, transport: Any, coding: str
) -> None:
    async with streamkit.AsyncClient(
        base_url=f"{bomb_server}/{coding}/v1", api_key="sk-test", transport=transport, max_retries=0
    ) as client:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            with pytest.raises(streamkit.StreamkitError) as caught:
                stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
                await stream.get_final_completion()
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
    # Undone without a bound per read, each 64 KiB read would be 64 MiB at once: about 140 MiB at the peak.
    assert peak < DEFAULT_MAX_EVENT_SIZE + 24 * MiB, f"{peak / MiB:.0f} MiB"
    # aiohttp undoes one coding only, and passes two on as they came: no event stream then.
    if transport == "httpx" or coding != "gzip, gzip":
        assert isinstance(caught.value, streamkit.SSEProtocolError)


async def test_a_retry_of_thousands_of_digits_is_no_error(bomb_server: str, transport: Any) -> None:
    async with streamkit.AsyncClient(
        base_url=f"{bomb_server}/retry/v1", api_key="sk-test", transport=transport
    ) as client:
        await talk(client, 1)


@pytest.fixture
def cookie_server() -> Iterator[tuple[str, list[str | None]]]:
    """A server that sets a cookie with every answer (a short chat stream), and records the Cookie header of
    each request."""
    received: list[str | None] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        received.append(request.headers.get("Cookie"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.set_cookie("session", f"s{len(received)}", path="/")
        await response.prepare(request)
        await response.write(ANSWER)
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    # On a host name: from an IP address, aiohttp's own jar keeps no cookie, and the test would prove nothing.
    with serving(("localhost", app)) as (port,):
        yield f"http://localhost:{port}/v1", received


async def talk(client: streamkit.AsyncClient, times: int) -> None:
    for _ in range(times):
        stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
        assert (await stream.get_final_completion()).choices[0].message.content == "hi"


async def test_no_cookie_is_sent_back(cookie_server: tuple[str, list[str | None]], transport: Any) -> None:
    base_url, received = cookie_server
    async with streamkit.AsyncClient(base_url=base_url, api_key="sk-test", transport=transport) as client:
        await talk(client, 3)
    assert received == [None, None, None]


async def test_a_cookie_jar_given_on_purpose_is_kept(
    cookie_server: tuple[str, list[str | None]], transport: Any
) -> None:
    base_url, received = cookie_server
    given: Transport
    if transport == "httpx":
        own = httpx.AsyncClient()
        given = HttpxTransport(own)
    else:
        import aiohttp

        from streamkit.transports.aiohttp import AiohttpTransport

        session = aiohttp.ClientSession()  # aiohttp's own jar, which keeps cookies
        given = AiohttpTransport(session)
    try:
        async with streamkit.AsyncClient(base_url=base_url, api_key="sk-test", transport=given) as client:
            await talk(client, 2)
    finally:
        await (own.aclose() if transport == "httpx" else session.close())
    assert received == [None, "session=s1"]


# The httpx transport's inflater, alone


def mock_transport(
    codings: str, pieces: list[bytes], asked: Callable[[int], None] = lambda k: None
) -> HttpxTransport:
    """A transport whose answer is `pieces`, one network read each, calling `asked(k)` when the transport asks
    for piece `k` (or, past the last, for the end)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            for k, piece in enumerate(pieces):
                asked(k)
                yield piece
            asked(len(pieces))

        return httpx.Response(200, headers={"Content-Encoding": codings}, content=body())

    return HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))


async def reads(transport: HttpxTransport, got: list[bytes] | None = None) -> list[bytes]:
    """What each read of one answer gives, to its end (into `got`, where given)."""
    response = await transport.send(Request("GET", "http://x/", {}))
    got = [] if got is None else got
    try:
        while data := await response.read():
            got.append(data)
    finally:
        await response.aclose()
    assert await response.read() == b""  # and so on, once ended
    return got


WBITS = {"gzip": 31, "deflate": 15, "deflate-raw": -15}


def encode(data: bytes, codings: list[str]) -> bytes:
    """`data` with each coding applied in turn (`deflate-raw`: deflate without zlib's header, which some
    servers send as `deflate`)."""
    for coding in codings:
        compressor = zlib.compressobj(6, zlib.DEFLATED, WBITS[coding])
        data = compressor.compress(data) + compressor.flush()
    return data


def decodable(start: bytes, codings: list[str]) -> bytes:
    """All that the first bytes of a body with these codings applied can give, undone whole by zlib."""
    for coding in reversed(codings):
        start = zlib.decompressobj(WBITS[coding]).decompress(start)
    return start


codings = st.lists(st.sampled_from(["gzip", "deflate", "deflate-raw"]), min_size=1, max_size=3)
# Data that inflates a lot: runs of a few bytes, some long.
inflating = st.lists(st.tuples(st.binary(min_size=1, max_size=4), st.integers(1, 300_000)), max_size=6).map(
    lambda runs: b"".join(piece * count for piece, count in runs)
)


@settings(max_examples=100, deadline=None)
@given(inflating, codings, st.lists(st.integers(0, 4000), max_size=8))
def test_httpx_inflates_any_codings_a_bounded_piece_per_read_and_none_waits(
    data: bytes, applied: list[str], cuts: list[int]
) -> None:
    body = encode(data, applied)
    bounds = sorted({0, len(body), *(min(cut, len(body)) for cut in cuts)})
    pieces = [body[a:b] for a, b in itertools.pairwise(bounds)]
    header = ", ".join("deflate" if coding == "deflate-raw" else coding for coding in applied)
    got: list[bytes] = []

    def asked(k: int) -> None:
        # Before the next network read, the reads have given all that the pieces so far can give: no event
        # waits inside the inflater for bytes that may come much later.
        assert b"".join(got) == decodable(b"".join(pieces[:k]), applied)

    anyio.run(reads, mock_transport(header, pieces, asked), got)
    assert b"".join(got) == data
    assert all(0 < len(piece) <= INFLATE_LIMIT for piece in got)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_httpx_leaves_nothing_inside_zlib_at_the_end_of_a_network_read() -> None:
    # Where a read's output stops at the bound just as zlib takes the last of its input, zlib may still hold
    # output (a copy cut short, bits not yet decoded) with no `unconsumed_tail` to show for it. Cut at every
    # position, this body hits that, and each time the events must come out before the next network read.
    events = (b"data: x\n\n" * 8000)[:70_000]
    body = encode(events, ["gzip"])
    for cut in range(1, len(body)):
        pieces = [body[:cut], body[cut:]]
        got: list[bytes] = []

        def asked(k: int) -> None:
            assert b"".join(got) == decodable(b"".join(pieces[:k]), ["gzip"]), cut  # noqa: B023

        await reads(mock_transport("gzip", pieces, asked), got)
        assert b"".join(got) == events


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize(
    ("header", "expected"),
    [("identity", b"as sent"), ("x-unknown", b"as sent"), ("", b"as sent"), ("gzip, identity", b"as sent")],
)
async def test_httpx_passes_on_what_it_does_not_undo(header: str, expected: bytes) -> None:
    body = gzipped(b"as sent") if header.startswith("gzip") else b"as sent"
    assert b"".join(await reads(mock_transport(header, [body]))) == expected


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_httpx_ignores_what_follows_the_compressed_stream() -> None:
    # zlib would keep it all in `unused_data`, joined again at every read: 16 MiB here.
    pieces = [gzipped(b"data: x\n\n"), *[bytes(65536)] * 256]
    transport = mock_transport("gzip", pieces)
    tracemalloc.start()
    try:
        assert await reads(transport) == [b"data: x\n\n"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("header", ["br", "zstd", "gzip, br"])
async def test_httpx_refuses_codings_it_would_undo_whole(header: str) -> None:
    with pytest.raises(streamkit.ReadError, match="was not asked for"):
        await reads(mock_transport(header, [b"\x1b\x00\x00"]))


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_httpx_asks_for_what_it_undoes() -> None:
    sent: list[str | None] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("Accept-Encoding"))
        return httpx.Response(200)

    # A client of the caller's that would ask for more, then a request that asks for something itself.
    own = httpx.AsyncClient(
        transport=httpx.MockTransport(handler), headers={"Accept-Encoding": "gzip, deflate, br, zstd"}
    )
    async with own:
        transport = HttpxTransport(own)
        for headers in ({}, {"accept-encoding": "identity"}):
            response = await transport.send(Request("GET", "http://x/", headers, stream=True))
            await response.aclose()
    assert sent == [ACCEPT_ENCODING, "identity"]
