"""`streamkit bench`: the metric arithmetic, what counts as a token event, scheduling, the result file,
merging, and accuracy against the built-in server's known timing."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import itertools
import json
import math
import pickle
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import streamkit
from streamkit.bench import (
    BenchRequest,
    LoadConfig,
    RequestRecord,
    Slo,
    arrival_times,
    calibrate,
    describe,
    generated_requests,
    load_requests,
    percentile,
    run_load,
    runner,
    summarize,
)
from streamkit.bench import cli as bench_cli
from streamkit.bench.report import merge_results, result_json, table
from streamkit.bench.runner import RunResult, auto_workers, merge_parts, send_one, warm_slots
from streamkit.protocols import CHAT, COMPLETIONS
from streamkit.server import Faults, ServerConfig, ServerProcess, ServerThread
from streamkit.streams import Stream
from streamkit.transports.mock import MockResponse, MockTransport

FIXTURES = Path(__file__).parent / "fixtures" / "openai"
HI = [{"role": "user", "content": "Hi"}]


# The arithmetic


def test_ttft_e2el_tpot_and_itl() -> None:
    # Sent at 1.0 (scheduled at 0.9); token events 50, 60, 80 ms later carrying 1, 1 and 2 tokens; N = 4.
    r = RequestRecord(
        t_sched=0.9, t0=1.0, token_times=[0.05, 0.06, 0.08], token_counts=[1, 1, 2], output_tokens=4
    )
    assert r.ttft == 0.05 and r.e2el == 0.08
    assert r.tpot == pytest.approx((0.08 - 0.05) / 3)
    assert r.icl == pytest.approx([0.01, 0.02])
    assert r.itl == pytest.approx([0.01, 0.01, 0.01])  # the 20 ms gap is split over the 2 tokens it brought
    assert r.queue == pytest.approx(0.1)


def test_unknown_tokens_per_chunk_give_no_itl_but_icl() -> None:
    r = RequestRecord(t_sched=0, t0=0, token_times=[0.1, 0.2, 0.4], output_tokens=9)
    assert r.itl is None and r.icl == pytest.approx([0.1, 0.2])
    assert r.tpot == pytest.approx(0.3 / 8) and not r.tokens_estimated


def test_percentiles_interpolate_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5 and percentile(values, 99) == pytest.approx(3.97)
    stats = describe([3.0, 1.0, 2.0])
    assert (stats["min"], stats["median"], stats["max"], stats["mean"]) == (1.0, 2.0, 3.0, 2.0)
    assert stats["std"] == pytest.approx(math.sqrt(2 / 3))
    assert math.isnan(describe([])["p99"])


def test_summary_counts_failures_goodput_and_throughput() -> None:
    good = RequestRecord(0, 0, token_times=[0.1, 0.2], token_counts=[1, 1], output_tokens=2, prompt_tokens=5)
    slow = RequestRecord(0, 0, token_times=[0.9, 1.0], token_counts=[1, 1], output_tokens=2, prompt_tokens=5)
    failed = RequestRecord(0, 0, error="ReadError")
    empty = RequestRecord(0, 0)  # a 200 with no token at all
    summary = summarize([good, slow, failed, empty], duration=2.0, slo=Slo.parse("ttft=500"))
    assert (summary.completed, summary.failed) == (2, 2)
    assert summary.failures == {"ReadError": 1, "NoTokens": 1}
    assert summary.request_throughput == 1.0 and summary.output_throughput == 2.0
    assert summary.total_token_throughput == 7.0
    assert summary.request_goodput == 0.5  # only `good` meets ttft <= 500 ms
    with pytest.raises(ValueError, match="unknown SLO"):
        Slo.parse("latency=3")


# What counts as a token event, on recorded OpenAI streams


def client_for(body: bytes, pieces: int = 1) -> streamkit.AsyncClient:
    """A client answering `body` in `pieces` reads of equal size; with `pieces=0`, a read each event."""
    size = max(1, len(body) // pieces) if pieces else 0
    if size:
        parts = [body[i : i + size] for i in range(0, len(body), size)]
    else:
        parts = [event + b"\n\n" for event in body.split(b"\n\n")[:-1]]

    def handler(request: Any) -> MockResponse:
        return MockResponse(200, parts, {"content-type": "text/event-stream"})

    return streamkit.AsyncClient(base_url="http://test/v1", api_key="k", transport=MockTransport(handler))


async def record_of(body: bytes, pieces: int = 1, api: str = "chat", **params: Any) -> RequestRecord:
    config = LoadConfig(base_url="http://test/v1", model="m", api=api)
    prompt = {"input": "Hi"} if api == "responses" else {"messages": HI}
    async with client_for(body, pieces) as client:
        return await send_one(client, config, BenchRequest({**prompt, **params}, 1), 0.0, 0.0)


def chunk(delta: dict[str, Any], **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": extra.pop("finish_reason", None), **extra}
    return b"data: " + json.dumps({"id": "c", "choices": [choice]}).encode() + b"\n\n"


USAGE = b'data: {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}\n\n'


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_role_only_usage_and_comments_are_not_token_events() -> None:
    body = (
        chunk({"role": "assistant", "content": ""})
        + b": keep-alive\n\n"
        + chunk({"content": "Hel"})
        + chunk({"reasoning_content": "hmm"})
        + chunk({}, finish_reason="stop")
        + USAGE
        + b"data: [DONE]\n\n"
    )
    record = await record_of(body)
    assert len(record.token_times) == 2 and record.chunks == 5  # role, Hel, hmm, stop, usage
    assert (record.output_tokens, record.prompt_tokens) == (4, 3)
    assert record.token_counts is None  # 4 tokens over 2 events, no logprobs: per-event counts unknown
    assert record.ok and not record.tokens_estimated


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("pieces", [1, 0], ids=["one read", "a read each event"])
async def test_logprobs_give_tokens_per_chunk(pieces: int) -> None:
    two = {"content": [{"token": "a", "logprob": 0, "bytes": None, "top_logprobs": []}] * 2}
    body = chunk({"content": "ab"}, logprobs=two) + chunk(
        {"content": "c"}, logprobs={"content": two["content"][:1]}
    )
    record = await record_of(body + chunk({}, finish_reason="stop") + b"data: [DONE]\n\n", pieces)
    assert record.token_counts == [2, 1] and record.tokens == 3 and record.tokens_estimated


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_without_usage_a_stream_cut_at_max_tokens_made_max_tokens() -> None:
    """A server that sends no usage. A single choice that finished for `length` reached `max_tokens`;
    with as many token events as that, each carried one token. Any other finish leaves a text estimate."""
    words = chunk({"content": "Hello"}) + chunk({"content": " there"}) + chunk({"content": " friend"})
    cut = await record_of(words + chunk({}, finish_reason="length") + b"data: [DONE]\n\n", max_tokens=3)
    assert cut.tokens == 3 and cut.token_counts == [1, 1, 1] and cut.tokens_estimated
    stopped = await record_of(words + chunk({}, finish_reason="stop") + b"data: [DONE]\n\n", max_tokens=3)
    # 18 characters, four a token (and never fewer tokens than token events)
    assert stopped.tokens == 4 and stopped.token_counts is None
    longer = await record_of(words + chunk({}, finish_reason="length") + b"data: [DONE]\n\n", max_tokens=6)
    assert longer.tokens == 6 and longer.token_counts is None  # 6 tokens over 3 events: counts unknown


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_failures_are_recorded_with_what_arrived() -> None:
    record = await record_of(chunk({"content": "Hel"}) + chunk({"content": "lo"}))  # ends without finishing
    assert record.error == "IncompleteStreamError" and len(record.token_times) == 2 and not record.ok
    # A server that ends a running stream with [DONE] and no finish_reason (llama-cpp-python did, when another
    # request came in)
    cut = await record_of(chunk({"role": "assistant"}) + chunk({"content": "Hel"}) + b"data: [DONE]\n\n")
    assert cut.error == "Unfinished" and len(cut.token_times) == 1 and not cut.ok


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.bin")), ids=lambda p: p.stem)
async def test_recorded_streams(path: Path) -> None:
    """Every recorded OpenAI stream: one token event per chunk that carries content, refusal or a tool call,
    whatever the reads, and N from usage when the stream has it."""
    body = path.read_bytes()
    record = await record_of(body, pieces=7)
    final = json.loads(path.with_suffix(".final.json").read_text())
    if final.get("usage"):
        assert record.output_tokens == final["usage"]["completion_tokens"]
    carrying = 0
    for line in body.split(b"\n"):
        if line.startswith(b"data: {"):
            choices = json.loads(line[6:]).get("choices") or []
            deltas = [c.get("delta", {}) for c in choices]
            carrying += any(d.get("content") or d.get("refusal") or d.get("tool_calls") for d in deltas)
    assert len(record.token_times) == carrying and record.error is None


# Which tokens count


def test_tpot_spans_the_streamed_tokens_and_throughput_every_token() -> None:
    # Usage says 10 output tokens, 7 of them reasoning that was never streamed: the 3 token events, 100 ms
    # apart, carried the other 3. TPOT is 200 ms over the 2 tokens after the first; the server still made 10.
    hidden = RequestRecord(0, 0, token_times=[0.5, 0.6, 0.7], output_tokens=10, hidden_tokens=7)
    assert hidden.streamed_tokens == 3 and hidden.tpot == pytest.approx(0.1)
    summary = summarize([hidden], duration=2.0)
    assert summary.tpot["median"] == pytest.approx(0.1)
    assert summary.total_output_tokens == 10 and summary.output_throughput == 5.0
    out = result_json(RunResult([hidden], 2.0, 1000.0, [0.001]))
    assert out["median_tpot_ms"] == pytest.approx(100.0) and out["output_lens"] == [10]
    assert out["streamkit"]["hidden_reasoning_tokens"] == 7
    # Where logprobs said what each token event carried, those are the streamed tokens, whatever usage says.
    counted = RequestRecord(0, 0, token_times=[0.5, 0.6, 0.8], token_counts=[2, 1, 2], output_tokens=9)
    assert counted.streamed_tokens == 5 and counted.tpot == pytest.approx(0.3 / 4)


def reasoning_usage(completion: int, reasoning: int) -> bytes:
    usage = {
        "prompt_tokens": 3,
        "completion_tokens": completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    return b"data: " + json.dumps({"id": "c", "choices": [], "usage": usage}).encode() + b"\n\n"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_hidden_chat_reasoning_is_not_in_tpot() -> None:
    """An OpenAI reasoning model on chat: usage counts 6 reasoning tokens among its 9, and the stream carries
    none of them, only 3 content tokens."""
    words = chunk({"content": "Hel"}) + chunk({"content": "lo"}) + chunk({"content": "!"})
    body = words + chunk({}, finish_reason="stop") + reasoning_usage(9, 6) + b"data: [DONE]\n\n"
    record = await record_of(body, pieces=0)
    assert (record.tokens, record.hidden_tokens, record.streamed_tokens) == (9, 6, 3)
    assert record.token_counts == [1, 1, 1]  # 3 streamed tokens over 3 token events: one each
    times = record.token_times
    assert record.tpot == pytest.approx((times[2] - times[0]) / 2)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_streamed_chat_reasoning_stays_in_tpot() -> None:
    """A server that streams the reasoning (`reasoning_content`, as vLLM and DeepSeek do) and counts it in
    `reasoning_tokens`: every token of usage was streamed."""
    thoughts = chunk({"reasoning_content": "hm"}) + chunk({"reasoning_content": "m"})
    body = thoughts + chunk({"content": "Hi"}) + chunk({}, finish_reason="stop") + reasoning_usage(3, 2)
    record = await record_of(body + b"data: [DONE]\n\n", pieces=0)
    assert (record.tokens, record.hidden_tokens, record.streamed_tokens) == (3, 0, 3)


def responses_body(usage: dict[str, Any], reasoning: list[dict[str, Any]]) -> bytes:
    """A Responses stream: 3 text deltas, then `response.completed` with `usage` and the reasoning items."""

    def event(data: dict[str, Any]) -> bytes:
        return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()

    message = {"type": "message", "id": "m", "role": "assistant", "content": []}
    body = event({"type": "response.created", "response": {"id": "r", "status": "in_progress"}})
    body += event({"type": "response.output_item.added", "output_index": 0, "item": message})
    for text in ("Hel", "lo", "!"):
        body += event(
            {"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "delta": text}
        )
    whole = {**message, "content": [{"type": "output_text", "text": "Hello!", "annotations": []}]}
    done = {"id": "r", "status": "completed", "output": [*reasoning, whole]}
    return body + event({"type": "response.completed", "response": {**done, "usage": usage}})


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_hidden_responses_reasoning_is_not_in_tpot() -> None:
    usage = {"input_tokens": 4, "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 6}}
    summary = {"type": "reasoning", "id": "rs", "summary": [], "encrypted_content": "xyz"}
    record = await record_of(responses_body(usage, [summary]), pieces=0, api="responses")
    assert (record.tokens, record.hidden_tokens, record.streamed_tokens) == (9, 6, 3)
    # gpt-oss on vLLM: the reasoning text itself is in the output, and was streamed
    shown = {**summary, "content": [{"type": "reasoning_text", "text": "think"}]}
    record = await record_of(responses_body(usage, [shown]), pieces=0, api="responses")
    assert (record.tokens, record.hidden_tokens) == (9, 0)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_input_tokens_count_the_cached_prompt_on_every_api() -> None:
    """llama.cpp, asked the same prompt on both APIs: Responses counts its 36 prompt tokens in
    `input_tokens`; Messages says `input_tokens: 1` and `cache_read_input_tokens: 35`, as Anthropic does,
    leaving the cached part out. The bench counts the whole prompt on both."""
    llamacpp = FIXTURES.parent / "llamacpp"
    responses = await record_of((llamacpp / "responses.bin").read_bytes(), pieces=7, api="responses")
    messages = await record_of((llamacpp / "messages.bin").read_bytes(), pieces=7, api="messages")
    assert responses.prompt_tokens == messages.prompt_tokens == 36
    written = b'"usage":{"cache_read_input_tokens":35,"input_tokens":1,"output_tokens":0}'
    body = (llamacpp / "messages.bin").read_bytes()
    assert written in body
    fresh = written.replace(b'"input_tokens":1,', b'"input_tokens":1,"cache_creation_input_tokens":20,')
    wrote = await record_of(body.replace(written, fresh), pieces=7, api="messages")
    assert wrote.prompt_tokens == 56  # 1 + 35 read from the cache + 20 written to it
    summary = summarize([messages, wrote], duration=1.0)
    assert summary.total_input_tokens == 92


# Scheduling


def test_poisson_and_gamma_arrivals_have_the_asked_rate() -> None:
    for burstiness in (1.0, 0.5, 4.0):
        times = list(zip(range(20_000), arrival_times(100.0, burstiness, seed=1), strict=False))
        gaps = [b[1] - a[1] for a, b in itertools.pairwise(times)]
        assert statistics.mean(gaps) == pytest.approx(0.01, rel=0.03)
        cv = statistics.stdev(gaps) / statistics.mean(gaps)  # 1/sqrt(shape) for gamma gaps
        assert cv == pytest.approx(1 / math.sqrt(burstiness), rel=0.06)
    assert list(zip(range(3), arrival_times(math.inf, 1.0, 0), strict=False)) == [
        (0, 0.0),
        (1, 0.0),
        (2, 0.0),
    ]


def test_requests_are_made_as_they_are_read(tmp_path: Path) -> None:
    endless = generated_requests(None, 8, 16, api=CHAT, seed=1, extra_body={"ignore_eos": True})
    assert len(endless) == sys.maxsize  # what a --duration run gets: nothing is made up front
    far = endless[10**15]
    assert far.body["max_tokens"] == 16 and far.body["ignore_eos"] is True
    assert len(far.body["messages"][0]["content"].split()) == far.input_len == 8
    assert endless[0] != endless[1] and endless[0] == endless[0]
    assert endless[3::4][2] == endless[11]  # a view reads the same requests
    assert pickle.loads(pickle.dumps(endless[1::2]))[0] == endless[1]  # and travels to a spawned worker
    file = tmp_path / "requests.jsonl"
    file.write_text('{"prompt": "a", "model": "x"}\n\n{"prompt": "b c", "stream": false}\n')
    cycled = load_requests(file, 5, api=COMPLETIONS, extra_body={"seed": 1})
    assert [r.body for r in cycled[:2]] == [{"prompt": "a", "seed": 1}, {"prompt": "b c", "seed": 1}]
    assert [r.body["prompt"] for r in cycled] == ["a", "b c", "a", "b c", "a"]
    assert len(load_requests(file, None, api=COMPLETIONS, extra_body={})) == sys.maxsize


@pytest.fixture(scope="module")
def timed_server() -> Iterator[str]:
    """The built-in server in its own process: 50 ms to the first token, then 10 ms per token, +-20%."""
    with ServerProcess("--ttft", "0.05", "--tps", "100", "--jitter", "0.2", "--tokens", "20") as base_url:
        yield base_url


def requests(n: int) -> list[BenchRequest]:
    return [BenchRequest({"messages": HI, "max_tokens": 20}, 1)] * n


def test_a_request_past_the_timeout_is_recorded_as_one_with_what_arrived() -> None:
    # One limit for the whole request (not one per read, nor a limit on silence): a stream that stalls
    # after 3 events ends at the limit as TotalTimeout, and its tokens before the stall are kept.
    with ServerProcess("--fault", "stall=3:30") as url:
        config = LoadConfig(base_url=url, model="scripted", concurrency=2, timeout=1.0)
        result = asyncio.run(run_load(config, requests(2)))
    assert [r.error for r in result.records] == ["TotalTimeout", "TotalTimeout"]
    assert all(len(r.token_times) == 2 for r in result.records)  # the role chunk, then two tokens


def test_open_loop_sends_on_its_schedule(timed_server: str) -> None:
    # The schedule is the seeded arrival process, exactly; no request leaves before its time. How late they
    # leave on a busy machine is what the queue and lag figures report (bench_accuracy.py measures them).
    config = LoadConfig(base_url=timed_server, model="scripted", rate=100.0, seed=3)
    result = asyncio.run(run_load(config, requests(200)))
    assert all(r.ok for r in result.records)
    planned = list(itertools.islice(arrival_times(100.0, 1.0, 3), 200))
    assert sorted(r.t_sched for r in result.records) == planned
    assert all(r.t0 >= r.t_sched for r in result.records)


def test_concurrency_caps_requests_in_flight(timed_server: str) -> None:
    config = LoadConfig(base_url=timed_server, model="scripted", concurrency=4)
    result = asyncio.run(run_load(config, requests(24)))
    events = sorted(
        [(r.t0, 1) for r in result.records] + [(r.t0 + (r.e2el or 0), -1) for r in result.records]
    )
    in_flight = peak = 0
    for _, step in events:
        in_flight += step
        peak = max(peak, in_flight)
    assert peak == 4


# Accuracy against the server's known timing


def truth(result: RunResult, traces: dict[str, list[float]]) -> list[RequestRecord]:
    """The run's records with the server's write times in place of the client's arrival times."""
    true = []
    for r in result.records:
        sent = result.origin + r.t0
        written = [t - sent for t in traces[r.response_id or ""]]
        true.append(dataclasses.replace(r, token_times=written))
    return true


