"""How close `streamkit bench`'s figures are to the truth, beside a lean client's, in the same run.

    python benchmarks/bench_accuracy.py           # concurrency 1, 64 and 512, and 2 workers at 512
    python benchmarks/bench_accuracy.py --concurrency 64 --json

For each concurrency the built-in server runs in a process of its own with 50 ms to the first token and 20
tokens, a token every 10 ms at concurrency 64 and below and every 50 ms above (`GAP`; `--gap-ms` sets one gap
for all): at 512 streams a 10 ms gap is 51,200 token events a second, which saturates a 2-core machine's
server and both measurers, so that the figures would measure the machine. Each wait is +-20%. The server
records when it hands each token event to the connection (`streamkit serve --trace`), on the same clock as
the clients (`time.perf_counter`, CLOCK_MONOTONIC). That record is the truth: for each request, TTFT is the
first token's sending minus the client's send time, ITL the gaps between sendings. Each measurer runs the
same closed-loop load; its p50 and p99 TTFT and ITL are compared with the truth's for the same requests.

- streamkit: `streamkit bench`'s runner (`run_load`: arrival stamped per read, before decoding; the whole
  stream decoded and aggregated), in this process, as `streamkit bench` runs it by default: its warm-up
  opens one connection per slot first, unmeasured (`LoadConfig.warm_connections`); and with `--workers 2`
  (`run_workers`) at the largest concurrency;
- lean: the least a client can do and still know its tokens: raw aiohttp, one timestamp per read, each
  event's JSON parsed with orjson only to see whether it carries content. It has no warm-up: its first wave
  (each slot's first request) opens the connections while it is measured, as a client that knows nothing
  of warm-ups does; that is the comparison the bench is held to ("bench no worse than lean").
- lean, first wave out: the same lean run's figures without its first wave, the requests that opened its
  connections. It is what the lean client would measure after a warm-up like the bench's, taken from the
  same run rather than from a run of its own (which would be another run, on another second of a shared
  machine); its verdict is printed beside the first, for information.

Every measurer runs on the same event loop kind (uvloop where installed, as `streamkit bench` does). The
machine's other work moves these figures: run it three times and take the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import time
import urllib.request
from typing import Any

import aiohttp
import orjson

from streamkit.bench import BenchRequest, LoadConfig, RequestRecord, run_load, summarize
from streamkit.bench.runner import RunResult, auto_workers, run_in_loop, split
from streamkit.server import ServerProcess

TTFT, TOKENS, JITTER = 0.05, 20, 0.2
MESSAGES = [{"role": "user", "content": "Hi"}]
BODY = {"model": "scripted", "messages": MESSAGES, "max_tokens": TOKENS, "stream": True}
STREAMKIT, LEAN, LEAN_WARM, WORKERS = "streamkit", "lean", "lean, first wave out", "streamkit --workers 2"


def gap(concurrency: int) -> float:
    """The server's seconds per token at `concurrency`: 10 ms up to 64 streams, 50 ms beyond."""
    return 0.01 if concurrency <= 64 else 0.05


def server_args(itl: float) -> tuple[str, ...]:
    return ("--ttft", str(TTFT), "--tps", f"{1 / itl:g}", "--jitter", str(JITTER), "--tokens", str(TOKENS),
            "--trace")  # fmt: skip


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
                try:
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
                except aiohttp.ClientError as exc:  # counted as failed, as the bench counts its own
                    record.error = type(exc).__name__
                record.token_counts = [1] * len(record.token_times)
                record.output_tokens = len(record.token_times)
                records.append(record)

        await asyncio.gather(*(slot() for _ in range(concurrency)))
    records.sort(key=lambda r: r.t_sched)
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
    shift = result.origin
    return [
        dataclasses.replace(r, token_times=[t - shift - r.t0 for t in sent.get(r.response_id or "", [])])
        for r in result.records
    ]


