"""A run's report: the summary table, the result file (vLLM's field names plus streamkit's own), per-request
JSONL, and merging result files. The plots are in `streamkit.bench.plots`.

The result file keeps every request's record under `streamkit.records`, so `streamkit bench merge` recomputes
every percentile from the merged records rather than averaging percentiles, which would be wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streamkit._version import __version__
from streamkit.bench.metrics import (
    PERCENTILES,
    Slo,
    Summary,
    describe,
    percentile_name,
    summarize,
)
from streamkit.bench.redact import public
from streamkit.bench.runner import RunResult, merge_parts

__all__ = ["error_kinds", "flags", "load", "load_result", "merge_results", "result_json", "table"]

LAG_LIMIT = 0.005  # p99 event-loop lag above this, in seconds, flags the run
QUEUE_LIMIT = 0.010  # p99 client queue time above this flags the run (open loop without a cap)
# A share of token gaps inside one read above this marks the ITL and TPOT rows: one in a hundred is noise.
COALESCED_LIMIT = 0.01
# A Ray actor's clock offset places its records on the shared timeline within its uncertainty (latencies, each
# on one clock, are exact). Past a tenth of the median TTFT, that misplacement is as large as the spread of
# TTFTs on a steady server, and events a TTFT apart on different nodes may be misordered in the merged run.
CLOCK_LIMIT = 0.1

_METRICS = ("ttft", "tpot", "itl", "e2el")


def _ms(value: float) -> float | None:
    return None if math.isnan(value) else value * 1000


def flags(result: RunResult, summary: Summary, capped: bool) -> list[str]:
    """What makes the run's figures doubtful, in words; empty when nothing does."""
    found = []
    lag = result.lag_stats
    if not math.isnan(lag["p99"]) and lag["p99"] > LAG_LIMIT:
        found.append(
            f"event-loop lag p99 {lag['p99'] * 1e3:.1f} ms > {LAG_LIMIT * 1e3:g} ms: this process is "
            "saturated and its timestamps are late; use --workers"
        )
    if not capped and not math.isnan(summary.queue["p99"]) and summary.queue["p99"] > QUEUE_LIMIT:
        found.append(
            f"client queue time p99 {summary.queue['p99'] * 1e3:.1f} ms > {QUEUE_LIMIT * 1e3:g} ms: requests "
            "left later than scheduled, so the achieved rate is below the target"
        )
    if summary.tokens_estimated:
        found.append("the server sent no usage for some requests: their token counts are estimated")
    ray = result.ray or {}
    if ray.get("failed"):
        found.append(
            f"partial result: Ray actor(s) {', '.join(ray['failed'])} failed, and their share of the load "
            "is missing"
        )
    uncertainty, ttft = ray.get("max_uncertainty_ms"), summary.ttft["median"]
    if uncertainty is not None and not math.isnan(ttft) and uncertainty / 1000 > CLOCK_LIMIT * ttft:
        found.append(
            f"clock offset uncertainty {uncertainty:.2f} ms > {CLOCK_LIMIT:.0%} of the median TTFT "
            f"({ttft * 1e3:.1f} ms): the actors' records are on one timeline only within that"
        )
    if summary.coalesced > COALESCED_LIMIT:
        share = f"{summary.coalesced:.0%} of the gaps between token events were inside one read"
        if not math.isnan(lag["p99"]) and lag["p99"] > LAG_LIMIT:
            found.append(
                f"{share}, and the client read late (event-loop lag p99 {lag['p99'] * 1e3:.1f} ms): ITL and "
                "TPOT are the client's, not the server's; use --workers"
            )
        else:
            found.append(
                f"{share}, while the client read on time: the server sent those tokens together, so ITL and "
                "TPOT show its writes, not its token rate (more workers would not change that)"
            )
    return found