@pytest.mark.parametrize("concurrency", [1, 64])
def test_every_token_is_stamped_no_earlier_than_the_server_sent_it(concurrency: int) -> None:
    """The server (its own process, the same clock) records when it handed each token event to the connection.
    Token by token, the bench has exactly the tokens the server sent, and stamps each at or after its sending:
    true by construction, however busy the machine. How close the stamps come is `bench_accuracy.py`'s
    question, with the figures in benchmarks/README.md."""
    with ServerProcess(
        "--ttft", "0.05", "--tps", "100", "--jitter", "0.2", "--tokens", "20", "--trace"
    ) as url:
        config = LoadConfig(base_url=url, model="scripted", concurrency=concurrency)
        result = asyncio.run(run_load(config, requests(max(64, 2 * concurrency))))
        with urllib.request.urlopen(url.removesuffix("/v1") + "/streamkit/trace") as response:
            traces = json.load(response)
    assert all(r.ok for r in result.records) and len(result.records) == max(64, 2 * concurrency)
    for r in result.records:
        sent = traces[r.response_id or ""]
        arrived = [result.origin + r.t0 + t for t in r.token_times]
        assert len(arrived) == len(sent) == 20
        assert all(a >= s for a, s in zip(arrived, sent, strict=True))
        assert arrived == sorted(arrived)


