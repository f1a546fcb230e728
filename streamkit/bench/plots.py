"""Plots of a run or a sweep that read at a glance: `.html` (one self-contained file of inline SVG, no script,
no external resource) or `.png` (matplotlib, the `bench` extra).

A run (`plot_run`, a result dict as `report.result_json` builds it) shows:

- the CDFs of TTFT, ITL and E2EL in milliseconds, each with its p50, p90 and p99 marked. The percentiles are
  `metrics.describe`'s (linear interpolation, numpy's default) over the same values as the summary table's;
- a timeline of the requests, one bar each by send time: the wait for the first token, then the token phase,
  with a tick at each token event; failed requests in a colour of their own;
- the server's metrics over the run (`result["server_metrics"]`, where the run scraped them, as
  `streamkit.bench.scrape` writes them): gauges as they are, counters as their rate between samples, at
  most `SERIES_LIMIT` of them, the load the server holds (running, waiting, KV cache, ...) first.

ITL is each request's per-token latencies where the tokens of each event are known, else the gaps between
its chunks (ICL; the ITL panel says so), as the result file's `itls` are.

A sweep (`plot_sweep`, `{"runs": [...], "capacity": ..., "level_key": ..., "slo": ..., "slo_fraction": ...}`)
shows TTFT and ITL percentiles against the achieved output throughput, the share of requests that met every
SLO at each level with the capacity marked, the throughput at each level, and the peak of the server's
metrics at each level.

Every SVG part carries a stable marker for tests and readers' tools: `data-panel` on each panel (`cdf-ttft`,
`cdf-itl`, `cdf-e2el`, `timeline`, `server`; `sweep-ttft`, `sweep-itl`, `sweep-goodput`, `sweep-throughput`,
`sweep-server`), with `data-name` naming a server panel's series; `data-series` on each line and point;
`data-mark` on each percentile (`p50`, `p90`, `p99`, with its `data-value` in ms), on the goodput target
(`target`) and on the capacity (`capacity`, with its `data-level`, or `no-capacity`); `data-level` and
`data-value` on a sweep's points; `data-request` (the index by send time) and `data-phase` (`wait`,
`tokens`, `failed`) on each timeline bar, and `data-ticks` on its token ticks. The PNG's figure is built by
`_figure_run` and `_figure_sweep`, which tests read before it is saved.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamkit.bench.metrics import RequestRecord, Slo, describe
from streamkit.bench.redact import public

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["SUFFIXES", "check_path", "plot", "plot_run", "plot_sweep"]

SUFFIXES = (".html", ".png")

BAR_LIMIT = 2000  # timeline bars drawn at most: the first ones by send time
TICK_LIMIT = 5000  # token ticks drawn at most over those bars; past it, the bars alone
SERIES_LIMIT = 8  # server series drawn at most
SWEEP_SERIES_LIMIT = 4  # server series drawn at most in a sweep's plot
CDF_POINTS = 1000  # points of a CDF's line at most (the percentile marks are exact whatever the sampling)

_NO_MATPLOTLIB = 'a PNG plot needs matplotlib, from the checkout: .venv/bin/pip install -e ".[bench]"'

_MARKS = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))
_MARK_COLOURS = {"p50": "#2ca02c", "p90": "#ff7f0e", "p99": "#d62728"}
_CDF_COLOUR = "#1f4e9c"
_WAIT, _TOKENS, _FAILED, _TICK = "#f2b134", "#3a7dc9", "#d62728", "#0b2545"
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
# Server series whose names hold these words come first, in this order: the load the server holds.
_PREFERRED = ("running", "waiting", "busy", "processing", "deferred", "kv", "tokens")
_LEVEL_NAMES = {"max_concurrency": "max concurrency", "request_rate": "request rate (req/s)"}


def check_path(path: Path) -> None:
    """Raises ValueError for a suffix other than `.html` or `.png`, RuntimeError for a `.png` without
    matplotlib: called before a run, so that a bad `--plot` loses no run."""
    if path.suffix not in SUFFIXES:
        raise ValueError(f"--plot needs a .html or .png file, not {path.name}")
    if path.suffix == ".png":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise RuntimeError(_NO_MATPLOTLIB) from None


def plot(data: Mapping[str, Any], path: Path) -> None:
    """A sweep's plots when `data` has `runs`, else a run's: `.html` or `.png` by the suffix of `path`."""
    if "runs" in data:
        plot_sweep(data, path)
    else:
        plot_run(data, path)


def plot_run(result: Mapping[str, Any], path: Path) -> None:
    """A run's CDFs, timeline and server metrics, from its result dict (`report.result_json`)."""
    check_path(path)
    if path.suffix == ".html":
        path.write_text(_html_run(_run_data(result)), encoding="utf-8")
    else:
        _save(_figure_run(result), path, _title(result))


def plot_sweep(sweep: Mapping[str, Any], path: Path) -> None:
    """A sweep's latencies against throughput, goodput and capacity, from its sweep dict."""
    check_path(path)
    if path.suffix == ".html":
        path.write_text(_html_sweep(_sweep_data(sweep)), encoding="utf-8")
    else:
        _save(_figure_sweep(sweep), path, _title(_first_run(sweep), _SWEEP))


# What is drawn, whatever the format


@dataclass
class _Cdf:
    key: str  # ttft, itl, e2el
    title: str
    unit_of: str  # what one value is: "requests" or "token gaps"
    values: list[float]  # sorted, ms
    marks: list[tuple[str, float, float]]  # (p99, 99.0, value in ms)
    note: str = ""
    empty: str = "no completed requests"
    high: float = 0.0  # the axis' end, ms: the longest value, or short of a far tail (the note says so)


@dataclass
class _Bar:
    index: int  # by send time
    start: float  # seconds since the run's start
    first: float | None  # first token event; None for a failed request, drawn whole in the failed colour
    end: float  # last token event, or the stub's end for a failed request without one
    ticks: list[float]
    tip: str  # the bar's tooltip in SVG


@dataclass
class _Series:
    name: str
    points: list[tuple[float, float]]
    rate: bool  # a counter, drawn as its rate per second

    @property
    def label(self) -> str:
        return f"rate of {self.name} (/s)" if self.rate else self.name

    @property
    def heading(self) -> tuple[str, str]:
        """The title's two lines: what is drawn of which metric, then the series' labels."""
        base, labels = _name_parts(self.name)
        return (f"rate of {base} (/s)" if self.rate else base), labels


def _name_parts(name: str) -> tuple[str, str]:
    """`metric{a="b"}` as `metric` and `{a="b"}`."""
    brace = name.find("{")
    return (name, "") if brace < 0 else (name[:brace], name[brace:])


@dataclass
class _RunData:
    title: str
    subtitle: str
    cdfs: list[_Cdf]
    bars: list[_Bar]
    requests: int
    timeline_note: str
    time_range: tuple[float, float]
    server: list[_Series] | None  # None: the run has no server metrics


