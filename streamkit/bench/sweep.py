"""A sweep: one measured run per level of load, and the capacity they show (no I/O).

`streamkit bench sweep --concurrency 1,2,4,8 --goodput ttft:500` runs one load per level, in turn, against
the same endpoint. The sweep file holds each level's result exactly as a single run writes it, and the
capacity: the highest level at which at least `slo_fraction` of the requests sent (failed ones included)
met every goodput target. A level below it may have missed: the capacity is read off the levels as measured,
not assumed to be monotonic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from streamkit.bench.metrics import Slo

__all__ = ["LEVEL_KEYS", "capacity", "capacity_line", "sweep_header", "sweep_result", "sweep_row"]

LEVEL_KEYS = {"concurrency": "max_concurrency", "rate": "request_rate"}
"""The result file's key of each setting a sweep varies (vLLM's names)."""


def capacity(runs: Sequence[Mapping[str, Any]], level_key: str, fraction: float) -> float | None:
    """The highest level whose `goodput_fraction` is at least `fraction`; None when none is (or no run had
    goodput targets)."""
    good = [
        run[level_key]
        for run in runs
        if run.get("goodput_fraction") is not None and run["goodput_fraction"] >= fraction
    ]
    return max(good) if good else None


def sweep_result(
    runs: Sequence[Mapping[str, Any]],
    setting: str,
    slo: Slo | None,
    fraction: float,
    interrupted: bool = False,
) -> dict[str, Any]:
    """The sweep file: `{"runs": [...], "capacity": L, ...}`, with the setting varied (`level_key`), the
    targets, the share asked for, and whether Ctrl-C cut the sweep short (the levels measured are kept)."""
    level_key = LEVEL_KEYS[setting]
    return {
        "runs": list(runs),
        "capacity": capacity(runs, level_key, fraction) if slo is not None else None,
        "level_key": level_key,
        "levels": [run[level_key] for run in runs],
        "slo": str(slo) if slo is not None else None,
        "slo_fraction": fraction,
        "interrupted": interrupted,
    }


_COLUMNS = (
    ("level", 8),
    ("ok/sent", 9),
    ("req/s", 8),
    ("tok/s", 9),
    ("TTFT p50", 9),
    ("TTFT p99", 9),
    ("ITL p50", 8),
    ("ITL p99", 8),
    ("met SLOs", 9),
)


def sweep_header(
    setting: str, slo: Slo | None, fraction: float, measured: Mapping[str, object] | None = None
) -> str:
    """The table's head: what is measured (`measured`: endpoint, API, model, ... in the order given), the
    targets, and what each column is; times in ms."""
    lines = [f"{name + ':':<28} {value}" for name, value in (measured or {}).items()]
    targets = f"{slo}, met by {fraction:.0%} of the requests" if slo else "none (no --goodput)"
    lines.append(f"{'Goodput targets (ms):':<28} {targets}")
    lines.append(f"Sweep of {setting}; times in ms")
    lines.append("".join(f"{name:>{width}}" for name, width in _COLUMNS))
    return "\n".join(lines)


def _cell(value: float | None, width: int, fmt: str) -> str:
    text = "n/a" if value is None or math.isnan(value) else format(value, fmt)
    return f"{text:>{width}}"


def sweep_row(setting: str, run: Mapping[str, Any]) -> str:
    """One level's row of the table."""
    level = run[LEVEL_KEYS[setting]]
    sent = run["completed"] + run["failed"]
    share = run.get("goodput_fraction")
    done = f"{run['completed']}/{sent}"
    cells = [
        f"{level:>8g}",
        f"{done:>9}",
        _cell(run["request_throughput"], 8, ".2f"),
        _cell(run["output_throughput"], 9, ".1f"),
        _cell(run["p50_ttft_ms"], 9, ".1f"),
        _cell(run["p99_ttft_ms"], 9, ".1f"),
        _cell(run["p50_itl_ms"], 8, ".1f"),
        _cell(run["p99_itl_ms"], 8, ".1f"),
        _cell(None if share is None else share * 100, 8, ".1f") + ("%" if share is not None else " "),
    ]
    return "".join(cells)


def capacity_line(sweep: Mapping[str, Any]) -> str:
    """The sweep's last line: its capacity, and what it means."""
    setting = next(name for name, key in LEVEL_KEYS.items() if key == sweep["level_key"])
    unit = "requests/s" if setting == "rate" else "streams at once"
    if sweep["slo"] is None:
        return "Capacity: n/a (no --goodput targets to meet)"
    share = f"{sweep['slo_fraction']:.0%}"
    if sweep["capacity"] is None:
        return f"Capacity: none: at no level did {share} of the requests meet {sweep['slo']}"
    return (
        f"Capacity: {setting} {sweep['capacity']:g} ({unit}): the highest level at which {share} of the "
        f"requests met {sweep['slo']}"
    )