def test_calibration_measures_the_client_against_known_writes() -> None:
    floor = asyncio.run(calibrate(requests=10))
    assert set(floor) == {"ttft_p50", "ttft_p99", "late_p50", "late_p99"}
    assert 0 < floor["ttft_p50"] <= floor["ttft_p99"]  # no model: the client and loopback alone
    assert 0 <= floor["late_p50"] <= floor["late_p99"]  # no token arrives before it is sent


# The result file and merging


def fake_run(start_wall: float, offset: float) -> dict[str, Any]:
    records = [
        RequestRecord(
            offset + i, offset + i, [0.1 * (i + 1), 0.1 * (i + 1) + 0.01], [1, 1], 2, prompt_tokens=3
        )
        for i in range(3)
    ]
    return result_json(RunResult(records, 2.31, start_wall, [0.001]), settings={"model": "m"})


def test_result_file_has_vllm_fields() -> None:
    result = fake_run(1000.0, 0.0)
    for name in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std", "p50", "p90", "p95", "p99", "p99.9"):
            assert f"{stat}_{name}_ms" in result
    for key in ("duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
                "request_throughput", "output_throughput", "total_token_throughput", "ttfts", "itls",
                "input_lens", "output_lens", "errors"):  # fmt: skip
        assert key in result
    assert result["median_ttft_ms"] == pytest.approx(200.0)
    assert result["ttfts"] == pytest.approx([0.1, 0.2, 0.3]) and result["output_lens"] == [2, 2, 2]
    assert "Median TTFT (ms):" in table(result)