def _run_data(result: Mapping[str, Any]) -> _RunData:
    records = [RequestRecord.from_dict(r) for r in result["streamkit"]["records"]]
    ok = [r for r in records if r.ok]
    per_chunk = any(r.itl is None for r in ok)
    gaps = [v for r in ok for v in (r.itl if r.itl is not None else r.icl)]
    cdfs = [
        _cdf("ttft", "TTFT", "requests", [r.ttft for r in ok if r.ttft is not None]),
        _cdf(
            "itl",
            "ITL",
            "token gaps",
            gaps,
            "gaps between chunks: tokens per chunk unknown" if per_chunk else "",
            "no request had two token events" if ok else "no completed requests",
        ),
        _cdf("e2el", "E2EL", "requests", [r.e2el for r in ok if r.e2el is not None]),
    ]
    ordered = sorted(records, key=lambda r: r.t0)
    drawn = ordered[:BAR_LIMIT]
    server = _server_series(result.get("server_metrics") or {}, SERIES_LIMIT)
    starts = [r.t0 for r in drawn] + [t for s in server for t, _ in s.points]
    ends = [r.t0 + (r.e2el or 0.0) for r in drawn] + [t for s in server for t, _ in s.points]
    low, high = min([0.0, *starts]), max([0.0, *ends])
    stub = (high - low) * 0.004 or 0.001  # a failed request without a token: a short bar where it was sent
    ticks_total = sum(len(r.token_times) for r in drawn)
    with_ticks = ticks_total <= TICK_LIMIT
    bars = [_bar(i, r, stub, with_ticks) for i, r in enumerate(drawn)]
    high = max([high, *(b.end for b in bars)])
    high = high if high > low else low + 1.0
    notes = []
    if len(drawn) < len(records):
        notes.append(f"the first {len(drawn)} of {len(records)} requests by send time")
    if not with_ticks:
        notes.append(f"token ticks left out ({ticks_total} token events)")
    return _RunData(
        title=_title(result),
        subtitle=_subtitle(result),
        cdfs=cdfs,
        bars=bars,
        requests=len(records),
        timeline_note="; ".join(notes),
        time_range=(low, high),
        server=None if not result.get("server_metrics") else server,
    )


def _cdf(
    key: str,
    label: str,
    unit_of: str,
    seconds: Sequence[float],
    note: str = "",
    empty: str = "no completed requests",
) -> _Cdf:
    stats = describe(seconds)  # the table's own figures: the same values, the same interpolation
    marks = [(name, p, stats[name] * 1000) for name, p in _MARKS] if seconds else []
    values = sorted(v * 1000 for v in seconds)
    high = values[-1] if values else 0.0
    if values:
        # A tail past p99 longer than all below it would squeeze the distribution into the axis' first
        # ticks: the axis stops a little past p99 instead, and says where the longest value is.
        p99, body = stats["p99"] * 1000, stats["p99"] * 1000 - values[0]
        if values[-1] > p99 + body:
            high = p99 + max(body * 0.25, abs(p99) * 0.05, 1e-3)
            cut = f"axis cut past p99: the longest {_ms(values[-1])}"
            note = f"{note}; {cut}" if note else cut
    return _Cdf(key, label, unit_of, values, marks, note, empty, high)


def _bar(index: int, r: RequestRecord, stub: float, with_ticks: bool) -> _Bar:
    ticks = [r.t0 + t for t in r.token_times] if with_ticks else []
    if r.ok:
        ttft, e2el = r.ttft or 0.0, r.e2el or 0.0
        tip = f"request {index}: TTFT {_ms(ttft * 1000)}, E2EL {_ms(e2el * 1000)}, {r.tokens} tokens"
        return _Bar(index, r.t0, r.t0 + ttft, r.t0 + e2el, ticks, tip)
    end = r.t0 + r.token_times[-1] if r.token_times else r.t0 + stub
    tip = f"request {index}: failed, {r.error or 'no tokens'}"
    if r.error_message:
        tip += f": {r.error_message[:200]}"
    return _Bar(index, r.t0, None, max(end, r.t0 + stub), ticks, tip)


def _server_series(metrics: Mapping[str, Any], limit: int) -> list[_Series]:
    """Up to `limit` series to draw, the load the server holds first (`_PREFERRED`): gauges as sampled,
    counters as their rate. A series' `type` (the scraper's: the Prometheus family's) says which; without
    one, a name ending in `_total` is a counter's. Histograms and summaries (and their `_bucket`, `_sum` and
    `_count` parts), infos, state sets and `_created` are left out."""
    chosen: list[tuple[int, int, _Series]] = []
    for order, (name, stats) in enumerate(metrics.items()):
        base = name.partition("{")[0].lower()
        kind = stats.get("type") if isinstance(stats, Mapping) else None
        if (
            not isinstance(stats, Mapping)
            or kind in _NOT_DRAWN
            or base.endswith(("_created", "_bucket", "_sum", "_count"))
        ):
            continue
        rate = kind == "counter" or (kind in (None, "unknown", "untyped") and base.endswith("_total"))
        points = _rates(_samples(stats)) if rate else _samples(stats)
        if not points:
            continue
        rank = next((i for i, word in enumerate(_PREFERRED) if word in base), len(_PREFERRED))
        if base.startswith(("process_", "python_")):
            rank += 1  # the server process's own housekeeping, after any of the server's work
        chosen.append((rank, order, _Series(name, points, rate)))
    chosen.sort(key=lambda c: (c[0], c[1]))
    return [series for _, _, series in chosen[:limit]]


_NOT_DRAWN = ("histogram", "gaugehistogram", "summary", "info", "stateset")


def _samples(stats: Mapping[str, Any]) -> list[tuple[float, float]]:
    """A series' `[t, value]` samples, those without a value (a NaN scraped, kept as None) left out."""
    return [
        (float(t), float(v))
        for t, v in stats.get("samples") or []
        if _number(t) is not None and _number(v) is not None
    ]


