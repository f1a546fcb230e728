"""What a streaming client costs per event, against its peers, with the server in a process of its own.

    python benchmarks/bench_client.py                          # chat, both regimes, and the other parts
    python benchmarks/bench_client.py --api all --rounds 5     # chat, Responses and Messages
    python benchmarks/bench_client.py --api responses --parts cost --json

Parts:

1. **Cost per event**, for each API (`--api chat|responses|messages|all`), in two regimes:
   - `bursts`: `--streams` concurrent streams of `--tokens` tokens; the server sends 64 events per write so
     that it outruns every client. When the server sets the pace, a client's CPU time goes to waking up for
     each small read, and the figure measures the server.
   - `big`: one stream of `--big-tokens` tokens sent in 64 KiB writes, whose reads cut events anywhere.
   Each contender streams the same answers, and the client process's CPU time is divided by the events the
   server sent. Contenders are taken round-robin, round after round, and the median round counts. The peers:
   - chat: `openai.AsyncOpenAI` (its default and its aiohttp client; plain iteration and `.stream()`);
   - Responses: openai's `responses.create(stream=True)` and its `responses.stream()` helper;
   - Messages: `anthropic.AsyncAnthropic`'s `messages.create(stream=True)` and its `messages.stream()` helper;
   - every API: a raw aiohttp + orjson line loop (which does not even type the events) and httpx-sse + json;
   - and the floor: aiohttp reading the bytes, no event parsed, which every aiohttp client pays.
2. **TTFT overhead** (chat): sequential one-token requests; the time from the call to the first token in the
   user's hands, streamkit against the raw aiohttp loop (the floor any aiohttp client can reach).
3. **1,000 concurrent streams** (chat) in one process: aggregate events/s, streamkit against openai on
   aiohttp.
5. **Telemetry** (`--parts otel`): with the OpenTelemetry SDK configured (a MeterProvider with an in-memory
   reader, a TracerProvider whose spans go to an exporter that drops them), streamkit-aiohttp with
   `telemetry=True` against `telemetry=False`: the client CPU per event of the big stream, and the TTFT of
   one-token requests against the raw aiohttp loop, both ways. Run last: the SDK stays configured.
4. **Synchronous clients** (`--parts sync`), for each API and regime as in part 1, one stream after another
   in one thread (`--streams` of them a round): `streamkit.Client`, against openai's `OpenAI()`
   (`chat.completions.create(stream=True)` and its `.stream()` helper; `responses.create` and
   `responses.stream()`), anthropic's `Anthropic()` (`messages.create(stream=True)` and `messages.stream()`),
   and a raw `httpx.Client` + httpx-sse + `json` loop.

Every contender checks that it got every event, or the run stops.
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
import anthropic
import httpx
import openai
import orjson
from httpx_sse import aconnect_sse, connect_sse

import streamkit
from streamkit.bench.runner import run_in_loop
from streamkit.server import ServerProcess

HI: list[Any] = [{"role": "user", "content": "hi"}]
Contender = Callable[[int], Awaitable[int]]  # tokens -> events received
SyncContender = Callable[[int], int]
# The events the built-in server sends for an answer of `tokens` text tokens, one token an event.
EVENTS: dict[str, Callable[[int], int]] = {
    "chat": lambda t: t + 2,  # the role chunk, a chunk per token, the finish chunk ([DONE] not counted)
    "responses": lambda t: t + 8,  # created, in_progress, item and part added, the deltas, 3 dones, completed
    "messages": lambda t: t + 6,  # message_start, ping, block start, the deltas, block stop, delta, stop
}
TERMINAL = {b"[DONE]"}
RESPONSE_END = {"response.completed", "response.incomplete", "response.failed"}


class Clients:
    """One long-lived client per library, as an application holds them: setup is not what is measured."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.url = base_url.removesuffix("/v1")
        self.sk_aiohttp = streamkit.AsyncClient(base_url=base_url, api_key="bench", transport="aiohttp")
        self.sk_httpx = streamkit.AsyncClient(base_url=base_url, api_key="bench", transport="httpx")
        # openai's and anthropic's own defaults allow 1,000 connections, enough for every part.
        self.oai = openai.AsyncOpenAI(base_url=base_url, api_key="bench")
        self.oai_aiohttp = openai.AsyncOpenAI(
            base_url=base_url, api_key="bench", http_client=openai.DefaultAioHttpClient()
        )
        self.anthropic = anthropic.AsyncAnthropic(base_url=self.url, api_key="bench")
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=2000)
        self.httpx = httpx.AsyncClient(limits=limits, timeout=None)

    async def aclose(self) -> None:
        await self.sk_aiohttp.aclose()
        await self.sk_httpx.aclose()
        await self.oai.close()
        await self.oai_aiohttp.close()
        await self.anthropic.close()
        await self.session.close()
        await self.httpx.aclose()


