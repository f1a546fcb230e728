"""What a streaming client costs per chunk, against its peers, with the server in a process of its own.

    python benchmarks/bench_client.py                  # every part, 3 rounds
    python benchmarks/bench_client.py --rounds 5 --json

Parts:

1. **Cost per chunk.** Each contender streams the same answers (`--streams` concurrent streams of `--tokens`
   tokens) and the client process's CPU time is divided by the chunks it received. The server sends 64
   events per write (`--events-per-write`) so that it outruns every client: when the server sets the pace,
   a client's CPU time goes to waking up for each small read, and the figure measures the server. Contenders
   are taken round-robin, round after round, and the median round counts.
2. **TTFT overhead.** Sequential one-token requests; the time from the call to the first token in the user's
   hands, streamkit against the raw aiohttp loop (the floor any aiohttp client can reach).
3. **1,000 concurrent streams** in one process: aggregate chunks/s, streamkit against openai on aiohttp.

Every contender checks that it got every chunk, or the run stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import openai
import orjson
from httpx_sse import aconnect_sse
from openai.types.chat import ChatCompletionMessageParam

import streamkit
from streamkit.server import ServerProcess

MESSAGES = [{"role": "user", "content": "hi"}]
OPENAI_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
Contender = Callable[[str, int], Awaitable[int]]  # (base_url, tokens) -> chunks received


class Clients:
    """One long-lived client per library, as an application holds them: setup is not what is measured."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.sk_aiohttp = streamkit.AsyncClient(base_url=base_url, api_key="bench", transport="aiohttp")
        self.sk_httpx = streamkit.AsyncClient(base_url=base_url, api_key="bench", transport="httpx")
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=2000)
        # openai's own defaults allow 1,000 connections, enough for every part.
        self.oai = openai.AsyncOpenAI(base_url=base_url, api_key="bench")
        self.oai_aiohttp = openai.AsyncOpenAI(
            base_url=base_url, api_key="bench", http_client=openai.DefaultAioHttpClient()
        )
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.httpx = httpx.AsyncClient(limits=limits, timeout=None)

    async def aclose(self) -> None:
        await self.sk_aiohttp.aclose()
        await self.sk_httpx.aclose()
        await self.oai.close()
        await self.oai_aiohttp.close()
        await self.session.close()
        await self.httpx.aclose()


def timing(tokens: int, events_per_write: int = 1) -> dict[str, str]:
    return {"x-streamkit-timing": f"tokens={tokens},events_per_write={events_per_write}"}


def contenders(c: Clients, burst: int = 1) -> dict[str, Contender]:
    """Each library's ordinary streaming loop. `burst`: events the server sends per write."""

    async def streamkit_iter(client: streamkit.AsyncClient, tokens: int) -> int:
        stream = await client.chat.completions.create(
            model="scripted", messages=MESSAGES, stream=True, extra_headers=timing(tokens, burst)
        )
        n = 0
        async with stream:
            async for _ in stream:
                n += 1
        return n

    async def streamkit_final(client: streamkit.AsyncClient, tokens: int) -> int:
        stream = await client.chat.completions.create(
            model="scripted", messages=MESSAGES, stream=True, extra_headers=timing(tokens, burst)
        )
        await stream.get_final_completion()
        return stream.metrics.chunks

    async def openai_iter(client: openai.AsyncOpenAI, tokens: int) -> int:
        stream = await client.chat.completions.create(
            model="scripted", messages=OPENAI_MESSAGES, stream=True, extra_headers=timing(tokens, burst)
        )
        n = 0
        async for _ in stream:
            n += 1
        return n

    async def openai_helper(client: openai.AsyncOpenAI, tokens: int) -> int:
        n = 0
        async with client.chat.completions.stream(
            model="scripted", messages=OPENAI_MESSAGES, extra_headers=timing(tokens, burst)
        ) as stream:
            async for event in stream:
                n += event.type == "chunk"
            await stream.get_final_completion()
        return n

    body = {"model": "scripted", "messages": MESSAGES, "stream": True}

    async def raw_aiohttp(_: str, tokens: int) -> int:
        n = 0
        async with c.session.post(
            c.base_url + "/chat/completions", json=body, headers=timing(tokens, burst)
        ) as response:
            async for line in response.content:
                if line.startswith(b"data: "):
                    data = line[6:].rstrip()
                    if data == b"[DONE]":
                        break
                    orjson.loads(data)
                    n += 1
        return n

    async def httpx_sse(_: str, tokens: int) -> int:
        n = 0
        async with aconnect_sse(
            c.httpx, "POST", c.base_url + "/chat/completions", json=body, headers=timing(tokens, burst)
        ) as source:
            async for event in source.aiter_sse():
                if event.data == "[DONE]":
                    break
                json.loads(event.data)
                n += 1
        return n

    return {
        "streamkit-aiohttp": lambda _, t: streamkit_iter(c.sk_aiohttp, t),
        "streamkit-aiohttp final": lambda _, t: streamkit_final(c.sk_aiohttp, t),
        "streamkit-httpx": lambda _, t: streamkit_iter(c.sk_httpx, t),
        "streamkit-httpx final": lambda _, t: streamkit_final(c.sk_httpx, t),
        "openai": lambda _, t: openai_iter(c.oai, t),
        "openai-aiohttp": lambda _, t: openai_iter(c.oai_aiohttp, t),
        "openai .stream()": lambda _, t: openai_helper(c.oai, t),
        "openai-aiohttp .stream()": lambda _, t: openai_helper(c.oai_aiohttp, t),
        "raw aiohttp + orjson": raw_aiohttp,
        "httpx-sse + json": httpx_sse,
    }