def _rates(samples: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """A counter's increase per second between consecutive samples, at the later one (a reset counts
    from 0). A sample less than half the usual interval after the last (the scrape at the run's end) widens
    the last interval rather than making one of its own: a rate over a few milliseconds is noise."""
    gaps = sorted(t2 - t1 for (t1, _), (t2, _) in itertools.pairwise(samples) if t2 > t1)
    if not gaps:
        return []
    least = gaps[len(gaps) // 2] / 2

    def rate(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        return b[0], (b[1] - a[1] if b[1] >= a[1] else b[1]) / (b[0] - a[0])

    points: list[tuple[float, float]] = []
    start, before = samples[0], samples[0]  # the last interval's end, and its start
    for sample in samples[1:]:
        if sample[0] - start[0] >= least:
            points.append(rate(start, sample))
            before, start = start, sample
        elif points and sample[0] > before[0]:
            points[-1] = rate(before, sample)
            start = sample
    return points


def _title(result: Mapping[str, Any], what: str = "streamkit bench") -> str:
    title = what
    if result.get("model"):
        title += f": {result['model']}"
    if result.get("base_url"):
        title += f" at {public(str(result['base_url']))}"
    if result.get("endpoint_type"):
        title += f" ({result['endpoint_type']} API)"
    return title


def _load(result: Mapping[str, Any]) -> str:
    """The load, in the summary table's words: `concurrency 8 (closed loop)`, `rate 20/s (open loop), at
    most 8 in flight`; empty when the result does not say."""
    rate, cap = result.get("request_rate"), result.get("max_concurrency")
    if rate in (None, "inf") and cap is not None:
        return f"concurrency {cap} (closed loop)"
    if rate is None:
        return ""
    text = f"rate {_level_text(rate)}/s (open loop)"
    burstiness = _number(result.get("burstiness"))
    if burstiness is not None and burstiness != 1:
        text += f", burstiness {burstiness:g}"
    return text if cap is None else f"{text}, at most {cap} in flight"


def _subtitle(result: Mapping[str, Any]) -> str:
    parts = []
    if load := _load(result):
        parts.append(f"load: {load}")
    counts = f"{result.get('completed', 0)} completed, {result.get('failed', 0)} failed"
    if (duration := _number(result.get("duration"))) is not None:
        counts += f" in {duration:.1f} s"
    parts.append(counts)
    if (throughput := _number(result.get("output_throughput"))) is not None:
        parts.append(f"output {throughput:.0f} tok/s")
    return " · ".join(parts)


def _ms(value: float) -> str:
    """Milliseconds to about three significant figures: 412 ms, 41.2 ms, 4.12 ms, 0.412 ms."""
    return f"{value:.{_decimals(value)}f} ms"


def _decimals(value: float) -> int:
    size = abs(value)
    return 0 if size >= 100 else 1 if size >= 10 else 2 if size >= 1 else 3


@dataclass
class _Point:
    level: Any
    label: str
    x: float  # output throughput, tok/s
    ttft: dict[str, float | None]
    itl: dict[str, float | None]
    goodput: float | None  # %
    throughput: float | None
    server: dict[str, float] = field(default_factory=dict)  # series name: its peak


@dataclass
class _SweepData:
    title: str
    subtitle: str
    level_name: str
    points: list[_Point]
    capacity: Any
    capacity_label: str | None  # None: no level met the SLOs
    slo: str | None
    target: float  # %
    server: list[str]  # the series drawn, by name


def _sweep_data(sweep: Mapping[str, Any]) -> _SweepData:
    runs: list[Mapping[str, Any]] = list(sweep["runs"])
    key = str(sweep.get("level_key") or "max_concurrency")
    slo = sweep.get("slo") or None
    target = float(sweep.get("slo_fraction", 0.99)) * 100
    ordered = sorted(runs, key=lambda r: _level_order(r.get(key)))
    points = []
    for run in ordered:
        level = run.get(key)
        metrics = run.get("server_metrics") or {}
        peaks = {s.name: _peak(s, metrics[s.name]) for s in _server_series(metrics, len(metrics))}
        points.append(
            _Point(
                level=level,
                label=_level_text(level),
                x=_number(run.get("output_throughput")) or 0.0,
                ttft={name: _number(run.get(f"{name}_ttft_ms")) for name, _ in _MARKS},
                itl={name: _number(run.get(f"{name}_itl_ms")) for name, _ in _MARKS},
                goodput=_goodput(run, slo),
                throughput=_number(run.get("output_throughput")),
                server=peaks,
            )
        )
    # The series of the first run that has any, by the same preference as a run's plot.
    first = next((r.get("server_metrics") for r in ordered if r.get("server_metrics")), None) or {}
    server = [s.name for s in _server_series(first, SWEEP_SERIES_LIMIT)]
    capacity = sweep.get("capacity")
    name = _LEVEL_NAMES.get(key, key.replace("_", " "))
    subtitle = [f"{len(points)} levels of {name}: {', '.join(p.label for p in points)}"]
    if slo:
        subtitle.append(f"SLO {slo}, met by at least {target:g}% of requests")
        subtitle.append(
            f"capacity: {_level_text(capacity)}" if capacity is not None else "no level met the SLOs"
        )
    else:
        subtitle.append("no --goodput targets")
    if sweep.get("interrupted"):
        subtitle.append("interrupted: the levels measured so far")
    return _SweepData(
        title=_title(_first_run(sweep), _SWEEP),
        subtitle=" · ".join(subtitle),
        level_name=name,
        points=points,
        capacity=capacity,
        capacity_label=None if capacity is None else f"capacity: {_level_text(capacity)}",
        slo=slo,
        target=target,
        server=server,
    )


_SWEEP = "streamkit bench sweep"


def _peak(series: _Series, stats: Mapping[str, Any]) -> float:
    """A gauge's highest value (the scraper's `max`, exact even where it thinned the samples), or a
    counter's highest rate."""
    high = _number(stats.get("max"))
    return high if high is not None and not series.rate else max(v for _, v in series.points)


def _first_run(sweep: Mapping[str, Any]) -> Mapping[str, Any]:
    """The run whose model, URL and API name the sweep (every run of a sweep has the same)."""
    runs = sweep.get("runs") or []
    return runs[0] if runs and isinstance(runs[0], Mapping) else {}


def _goodput(run: Mapping[str, Any], slo: str | None) -> float | None:
    """The share of the run's requests that met every SLO, in %: the run's own `goodput_fraction`, else (a
    run measured without the sweep's SLOs) counted from its records."""
    fraction = _number(run.get("goodput_fraction"))
    if fraction is not None:
        return fraction * 100
    if not slo:
        return None
    records = [RequestRecord.from_dict(r) for r in run.get("streamkit", {}).get("records", [])]
    if not records:
        return None
    objectives = Slo.parse(slo)  # as `metrics.summarize` counts them: of the requests sent
    return sum(map(objectives.met, records)) / len(records) * 100


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _level_order(level: Any) -> tuple[int, float, str]:
    number = _number(level)
    return (0, number, "") if number is not None else (1, 0.0, str(level))


def _level_text(level: Any) -> str:
    number = _number(level)
    if number is None:
        return str(level)
    return str(int(number)) if number == int(number) else f"{number:g}"


# Round ticks


def _ticks(low: float, high: float) -> list[float]:
    """4 to 6 round values (steps of 1, 2, 2.5 or 5 times a power of ten) from at or below `low` to at or
    above `high`."""
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = 0.0, 1.0
    low, high = min(low, high), max(low, high)
    if high - low <= 1e-9 * max(abs(low), abs(high), 1.0):  # one value, give or take a rounding
        middle = (low + high) / 2
        pad = abs(middle) * 0.1 if abs(middle) > 1e-9 else 1.0
        low, high = (middle - pad, middle + pad) if middle < 0 or middle - pad >= 0 else (0.0, middle + pad)
    exponent = math.floor(math.log10((high - low) / 5))
    best: tuple[tuple[float, ...], float, int, int] | None = None
    for e in (exponent - 1, exponent, exponent + 1):
        for mantissa in (1.0, 2.0, 2.5, 5.0):
            step = mantissa * 10.0**e
            first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
            count = last - first + 1
            waste = ((last - first) * step - (high - low)) / (high - low)  # the range past the values
            closeness = abs(count - 5) + (0.3 if mantissa == 2.5 else 0.0) + 2 * waste
            score = (float(not 4 <= count <= 6), closeness, -step)
            if best is None or score < best[0]:
                best = (score, step, first, last)
    assert best is not None
    _, step, first, last = best
    return [float(f"{i * step:.12g}") for i in range(first, last + 1)]


def _tick_labels(values: Sequence[float]) -> list[str]:
    step = values[1] - values[0] if len(values) > 1 else 1.0
    if step >= 1000 and all(v % 1000 == 0 for v in values) and max(abs(v) for v in values) >= 10000:
        return [f"{v / 1000:g}k" for v in values]
    decimals = 0
    while decimals < 9 and abs(round(step, decimals) - step) > 1e-9 * abs(step):
        decimals += 1
    return [f"{v:.{decimals}f}" for v in values]


# SVG


@dataclass
class _Axis:
    low: float
    high: float
    ticks: list[tuple[float, str]]


def _axis(low: float, high: float) -> _Axis:
    values = _ticks(low, high)
    return _Axis(values[0], values[-1], list(zip(values, _tick_labels(values), strict=True)))


_PERCENT = _Axis(0.0, 100.0, [(v, f"{v:g}") for v in (0.0, 25.0, 50.0, 75.0, 100.0)])
_PERCENT_ROOM = _Axis(0.0, 108.0, _PERCENT.ticks)  # room above 100% for the labels of marks near it


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _text(x: float, y: float, text: str, size: int = 11, anchor: str = "start", extra: str = "") -> str:
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}'{extra}>{_esc(text)}</text>"
    )


def _text_width(text: str, size: int = 11) -> float:
    return len(text) * size * 0.56


def _short(text: str, size: int, width: float) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    return _cut(text, int(width / (size * 0.56)))


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(1, chars - 1)] + "…"


