"""The server's slots (`slots=N`), its Prometheus series (`GET /metrics`) and its receive stamps.

Nothing here measures speed: the checks are on orders, overlaps and counts, which hold however slow the
machine is. The expected counts come from what the tests send (`tokens=N` times the requests), never from
the server's own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from streamkit.server import ServerConfig, ServerProcess, ServerThread, Timing
from tests.server.raw import RawResponse, post

PROMPT = "hello there friend"  # 3 words: the scripted model's prompt tokens
HI = [{"role": "user", "content": PROMPT}]
# Each API's path and a valid request to it.
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "scripted", "messages": HI}),
    "completions": ("/v1/completions", {"model": "scripted", "prompt": PROMPT, "max_tokens": 1000}),
    "responses": ("/v1/responses", {"model": "scripted", "input": PROMPT}),
    "messages": ("/v1/messages", {"model": "scripted", "messages": HI, "max_tokens": 1000}),
}
APIS = list(REQUESTS)
SERIES = (
    "streamkit_requests_running",
    "streamkit_requests_waiting",
    "streamkit_requests_total",
    "streamkit_output_tokens_total",
    "streamkit_prompt_tokens_total",
)
WAIT = 30.0  # the longest any one step may take here before the test fails: a liveness bound, not a timing

Samples = dict[tuple[str, str], float]


def parse(text: str) -> Samples:
    """`{(sample name, api label): value}` of a Prometheus text page."""
    return {
        (sample.name, sample.labels.get("api", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url + "/metrics", timeout=WAIT) as response:
        return parse(response.read().decode())


async def ascrape(session: aiohttp.ClientSession, url: str) -> Samples:
    async with session.get(url + "/metrics") as response:
        return parse(await response.text())


def send(server: ServerThread, api: str, timing: str = "", **params: Any) -> RawResponse:
    path, body = REQUESTS[api]
    return post(server.url, path, {**body, **params}, {"x-streamkit-timing": timing})


async def stream_chat(session: aiohttp.ClientSession, url: str, timing: str = "") -> bytes:
    path, body = REQUESTS["chat"]
    headers = {"x-streamkit-timing": timing}
    async with session.post(url + path, json={**body, "stream": True}, headers=headers) as response:
        assert response.status == 200
        return await response.read()


@contextlib.asynccontextmanager
async def open_stream(url: str, fault: str) -> AsyncIterator[None]:
    """A streamed chat request over a socket of its own, with the `x-streamkit-fault` header `fault`; the
    block runs once its first events have come, and leaving it closes the socket, mid-stream."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        payload = json.dumps({**REQUESTS["chat"][1], "stream": True}).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            f"x-streamkit-fault: {fault}\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        received = b""
        while b"data: " not in received:
            data = await asyncio.wait_for(reader.read(65536), WAIT)
            assert data, "the server closed the connection"
            received += data
        yield
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def until(session: aiohttp.ClientSession, url: str, name: str, value: float) -> None:
    """Scrape until the chat series `name` reads `value`."""
    async with asyncio.timeout(WAIT):
        while (await ascrape(session, url))[(name, "chat")] != value:
            await asyncio.sleep(0.005)


def slots_server(spec: str, **settings: Any) -> ServerThread:
    return ServerThread(ServerConfig(timing=Timing.parse(spec), **settings))


# The setting


def test_slots_is_a_timing_setting() -> None:
    assert Timing.parse("slots=3").slots == 3
    assert Timing().slots is None
    assert Timing.parse("ttft=0.1", Timing(slots=2)).slots == 2
    for bad in ("slots=x", "slots=-1", "slots"):
        with pytest.raises(ValueError, match="slots"):
            Timing.parse(bad)


def test_a_request_may_not_change_the_slots() -> None:
    with slots_server("slots=2") as server:
        for timing in ("slots=5", "slots=0", "slots=x", "tokens=2,slots=1"):
            response = send(server, "chat", timing)
            assert response.status == 400, timing
            assert "slots" in response.json()["error"]["message"]
        assert "slots is a server setting" in send(server, "chat", "slots=5").json()["error"]["message"]
        response = send(server, "messages", "slots=3")
        assert response.status == 400 and response.json()["type"] == "error"  # in the API's own shape
        assert send(server, "chat", "slots=2").status == 200  # the server's own value changes nothing
    with ServerThread() as server:
        assert send(server, "chat", "slots=1").status == 400
        assert send(server, "chat", "slots=0").status == 200