def compare(parts: list[RunResult], sent: dict[str, list[float]], skip: int = 0) -> dict[str, Any]:
    """Each part's figures against the truth, leaving out each part's first `skip` requests (by send time)."""
    parts = [dataclasses.replace(p, records=p.records[skip:]) for p in parts]
    records = [r for part in parts for r in part.records]
    measured = summarize(records, 1.0)
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
        "requests": len(records),
        "failed": sum(not r.ok for r in records),
        "warmed": sum(getattr(part, "warmed", 0) for part in parts),
    }


def measure(url: str, concurrency: int, n: int, workers: bool, loop: str) -> dict[str, Any]:
    requests = [BenchRequest({"messages": MESSAGES, "max_tokens": TOKENS}, 1)] * n
    config = LoadConfig(base_url=url, model="scripted", concurrency=concurrency, loop=loop)
    out: dict[str, Any] = {}
    traces(url)
    out[STREAMKIT] = compare([run_in_loop(run_load(config, requests), loop)], traces(url))
    lean = run_in_loop(lean_run(url, concurrency, n), loop)
    sent = traces(url)
    out[LEAN] = compare([lean], sent)
    out[LEAN_WARM] = compare([lean], sent, skip=concurrency)
    if workers:
        out[WORKERS] = compare(workers_run(config, requests, 2), traces(url))
    return out


def verdicts(measurers: dict[str, Any]) -> list[str]:
    """For each streamkit row: whether its worst error is no worse than the lean client's."""
    lines = []
    for name in (STREAMKIT, WORKERS):
        if name not in measurers:
            continue
        bench = measurers[name]["worst_error_ms"]
        said = []
        for lean in (LEAN, LEAN_WARM):
            other = measurers[lean]["worst_error_ms"]
            said.append(f"{'yes' if bench <= other else 'no'} ({bench:.2f} vs {other:.2f} ms, {lean})")
        label = "bench" if name == STREAMKIT else "bench --workers 2"
        lines.append(f"  {label} no worse than lean: {said[0]}; than {said[1]}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--concurrency", type=int, action="append", help="repeatable; default 1, 64, 512")
    parser.add_argument("--requests", type=int, help="per measurer; default max(100, 2 x concurrency)")
    parser.add_argument("--gap-ms", type=float, help="the server's ms per token at every concurrency")
    parser.add_argument("--workers-at", type=int, default=512, help="also run 2 workers at this concurrency")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for concurrency in args.concurrency or [1, 64, 512]:
        itl = args.gap_ms / 1000 if args.gap_ms else gap(concurrency)
        n = args.requests or max(100, 2 * concurrency)
        with ServerProcess(*server_args(itl)) as url:
            config = LoadConfig(base_url=url, model="scripted", concurrency=concurrency)
            results[f"c={concurrency}"] = {
                "gap_ms": itl * 1000,
                "requests": n,
                "auto_workers": auto_workers(config, n, os.cpu_count() or 1),
                "measurers": measure(url, concurrency, n, concurrency == args.workers_at, args.loop),
            }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("Measured against the server's own sending times (error = measured - true, in ms)\n")
    for load, result in results.items():
        measurers = result["measurers"]
        names = list(measurers)
        print(
            f"{load}, a token every {result['gap_ms']:g} ms, {result['requests']} requests each "
            f"(--workers auto would run {result['auto_workers']}): "
            + ", ".join(f"{n} worst |error| {m['worst_error_ms']:.2f}" for n, m in measurers.items())
        )
        width = max(len(n) for n in names) + 8
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
        failed = sum(m["failed"] for m in measurers.values())
        print(f"  loop lag p99: {lags}; token gaps inside one read: {gaps}; failed requests: {failed}")
        warmed = ", ".join(f"{n} {m['warmed']}" for n, m in measurers.items() if n in (STREAMKIT, WORKERS))
        print(f"  connections warmed up before measuring: {warmed}")
        print("\n".join(verdicts(measurers)) + "\n")


if __name__ == "__main__":
    main()