class _Svg:
    """One chart: a plot area with round ticks on both axes, its title, axis labels and legend around it."""

    def __init__(
        self,
        panel: str,
        title: str,
        x: _Axis,
        y: _Axis,
        xlabel: str,
        ylabel: str,
        width: int = 400,
        height: int = 290,
        note: str = "",
        legend: Sequence[tuple[str, str, str]] = (),  # (label, colour, "line", "box" or "tick")
        flip_y: bool = False,
        attrs: str = "",
        tip: str = "",
    ) -> None:
        self.panel, self.title, self.x_axis, self.y_axis = panel, title, x, y
        self.xlabel, self.ylabel, self.note, self.legend = xlabel, ylabel, note, legend
        self.width, self.height, self.flip_y, self.attrs, self.tip = width, height, flip_y, attrs, tip
        self.left, self.right, self.bottom = 62, 18, 44
        self.top = 30 + (16 if note else 0) + (18 if legend else 0)
        self.plot_w = width - self.left - self.right
        self.plot_h = height - self.top - self.bottom
        self.parts: list[str] = []

    def x(self, value: float) -> float:
        a = self.x_axis
        return self.left + (value - a.low) / ((a.high - a.low) or 1.0) * self.plot_w

    def y(self, value: float) -> float:
        a = self.y_axis
        share = (value - a.low) / ((a.high - a.low) or 1.0)
        return self.top + (share if self.flip_y else 1 - share) * self.plot_h

    def add(self, *parts: str) -> None:
        self.parts.extend(parts)

    def empty(self, message: str) -> None:
        self.add(
            _text(
                self.left + self.plot_w / 2,
                self.top + self.plot_h / 2,
                message,
                12,
                "middle",
                " fill='#777' data-mark='empty'",
            )
        )

    def render(self) -> str:
        w, h, left, top, pw, ph = self.width, self.height, self.left, self.top, self.plot_w, self.plot_h
        out = [
            f"<svg class='panel' data-panel='{_esc(self.panel)}'{self.attrs} xmlns='http://www.w3.org/2000/svg'"
            f" width='{w}' height='{h}' viewBox='0 0 {w} {h}' font-family='sans-serif' font-size='11'>",
            f"<title>{_esc(self.tip or self.title)}</title>",
            f"<rect width='{w}' height='{h}' fill='white'/>",
        ]
        for value, label in self.x_axis.ticks:
            x = self.x(value)
            out.append(f"<line x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{top + ph}' stroke='#e6e6e6'/>")
            out.append(_text(x, top + ph + 15, label, 10, "middle", " fill='#444'"))
        for value, label in self.y_axis.ticks:
            y = self.y(value)
            out.append(f"<line x1='{left}' y1='{y:.1f}' x2='{left + pw}' y2='{y:.1f}' stroke='#e6e6e6'/>")
            out.append(_text(left - 6, y + 3.5, label, 10, "end", " fill='#444'"))
        out.append(f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='none' stroke='#999'/>")
        out += self.parts
        out.append(_text(w / 2, 18, _short(self.title, 13, w - 12), 13, "middle", " font-weight='bold'"))
        if self.note:
            out.append(_text(w / 2, 34, _short(self.note, 11, w - 12), 11, "middle", " fill='#555'"))
        out.append(_text(left + pw / 2, h - 8, self.xlabel, 11, "middle"))
        out.append(_text(-(top + ph / 2), 14, self.ylabel, 11, "middle", " transform='rotate(-90)'"))
        if self.legend:
            out.append(self._legend(top - 8))
        out.append("</svg>")
        return "".join(out)

    def _legend(self, y: float) -> str:
        items, x = [], float(self.left)
        for label, colour, kind in self.legend:
            if kind == "box":
                items.append(f"<rect x='{x:.1f}' y='{y - 8:.1f}' width='12' height='9' fill='{colour}'/>")
            elif kind == "tick":
                items.append(
                    f"<line x1='{x + 6:.1f}' y1='{y - 9:.1f}' x2='{x + 6:.1f}' y2='{y + 1:.1f}' "
                    f"stroke='{colour}' stroke-width='1.5'/>"
                )
            else:
                items.append(
                    f"<line x1='{x:.1f}' y1='{y - 4:.1f}' x2='{x + 14:.1f}' y2='{y - 4:.1f}' "
                    f"stroke='{colour}' stroke-width='2.5'/>"
                )
            items.append(_text(x + 18, y, label, 11))
            x += 18 + _text_width(label) + 14
        return f"<g data-legend='1'>{''.join(items)}</g>"


def _path(points: Iterable[tuple[float, float]]) -> str:
    return "M" + "L".join(f"{x:.1f} {y:.1f}" for x, y in points)


def _sampled(values: Sequence[float], limit: int = CDF_POINTS) -> list[tuple[float, float]]:
    """The CDF's steps as points (value, % at or below), at most about `limit` of them."""
    n = len(values)
    indices: Iterable[int] = (
        range(n) if n <= limit else sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    )
    points = [(values[0], 0.0)]
    previous = 0.0
    for i in indices:
        points += [(values[i], previous), (values[i], (i + 1) / n * 100)]
        previous = (i + 1) / n * 100
    return points


def _cdf_svg(cdf: _Cdf) -> str:
    n = len(cdf.values)
    title = f"{cdf.title} CDF ({n} {cdf.unit_of})"
    x = _axis(cdf.values[0], cdf.high) if cdf.values else _axis(0.0, 1.0)
    svg = _Svg(
        f"cdf-{cdf.key}",
        title,
        x,
        _PERCENT_ROOM,
        f"{cdf.title} (ms)",
        f"{cdf.unit_of} at or below (%)",
        note=cdf.note,
    )
    if not cdf.values:
        svg.empty(cdf.empty)
        return svg.render()
    # A tail past a cut axis runs up its right edge.
    line = _path((svg.x(min(v, x.high)), svg.y(p)) for v, p in _sampled(cdf.values))
    svg.add(f"<path data-series='{cdf.key}' d='{line}' fill='none' stroke='{_CDF_COLOUR}' stroke-width='2'/>")
    for name, p, value in cdf.marks:
        colour, px, py = _MARK_COLOURS[name], svg.x(value), svg.y(p)
        label = f"{name} {_ms(value)}"
        # Above and left of its point is empty (the curve rises to the right); else right and below it.
        if px - 6 - _text_width(label) >= svg.left + 2:
            text = _text(px - 6, py - 4, label, 11, "end", f" fill='{colour}' font-weight='bold'")
        else:
            text = _text(px + 6, py + 13, label, 11, "start", f" fill='{colour}' font-weight='bold'")
        svg.add(
            f"<g data-mark='{name}' data-value='{value!r}'>"
            f"<line x1='{px:.1f}' y1='{svg.y(0):.1f}' x2='{px:.1f}' y2='{py:.1f}' stroke='{colour}' "
            f"stroke-width='1.5' stroke-dasharray='4 3'/>"
            f"<circle cx='{px:.1f}' cy='{py:.1f}' r='3.5' fill='{colour}'/>{text}</g>"
        )
    return svg.render()


_TIMELINE_LEGEND = (
    ("waiting for the first token", _WAIT, "box"),
    ("receiving tokens", _TOKENS, "box"),
    ("failed", _FAILED, "box"),
    ("token event", _TICK, "tick"),
)


def _time_axis(data: _RunData) -> _Axis:
    """The run's seconds, from its first event to its last, with the round ticks inside: rounding the ends
    out (a scrape a second before the start, a 13 s run) could leave a third of the width empty."""
    low, high = data.time_range
    values = _ticks(low, high)
    inside = [v for v in values if low - 1e-9 <= v <= high + 1e-9]
    if len(inside) < 3:
        return _axis(low, high)
    return _Axis(low, high, list(zip(inside, _tick_labels(values)[values.index(inside[0]) :], strict=False)))


def _timeline_svg(data: _RunData, width: int) -> str:
    n = len(data.bars)
    rows = max(n, 1)
    height = int(min(max(n * 7, 160), 640)) + 100
    y_values = [v for v in _ticks(0, max(n - 1, 1)) if v <= n - 1 and v == int(v)]
    y = _Axis(-0.5, rows - 0.5, [(v, f"{v:.0f}") for v in y_values])
    title = f"Request timeline ({data.requests} requests)"
    svg = _Svg(
        "timeline",
        title,
        _time_axis(data),
        y,
        "seconds since the start of the run",
        "request (by send time)",
        width,
        height,
        data.timeline_note,
        _TIMELINE_LEGEND,
        flip_y=True,
    )
    if not n:
        svg.empty("no requests")
        return svg.render()
    thick = max(svg.plot_h / rows * 0.75, 0.6)
    for bar in data.bars:
        top = svg.y(bar.index) - thick / 2
        phases = (
            [("failed", bar.start, bar.end, _FAILED)]
            if bar.first is None
            else [("wait", bar.start, bar.first, _WAIT), ("tokens", bar.first, bar.end, _TOKENS)]
        )
        for phase, start, end, colour in phases:
            x0 = svg.x(start)
            wide = max(svg.x(end) - x0, 2.0 if phase == "failed" else 1.0)
            svg.add(
                f"<rect data-request='{bar.index}' data-phase='{phase}' x='{x0:.2f}' y='{top:.2f}' "
                f"width='{wide:.2f}' height='{thick:.2f}' fill='{colour}'>"
                f"<title>{_esc(bar.tip)}</title></rect>"
            )
        if bar.ticks:
            d = "".join(f"M{svg.x(t):.1f} {top:.2f}v{thick:.2f}" for t in bar.ticks)
            svg.add(f"<path data-ticks='{bar.index}' d='{d}' stroke='{_TICK}' stroke-width='0.8'/>")
    return svg.render()


def _server_svg(series: _Series, index: int, x: _Axis) -> str:
    y = _axis(*_headroom([v for _, v in series.points], 0.08))
    colour = _PALETTE[index % len(_PALETTE)]
    head, labels = series.heading
    svg = _Svg(
        "server",
        head,
        x,
        y,
        "seconds since the start of the run",
        "per second" if series.rate else "value",
        height=230,
        note=labels,
        attrs=f" data-name='{_esc(series.name)}'",
        tip=series.label,
    )
    line = _path((svg.x(t), svg.y(v)) for t, v in series.points)
    svg.add(
        f"<path data-series='{_esc(series.name)}' d='{line}' fill='none' stroke='{colour}' stroke-width='2'/>"
    )
    if len(series.points) == 1:
        t, v = series.points[0]
        svg.add(f"<circle cx='{svg.x(t):.1f}' cy='{svg.y(v):.1f}' r='3' fill='{colour}'/>")
    return svg.render()


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:16px;color:#222;background:#f7f7f7}"
    "h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 8px}"
    ".sub{color:#444;margin:0 0 8px}.row{display:flex;flex-wrap:wrap;gap:12px}"
    "svg.panel{border:1px solid #ddd}"
)