def test_serve_takes_slots_and_its_help_lists_them() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "slots=N" in help_text and "first come first" in help_text
    with ServerProcess("--timing", "slots=1,tokens=3") as base_url:
        url = base_url.removesuffix("/v1")
        path, body = REQUESTS["chat"]
        assert post(url, path, body, {"x-streamkit-timing": "slots=1"}).status == 200
        assert post(url, path, body, {"x-streamkit-timing": "slots=2"}).status == 400
        assert scrape(url)[("streamkit_requests_total", "chat")] == 1


# The queue


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_slots_answer_at_most_n_requests_at_once() -> None:
    tokens, requests, slots = 10, 5, 2
    with slots_server(f"slots={slots},ttft=0.05,itl=0.01,tokens={tokens}", trace=True) as server:
        async with aiohttp.ClientSession() as session:
            sent = asyncio.gather(*(stream_chat(session, server.url) for _ in range(requests)))
            samples: list[Samples] = []
            while not sent.done():
                samples.append(await ascrape(session, server.url))
                await asyncio.sleep(0.005)
            await sent
            after = await ascrape(session, server.url)
        traces, received = server.stats.traces, server.stats.received
    assert traces is not None and received is not None

    assert max(s[("streamkit_requests_running", "chat")] for s in samples) <= slots
    assert any(s[("streamkit_requests_waiting", "chat")] > 0 for s in samples)
    assert after[("streamkit_requests_running", "chat")] == 0
    assert after[("streamkit_requests_waiting", "chat")] == 0
    assert after[("streamkit_requests_total", "chat")] == requests
    assert after[("streamkit_output_tokens_total", "chat")] == tokens * requests
    assert after[("streamkit_prompt_tokens_total", "chat")] == 3 * requests

    # The server's own stamps: no three streams ever overlap, from first token to last.
    assert len(traces) == requests and all(len(times) == tokens for times in traces.values())
    spans = sorted((times[0], times[-1]) for times in traces.values())
    for k, (first, _) in enumerate(spans):
        overlapping = [j for j, (start, end) in enumerate(spans) if j != k and start <= first <= end]
        assert len(overlapping) < slots, (k, spans)
    for third in spans[slots:]:  # every later one starts after one of those before it has ended
        assert any(end < third[0] for _, end in spans[: spans.index(third)])
    # The wait for a slot is part of the time to first token: received before, whatever the queue.
    assert set(received) == set(traces)
    assert all(received[id] <= traces[id][0] for id in traces)
    queued = sorted(traces[id][0] - received[id] for id in traces)
    assert queued[-1] > spans[0][1] - spans[0][0]  # the last waited longer than a whole stream takes


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_queue_is_first_come_first_served() -> None:
    with slots_server("slots=1,tokens=2", trace=True) as server:
        async with aiohttp.ClientSession() as session:
            async with open_stream(server.url, "stall=1:60"):  # holds the only slot
                second = asyncio.ensure_future(stream_chat(session, server.url))
                await until(session, server.url, "streamkit_requests_waiting", 1)
                third = asyncio.ensure_future(stream_chat(session, server.url))
                await until(session, server.url, "streamkit_requests_waiting", 2)
            bodies = await asyncio.wait_for(asyncio.gather(second, third), WAIT)
        traces = server.stats.traces
    assert traces is not None
    ids = [json.loads(body.split(b"data: ")[1].split(b"\n")[0])["id"] for body in bodies]
    assert traces[ids[0]][-1] < traces[ids[1]][0]  # the second was answered whole before the third began


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_client_gone_frees_its_slot_and_its_place_in_the_queue() -> None:
    with slots_server("slots=1,tokens=3") as server:
        async with aiohttp.ClientSession() as session:
            async with open_stream(server.url, "stall=2:60"):  # holds the only slot for a minute
                # One that waits, then goes: it leaves the queue, and never takes the slot.
                waiting = asyncio.ensure_future(stream_chat(session, server.url))
                await until(session, server.url, "streamkit_requests_waiting", 1)
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
                await until(session, server.url, "streamkit_requests_waiting", 0)
                queued = asyncio.ensure_future(stream_chat(session, server.url))
                await until(session, server.url, "streamkit_requests_waiting", 1)
                assert not queued.done()
            # The first client is gone mid-stream: its slot goes to the one queued, long before its minute.
            body = await asyncio.wait_for(queued, WAIT)
            assert body.endswith(b"data: [DONE]\n\n")
            await until(session, server.url, "streamkit_requests_running", 0)
            after = await ascrape(session, server.url)
    assert after[("streamkit_requests_waiting", "chat")] == 0
    # The one gone mid-stream and the one served; the one that left the queue never got a slot.
    assert after[("streamkit_requests_total", "chat")] == 2
    assert after[("streamkit_output_tokens_total", "chat")] == 1 + 3  # one token before its stall, then 3