def result_json(
    result: RunResult,
    slo: Slo | None = None,
    settings: Mapping[str, Any] | None = None,
    calibration: Mapping[str, float] | None = None,
    capped: bool = True,
) -> dict[str, Any]:
    """The result file: vLLM's `vllm bench serve` fields, then streamkit's own under `streamkit`. The base URL
    of `settings` is kept without its credentials (`redact.public`)."""
    summary = summarize(result.records, result.duration, slo)
    ok = [r for r in result.records if r.ok]
    settings = dict(settings or {})
    if isinstance(settings.get("base_url"), str):
        settings["base_url"] = public(settings["base_url"])  # never the URL's password or key
    out: dict[str, Any] = {
        "date": _date(result.start_wall),
        "backend": "streamkit",
        **settings,
        "duration": summary.duration,
        "completed": summary.completed,
        "failed": summary.failed,
        "total_input_tokens": summary.total_input_tokens,
        "total_output_tokens": summary.total_output_tokens,
        "request_throughput": summary.request_throughput,
        "request_goodput": summary.request_goodput,
        "goodput_fraction": summary.goodput_fraction,
        "output_throughput": summary.output_throughput,
        "total_token_throughput": summary.total_token_throughput,
        "input_lens": [r.prompt_tokens if r.prompt_tokens is not None else r.input_len for r in ok],
        "output_lens": [r.tokens for r in ok],
        "ttfts": [r.ttft for r in ok],
        "itls": [r.itl if r.itl is not None else r.icl for r in ok],
        "errors": [r.error_message or r.error or "" for r in result.records if not r.ok],
    }
    for name in _METRICS:
        stats: dict[str, float] = getattr(summary, name)
        out[f"mean_{name}_ms"] = _ms(stats["mean"])
        out[f"median_{name}_ms"] = _ms(stats["median"])
        out[f"std_{name}_ms"] = _ms(stats["std"])
        for p in PERCENTILES:
            key = percentile_name(p)
            out[f"p{key}_{name}_ms"] = _ms(stats[f"p{key}"])
    out["streamkit"] = {
        "version": __version__,
        "start_wall": result.start_wall,
        "workers": result.workers,
        **({} if result.ray is None else {"ray": result.ray, "partial": bool(result.ray.get("failed"))}),
        "slo": str(slo) if slo else None,
        "slo_met": summary.slo_met,
        "failures": summary.failures,
        "tokens_estimated": summary.tokens_estimated,
        "hidden_reasoning_tokens": sum(r.hidden_tokens for r in ok),
        "itl_per_token": summary.itl_known,
        "events_per_read": summary.events_per_read,
        "coalesced_token_gaps": summary.coalesced,
        "itl_tpot_coalesced": summary.coalesced > COALESCED_LIMIT,
        "loop": result.loop,
        "warmed_connections": result.warmed,
        "warm_failed": result.warm_failed,
        "worker_stats": worker_stats(result),
        "icl_ms": {k: _ms(v) for k, v in summary.icl.items() if k != "count"},
        "queue_ms": {k: _ms(v) for k, v in summary.queue.items() if k != "count"},
        "loop_lag_ms": {k: _ms(v) for k, v in result.lag_stats.items() if k != "count"},
        "calibration_ms": {k: v * 1000 for k, v in (calibration or {}).items()},
        "capped": capped,
        "flags": flags(result, summary, capped),
        "lag": result.lag,
        "records": [r.to_dict() for r in result.records],
    }
    return out


def worker_stats(result: RunResult) -> list[dict[str, Any]]:
    """Each worker's own event-loop lag and events per read: one late worker is not hidden by the others."""
    stats = []
    lags = result.worker_lags or {0: result.lag}
    for worker in sorted(lags):
        lag = describe(lags[worker])
        mine = [r for r in result.records if r.worker == worker and r.ok]
        reads = sum(r.reads for r in mine)
        stats.append(
            {
                "worker": worker,
                "loop_lag_ms": {k: _ms(lag[k]) for k in ("p50", "p99", "max")},
                "events_per_read": sum(r.chunks for r in mine) / reads if reads else None,
            }
        )
    return stats