def timing(tokens: int, events_per_write: int = 1, write_bytes: int = 0) -> dict[str, str]:
    spec = f"tokens={tokens},events_per_write={events_per_write},write_bytes={write_bytes}"
    return {"x-streamkit-timing": spec}


def contenders(api: str, c: Clients, headers: Callable[[int], dict[str, str]]) -> dict[str, Contender]:
    """Each library's ordinary streaming loop for `api`; `headers(tokens)` sets the server's pace."""
    path = {"chat": "/chat/completions", "responses": "/responses", "messages": "/messages"}[api]
    body: dict[str, Any] = {"model": "scripted", "stream": True}
    body |= {"input": "hi"} if api == "responses" else {"messages": HI}
    if api == "messages":
        body["max_tokens"] = 1_000_000

    async def streamkit_iter(client: streamkit.AsyncClient, tokens: int) -> int:
        stream = await client.stream(api, body, extra_headers=headers(tokens))
        n = 0
        async with stream:
            async for _ in stream:
                n += 1
        return n + (api == "messages")  # the ping, which streamkit skips

    async def streamkit_final(client: streamkit.AsyncClient, tokens: int) -> int:
        stream = await client.stream(api, body, extra_headers=headers(tokens))
        await stream.get_final()
        return stream.metrics.chunks + (api == "messages")

    def done(data: bytes) -> bool:
        if api == "chat":
            return data == b"[DONE]"
        kind = orjson.loads(data).get("type")
        return kind == "message_stop" if api == "messages" else kind in RESPONSE_END

    async def raw_aiohttp(tokens: int) -> int:
        n = 0
        async with c.session.post(c.base_url + path, json=body, headers=headers(tokens)) as response:
            async for line in response.content:
                if line.startswith(b"data: "):
                    data = line[6:].rstrip()
                    if api == "chat" and data == b"[DONE]":
                        break
                    event = orjson.loads(data)
                    n += 1
                    if api != "chat" and event.get("type") in RESPONSE_END | {"message_stop"}:
                        break
        return n

    async def aiohttp_floor(tokens: int) -> int:
        # The bytes only: what aiohttp and the event loop cost before any client looks at an event. Events
        # are counted by their blank lines (a `\n\n` cut between two reads included).
        n, last = 0, b""
        async with c.session.post(c.base_url + path, json=body, headers=headers(tokens)) as response:
            async for data in response.content.iter_any():
                n += data.count(b"\n\n") + (last == b"\n" and data[:1] == b"\n")
                last = data[-1:]
        return n - (api == "chat")  # data: [DONE]

    async def httpx_sse(tokens: int) -> int:
        n = 0
        async with aconnect_sse(
            c.httpx, "POST", c.base_url + path, json=body, headers=headers(tokens)
        ) as source:
            async for event in source.aiter_sse():
                if api == "chat" and event.data == "[DONE]":
                    break
                data = json.loads(event.data)
                n += 1
                if api != "chat" and data.get("type") in RESPONSE_END | {"message_stop"}:
                    break
        return n

    table: dict[str, Contender] = {
        "streamkit-aiohttp": lambda t: streamkit_iter(c.sk_aiohttp, t),
        "streamkit-aiohttp final": lambda t: streamkit_final(c.sk_aiohttp, t),
        "streamkit-httpx": lambda t: streamkit_iter(c.sk_httpx, t),
    }
    if api == "chat":
        table |= chat_peers(c, headers)
    elif api == "responses":
        table |= responses_peers(c, headers)
    else:
        table |= messages_peers(c, headers)
    table |= {
        "raw aiohttp + orjson": raw_aiohttp,
        "httpx-sse + json": httpx_sse,
        "aiohttp bytes only (floor)": aiohttp_floor,
    }
    return table