def _page(title: str, subtitle: str, sections: Sequence[tuple[str, Sequence[str]]]) -> str:
    body = "".join(
        f"<h2>{_esc(heading)}</h2><div class='row'>{''.join(panels)}</div>" for heading, panels in sections
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{_esc(title)}</h1><p class='sub'>{_esc(subtitle)}</p>"
        f"{body}</body></html>\n"
    )


_PANEL_W, _GAP = 400, 12


def _html_run(data: _RunData) -> str:
    full = 3 * _PANEL_W + 2 * _GAP + 2  # the row of three CDFs, borders included
    sections: list[tuple[str, Sequence[str]]] = [
        ("Latency distributions", [_cdf_svg(c) for c in data.cdfs]),
        ("Requests over time", [_timeline_svg(data, full)]),
    ]
    if data.server is not None:
        x = _time_axis(data)
        panels = [_server_svg(s, i, x) for i, s in enumerate(data.server)]
        if not panels:
            empty = _Svg("server", "server metrics", x, _axis(0, 1), "seconds since the start of the run", "")
            empty.empty("no series with samples")
            panels = [empty.render()]
        sections.append(
            ("Server metrics", [f"<div class='row' data-panel='server-metrics'>{''.join(panels)}</div>"])
        )
    return _page(data.title, data.subtitle, sections)


def _level_axis(data: _SweepData) -> _Axis:
    """Levels evenly spaced (a sweep's levels are often doublings), labelled with their values."""
    ticks = [(float(i), p.label) for i, p in enumerate(data.points)]
    return _Axis(-0.5, max(len(data.points), 1) - 0.5, ticks)