def _date(wall: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(wall, datetime.UTC).strftime("%Y%m%d-%H%M%S")


def load_result(path: Path) -> dict[str, Any]:
    """A result file written by `streamkit bench --output`. Raises ValueError for any other file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "records" not in data.get("streamkit", {}):
        raise ValueError(f"{path} is not a result file of streamkit bench (no streamkit.records)")
    return data


def merge_results(results: Sequence[Mapping[str, Any]], slo: Slo | None = None) -> dict[str, Any]:
    """Several result files as one run: records on one timeline (by each run's wall-clock start; the machines'
    clocks must agree), every figure recomputed from them."""
    parts = [
        {
            "records": r["streamkit"]["records"],
            "start_wall": r["streamkit"]["start_wall"],
            "lag": r["streamkit"].get("lag", []),  # older files, and hand-made ones, may have none
        }
        for r in results
    ]
    merged = merge_parts(parts, workers=sum(r["streamkit"].get("workers", 1) for r in results))
    settings = {k: results[0][k] for k in ("model", "base_url", "endpoint_type") if k in results[0]}
    settings["merged_from"] = len(results)
    # Each run's own floor: the worst of them is the floor of the whole, as its stamps are as late as those.
    floors = [r["streamkit"].get("calibration_ms") or {} for r in results]
    calibration = {k: max(f[k] for f in floors if k in f) / 1000 for k in set().union(*floors)}
    capped = all(r["streamkit"].get("capped", True) for r in results)
    return result_json(merged, slo, settings, calibration or None, capped)


def load(result: Mapping[str, Any]) -> str:
    """The load of a run, in words: `concurrency 8`, `rate 20/s, at most 8 in flight`, `rate inf/s`."""
    rate, cap = result.get("request_rate"), result.get("max_concurrency")
    if rate in (None, "inf") and cap is not None:
        return f"concurrency {cap} (closed loop)"
    text = f"rate {rate}/s (open loop)"
    return text if cap is None else f"{text}, at most {cap} in flight"


def error_kinds(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """The failed requests' errors by kind, `ClassName: message`, most frequent first."""
    kinds: dict[str, int] = {}
    for r in records:
        if r.get("error") is not None or not r.get("token_times"):
            kind = f"{r.get('error') or 'NoTokens'}: {r.get('error_message') or 'no token came'}"
            kinds[kind] = kinds.get(kind, 0) + 1
    return sorted(kinds.items(), key=lambda item: (-item[1], item[0]))


def table(result: Mapping[str, Any], written: Mapping[str, Path | None] | None = None) -> str:
    """The summary in the layout of vLLM's, plus streamkit's figures on the client itself. It opens with
    what was measured (endpoint, API, model, load, requests, output length) and closes with where the files
    in `written` (`output`, `plot`, ...) went."""
    sk = result["streamkit"]
    lines = ["============ streamkit bench result ============"]

    def row(label: str, value: object, fmt: str = "") -> None:
        text = "n/a" if value is None else format(value, fmt)
        lines.append(f"{label:<40} {text}")

    if result.get("base_url"):
        row("Endpoint:", result["base_url"])
    if result.get("endpoint_type"):
        row("API:", result["endpoint_type"])
    if result.get("model"):
        row("Model:", result["model"])
    if "request_rate" in result or "max_concurrency" in result:
        row("Load:", load(result))
    if "num_prompts" in result:
        row("Requests:", result["num_prompts"])
    if "output_len" in result:
        output_len = result["output_len"]
        row("Output length (max tokens):", "as the requests file says" if output_len is None else output_len)
    lines.append("-" * 50)
    row("Successful requests:", result["completed"])
    row("Failed requests:", result["failed"])
    for name, count in sorted(sk["failures"].items()):
        row(f"  {name}:", count)
    row("Benchmark duration (s):", result["duration"], ".2f")
    row("Total input tokens:", result["total_input_tokens"])
    row("Total generated tokens:", result["total_output_tokens"])
    row("Request throughput (req/s):", result["request_throughput"], ".2f")
    if result["request_goodput"] is not None:
        row(f"Request goodput (req/s, {sk['slo']}):", result["request_goodput"], ".2f")
        for name, share in sk.get("slo_met", {}).items():
            row(f"  Requests that met {name}:", f"{share:.1%}")
        if result.get("goodput_fraction") is not None:
            row("  Requests that met every SLO:", f"{result['goodput_fraction']:.1%}")
    row("Output token throughput (tok/s):", result["output_throughput"], ".2f")
    row("Total token throughput (tok/s):", result["total_token_throughput"], ".2f")
    # A figure the client's own lateness made says so in its own rows (older files lack the mark).
    coalesced = " [reads coalesced: not the server's]" if sk.get("itl_tpot_coalesced") else ""
    titles = {
        "ttft": "Time to First Token",
        "tpot": "Time per Output Token (excl. 1st token)" + coalesced,
        "itl": "Inter-token Latency"
        + ("" if sk["itl_per_token"] else " (per chunk: tokens per chunk unknown)")
        + coalesced,
        "e2el": "End-to-end Latency",
    }
    for name, title in titles.items():
        lines.append(f"{title:-^50}")
        upper = name.upper()
        for stat in ("mean", "median", "std"):
            row(f"{stat.capitalize()} {upper} (ms):", result[f"{stat}_{name}_ms"], ".2f")
        for p in PERCENTILES:
            key = percentile_name(p)
            row(f"P{key} {upper} (ms):", result[f"p{key}_{name}_ms"], ".2f")
    lines.append(f"{'The client itself':-^50}")
    row("Client queue time p99 (ms):", sk["queue_ms"]["p99"], ".2f")
    row("Event-loop lag p99 / max (ms):", _pair(sk["loop_lag_ms"]["p99"], sk["loop_lag_ms"]["max"]))
    row("Events per socket read (mean):", sk["events_per_read"], ".2f")
    if "coalesced_token_gaps" in sk:
        row("Token gaps inside one read:", f"{sk['coalesced_token_gaps']:.1%}")
    if sk["calibration_ms"]:
        cal = sk["calibration_ms"]
        row("Floor: TTFT p50 / p99 (ms):", _pair(cal["ttft_p50"], cal["ttft_p99"]))
        row("Floor: token lateness p50 / p99 (ms):", _pair(cal["late_p50"], cal["late_p99"]))
    ray = sk.get("ray")
    if ray is None:
        row("Workers (processes):", sk["workers"])
    else:
        nodes = len(ray["nodes"])
        row("Workers (Ray actors):", f"{sk['workers']} on {nodes} node{'s' if nodes != 1 else ''}")
        for a in ray["actors"]:
            status = "" if a["status"] == "ok" else f" [{a['status']}]"
            u = a["uncertainty_ms"]
            row(
                f"  {a['name']} @ {a['ip']}{status}: clock offset (ms):",
                f"{a['offset_ms']:+.3f} +- {'n/a' if u is None else format(u, '.3f')}",
            )
    if "loop" in sk:
        row("Event loop:", sk["loop"])
    if sk.get("warmed_connections"):
        failed = f" ({sk['warm_failed']} failed)" if sk.get("warm_failed") else ""
        row("Warm-up connections (not measured):", f"{sk['warmed_connections']}{failed}")
    for w in sk.get("worker_stats", []) if sk["workers"] > 1 else []:
        lag, per_read = w["loop_lag_ms"], w["events_per_read"]
        per_read = "n/a" if per_read is None else f"{per_read:.2f}"
        row(
            f"  worker {w['worker']}: lag p99 / max (ms), events/read:",
            f"{_pair(lag['p99'], lag['max'])}, {per_read}",
        )
    kinds = error_kinds(sk["records"])
    if kinds:
        lines.append(f"{'Errors':-^50}")
        lines += [f"{count:>6} x {kind}" for kind, count in kinds[:5]]
        if len(kinds) > 5:
            lines.append(f"       ... and {len(kinds) - 5} other kinds")
    lines.append("=" * 50)
    lines += [f"FLAG: {flag}" for flag in sk["flags"]]
    for name, path in (written or {}).items():
        if path is not None:
            lines.append(f"{name.capitalize()} written to {path}")
    return "\n".join(lines)


def _pair(a: float | None, b: float | None) -> str:
    return " / ".join("n/a" if v is None else f"{v:.3f}" for v in (a, b))


def save_requests(result: RunResult, path: Path) -> None:
    """One JSON object per request: its record, plus its TTFT, TPOT, E2EL and queue time in seconds."""
    with path.open("w", encoding="utf-8") as out:
        for r in result.records:
            line = {
                **r.to_dict(),
                "ttft": r.ttft,
                "tpot": r.tpot,
                "e2el": r.e2el,
                "queue": r.queue,
                "ok": r.ok,
            }
            out.write(json.dumps(line) + "\n")