def chat_peers(c: Clients, headers: Callable[[int], dict[str, str]]) -> dict[str, Contender]:
    async def iterate(client: openai.AsyncOpenAI, tokens: int) -> int:
        stream = await client.chat.completions.create(
            model="scripted", messages=HI, stream=True, extra_headers=headers(tokens)
        )
        n = 0
        async for _ in stream:
            n += 1
        return n

    async def helper(client: openai.AsyncOpenAI, tokens: int) -> int:
        n = 0
        async with client.chat.completions.stream(
            model="scripted", messages=HI, extra_headers=headers(tokens)
        ) as stream:
            async for event in stream:
                n += event.type == "chunk"
            await stream.get_final_completion()
        return n

    return {
        "openai": lambda t: iterate(c.oai, t),
        "openai-aiohttp": lambda t: iterate(c.oai_aiohttp, t),
        "openai .stream()": lambda t: helper(c.oai, t),
        "openai-aiohttp .stream()": lambda t: helper(c.oai_aiohttp, t),
    }


def responses_peers(c: Clients, headers: Callable[[int], dict[str, str]]) -> dict[str, Contender]:
    async def iterate(tokens: int) -> int:
        stream = await c.oai.responses.create(
            model="scripted", input="hi", stream=True, extra_headers=headers(tokens)
        )
        n = 0
        async for _ in stream:
            n += 1
        return n

    async def helper(tokens: int) -> int:
        n = 0
        async with c.oai.responses.stream(
            model="scripted", input="hi", extra_headers=headers(tokens)
        ) as stream:
            async for _ in stream:
                n += 1
            await stream.get_final_response()
        return n

    return {"openai responses": iterate, "openai responses.stream()": helper}


def messages_peers(c: Clients, headers: Callable[[int], dict[str, str]]) -> dict[str, Contender]:
    async def iterate(tokens: int) -> int:
        stream = await c.anthropic.messages.create(
            model="scripted", messages=HI, max_tokens=1_000_000, stream=True, extra_headers=headers(tokens)
        )
        n = 0
        async for _ in stream:
            n += 1
        return n + 1  # the ping, which the SDK skips

    async def helper(tokens: int) -> int:
        n = 0
        async with c.anthropic.messages.stream(
            model="scripted", messages=HI, max_tokens=1_000_000, extra_headers=headers(tokens)
        ) as stream:
            async for event in stream:
                # The helper adds events of its own (`text`, `input_json`) beside the ones the server sent.
                n += event.type not in ("text", "input_json", "thinking", "signature", "citation")
            await stream.get_final_message()
        return n + 1

    return {"anthropic messages": iterate, "anthropic messages.stream()": helper}