def _headroom(values: Iterable[float | None], share: float = 0.12) -> tuple[float, float]:
    """From 0 (or below, for a negative value) to `share` of the span above the highest value: room for the
    points' labels, and a flat line off the frame."""
    known = [v for v in values if v is not None]
    if not known:
        return 0.0, 1.0
    low, high = min(0.0, *known), max(known)
    return low, high + ((high - low) * share or abs(low) or 1.0)


def _sweep_latency_svg(data: _SweepData, metric: str, label: str, width: int) -> str:
    xs = [p.x for p in data.points]
    x = _axis(*_headroom(xs, 0.06))
    values = [getattr(p, metric)[name] for p in data.points for name, _ in _MARKS]
    legend = [(name, _MARK_COLOURS[name], "line") for name, _ in _MARKS]
    svg = _Svg(
        f"sweep-{metric}",
        f"{label} against output throughput",
        x,
        _axis(*_headroom(values)),
        "output throughput (tok/s)",
        f"{label} (ms)",
        width,
        340,
        f"point labels: {data.level_name}",
        legend,
    )
    if not any(v is not None for v in values):
        svg.empty("no completed requests")
        return svg.render()
    for name, _ in _MARKS:
        colour = _MARK_COLOURS[name]
        points = [(p, getattr(p, metric)[name]) for p in data.points]
        known = [(svg.x(p.x), svg.y(v)) for p, v in points if v is not None]
        svg.add(
            f"<path data-series='{name}' d='{_path(known)}' fill='none' stroke='{colour}' stroke-width='2'/>"
        )
        for p, v in points:
            if v is None:
                continue
            svg.add(
                f"<circle data-series='{name}' data-level='{_esc(p.label)}' data-value='{v!r}' "
                f"cx='{svg.x(p.x):.1f}' cy='{svg.y(v):.1f}' r='3.5' fill='{colour}'>"
                f"<title>{_esc(f'{data.level_name} {p.label}: {name} {_ms(v)} at {p.x:.0f} tok/s')}</title>"
                "</circle>"
            )
    for p in data.points:  # each level's label once, above its highest point
        top = max((v for v in getattr(p, metric).values() if v is not None), default=None)
        if top is not None:
            svg.add(
                _text(svg.x(p.x), svg.y(top) - 8, p.label, 11, "middle", f" data-label='{_esc(p.label)}'")
            )
    return svg.render()


def _goodput_svg(data: _SweepData, width: int) -> str:
    x = _level_axis(data)
    title = "Requests meeting every SLO"
    note = f"SLO {data.slo}" if data.slo else ""
    legend = (
        [("goodput", _CDF_COLOUR, "line"), (f"target {data.target:g}%", "#555", "line")] if data.slo else []
    )
    svg = _Svg(
        "sweep-goodput",
        title,
        x,
        _Axis(0.0, 112.0, _PERCENT.ticks),  # room above 100% for the points' labels
        data.level_name,
        "requests meeting every SLO (%)",
        width,
        340,
        note,
        legend,
    )
    if not data.slo:
        svg.empty("no --goodput targets")
        return svg.render()
    ty = svg.y(data.target)
    svg.add(
        f"<line data-mark='target' x1='{svg.left}' y1='{ty:.1f}' x2='{svg.left + svg.plot_w}' y2='{ty:.1f}' "
        "stroke='#555' stroke-dasharray='6 4'/>"
    )
    known = [(i, p) for i, p in enumerate(data.points) if p.goodput is not None]
    svg.add(
        f"<path data-series='goodput' d='{_path((svg.x(i), svg.y(p.goodput or 0)) for i, p in known)}' "
        f"fill='none' stroke='{_CDF_COLOUR}' stroke-width='2'/>"
    )
    for i, p in known:
        g = p.goodput or 0.0
        colour = _CDF_COLOUR if g >= data.target else _FAILED
        svg.add(
            f"<circle data-series='goodput' data-level='{_esc(p.label)}' data-value='{g!r}' "
            f"cx='{svg.x(i):.1f}' cy='{svg.y(g):.1f}' r='4' fill='{colour}'/>"
        )
        if len(data.points) <= 12:
            above = _label_above(g, data.target)
            svg.add(_text(svg.x(i) + 6, svg.y(g) + (-7 if above else 15), f"{g:.1f}%", 10, "start"))
    index = next((i for i, p in enumerate(data.points) if p.level == data.capacity), None)
    if data.capacity_label is None:
        svg.add(
            _text(
                svg.left + svg.plot_w / 2,
                svg.top + svg.plot_h * 0.62,
                "no level met the SLOs",
                13,
                "middle",
                f" fill='{_FAILED}' font-weight='bold' data-mark='no-capacity'",
            )
        )
    else:
        cx = svg.x(index) if index is not None else svg.left + svg.plot_w - 4
        anchor = "end" if index is not None and index >= len(data.points) / 2 else "start"
        tx = cx - 6 if anchor == "end" else cx + 6
        line = (
            f"<line x1='{cx:.1f}' y1='{svg.top}' x2='{cx:.1f}' y2='{svg.top + svg.plot_h}' stroke='#2ca02c' "
            "stroke-width='2'/>"
            if index is not None
            else ""
        )
        svg.add(
            f"<g data-mark='capacity' data-level='{_esc(_level_text(data.capacity))}'>{line}"
            + _text(
                tx,
                svg.top + svg.plot_h * 0.62,
                data.capacity_label,
                13,
                anchor,
                " fill='#2ca02c' font-weight='bold'",
            )
            + "</g>"
        )
    return svg.render()


def _label_above(goodput: float, target: float) -> bool:
    """Whether a goodput point's label goes above it: on the side away from the target line, unless it
    would leave the plot."""
    return goodput >= target or goodput < 10


def _throughput_svg(data: _SweepData, width: int) -> str:
    x = _level_axis(data)
    values = [p.throughput for p in data.points]
    svg = _Svg(
        "sweep-throughput",
        "Output throughput by level",
        x,
        _axis(*_headroom(values)),
        data.level_name,
        "output throughput (tok/s)",
        width,
        340,
    )
    known = [(i, p.throughput) for i, p in enumerate(data.points) if p.throughput is not None]
    if not known:
        svg.empty("no throughput")
        return svg.render()
    svg.add(
        f"<path data-series='output_throughput' d='{_path((svg.x(i), svg.y(v)) for i, v in known)}' "
        f"fill='none' stroke='{_TOKENS}' stroke-width='2'/>"
    )
    for i, v in known:
        svg.add(
            f"<circle data-series='output_throughput' data-level='{_esc(data.points[i].label)}' "
            f"cx='{svg.x(i):.1f}' cy='{svg.y(v):.1f}' r='3.5' fill='{_TOKENS}'/>",
            _text(svg.x(i), svg.y(v) - 8, f"{v:.0f}", 10, "middle"),
        )
    return svg.render()


def _peak_heading(name: str) -> tuple[str, str, bool]:
    """The title's two lines for a series' peak at each level, and whether it is a counter's rate."""
    base, labels = _name_parts(name)
    rate = base.lower().endswith("_total")
    return (f"peak rate of {base} (/s)" if rate else f"peak of {base}"), labels, rate