# The series


def test_every_api_has_every_series_from_the_start() -> None:
    with ServerThread() as server:
        samples = scrape(server.url)
    for name in SERIES:
        assert {api for (sample, api) in samples if sample == name} == set(APIS), name
        assert all(samples[(name, api)] == 0 for api in APIS)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("api", APIS)
def test_a_request_counts_under_its_own_api_only(api: str, stream: bool) -> None:
    tokens = 7
    with ServerThread() as server:
        response = send(server, api, f"tokens={tokens}", stream=stream)
        assert response.status == 200 and response.complete
        samples = scrape(server.url)
    expected = {
        "streamkit_requests_running": 0,
        "streamkit_requests_waiting": 0,
        "streamkit_requests_total": 1,
        "streamkit_output_tokens_total": tokens,
        "streamkit_prompt_tokens_total": 3,
    }
    for name in SERIES:
        assert samples[(name, api)] == expected[name], name
        assert all(samples[(name, other)] == 0 for other in APIS if other != api), name


def test_tokens_cut_short_count_as_written() -> None:
    with ServerThread() as server:
        assert send(server, "chat", "tokens=10", stream=True).status == 200
        response = post(
            server.url,
            "/v1/chat/completions",
            {**REQUESTS["chat"][1], "stream": True},
            {"x-streamkit-timing": "tokens=10,events_per_write=4", "x-streamkit-fault": "truncate=5"},
        )
        assert response.status == 200
        samples = scrape(server.url)
    # The role chunk and 4 token chunks before the truncation: 10 + 4 tokens written in all.
    assert samples[("streamkit_requests_total", "chat")] == 2
    assert samples[("streamkit_output_tokens_total", "chat")] == 10 + 4


def test_metrics_need_no_key() -> None:
    with ServerThread(ServerConfig(api_key="sk-metrics", trace=True)) as server:
        assert post(server.url, "/v1/models", b"", method="GET").status == 401
        response = post(server.url, "/metrics", b"", method="GET")
        assert response.status == 200
        assert response.headers["content-type"] == CONTENT_TYPE_LATEST
        assert "sk-metrics" not in response.body.decode()
        assert parse(response.body.decode())[("streamkit_requests_total", "chat")] == 0


# The receive stamps


def test_received_is_served_beside_the_trace_each_cleared_alone() -> None:
    key = {"Authorization": "Bearer sk-trace"}
    with ServerThread(ServerConfig(api_key="sk-trace", trace=True)) as server:
        path, body = REQUESTS["chat"]
        for _ in range(2):
            assert post(server.url, path, {**body, "stream": True}, key).status == 200

        def get(path: str, headers: dict[str, str] | None = None) -> RawResponse:
            return post(server.url, path, b"", headers, method="GET")

        assert get("/streamkit/received").status == 401
        received = get("/streamkit/received", key).json()
        traces = get("/streamkit/trace", key).json()
        assert received == server.stats.received and set(received) == set(traces) and len(received) == 2
        assert all(isinstance(received[id], float) and received[id] <= traces[id][0] for id in traces)

        assert get("/streamkit/received?clear=1", key).json() == received
        assert get("/streamkit/received", key).json() == {}
        assert get("/streamkit/trace", key).json() == traces  # untouched
        assert get("/streamkit/trace?clear=1", key).json() == traces
        assert get("/streamkit/trace", key).json() == {}

        assert post(server.url, path, {**body, "stream": True}, key).status == 200
        assert len(get("/streamkit/received", key).json()) == 1
        get("/streamkit/trace?clear=1", key)
        assert len(get("/streamkit/received", key).json()) == 1  # untouched by the trace's clear


def test_without_trace_nothing_is_received() -> None:
    with ServerThread() as server:
        assert send(server, "chat").status == 200
        assert server.stats.received is None and server.stats.traces is None
        assert post(server.url, "/streamkit/received", b"", method="GET").status == 404