async def run_streams(contender: Contender, base_url: str, streams: int, tokens: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for `streams` concurrent streams; checks every chunk arrived."""
    cpu, wall = time.process_time(), time.perf_counter()
    counts = await asyncio.gather(*(contender(base_url, tokens) for _ in range(streams)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    expected = tokens + 2  # the role chunk, a chunk per token, the finish chunk
    assert all(n == expected for n in counts), (counts[:5], expected)
    return cpu, wall


async def cost_per_chunk(clients: Clients, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    table = contenders(clients, args.events_per_write)
    chunks = args.streams * (args.tokens + 2)
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in table}
    for contender in table.values():  # warm up: connections, imports, caches
        await run_streams(contender, clients.base_url, args.streams, 50)
    for _ in range(args.rounds):
        for name, contender in table.items():
            rounds[name].append(await run_streams(contender, clients.base_url, args.streams, args.tokens))
    result = {}
    for name, samples in rounds.items():
        cpu = statistics.median(s[0] for s in samples)
        wall = statistics.median(s[1] for s in samples)
        result[name] = {"cpu_us_per_chunk": cpu / chunks * 1e6, "chunks_per_s": chunks / wall}
    return result


async def ttft_overhead(clients: Clients, requests: int) -> dict[str, float]:
    """Median time from the call to the first token in hand, for one-token answers, taken in turn."""
    body = {"model": "scripted", "messages": MESSAGES, "stream": True}

    async def raw() -> float:
        start = time.perf_counter()
        async with clients.session.post(
            clients.base_url + "/chat/completions", json=body, headers=timing(1)
        ) as response:
            async for line in response.content:
                if line.startswith(b"data: "):
                    delta = orjson.loads(line[6:])["choices"][0]["delta"]
                    if delta.get("content"):
                        took = time.perf_counter() - start
                        await response.read()
                        return took
        raise AssertionError("no token")

    async def sk() -> float:
        start = time.perf_counter()
        stream = await clients.sk_aiohttp.chat.completions.create(
            model="scripted", messages=MESSAGES, stream=True, extra_headers=timing(1)
        )
        async for _ in stream.text_deltas():
            took = time.perf_counter() - start
            await stream.get_final_completion()
            return took
        raise AssertionError("no token")

    times: dict[str, list[float]] = {"raw aiohttp + orjson": [], "streamkit-aiohttp": []}
    for _ in range(requests):
        times["raw aiohttp + orjson"].append(await raw())
        times["streamkit-aiohttp"].append(await sk())
    return {name: statistics.median(samples) * 1e6 for name, samples in times.items()}


async def many_streams(clients: Clients, streams: int, tokens: int) -> dict[str, float]:
    table = contenders(clients)
    result = {}
    for name in ("streamkit-aiohttp", "openai-aiohttp"):
        await run_streams(table[name], clients.base_url, streams, 5)  # open the connections
        _, wall = await run_streams(table[name], clients.base_url, streams, tokens)
        result[name] = streams * (tokens + 2) / wall
    return result


async def main_async(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    clients = Clients(base_url)
    try:
        return {
            "cost": await cost_per_chunk(clients, args),
            "ttft_us": await ttft_overhead(clients, args.ttft_requests),
            "concurrent_chunks_per_s": await many_streams(clients, args.concurrent, args.concurrent_tokens),
        }
    finally:
        await clients.aclose()


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    cost = result["cost"]
    ours = cost["streamkit-aiohttp"]["cpu_us_per_chunk"]
    print(
        f"Client cost per chunk: {args.streams} concurrent streams x {args.tokens} tokens, median of "
        f"{args.rounds} rounds, {args.events_per_write} events per server write\n"
        f"(ratio = contender's CPU per chunk / streamkit-aiohttp's)\n"
    )
    print(f"{'client':<28}{'CPU us/chunk':>14}{'chunks/s':>12}{'ratio':>9}")
    for name, row in cost.items():
        us = row["cpu_us_per_chunk"]
        print(f"{name:<28}{us:>14.2f}{row['chunks_per_s']:>12,.0f}{us / ours:>8.2f}x")
    ttft = result["ttft_us"]
    raw, sk = ttft["raw aiohttp + orjson"], ttft["streamkit-aiohttp"]
    print(
        f"\nTTFT on loopback, median of {args.ttft_requests} one-token requests: streamkit-aiohttp "
        f"{sk:.0f} us, raw aiohttp + orjson {raw:.0f} us: {sk / raw:.2f}x"
    )
    many = result["concurrent_chunks_per_s"]
    ours_many, theirs = many["streamkit-aiohttp"], many["openai-aiohttp"]
    print(
        f"\n{args.concurrent} concurrent streams x {args.concurrent_tokens} tokens in one process: "
        f"streamkit-aiohttp {ours_many:,.0f} chunks/s, openai-aiohttp {theirs:,.0f} chunks/s: "
        f"{ours_many / theirs:.1f}x"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams per round")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per stream")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--events-per-write",
        type=int,
        default=64,
        help="events the server sends per write in the cost part (1: one per write, as a live model)",
    )
    parser.add_argument("--ttft-requests", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--concurrent-tokens", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with ServerProcess() as base_url:
        result = asyncio.run(main_async(args, base_url))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result, args)


if __name__ == "__main__":
    main()
