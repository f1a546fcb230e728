"""Which SSE rules each peer follows: the cases of SSE.md, run through each decoder as its library runs it.

    python benchmarks/sse_conformance.py           # a Markdown table (docs/concepts/sse.md shows it)
    python benchmarks/sse_conformance.py --json

Contenders:
- streamkit: `SSEDecoder.feed` and `close`;
- httpx-sse: `EventSource.aiter_sse()` over an httpx response (an `httpx.MockTransport` serves the bytes);
- openai-python: `openai._streaming.SSEDecoder.aiter_bytes`, what `AsyncStream` runs;
- a hand-written aiohttp loop (it ignores the content type), the usual
  `async for line in response.content: if line.startswith(b"data: ")`, over a real aiohttp `StreamReader`.

Each case is fed whole and one byte at a time; a contender passes a case only if both give the expected
events. A case that raises counts as failed, with the exception named.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from unittest import mock

import aiohttp
import httpx
from aiohttp.base_protocol import BaseProtocol
from httpx_sse import EventSource
from openai._streaming import SSEDecoder as OpenAISSEDecoder

import streamkit

Event = tuple[str, str]  # (type, data)
Decoder = Callable[[list[bytes], str], Awaitable[list[Event]]]


@dataclass(frozen=True)
class Case:
    rule: str
    body: bytes
    events: list[Event]
    content_type: str = "text/event-stream"


M = "message"
CASES = [
    Case("LF, CRLF and lone CR all end lines", b"data: a\r\rdata: b\r\n\r\ndata: c\n\n",
         [(M, "a"), (M, "b"), (M, "c")]),
    Case("U+2028, U+0085, VT and FF stay in the data", "data: a\u2028b\x85c\x0bd\x0ce\n\n".encode(),
         [(M, "a\u2028b\x85c\x0bd\x0ce")]),
    Case("one leading BOM is stripped", b"\xef\xbb\xbfdata: 1\n\n", [(M, "1")]),
    Case("a second BOM is not stripped", b"\xef\xbb\xbfdata:1\n\n\xef\xbb\xbfdata:2\n\ndata:3\n\n",
         [(M, "1"), (M, "3")]),
    Case("invalid UTF-8 becomes U+FFFD", b"data: a\xffb\n\n", [(M, "a\ufffdb")]),
    Case("UTF-8 even when Content-Type says latin-1", "data: café\n\n".encode(), [(M, "café")],
         "text/event-stream; charset=latin-1"),
    Case("only one space after the colon is removed", b"data:test\n\ndata: test\n\ndata:  test\n\n",
         [(M, "test"), (M, "test"), (M, " test")]),
    Case("an empty data line still makes an event", b"data:\n\ndata\ndata\n\n", [(M, ""), (M, "\n")]),
    Case("an event-only block dispatches nothing", b"event: ping\n\ndata: x\n\n", [(M, "x")]),
    Case("an id-only block dispatches nothing", b"id: 1\n\ndata: x\n\n", [(M, "x")]),
    Case("multi-line data is joined with LF", b"data: a\ndata: b\n\n", [(M, "a\nb")]),
    Case("a comment is not an event", b": keep-alive\n\ndata: x\n\n", [(M, "x")]),
    Case("field names are case-sensitive", b"Data: no\ndata: yes\n\n", [(M, "yes")]),
    Case("an event type is kept", b"event: error\ndata: x\n\n", [("error", "x")]),
    Case("an unterminated event is discarded", b"data: a\n\ndata: b", [(M, "a")]),
    Case("`data:` without a space is data", b'data:{"x":1}\n\n', [(M, '{"x":1}')]),
]  # fmt: skip


def chunkings(body: bytes) -> list[list[bytes]]:
    return [[body], [body[i : i + 1] for i in range(len(body))]]


async def run_streamkit(chunks: list[bytes], content_type: str) -> list[Event]:
    decoder = streamkit.SSEDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)] + decoder.close()
    return [(e.event, e.data) for e in events]


async def run_httpx_sse(chunks: list[bytes], content_type: str) -> list[Event]:
    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, stream=Body())

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
        client.stream("GET", "http://test/") as response,
    ):
        return [(e.event, e.data) async for e in EventSource(response).aiter_sse()]


async def run_openai(chunks: list[bytes], content_type: str) -> list[Event]:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return [(e.event or M, e.data) async for e in OpenAISSEDecoder().aiter_bytes(body())]


async def run_aiohttp_loop(chunks: list[bytes], content_type: str) -> list[Event]:
    protocol = BaseProtocol(asyncio.get_running_loop())
    reader = aiohttp.StreamReader(protocol, 2**16, loop=asyncio.get_running_loop(), timer=mock.Mock())
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    return [(M, line[6:].rstrip().decode()) async for line in reader if line.startswith(b"data: ")]


CONTENDERS: dict[str, Decoder] = {
    "streamkit": run_streamkit,
    f"httpx-sse {version('httpx-sse')}": run_httpx_sse,
    f"openai {version('openai')}": run_openai,
    "aiohttp loop": run_aiohttp_loop,
}


async def verdict(decoder: Decoder, case: Case) -> str:
    for chunks in chunkings(case.body):
        try:
            got = await decoder(chunks, case.content_type)
        except Exception as exc:
            return f"raises {type(exc).__name__}"
        if got != case.events:
            return "no"
    return "yes"


async def main_async() -> dict[str, dict[str, str]]:
    return {case.rule: {name: await verdict(d, case) for name, d in CONTENDERS.items()} for case in CASES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    results = asyncio.run(main_async())
    if parser.parse_args().json:
        print(json.dumps(results, indent=2))
        return
    names = list(CONTENDERS)
    print("| rule | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for rule, row in results.items():
        print(f"| {rule} | " + " | ".join(row[n] for n in names) + " |")


if __name__ == "__main__":
    main()