def test_merge_recomputes_from_the_records() -> None:
    a, b = fake_run(1000.0, 0.0), fake_run(1005.0, 0.0)  # b started 5 s after a
    merged = merge_results([a, b])
    assert merged["completed"] == 6 and merged["merged_from"] == 2
    assert sorted(merged["ttfts"]) == pytest.approx(sorted(a["ttfts"] + b["ttfts"]))
    t0s = sorted(r["t0"] for r in merged["streamkit"]["records"])
    assert t0s == pytest.approx([0, 1, 2, 5, 6, 7])  # b's records moved onto a's timeline
    assert merged["duration"] == pytest.approx(7.31)
    assert merged["median_ttft_ms"] == pytest.approx(200.0)


def test_merge_keeps_the_floor_and_the_cap_and_takes_files_without_lag(tmp_path: Path) -> None:
    a, b = fake_run(1000.0, 0.0), fake_run(1005.0, 0.0)
    a["streamkit"]["calibration_ms"] = {"ttft_p50": 1.0, "ttft_p99": 2.0, "late_p50": 0.1, "late_p99": 0.3}
    b["streamkit"]["calibration_ms"] = {"ttft_p50": 1.5, "ttft_p99": 1.8, "late_p50": 0.2, "late_p99": 0.2}
    b["streamkit"]["capped"] = False
    del b["streamkit"]["lag"]
    merged = merge_results([a, b])
    assert merged["streamkit"]["calibration_ms"] == pytest.approx(
        {"ttft_p50": 1.5, "ttft_p99": 2.0, "late_p50": 0.2, "late_p99": 0.3}
    )
    assert merged["streamkit"]["capped"] is False
    assert merged["streamkit"]["lag"] == a["streamkit"]["lag"]
    files = []
    for name, run in (("a", a), ("b", b)):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(run))
    result = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "bench", "merge", *map(str, files)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Floor: TTFT p50 / p99 (ms):" in result.stdout