async def run_streams(contender: Contender, streams: int, tokens: int, expected: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for `streams` concurrent streams; checks that every event arrived."""
    cpu, wall = time.process_time(), time.perf_counter()
    counts = await asyncio.gather(*(contender(tokens) for _ in range(streams)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert all(n == expected for n in counts), (counts[:5], expected)
    return cpu, wall


async def cost_per_event(
    clients: Clients, api: str, regime: str, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    if regime == "bursts":
        streams, tokens = args.streams, args.tokens

        def headers(t: int) -> dict[str, str]:
            return timing(t, args.events_per_write)
    else:
        streams, tokens = 1, args.big_tokens

        def headers(t: int) -> dict[str, str]:
            return timing(t, write_bytes=65536)

    table = contenders(api, clients, headers)
    events = streams * EVENTS[api](tokens)
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in table}
    for contender in table.values():  # warm up: connections, imports, caches
        await run_streams(contender, streams, 50, EVENTS[api](50))
    for _ in range(args.rounds):
        for name, contender in table.items():
            rounds[name].append(await run_streams(contender, streams, tokens, EVENTS[api](tokens)))
    return per_event(rounds, events)


def per_event(rounds: dict[str, list[tuple[float, float]]], events: int) -> dict[str, dict[str, float]]:
    """Each contender's median round as CPU µs per event and events/s; `events` were sent in a round."""
    result = {}
    for name, samples in rounds.items():
        cpu = statistics.median(sample[0] for sample in samples)
        wall = statistics.median(sample[1] for sample in samples)
        result[name] = {"cpu_us_per_event": cpu / events * 1e6, "events_per_s": events / wall}
    return result


async def ttft_overhead(clients: Clients, requests: int) -> dict[str, float]:
    """Median time from the call to the first token in hand, for one-token answers, taken in turn."""
    body = {"model": "scripted", "messages": HI, "stream": True}

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
            model="scripted", messages=HI, stream=True, extra_headers=timing(1)
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
    table = contenders("chat", clients, timing)
    result = {}
    for name in ("streamkit-aiohttp", "openai-aiohttp"):
        await run_streams(table[name], streams, 5, EVENTS["chat"](5))  # open the connections
        _, wall = await run_streams(table[name], streams, tokens, EVENTS["chat"](tokens))
        result[name] = streams * EVENTS["chat"](tokens) / wall
    return result


class SyncClients:
    """One long-lived synchronous client per library."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.sk = streamkit.Client(base_url=base_url, api_key="bench")
        self.oai = openai.OpenAI(base_url=base_url, api_key="bench")
        self.anthropic = anthropic.Anthropic(base_url=base_url.removesuffix("/v1"), api_key="bench")
        self.httpx = httpx.Client(timeout=None)

    def close(self) -> None:
        self.sk.close()
        self.oai.close()
        self.anthropic.close()
        self.httpx.close()


def sync_contenders(
    api: str, c: SyncClients, headers: Callable[[int], dict[str, str]]
) -> dict[str, SyncContender]:
    """Each synchronous library's ordinary streaming loop for `api`."""
    path = {"chat": "/chat/completions", "responses": "/responses", "messages": "/messages"}[api]
    body: dict[str, Any] = {"model": "scripted", "stream": True}
    body |= {"input": "hi"} if api == "responses" else {"messages": HI}
    if api == "messages":
        body["max_tokens"] = 1_000_000

    def streamkit_iter(tokens: int) -> int:
        n = 0
        with c.sk.stream(api, body, extra_headers=headers(tokens)) as stream:
            for _ in stream:
                n += 1
        return n + (api == "messages")  # the ping, which streamkit skips

    def streamkit_final(tokens: int) -> int:
        stream = c.sk.stream(api, body, extra_headers=headers(tokens))
        stream.get_final()
        return stream.metrics.chunks + (api == "messages")

    def raw_httpx_sse(tokens: int) -> int:
        n = 0
        with connect_sse(c.httpx, "POST", c.base_url + path, json=body, headers=headers(tokens)) as source:
            for event in source.iter_sse():
                if api == "chat" and event.data == "[DONE]":
                    break
                data = json.loads(event.data)
                n += 1
                if api != "chat" and data.get("type") in RESPONSE_END | {"message_stop"}:
                    break
        return n

    table: dict[str, SyncContender] = {
        "streamkit Client": streamkit_iter,
        "streamkit Client final": streamkit_final,
    }
    if api == "chat":

        def openai_iter(tokens: int) -> int:
            n = 0
            for _ in c.oai.chat.completions.create(
                model="scripted", messages=HI, stream=True, extra_headers=headers(tokens)
            ):
                n += 1
            return n

        def openai_helper(tokens: int) -> int:
            n = 0
            with c.oai.chat.completions.stream(
                model="scripted", messages=HI, extra_headers=headers(tokens)
            ) as stream:
                for event in stream:
                    n += event.type == "chunk"
                stream.get_final_completion()
            return n

        table |= {"openai OpenAI()": openai_iter, "openai .stream()": openai_helper}
    elif api == "responses":

        def responses_iter(tokens: int) -> int:
            n = 0
            for _ in c.oai.responses.create(
                model="scripted", input="hi", stream=True, extra_headers=headers(tokens)
            ):
                n += 1
            return n

        def responses_helper(tokens: int) -> int:
            n = 0
            with c.oai.responses.stream(
                model="scripted", input="hi", extra_headers=headers(tokens)
            ) as stream:
                for _ in stream:
                    n += 1
                stream.get_final_response()
            return n

        table |= {"openai responses": responses_iter, "openai responses.stream()": responses_helper}
    else:

        def messages_iter(tokens: int) -> int:
            n = 0
            for _ in c.anthropic.messages.create(
                model="scripted",
                messages=HI,
                max_tokens=1_000_000,
                stream=True,
                extra_headers=headers(tokens),
            ):
                n += 1
            return n + 1  # the ping, which the SDK skips

        def messages_helper(tokens: int) -> int:
            n = 0
            with c.anthropic.messages.stream(
                model="scripted", messages=HI, max_tokens=1_000_000, extra_headers=headers(tokens)
            ) as stream:
                for event in stream:
                    n += event.type not in ("text", "input_json", "thinking", "signature", "citation")
                stream.get_final_message()
            return n + 1

        table |= {"anthropic Anthropic()": messages_iter, "anthropic messages.stream()": messages_helper}
    table["httpx.Client + httpx-sse + json"] = raw_httpx_sse
    return table


def run_sync_streams(
    contender: SyncContender, streams: int, tokens: int, expected: int
) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for `streams` streams one after another; checks every event arrived."""
    cpu, wall = time.process_time(), time.perf_counter()
    counts = [contender(tokens) for _ in range(streams)]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert all(n == expected for n in counts), (counts[:5], expected)
    return cpu, wall


def sync_cost_per_event(
    clients: SyncClients, api: str, regime: str, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    if regime == "bursts":
        streams, tokens = args.streams, args.tokens

        def headers(t: int) -> dict[str, str]:
            return timing(t, args.events_per_write)
    else:
        streams, tokens = 1, args.big_tokens

        def headers(t: int) -> dict[str, str]:
            return timing(t, write_bytes=65536)

    table = sync_contenders(api, clients, headers)
    events = streams * EVENTS[api](tokens)
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in table}
    for contender in table.values():  # warm up
        run_sync_streams(contender, 2, 50, EVENTS[api](50))
    for _ in range(args.rounds):
        for name, contender in table.items():
            rounds[name].append(run_sync_streams(contender, streams, tokens, EVENTS[api](tokens)))
    return per_event(rounds, events)


def sync_part(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    clients = SyncClients(base_url)
    apis = ["chat", "responses", "messages"] if args.api == "all" else [args.api]
    regimes = ["bursts", "big"] if args.regime == "both" else [args.regime]
    try:
        return {
            f"{api} {regime}": sync_cost_per_event(clients, api, regime, args)
            for api in apis
            for regime in regimes
        }
    finally:
        clients.close()


async def otel_part(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    """Telemetry's cost: streamkit with the SDK configured, telemetry on and off, in the same process."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(tracer_provider)
    on = streamkit.AsyncClient(base_url=base_url, api_key="bench", telemetry=True)
    off = streamkit.AsyncClient(base_url=base_url, api_key="bench", telemetry=False)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    body = {"model": "scripted", "messages": HI, "stream": True}

    async def big(client: streamkit.AsyncClient, tokens: int) -> int:
        stream = await client.stream("chat", body, extra_headers=timing(tokens, write_bytes=65536))
        n = 0
        async with stream:
            async for _ in stream:
                n += 1
        return n

    result: dict[str, Any] = {}
    try:
        table = {"telemetry off": off, "telemetry on (SDK configured)": on}
        samples: dict[str, list[float]] = {name: [] for name in table}
        for client in table.values():
            await big(client, 50)
        for _ in range(args.rounds):
            for name, client in table.items():
                cpu = time.process_time()
                assert await big(client, args.big_tokens) == EVENTS["chat"](args.big_tokens)
                samples[name].append(time.process_time() - cpu)
        result["cpu_us_per_event"] = {
            name: statistics.median(values) / EVENTS["chat"](args.big_tokens) * 1e6
            for name, values in samples.items()
        }

        async def raw() -> float:
            start = time.perf_counter()
            async with session.post(base_url + "/chat/completions", json=body, headers=timing(1)) as response:
                async for line in response.content:
                    if line.startswith(b"data: ") and orjson.loads(line[6:])["choices"][0]["delta"].get(
                        "content"
                    ):
                        took = time.perf_counter() - start
                        await response.read()
                        return took
            raise AssertionError("no token")

        async def sk(client: streamkit.AsyncClient) -> float:
            start = time.perf_counter()
            stream = await client.chat.completions.create(
                model="scripted", messages=HI, stream=True, extra_headers=timing(1)
            )
            async for _ in stream.text_deltas():
                took = time.perf_counter() - start
                await stream.get_final_completion()
                return took
            raise AssertionError("no token")

        times: dict[str, list[float]] = {"raw aiohttp + orjson": [], **{name: [] for name in table}}
        for _ in range(50):
            await raw()
            await sk(off)
            await sk(on)
        for _ in range(args.ttft_requests):
            times["raw aiohttp + orjson"].append(await raw())
            for name, client in table.items():
                times[name].append(await sk(client))
        result["ttft_us"] = {name: statistics.median(values) * 1e6 for name, values in times.items()}
        return result
    finally:
        await on.aclose()
        await off.aclose()
        await session.close()


async def main_async(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    clients = Clients(base_url)
    apis = ["chat", "responses", "messages"] if args.api == "all" else [args.api]
    regimes = ["bursts", "big"] if args.regime == "both" else [args.regime]
    result: dict[str, Any] = {"cost": {}}
    try:
        if "cost" in args.parts:
            for api in apis:
                for regime in regimes:
                    result["cost"][f"{api} {regime}"] = await cost_per_event(clients, api, regime, args)
        if "ttft" in args.parts:
            result["ttft_us"] = await ttft_overhead(clients, args.ttft_requests)
        if "many" in args.parts:
            result["concurrent_events_per_s"] = await many_streams(
                clients, args.concurrent, args.concurrent_tokens
            )
        return result
    finally:
        await clients.aclose()


def report_otel(otel: dict[str, Any], args: argparse.Namespace) -> None:
    cost = otel["cpu_us_per_event"]
    off, on = cost["telemetry off"], cost["telemetry on (SDK configured)"]
    print(
        f"\nTelemetry, chat, 1 stream x {args.big_tokens} tokens in 64 KiB writes, median of {args.rounds} "
        f"rounds: client CPU per event {off:.2f} us off, {on:.2f} us on: {on / off:.2f}x"
    )
    ttft = otel["ttft_us"]
    raw = ttft["raw aiohttp + orjson"]
    print(
        f"TTFT, median of {args.ttft_requests} one-token requests, against raw aiohttp + orjson "
        f"({raw:.0f} us):"
    )
    for name in ("telemetry off", "telemetry on (SDK configured)"):
        print(f"  streamkit-aiohttp, {name}: {ttft[name]:.0f} us, {ttft[name] / raw:.2f}x")


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    tables = [(workload, cost, "streamkit-aiohttp") for workload, cost in result["cost"].items()]
    tables += [(f"{w} (sync)", cost, "streamkit Client") for w, cost in result.get("sync", {}).items()]
    for workload, cost, reference in tables:
        regime = workload.split()[1]
        ours = cost[reference]["cpu_us_per_event"]
        shape = (
            f"{args.streams} concurrent streams x {args.tokens} tokens, {args.events_per_write} events per "
            "server write"
            if regime == "bursts"
            else f"1 stream x {args.big_tokens} tokens in 64 KiB writes"
        )
        if workload.endswith("(sync)"):
            shape = shape.replace("concurrent streams", "streams one after another, in one thread,")
        print(
            f"\n{workload.replace(' ', ', ', 1)}: client CPU per event, {shape}, median of {args.rounds} "
            f"rounds\n(ratio = contender's CPU per event / {reference}'s)\n"
        )
        print(f"{'client':<34}{'CPU us/event':>14}{'events/s':>12}{'ratio':>9}")
        for name, row in cost.items():
            us = row["cpu_us_per_event"]
            print(f"{name:<34}{us:>14.2f}{row['events_per_s']:>12,.0f}{us / ours:>8.2f}x")
    if "ttft_us" in result:
        ttft = result["ttft_us"]
        raw, sk = ttft["raw aiohttp + orjson"], ttft["streamkit-aiohttp"]
        print(
            f"\nTTFT on loopback, median of {args.ttft_requests} one-token requests: streamkit-aiohttp "
            f"{sk:.0f} us, raw aiohttp + orjson {raw:.0f} us: {sk / raw:.2f}x"
        )
    if "otel" in result:
        report_otel(result["otel"], args)
    if "concurrent_events_per_s" in result:
        many = result["concurrent_events_per_s"]
        ours_many, theirs = many["streamkit-aiohttp"], many["openai-aiohttp"]
        print(
            f"\n{args.concurrent} concurrent streams x {args.concurrent_tokens} tokens in one process: "
            f"streamkit-aiohttp {ours_many:,.0f} events/s, openai-aiohttp {theirs:,.0f} events/s: "
            f"{ours_many / theirs:.1f}x"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--api", choices=["chat", "responses", "messages", "all"], default="chat")
    parser.add_argument("--regime", choices=["bursts", "big", "both"], default="both")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["cost", "ttft", "many", "sync", "otel"],
        default=["cost", "ttft", "many", "sync", "otel"],
    )
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams per round (bursts)")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per stream (bursts)")
    parser.add_argument("--big-tokens", type=int, default=20000, help="tokens of the one big stream")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--events-per-write",
        type=int,
        default=64,
        help="events the server sends per write in the bursts regime (1: one per write, as a live model)",
    )
    parser.add_argument("--ttft-requests", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--concurrent-tokens", type=int, default=100)
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="the event loop every contender runs on (uvloop needs the bench extra)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with ServerProcess() as base_url:
        result = run_in_loop(main_async(args, base_url), args.loop)
        if "sync" in args.parts:
            result["sync"] = sync_part(args, base_url)
        if "otel" in args.parts:  # last: the SDK stays configured for the rest of the process
            result["otel"] = run_in_loop(otel_part(args, base_url), args.loop)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result, args)


if __name__ == "__main__":
    main()