def _sweep_server_svg(data: _SweepData, name: str, index: int) -> str:
    x = _level_axis(data)
    known = [(i, p.server[name]) for i, p in enumerate(data.points) if name in p.server]
    head, labels, rate = _peak_heading(name)
    colour = _PALETTE[index % len(_PALETTE)]
    svg = _Svg(
        "sweep-server",
        head,
        x,
        _axis(*_headroom([v for _, v in known], 0.08)),
        data.level_name,
        "per second" if rate else "value",
        height=230,
        note=labels,
        attrs=f" data-name='{_esc(name)}'",
        tip=f"{head}{labels}",
    )
    svg.add(
        f"<path data-series='{_esc(name)}' d='{_path((svg.x(i), svg.y(v)) for i, v in known)}' fill='none' "
        f"stroke='{colour}' stroke-width='2'/>",
        *(
            f"<circle data-level='{_esc(data.points[i].label)}' data-value='{v!r}' cx='{svg.x(i):.1f}' "
            f"cy='{svg.y(v):.1f}' r='3' fill='{colour}'/>"
            for i, v in known
        ),
    )
    return svg.render()


def _html_sweep(data: _SweepData) -> str:
    half = (3 * _PANEL_W + 2 * _GAP + 2 - _GAP) // 2 - 2
    sections: list[tuple[str, Sequence[str]]] = [
        (
            "Latency against throughput",
            [_sweep_latency_svg(data, "ttft", "TTFT", half), _sweep_latency_svg(data, "itl", "ITL", half)],
        ),
        ("Goodput and throughput by level", [_goodput_svg(data, half), _throughput_svg(data, half)]),
    ]
    if data.server:
        sections.append(
            (
                "Server metrics: peak at each level",
                [_sweep_server_svg(data, n, i) for i, n in enumerate(data.server)],
            )
        )
    return _page(data.title, data.subtitle, sections)


# PNG