def test_token_gaps_inside_one_read_mark_itl_and_tpot() -> None:
    # Two of the four gaps between token events are zero: those tokens came in one read.
    records = [RequestRecord(0.0, 0.0, [0.1, 0.1, 0.12, 0.12, 0.14], [1] * 5, 5)]
    result = result_json(RunResult(records, 1.0, 1000.0, [0.001]), settings={"model": "m"})
    assert result["streamkit"]["coalesced_token_gaps"] == 0.5 and result["streamkit"]["itl_tpot_coalesced"]
    text = table(result)
    assert "Inter-token Latency [reads coalesced: not the server's]" in text
    assert "Time per Output Token (excl. 1st token) [reads coalesced: not the server's]" in text
    assert "Time to First Token [" not in text
    assert any("inside one read" in flag for flag in result["streamkit"]["flags"])
    clean = [RequestRecord(0.0, 0.0, [0.1, 0.11, 0.12], [1] * 3, 3)]
    assert not result_json(RunResult(clean, 1.0, 1000.0, [0.001]))["streamkit"]["itl_tpot_coalesced"]


def test_each_worker_reports_its_own_lag_and_events_per_read() -> None:
    parts = [
        {
            "records": [dict(RequestRecord(0.0, 0.0, [0.1], [1], 1, chunks=4, reads=2).to_dict(), worker=w)],
            "start_wall": 1000.0,
            "lag": [0.001 * (w + 1)] * 10,
            "worker": w,
            "loop": "uvloop",
        }
        for w in (0, 1)
    ]
    merged = merge_parts(parts)
    result = result_json(merged)
    stats = result["streamkit"]["worker_stats"]
    assert [s["worker"] for s in stats] == [0, 1]
    assert [s["loop_lag_ms"]["p99"] for s in stats] == pytest.approx([1.0, 2.0])
    assert [s["events_per_read"] for s in stats] == [2.0, 2.0]
    assert result["streamkit"]["loop"] == "uvloop"
    assert "worker 1: lag p99 / max (ms), events/read:" in table(result)


