"""How close `streamkit bench`'s figures are to the truth, beside a lean client's, in the same run.

    python benchmarks/bench_accuracy.py           # concurrency 1, 64 and 512, and 2 workers at 512
    python benchmarks/bench_accuracy.py --concurrency 64 --json

The built-in server runs in its own process with 50 ms to the first token and 10 ms per token (each wait
+-20%), and records when it hands each token event to the connection (`streamkit serve --trace`), on the same
clock as the clients (`time.perf_counter`, CLOCK_MONOTONIC). That record is the truth: for each request, TTFT
is the first token's sending minus the client's send time, ITL the gaps between sendings. Each measurer runs
the same closed-loop load; its p50 and p99 TTFT and ITL are compared with the truth's for the same requests.

- streamkit: `streamkit bench`'s runner (`run_load`: arrival stamped per read, before decoding; the whole
  stream decoded and aggregated), in this process, and with `--workers 2` (`run_workers`) at the largest
  concurrency;
- lean: the least a client can do and still know its tokens: raw aiohttp, one timestamp per read, each
  event's JSON parsed with orjson only to see whether it carries content.

Both run on the same event loop kind (uvloop where installed, as `streamkit bench` does).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import time
import urllib.request
from typing import Any

import aiohttp
import orjson

from streamkit.bench import BenchRequest, LoadConfig, RequestRecord, run_load, summarize
from streamkit.bench.runner import RunResult, run_in_loop, split
from streamkit.server import ServerProcess

SERVER = ("--ttft", "0.05", "--tps", "100", "--jitter", "0.2", "--tokens", "20", "--trace")
MESSAGES = [{"role": "user", "content": "Hi"}]
BODY = {"model": "scripted", "messages": MESSAGES, "max_tokens": 20, "stream": True}


def traces(url: str) -> dict[str, list[float]]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/streamkit/trace?clear=1") as response:
        data: dict[str, list[float]] = json.load(response)
        return data


async def lean_run(url: str, concurrency: int, n: int) -> RunResult:
    """A closed loop of `n` requests over `concurrency` slots, stamping each read and nothing more."""
    connector = aiohttp.TCPConnector(limit=0)
    records: list[RequestRecord] = []
    origin = time.perf_counter()
    queue = iter(range(n))
    async with aiohttp.ClientSession(connector=connector) as session:

        async def slot() -> None:
            for _ in queue:
                t0 = time.perf_counter()
                record = RequestRecord(t_sched=t0 - origin, t0=t0 - origin)
                async with session.post(url + "/chat/completions", json=BODY) as response:
                    held = b""
                    async for data in response.content.iter_any():
                        now = time.perf_counter()
                        *events, held = (held + data).split(b"\n\n")
                        for event in events:
                            if not event.startswith(b"data: {"):
                                continue
                            chunk = orjson.loads(event[6:])
                            record.response_id = record.response_id or chunk.get("id")
                            choices = chunk.get("choices")
                            if choices and choices[0].get("delta", {}).get("content"):
                                record.token_times.append(now - t0)
                record.token_counts = [1] * len(record.token_times)
                record.output_tokens = len(record.token_times)
                records.append(record)

        await asyncio.gather(*(slot() for _ in range(concurrency)))
    return RunResult(records, 1.0, time.time(), origin=origin)


def _worker(config: LoadConfig, requests: list[BenchRequest]) -> RunResult:
    return run_in_loop(run_load(config, requests), config.loop)


def workers_run(config: LoadConfig, requests: list[BenchRequest], k: int) -> list[RunResult]:
    """The load in `k` processes, as `streamkit bench --workers` runs it; each part keeps its own time zero
    (`origin`, on the machine's one monotonic clock), so that each request meets its own truth."""
    shares = split(config, requests, k)
    with multiprocessing.get_context("spawn").Pool(len(shares)) as pool:
        return pool.starmap(_worker, [(c, list(r)) for c, r in shares])


def truth(result: RunResult, sent: dict[str, list[float]]) -> list[RequestRecord]:
    return [
        dataclasses.replace(r, token_times=[t - result.origin - r.t0 for t in sent[r.response_id or ""]])
        for r in result.records
    ]


def compare(parts: list[RunResult], sent: dict[str, list[float]]) -> dict[str, Any]:
    measured = summarize([r for part in parts for r in part.records], 1.0)
    true = summarize([r for part in parts for r in truth(part, sent)], 1.0)
    rows = {}
    for metric in ("ttft", "itl"):
        for p in ("p50", "p99"):
            got, want = getattr(measured, metric)[p] * 1e3, getattr(true, metric)[p] * 1e3
            rows[f"{metric} {p}"] = {"measured_ms": got, "true_ms": want, "error_ms": got - want}
    lags = [lag for part in parts for lag in part.lag]
    lag = RunResult([], 1.0, 0.0, lags).lag_stats["p99"] * 1e3 if lags else None
    return {
        "rows": rows,
        "worst_error_ms": max(abs(r["error_ms"]) for r in rows.values()),
        "loop_lag_p99_ms": lag,
        "coalesced_token_gaps": measured.coalesced,
    }


def measure(url: str, concurrency: int, workers: bool, loop: str) -> dict[str, Any]:
    n = max(100, 2 * concurrency)
    requests = [BenchRequest({"messages": MESSAGES, "max_tokens": 20}, 1)] * n
    config = LoadConfig(base_url=url, model="scripted", concurrency=concurrency, loop=loop)
    out: dict[str, Any] = {}
    traces(url)
    out["streamkit"] = compare([run_in_loop(run_load(config, requests), loop)], traces(url))
    out["lean"] = compare([run_in_loop(lean_run(url, concurrency, n), loop)], traces(url))
    if workers:
        out["streamkit --workers 2"] = compare(workers_run(config, requests, 2), traces(url))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--concurrency", type=int, action="append", help="repeatable; default 1, 64, 512")
    parser.add_argument("--workers-at", type=int, default=512, help="also run 2 workers at this concurrency")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with ServerProcess(*SERVER) as url:
        for concurrency in args.concurrency or [1, 64, 512]:
            results[f"c={concurrency}"] = measure(url, concurrency, concurrency == args.workers_at, args.loop)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("Measured against the server's own sending times (error = measured - true, in ms)\n")
    for load, measurers in results.items():
        names = list(measurers)
        print(
            f"{load}: "
            + ", ".join(f"{n} worst |error| {m['worst_error_ms']:.2f}" for n, m in measurers.items())
        )
        width = max(len(n) for n in names) + 10
        print(f"  {'metric':<10}{'true':>9}" + "".join(f"{n + ' error':>{width}}" for n in names))
        for metric in measurers[names[0]]["rows"]:
            true = measurers[names[0]]["rows"][metric]["true_ms"]
            errors = "".join(f"{measurers[n]['rows'][metric]['error_ms']:>+{width}.2f}" for n in names)
            print(f"  {metric:<10}{true:>9.2f}{errors}")
        lags = ", ".join(
            f"{n} {m['loop_lag_p99_ms']:.1f} ms"
            for n, m in measurers.items()
            if m["loop_lag_p99_ms"] is not None
        )
        gaps = ", ".join(f"{n} {m['coalesced_token_gaps']:.0%}" for n, m in measurers.items())
        print(f"  loop lag p99: {lags}; token gaps inside one read: {gaps}\n")


if __name__ == "__main__":
    main()