def _pyplot_ready() -> None:
    """matplotlib on its file-only backend; RuntimeError, which says how to install it, without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        raise RuntimeError(_NO_MATPLOTLIB) from None


def _save(figure: Figure, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    try:
        figure.savefig(path, metadata={"Title": title})
    finally:
        plt.close(figure)


def _figure_run(result: Mapping[str, Any]) -> Figure:
    """A run's figure, before it is saved: three CDFs, the timeline, and a row of small panels per four
    server series."""
    _pyplot_ready()
    import matplotlib.pyplot as plt

    data = _run_data(result)
    server = data.server or []
    server_rows = 0 if data.server is None else max(math.ceil(len(server) / 4), 1)
    timeline_h = 3.5 + min(len(data.bars), 400) / 100
    heights = [3.6, timeline_h] + [2.7] * server_rows
    figure = plt.figure(figsize=(16, sum(heights) + 0.9), layout="constrained")
    grid = figure.add_gridspec(len(heights), 12, height_ratios=heights)
    for i, cdf in enumerate(data.cdfs):
        _cdf_axes(figure.add_subplot(grid[0, 4 * i : 4 * i + 4]), cdf)
    _timeline_axes(figure.add_subplot(grid[1, :]), data)
    if data.server is not None:
        if not server:
            ax = figure.add_subplot(grid[2, 0:3])
            ax.set_title("server metrics")
            _empty_axes(ax, "no series with samples")
        for i, series in enumerate(server):
            ax = figure.add_subplot(grid[2 + i // 4, 3 * (i % 4) : 3 * (i % 4) + 3])
            _server_axes(ax, series, i, data.time_range)  # the timeline's seconds
    figure.suptitle(f"{data.title}\n{data.subtitle}", fontsize=13)
    return figure


def _empty_axes(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#777", fontsize=12)


def _cdf_axes(ax: Axes, cdf: _Cdf) -> None:
    ax.set_title(f"{cdf.title} CDF ({len(cdf.values)} {cdf.unit_of})" + (f"\n{cdf.note}" if cdf.note else ""))
    ax.set_xlabel(f"{cdf.title} (ms)")
    ax.set_ylabel(f"{cdf.unit_of} at or below (%)")
    ax.set_ylim(0, 100.5)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.grid(True, color="#e6e6e6")
    if not cdf.values:
        _empty_axes(ax, cdf.empty)
        return
    ticks = _ticks(cdf.values[0], cdf.high)  # the SVG's: no offset notation for values alike
    ax.set_xlim(ticks[0], ticks[-1])
    ax.set_xticks(ticks, _tick_labels(ticks))
    points = _sampled(cdf.values, 2000)
    ax.plot([p[0] for p in points], [p[1] for p in points], color=_CDF_COLOUR, linewidth=2, label=cdf.title)
    for name, p, value in cdf.marks:
        colour = _MARK_COLOURS[name]
        ax.plot(
            [value, value], [0, p], color=colour, linestyle="--", linewidth=1.5, label=f"{name} {_ms(value)}"
        )
        ax.plot([value], [p], "o", color=colour, markersize=5)
    ax.legend(loc="best", fontsize=10)


def _timeline_axes(ax: Axes, data: _RunData) -> None:
    title = f"Request timeline ({data.requests} requests)"
    ax.set_title(title + (f"\n{data.timeline_note}" if data.timeline_note else ""), pad=24)
    ax.set_xlabel("seconds since the start of the run")
    ax.set_ylabel("request (by send time)")
    ax.grid(True, axis="x", color="#e6e6e6")
    ax.set_axisbelow(True)
    if not data.bars:
        _empty_axes(ax, "no requests")
        return
    from matplotlib.collections import PolyCollection

    height = 0.8 if len(data.bars) <= 200 else 1.0  # past 200 rows, gaps between bars would be stripes

    def bars(spans: list[tuple[int, float, float]], colour: str, label: str) -> None:
        # One collection of rectangles: a bar chart of 2000 patches would take seconds to build.
        boxes = [
            [(x0, y - height / 2), (x0, y + height / 2), (x1, y + height / 2), (x1, y - height / 2)]
            for y, x0, x1 in spans
        ]
        ax.add_collection(PolyCollection(boxes, facecolors=colour, edgecolors="none", label=label))

    ok = [b for b in data.bars if b.first is not None]
    bars([(b.index, b.start, b.first or b.start) for b in ok], _WAIT, "waiting for the first token")
    bars([(b.index, b.first or b.start, b.end) for b in ok], _TOKENS, "receiving tokens")
    bars([(b.index, b.start, b.end) for b in data.bars if b.first is None], _FAILED, "failed")
    xs = [t for b in data.bars for t in b.ticks]
    if xs:
        ys = [b.index for b in data.bars for _ in b.ticks]
        ax.vlines(
            xs,
            [y - height / 2 for y in ys],
            [y + height / 2 for y in ys],
            colors=_TICK,
            linewidth=0.6,
            label="token event",
        )
    ax.set_ylim(len(data.bars) - 0.5, -0.5)  # the first request on top
    ax.set_xlim(*data.time_range)
    ax.legend(
        loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=4, frameon=False, fontsize=10, borderaxespad=0.2
    )


def _server_axes(ax: Axes, series: _Series, index: int, xlim: tuple[float, float]) -> None:
    head, labels = series.heading
    ax.set_title(_cut(head, 46) + (f"\n{_cut(labels, 52)}" if labels else ""), fontsize=10)
    colour = _PALETTE[index % len(_PALETTE)]
    ax.plot(
        [t for t, _ in series.points],
        [v for _, v in series.points],
        color=colour,
        linewidth=1.8,
        marker="o" if len(series.points) < 30 else None,
        markersize=3,
        label=series.name,
    )
    ax.set_xlim(*xlim)
    ax.set_ylim(*_headroom([v for _, v in series.points], 0.08))
    ax.set_xlabel("seconds since the start of the run", fontsize=9)
    ax.set_ylabel("per second" if series.rate else "value", fontsize=9)
    ax.grid(True, color="#e6e6e6")


def _figure_sweep(sweep: Mapping[str, Any]) -> Figure:
    """A sweep's figure, before it is saved: TTFT and ITL against throughput, goodput and throughput by
    level, and the server's peaks by level."""
    _pyplot_ready()
    import matplotlib.pyplot as plt

    data = _sweep_data(sweep)
    server_rows = math.ceil(len(data.server) / 4)
    heights = [4.6, 4.6] + [2.7] * server_rows
    figure = plt.figure(figsize=(16, sum(heights) + 0.9), layout="constrained")
    grid = figure.add_gridspec(len(heights), 4, height_ratios=heights)
    _sweep_latency_axes(figure.add_subplot(grid[0, 0:2]), data, "ttft", "TTFT")
    _sweep_latency_axes(figure.add_subplot(grid[0, 2:4]), data, "itl", "ITL")
    _goodput_axes(figure.add_subplot(grid[1, 0:2]), data)
    _throughput_axes(figure.add_subplot(grid[1, 2:4]), data)
    for i, name in enumerate(data.server):
        _sweep_server_axes(figure.add_subplot(grid[2 + i // 4, i % 4]), data, name, i)
    figure.suptitle(f"{data.title}\n{data.subtitle}", fontsize=13)
    return figure


def _sweep_latency_axes(ax: Axes, data: _SweepData, metric: str, label: str) -> None:
    ax.set_title(f"{label} against output throughput (point labels: {data.level_name})")
    ax.set_xlabel("output throughput (tok/s)")
    ax.set_ylabel(f"{label} (ms)")
    ax.grid(True, color="#e6e6e6")
    drawn = False
    for name, _ in _MARKS:
        points = [
            (p.x, getattr(p, metric)[name]) for p in data.points if getattr(p, metric)[name] is not None
        ]
        if points:
            drawn = True
            ax.plot(
                [x for x, _ in points],
                [y for _, y in points],
                "o-",
                color=_MARK_COLOURS[name],
                linewidth=2,
                markersize=5,
                label=name,
            )
    if not drawn:
        _empty_axes(ax, "no completed requests")
        return
    for p in data.points:
        top = max((v for v in getattr(p, metric).values() if v is not None), default=None)
        if top is not None:
            ax.annotate(
                p.label, (p.x, top), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=10
            )
    ax.set_ylim(bottom=0)
    ax.margins(x=0.06, y=0.15)
    ax.legend(loc="upper left", fontsize=10)


def _goodput_axes(ax: Axes, data: _SweepData) -> None:
    ax.set_title("Requests meeting every SLO" + (f" ({data.slo})" if data.slo else ""))
    ax.set_xlabel(data.level_name)
    ax.set_ylabel("requests meeting every SLO (%)")
    _level_ticks(ax, data)
    ax.set_ylim(0, 110)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.grid(True, color="#e6e6e6")
    if not data.slo:
        _empty_axes(ax, "no --goodput targets")
        return
    known = [(i, p.goodput) for i, p in enumerate(data.points) if p.goodput is not None]
    ax.plot(
        [i for i, _ in known], [g for _, g in known], "o-", color=_CDF_COLOUR, linewidth=2, label="goodput"
    )
    ax.axhline(data.target, color="#555", linestyle="--", linewidth=1.2, label=f"target {data.target:g}%")
    missed = [(i, g) for i, g in known if g < data.target]
    ax.plot([i for i, _ in missed], [g for _, g in missed], "o", color=_FAILED, zorder=3)
    if len(data.points) <= 12:
        for i, g in known:
            ax.annotate(
                f"{g:.1f}%",
                (i, g),
                textcoords="offset points",
                xytext=(5, 6 if _label_above(g, data.target) else -13),
                ha="left",
                fontsize=9,
            )
    index = next((i for i, p in enumerate(data.points) if p.level == data.capacity), None)
    if data.capacity_label is None:
        ax.text(
            0.5,
            0.6,
            "no level met the SLOs",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color=_FAILED,
            fontsize=13,
            fontweight="bold",
        )
    elif index is not None:
        ax.axvline(index, color="#2ca02c", linewidth=2, label=data.capacity_label)
        right = index >= len(data.points) / 2
        ax.annotate(
            data.capacity_label,
            (index, 60),
            textcoords="offset points",
            xytext=(-6 if right else 6, 0),
            ha="right" if right else "left",
            color="#2ca02c",
            fontsize=12,
            fontweight="bold",
        )
    else:
        ax.text(
            0.98,
            0.6,
            data.capacity_label,
            ha="right",
            transform=ax.transAxes,
            color="#2ca02c",
            fontsize=12,
            fontweight="bold",
        )
    ax.legend(loc="lower left", fontsize=10)


def _level_ticks(ax: Axes, data: _SweepData) -> None:
    ax.set_xlim(-0.5, max(len(data.points), 1) - 0.5)
    ax.set_xticks(range(len(data.points)), [p.label for p in data.points])


def _throughput_axes(ax: Axes, data: _SweepData) -> None:
    ax.set_title("Output throughput by level")
    ax.set_xlabel(data.level_name)
    ax.set_ylabel("output throughput (tok/s)")
    _level_ticks(ax, data)
    ax.grid(True, color="#e6e6e6")
    known = [(i, p.throughput) for i, p in enumerate(data.points) if p.throughput is not None]
    if not known:
        _empty_axes(ax, "no throughput")
        return
    ax.plot([i for i, _ in known], [v for _, v in known], "o-", color=_TOKENS, linewidth=2, label="output")
    for i, v in known:
        ax.annotate(f"{v:.0f}", (i, v), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.margins(y=0.15)


def _sweep_server_axes(ax: Axes, data: _SweepData, name: str, index: int) -> None:
    head, labels, rate = _peak_heading(name)
    ax.set_title(_cut(head, 46) + (f"\n{_cut(labels, 52)}" if labels else ""), fontsize=10)
    ax.set_xlabel(data.level_name, fontsize=9)
    ax.set_ylabel("per second" if rate else "value", fontsize=9)
    _level_ticks(ax, data)
    ax.grid(True, color="#e6e6e6")
    known = [(i, p.server[name]) for i, p in enumerate(data.points) if name in p.server]
    ax.plot(
        [i for i, _ in known], [v for _, v in known], "o-", color=_PALETTE[index % len(_PALETTE)], label=name
    )
    ax.set_ylim(*_headroom([v for _, v in known], 0.08))