def test_the_loop_option() -> None:
    from streamkit.bench.runner import event_loop, run_in_loop

    assert event_loop("auto") == "uvloop"  # the dev install has the bench extra's uvloop
    assert event_loop("asyncio") == "asyncio"

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert "uvloop" in run_in_loop(which(), "uvloop")
    assert "uvloop" not in run_in_loop(which(), "asyncio")
    with pytest.raises(ValueError, match="unknown event loop"):
        run_in_loop(which(), "tokio")


# The command


def test_cli_against_a_server_with_output_plot_and_merge(timed_server: str, tmp_path: Path) -> None:
    base = [
        sys.executable,
        "-m",
        "streamkit.cli",
        "bench",
        "--base-url",
        timed_server,
        "--num-requests",
        "20",
    ]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    for out, extra in ((one, ["--concurrency", "4"]), (two, ["--rate", "50", "--workers", "2"])):
        result = subprocess.run(
            [*base, *extra, "--output", str(out), "--save-requests", str(out.with_suffix(".jsonl")),
             "--plot", str(out.with_suffix(".html"))],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "Median TTFT (ms):" in result.stdout and "Floor: TTFT" in result.stdout
        assert json.loads(out.read_text())["completed"] == 20
        assert len(out.with_suffix(".jsonl").read_text().splitlines()) == 20
        assert "<svg" in out.with_suffix(".html").read_text()
    assert json.loads(two.read_text())["streamkit"]["workers"] == 2
    merged = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "bench", "merge", str(one), str(two),
         "-o", str(tmp_path / "m.json"), "--plot", str(tmp_path / "m.png")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr
    assert json.loads((tmp_path / "m.json").read_text())["completed"] == 40
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def run_bench(*argv: str) -> int:
    """`streamkit bench` with these arguments, in this process (so that a test can patch the client)."""
    parser = argparse.ArgumentParser()
    bench_cli.add_parser(parser.add_subparsers())
    return bench_cli.run(parser.parse_args(["bench", *argv]))


def break_one_stream(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    """The third stream read raises `exc` after its first item: as the client's code might raise on an
    answer it did not foresee (a `retry:` field of 5,000 digits raised ValueError), or Ctrl-C does."""
    get_final = Stream.get_final
    calls = itertools.count()

    async def breaking(self: Stream[Any, Any]) -> Any:
        if next(calls) == 2:
            await anext(self)
            raise exc
        return await get_final(self)

    monkeypatch.setattr(Stream, "get_final", breaking)


def test_any_exception_of_a_request_is_its_failure_and_the_run_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    break_one_stream(monkeypatch, ValueError("Exceeds the limit (4300 digits) for integer string conversion"))
    out, lines = tmp_path / "run.json", tmp_path / "requests.jsonl"
    with ServerThread() as server:
        status = run_bench("--base-url", server.base_url, "--model", "scripted", "--num-requests", "6",
                           "--concurrency", "2", "--no-calibrate", "--loop", "asyncio", "--output", str(out),
                           "--save-requests", str(lines))  # fmt: skip
    assert status == 0
    result = json.loads(out.read_text())
    assert (result["completed"], result["failed"]) == (5, 1)
    assert result["streamkit"]["failures"] == {"ValueError": 1}
    assert result["errors"] == ["Exceeds the limit (4300 digits) for integer string conversion"]
    failed = [r for r in map(json.loads, lines.read_text().splitlines()) if not r["ok"]]
    assert [r["error"] for r in failed] == ["ValueError"] and failed[0]["token_times"]  # with what arrived


def test_ctrl_c_in_a_request_still_stops_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    break_one_stream(monkeypatch, KeyboardInterrupt())
    out = tmp_path / "run.json"
    with ServerThread() as server:
        status = run_bench("--base-url", server.base_url, "--model", "scripted", "--num-requests", "6",
                           "--no-calibrate", "--loop", "asyncio", "--output", str(out))  # fmt: skip
    assert status == 130 and not out.exists()


def test_cli_duration_stops_sending_in_time(timed_server: str, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    result = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "bench", "--base-url", timed_server, "--duration", "0.5",
         "--rate", "40", "--no-calibrate", "--output", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = json.loads(out.read_text())
    sent = [r["t_sched"] for r in run["streamkit"]["records"]]
    assert run["completed"] == len(sent) >= 5 and max(sent) < 0.5


def test_cli_ctrl_c_stops_the_run_in_one_line() -> None:
    with ServerThread() as server:
        command = [sys.executable, "-m", "streamkit.cli", "bench", "--base-url", server.base_url,
                   "--model", "scripted", "--duration", "60", "--rate", "5", "--no-calibrate"]  # fmt: skip
        with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as bench:
            assert bench.stderr is not None
            # Interrupted once it is running (a request has come), not while Python is still starting.
            deadline = time.monotonic() + 60
            while server.stats.requests == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            bench.send_signal(signal.SIGINT)
            assert bench.wait(20) == 130
            assert bench.stderr.read().strip().splitlines()[-1] == "streamkit bench: interrupted"


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"no": "messages"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "bench", "--base-url", "http://127.0.0.1:9/v1",
         "--model", "m", "--requests-file", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "needs 'messages'" in result.stderr


# The warm-up, the garbage collector while measuring, and `--workers auto` (runner.py)


def test_the_warm_up_opens_one_connection_per_slot_that_the_run_then_uses() -> None:
    with ServerThread() as server:
        config = LoadConfig(base_url=server.base_url, model="scripted", concurrency=4)
        result = asyncio.run(run_load(config, requests(8)))
        # 4 warm-up requests, one per slot, each on a connection of its own, which the 8 measured ones reuse
        assert server.stats.requests == 8 + 4 and len(server.stats.peers) == 4
    assert len(result.records) == 8 and all(r.ok for r in result.records)
    assert (result.warmed, result.warm_failed) == (4, 0)
    with ServerThread() as server:
        off = dataclasses.replace(config, base_url=server.base_url, warm_connections=False)
        result = asyncio.run(run_load(off, requests(8)))
        assert server.stats.requests == 8
    assert len(result.records) == 8 and (result.warmed, result.warm_failed) == (0, 0)


LEAST = {"chat": ("max_tokens", 1), "completions": ("max_tokens", 1), "messages": ("max_tokens", 1),
         "responses": ("max_output_tokens", 16)}  # fmt: skip
PROMPTS: dict[str, dict[str, Any]] = {"chat": {"messages": HI}, "completions": {"prompt": "Hi"},
                                      "messages": {"messages": HI}, "responses": {"input": "Hi"}}  # fmt: skip


@pytest.mark.parametrize("api", sorted(LEAST))
def test_the_warm_up_requests_ask_for_the_fewest_tokens_the_api_takes(api: str) -> None:
    name, least = LEAST[api]
    with ServerThread() as server:
        config = LoadConfig(base_url=server.base_url, model="scripted", api=api, concurrency=4)
        result = asyncio.run(run_load(config, [BenchRequest({**PROMPTS[api], name: 20}, 1)] * 6))
        bodies = server.stats.bodies
    assert all(r.ok for r in result.records) and result.warmed == 4
    assert sorted(b[name] for b in bodies) == [least] * 4 + [20] * 6
    assert all(b["model"] == "scripted" and b["stream"] for b in bodies)


def test_chat_warm_up_keeps_the_name_of_the_limit_the_body_uses() -> None:
    with ServerThread() as server:
        config = LoadConfig(base_url=server.base_url, model="scripted", concurrency=2)
        body = {"messages": HI, "max_completion_tokens": 20}
        asyncio.run(run_load(config, [BenchRequest(body, 1)] * 2))
        bodies = server.stats.bodies
    assert [b["max_completion_tokens"] for b in bodies] == [1, 1, 20, 20]
    assert not any("max_tokens" in b for b in bodies)


def test_failed_warm_up_requests_are_counted_and_the_run_goes_on() -> None:
    # The server fails the first 2 attempts (the warm-up's), then answers: every measured request is whole.
    with ServerThread(ServerConfig(faults=Faults.parse("status=500:2"))) as server:
        config = LoadConfig(base_url=server.base_url, model="scripted", concurrency=2)
        result = asyncio.run(run_load(config, requests(4)))
    assert (result.warmed, result.warm_failed) == (2, 2)
    assert len(result.records) == 4 and all(r.ok for r in result.records)


def gc_state() -> tuple[bool, tuple[int, ...], int]:
    return gc.isenabled(), gc.get_threshold(), gc.get_freeze_count()


def test_the_collector_is_off_while_measuring_and_as_it_was_after_even_when_the_run_raises() -> None:
    before = gc_state()
    enabled: list[bool] = []
    with ServerThread() as server:
        config = LoadConfig(base_url=server.base_url, model="scripted", concurrency=2)
        asyncio.run(run_load(config, requests(4), progress=lambda r: enabled.append(gc.isenabled())))
        assert enabled == [False] * 4 and gc_state() == before

        def breaks(record: RequestRecord) -> None:
            raise RuntimeError("a progress callback that breaks")

        with pytest.raises(RuntimeError, match="breaks"):
            asyncio.run(run_load(dataclasses.replace(config, concurrency=1), requests(3), progress=breaks))
        assert gc_state() == before
        # A caller's own state is kept: a collector it turned off stays off, what it froze stays frozen.
        gc.disable()
        gc.freeze()
        try:
            asyncio.run(run_load(config, requests(2)))
            assert not gc.isenabled() and gc.get_freeze_count() > 0
        finally:
            gc.unfreeze()
            gc.enable()
    assert gc_state() == before


def test_a_failed_request_leaves_no_garbage_for_the_collector() -> None:
    """With the collector off while measuring, a failed request's cycle (its stream holds its error, whose
    traceback holds the stream) would stay until the run ends: the runner drops the recorded error's
    tracebacks, so that the objects a run keeps grow by its records only."""
    kept: list[int] = []

    def count(record: RequestRecord) -> None:
        kept.append(gc.get_count()[0])  # tracked objects made and kept since the last collection

    with ServerProcess("--fault", "drop=3") as url:  # a server of its own: it makes objects too
        config = LoadConfig(base_url=url, model="scripted", concurrency=1)
        result = asyncio.run(run_load(config, requests(60), progress=count))
    assert {r.error for r in result.records} == {"ReadError"}
    assert (kept[-1] - kept[9]) / 50 < 10  # about 80 objects a request, with the cycles; none without


def test_auto_workers_one_per_128_streams_in_flight_up_to_the_cores_and_the_load() -> None:
    closed = LoadConfig(base_url="http://test/v1", model="m", concurrency=64)
    assert auto_workers(closed, 1000, cores=16) == 1
    assert auto_workers(dataclasses.replace(closed, concurrency=129), 1000, cores=16) == 2
    assert auto_workers(dataclasses.replace(closed, concurrency=300), 1000, cores=16) == 3
    assert auto_workers(dataclasses.replace(closed, concurrency=512), 1000, cores=16) == 4
    assert auto_workers(dataclasses.replace(closed, concurrency=512), 1000, cores=2) == 2  # the cores
    assert auto_workers(dataclasses.replace(closed, concurrency=512), 200, cores=16) == 2  # 200 in flight
    assert auto_workers(dataclasses.replace(closed, concurrency=None), 1000, cores=16) == 1  # one slot
    # An open loop: its cap, or without one, rate x 1 s in flight (every request, at an infinite rate)
    opened = dataclasses.replace(closed, concurrency=None, rate=200.0)
    assert auto_workers(opened, 1000, cores=16) == 2
    assert auto_workers(dataclasses.replace(opened, rate=math.inf), 1000, cores=16) == 8
    assert auto_workers(dataclasses.replace(opened, rate=10.0, concurrency=512), 1000, cores=16) == 4
    assert auto_workers(dataclasses.replace(opened, rate=10.0), 1000, cores=16) == 1


def test_warm_slots_one_per_slot_or_what_an_uncapped_open_loop_has_in_flight() -> None:
    closed = LoadConfig(base_url="http://test/v1", model="m", concurrency=4)
    assert warm_slots(closed, 8) == 4 and warm_slots(closed, 3) == 3
    assert warm_slots(dataclasses.replace(closed, concurrency=None), 8) == 1
    assert warm_slots(dataclasses.replace(closed, warm_connections=False), 8) == 0
    opened = dataclasses.replace(closed, concurrency=None, rate=10.0)
    assert warm_slots(opened, 100) == 10  # rate x 1 s
    assert warm_slots(dataclasses.replace(opened, rate=1000.0), 10_000) == 64  # at most WARM_OPEN_LIMIT
    assert warm_slots(dataclasses.replace(opened, rate=math.inf), 20) == 20
    assert warm_slots(dataclasses.replace(opened, concurrency=300), 1000) == 300  # a cap: every slot


def test_warm_up_requests_started_apart_open_a_connection_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each warm-up request holds its answer until every one has its own: on httpx, which keeps a connection
    until its answer is read, one that the server answered at once would otherwise hand its connection to the
    next, and the measured requests would open the rest. (aiohttp hands it back once the answer is in, read or
    not: there, the warm-up's requests open a connection each because they start together.)"""
    calls = itertools.count()
    stream = streamkit.AsyncClient.stream

    async def apart(self: streamkit.AsyncClient, *args: Any, **kwargs: Any) -> Stream[Any, Any]:
        await asyncio.sleep(0.02 * next(calls))  # each request 20 ms after the one before
        return await stream(self, *args, **kwargs)

    monkeypatch.setattr(streamkit.AsyncClient, "stream", apart)
    warm = runner._warm_connections
    opened: list[int] = []

    async def counted(*args: Any) -> int:
        failed = await warm(*args)
        opened.append(len(server.stats.peers))
        return failed

    monkeypatch.setattr(runner, "_warm_connections", counted)
    with ServerThread() as server:
        config = LoadConfig(base_url=server.base_url, model="scripted", concurrency=4, transport="httpx")
        result = asyncio.run(run_load(config, requests(4)))
    assert opened == [4] and result.warmed == 4 and all(r.ok for r in result.records)
