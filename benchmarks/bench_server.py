"""How many chunks per second the built-in server sends: the ceiling for any benchmark that uses it.

    python benchmarks/bench_server.py                       # 1,000 concurrent streams of 100 tokens
    python benchmarks/bench_server.py --streams 200 --tokens 500 --json

The server runs in a process of its own (`streamkit serve`), with no waits between tokens. The client side is
as cheap as possible: it counts event ends in the raw bytes and parses nothing, so the figure is the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp

from streamkit.server import ServerProcess


async def drive(base_url: str, streams: int, tokens: int) -> tuple[int, float]:
    body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"x-streamkit-timing": f"tokens={tokens}"}

    async def one(session: aiohttp.ClientSession) -> int:
        events = 0
        async with session.post(base_url + "/chat/completions", json=body, headers=headers) as response:
            async for data in response.content.iter_any():
                events += data.count(b"\n\n")
        return events - 1  # [DONE] is no chunk

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        counts = await asyncio.gather(*(one(session) for _ in range(streams)))
        return sum(counts), time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams")
    parser.add_argument("--tokens", type=int, default=100, help="tokens per stream")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with ServerProcess() as base_url:
        chunks, seconds = asyncio.run(drive(base_url, args.streams, args.tokens))
    expected = args.streams * (args.tokens + 2)  # role chunk, a chunk per token, finish chunk
    assert chunks == expected, (chunks, expected)
    result = {"streams": args.streams, "chunks": chunks, "seconds": seconds, "chunks_per_s": chunks / seconds}
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"built-in server: {args.streams} concurrent streams x {args.tokens} tokens = {chunks:,} chunks"
            f" in {seconds:.2f} s: {chunks / seconds:,.0f} chunks/s (one server process)"
        )


if __name__ == "__main__":
    main()
