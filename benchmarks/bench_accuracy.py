"""How close `streamkit bench`'s figures are to the truth, beside an `openai`-based measurement.

    python benchmarks/bench_accuracy.py                    # concurrency 1, 64 and 512
    python benchmarks/bench_accuracy.py --concurrency 64 --json

The built-in server runs in its own process with 50 ms to the first token and 10 ms per token (each wait
+-20%), and records when it wrote each token chunk (`streamkit serve --trace`). That record is the truth: for
each request, TTFT is the first write minus the client's send time, ITL the gaps between writes. Each
measurer runs the same closed-loop load; its p50 and p99 are compared with the truth's for the same requests.

- streamkit: `streamkit.bench.run_load` (arrival stamped per read, before decoding);
- openai: `openai.AsyncOpenAI` with `stream=True`, stamping `time.perf_counter()` as each chunk reaches the
  loop body, as the usual benchmark scripts built on it do (vLLM's `bench serve` does the same on aiohttp).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
import urllib.request
from typing import Any

import openai

from streamkit.bench import BenchRequest, LoadConfig, RequestRecord, run_load, summarize
from streamkit.bench.runner import RunResult
from streamkit.server import ServerProcess

SERVER = ("--ttft", "0.05", "--tps", "100", "--jitter", "0.2", "--tokens", "20", "--trace")
MESSAGES = [{"role": "user", "content": "Hi"}]


def traces(url: str) -> dict[str, list[float]]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/streamkit/trace?clear=1") as response:
        data: dict[str, list[float]] = json.load(response)
        return data


async def openai_run(url: str, concurrency: int, n: int) -> RunResult:
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    origin = time.perf_counter()
    records: list[RequestRecord] = []
    queue = iter(range(n))

    async def slot() -> None:
        for _ in queue:
            t0 = time.perf_counter()
            stream = await client.chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "Hi"}], max_tokens=20, stream=True
            )
            record = RequestRecord(t_sched=t0 - origin, t0=t0 - origin)
            async for chunk in stream:
                now = time.perf_counter()
                record.response_id = record.response_id or chunk.id
                if chunk.choices and chunk.choices[0].delta.content:
                    record.token_times.append(now - t0)
            record.token_counts = [1] * len(record.token_times)
            record.output_tokens = len(record.token_times)
            records.append(record)

    await asyncio.gather(*(slot() for _ in range(concurrency)))
    await client.close()
    return RunResult(records, 1.0, time.time(), origin=origin)


def truth(result: RunResult, written: dict[str, list[float]]) -> list[RequestRecord]:
    return [
        dataclasses.replace(r, token_times=[t - result.origin - r.t0 for t in written[r.response_id or ""]])
        for r in result.records
    ]


def compare(result: RunResult, written: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    measured = summarize(result.records, 1.0)
    true = summarize(truth(result, written), 1.0)
    out = {}
    for metric in ("ttft", "itl"):
        for p in ("p50", "p99"):
            got, want = getattr(measured, metric)[p] * 1e3, getattr(true, metric)[p] * 1e3
            out[f"{metric} {p}"] = {"measured_ms": got, "true_ms": want, "error_ms": got - want}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, action="append", help="repeatable; default 1, 64, 512")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with ServerProcess(*SERVER) as url:
        for concurrency in args.concurrency or [1, 64, 512]:
            n = max(100, 2 * concurrency)
            traces(url)
            config = LoadConfig(base_url=url, model="scripted", concurrency=concurrency)
            ours = asyncio.run(
                run_load(config, [BenchRequest({"messages": MESSAGES, "max_tokens": 20}, 1)] * n)
            )
            results[f"streamkit c={concurrency}"] = compare(ours, traces(url))
            theirs = asyncio.run(openai_run(url, concurrency, n))
            results[f"openai c={concurrency}"] = compare(theirs, traces(url))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("Measured against the server's own write times (error = measured - true, in ms)\n")
    print(f"{'measurer':<20}{'metric':<10}{'true':>10}{'measured':>10}{'error':>10}")
    for name, rows in results.items():
        for metric, row in rows.items():
            print(
                f"{name:<20}{metric:<10}{row['true_ms']:>10.2f}{row['measured_ms']:>10.2f}{row['error_ms']:>+10.2f}"
            )


if __name__ == "__main__":
    main()
