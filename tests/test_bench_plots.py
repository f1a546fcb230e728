"""`streamkit.bench.plots`: what each panel shows, checked part by part through the SVG's markers and the
matplotlib figure's artists, against figures computed here apart from the plots' own code."""

from __future__ import annotations

import itertools
import math
import re
import statistics
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from streamkit.bench import RequestRecord, plots
from streamkit.bench.report import result_json
from streamkit.bench.runner import RunResult

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODEL, URL = "tiny-llm", "http://bench-host:8000/v1"


# Runs made by hand, with known figures


def ok_record(t0: float, ttft_ms: float, gap_ms: float, tokens: int = 4) -> RequestRecord:
    times = [(ttft_ms + k * gap_ms) / 1000 for k in range(tokens)]
    return RequestRecord(t0, t0, times, [1] * tokens, tokens, prompt_tokens=5)


def hand_records() -> list[RequestRecord]:
    """Ten good requests sent 0.1 s apart, TTFT 10..100 ms and token gaps of 10..100 ms (three each); one
    failure without a token, sent between the 3rd and 4th; one that broke after two tokens, sent last."""
    records = [ok_record(i * 0.1, 10.0 * (i + 1), 10.0 * (i + 1)) for i in range(10)]
    records.append(RequestRecord(0.25, 0.25, [], error="HTTPStatusError", error_message="503"))
    records.append(RequestRecord(0.95, 0.95, [0.02, 0.03], [1, 1], error="ReadError"))
    return records


def run_result(
    records: list[RequestRecord] | None = None,
    server: Mapping[str, Any] | None = None,
    model: str = MODEL,
    url: str = URL,
    concurrency: int | None = 4,
) -> dict[str, Any]:
    records = hand_records() if records is None else records
    settings = {
        "model": model,
        "base_url": url,
        "endpoint_type": "chat",
        "request_rate": "inf",
        "max_concurrency": concurrency,
    }
    result = result_json(RunResult(records, 2.0, 1_700_000_000.0, [0.001]), settings=settings)
    if server is not None:
        result["server_metrics"] = dict(server)
    return result


def expected(values: list[float], p: int) -> float:
    """numpy's linear percentile, by the standard library: apart from the code under test."""
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def shown(ms: float) -> str:
    """How a mark's label shows milliseconds (three significant figures) for the values of these tests."""
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


TTFTS = [10.0 * (i + 1) for i in range(10)]
ITLS = [10.0 * (i + 1) for i in range(10) for _ in range(3)]
E2ELS = [40.0 * (i + 1) for i in range(10)]


def series(samples: list[tuple[float, float | None]], kind: str = "gauge") -> dict[str, Any]:
    """A series as the scraper writes it (`streamkit.bench.scrape`); a NaN scraped is a None."""
    values = [v for _, v in samples if v is not None]
    return {
        "type": kind,
        "first": values[0],
        "last": values[-1],
        "max": max(values),
        "min": min(values),
        "samples": [list(s) for s in samples],
    }


RUNNING = 'streamkit_requests_running{api="chat"}'
TOKENS = 'streamkit_generated_tokens_total{api="chat"}'


def server_metrics() -> dict[str, Any]:
    """Nine series to draw, one more than the limit, and ones never drawn ahead of them all: a `_created`
    (an older scraper's), a histogram's parts, a summary's quantile."""
    metrics = {
        "streamkit_ttft_seconds_created": series([(0.0, 5.0), (1.0, 5.0)]),
        'streamkit_ttft_seconds_bucket{le="0.1"}': series([(0.0, 1.0), (1.0, 2.0)], "histogram"),
        "streamkit_ttft_seconds_count": series([(0.0, 1.0), (1.0, 2.0)], "histogram"),
        'streamkit_e2el_seconds{quantile="0.99"}': series([(0.0, 1.0), (1.0, 2.0)], "summary"),
    }
    metrics |= {f"other_gauge_{i}": series([(0.0, i), (1.0, i + 1)]) for i in range(7)}
    metrics[TOKENS] = series([(0.0, 0.0), (0.5, 100.0), (1.0, 300.0)], "counter")  # 200 then 400 tokens/s
    # Last, so it must be chosen for its name; a NaN scraped is left out.
    metrics[RUNNING] = series([(0.0, 0.0), (0.5, 4.0), (1.0, 2.0), (1.5, None)])
    return metrics


# Reading the SVG


def panels(page: str) -> Iterator[ET.Element]:
    """Every SVG panel of the page, parsed as XML: each must be well-formed."""
    for fragment in re.findall(r"<svg class='panel'.*?</svg>", page, re.S):
        yield ET.fromstring(fragment)


def panel(page: str, name: str) -> ET.Element:
    found = [p for p in panels(page) if p.get("data-panel") == name]
    assert len(found) == 1, f"{len(found)} panels {name}"
    return found[0]


def marked(element: ET.Element, attribute: str, value: str | None = None) -> list[ET.Element]:
    return [
        e for e in element.iter() if attribute in e.attrib and (value is None or e.get(attribute) == value)
    ]


def text_of(element: ET.Element) -> str:
    return " ".join(t.strip() for t in element.itertext() if t.strip())


@pytest.fixture
def run_page(tmp_path: Path) -> str:
    path = tmp_path / "run.html"
    plots.plot(run_result(), path)
    return path.read_text(encoding="utf-8")


# A run, as HTML


@pytest.mark.parametrize(("key", "values"), [("ttft", TTFTS), ("itl", ITLS), ("e2el", E2ELS)])
def test_each_cdf_marks_p50_p90_p99_at_the_tables_figures(
    run_page: str, key: str, values: list[float]
) -> None:
    result = run_result()
    cdf = panel(run_page, f"cdf-{key}")
    (curve,) = marked(cdf, "data-series", key)
    # The curve runs from 0% to 100% of the values: its first and last points give the y of each.
    points = re.findall(r"([\d.]+) ([\d.]+)", curve.get("d", ""))
    zero, hundred = float(points[0][1]), float(points[-1][1])
    for p in (50, 90, 99):
        (mark,) = marked(cdf, "data-mark", f"p{p}")
        (dot,) = mark.iter(f"{SVG}circle")
        assert (zero - float(dot.get("cy", 0))) / (zero - hundred) == pytest.approx(p / 100, abs=0.002)
        want = expected(values, p)
        assert float(mark.get("data-value", "nan")) == pytest.approx(want)
        assert float(mark.get("data-value", "nan")) == pytest.approx(result[f"p{p}_{key}_ms"])  # the table's
        assert f"p{p} {shown(want)}" in text_of(mark)


def test_timeline_has_both_phases_of_each_good_request_and_a_bar_for_each_failed_one(run_page: str) -> None:
    records = sorted(hand_records(), key=lambda r: r.t0)
    good = {str(i) for i, r in enumerate(records) if r.ok}
    failed = {str(i) for i, r in enumerate(records) if not r.ok}
    assert len(good) == 10 and failed == {"3", "11"}  # by send time: the 4th and the last
    timeline = panel(run_page, "timeline")
    bars = {phase: marked(timeline, "data-phase", phase) for phase in ("wait", "tokens", "failed")}
    for phase, want in (("wait", good), ("tokens", good), ("failed", failed)):
        got = [b.get("data-request", "") for b in bars[phase]]
        assert sorted(got) == sorted(want), phase
    # The wait ends where the token phase begins, and its length is the TTFT: 10..100 ms, in proportion.
    wait = {b.get("data-request"): b for b in bars["wait"]}
    tokens = {b.get("data-request"): b for b in bars["tokens"]}
    widths = {}
    for index in good:
        w, t = wait[index], tokens[index]
        assert float(w.get("x", 0)) + float(w.get("width", 0)) == pytest.approx(
            float(t.get("x", 0)), abs=0.02
        )
        widths[index] = float(w.get("width", 0))
    ttfts = {str(i): r.ttft for i, r in enumerate(records) if r.ok}
    first, last = min(good, key=lambda i: ttfts[i] or 0), max(good, key=lambda i: ttfts[i] or 0)
    assert widths[last] / widths[first] == pytest.approx(10.0, rel=0.02)
    # A tick at each token event: 4 for each good request, 2 for the one that broke.
    ticks = {e.get("data-ticks"): e.get("d", "").count("M") for e in marked(timeline, "data-ticks")}
    assert ticks == {**dict.fromkeys(good, 4), "11": 2}


def test_server_metrics_panels_show_the_chosen_series(tmp_path: Path) -> None:
    path = tmp_path / "run.html"
    plots.plot(run_result(server=server_metrics()), path)
    page = path.read_text(encoding="utf-8")
    assert "data-panel='server-metrics'" in page
    server = [p for p in panels(page) if p.get("data-panel") == "server"]
    names = [p.get("data-name") for p in server]
    assert len(names) == plots.SERIES_LIMIT
    # The load the server holds first, then its token rate, then the others in their order, to the limit.
    assert names == [RUNNING, TOKENS, *(f"other_gauge_{i}" for i in range(6))]
    (running,) = marked(server[0], "data-series", RUNNING)
    assert running.get("d", "").count("L") == 2  # three samples, drawn as they are
    rate = server[1]
    assert "rate of streamkit_generated_tokens_total (/s)" in text_of(rate)
    assert marked(rate, "data-series", TOKENS)[0].get("d", "").count("L") == 1  # two rates from three samples


def test_no_server_metrics_no_panel(run_page: str) -> None:
    assert "Server metrics" not in run_page and "data-panel='server" not in run_page


def test_title_names_what_was_measured_and_escapes_it(tmp_path: Path, run_page: str) -> None:
    heading = re.search(r"<h1>(.*?)</h1><p class='sub'>(.*?)</p>", run_page)
    assert heading is not None
    assert MODEL in heading[1] and URL in heading[1] and "chat" in heading[1]
    assert "concurrency 4 (closed loop)" in heading[2] and "10 completed, 2 failed" in heading[2]
    path = tmp_path / "hostile.html"
    hostile = "<script>alert('m')</script>"
    result = run_result(model=hostile, url="http://user:hunter2@host/v1?api_key=k3y&x='<b>'")
    plots.plot(result, path)
    page = path.read_text(encoding="utf-8")
    assert "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;m&#x27;)&lt;/script&gt;" in page
    assert "hunter2" not in page and "k3y" not in page
    assert len(list(panels(page))) == 4  # still well-formed


def test_a_run_without_a_good_request_still_plots(tmp_path: Path) -> None:
    broken = [
        RequestRecord(0.0, 0.0, [], error="ConnectError"),
        RequestRecord(0.1, 0.1, [], error="ConnectError"),
    ]
    for records in ([], broken):
        path = tmp_path / "empty.html"
        plots.plot(run_result(records), path)
        page = path.read_text(encoding="utf-8")
        for key in ("ttft", "itl", "e2el"):
            assert "no completed requests" in text_of(panel(page, f"cdf-{key}"))
        assert len(marked(panel(page, "timeline"), "data-phase", "failed")) == len(records)
        png = tmp_path / "empty.png"
        plots.plot(run_result(records), png)
        assert png.read_bytes()[:8] == PNG_SIGNATURE


def test_a_huge_run_draws_its_first_bars_without_ticks(tmp_path: Path) -> None:
    records = [ok_record(i * 0.001, 20.0, 5.0, tokens=3) for i in range(plots.BAR_LIMIT + 100)]
    path = tmp_path / "huge.html"
    plots.plot(run_result(records), path)
    timeline = panel(path.read_text(encoding="utf-8"), "timeline")
    waits = marked(timeline, "data-phase", "wait")
    assert len(waits) == plots.BAR_LIMIT
    assert max(int(b.get("data-request", -1)) for b in waits) == plots.BAR_LIMIT - 1
    assert not marked(timeline, "data-ticks")  # 6000 token events: over the cap
    note = text_of(timeline)
    assert f"the first {plots.BAR_LIMIT} of {plots.BAR_LIMIT + 100} requests" in note
    assert "token ticks left out" in note


# A sweep, as HTML

LEVELS = (4, 1, 2)  # not in order: the plot orders them


def sweep(capacity: int | None = 2, slo: str | None = "ttft=100") -> dict[str, Any]:
    """Levels 1, 2 and 4, each slower than the last: TTFTs of 10..100, 20..200 and 40..400 ms, so that 100%,
    50% and 20% of the requests meet a TTFT of 100 ms; at least half must, and level 2 is the capacity."""
    runs = []
    for level in LEVELS:
        slow = float(level)
        records = [ok_record(i * 0.1, 10.0 * slow * (i + 1), 2.0 * slow * (i + 1)) for i in range(10)]
        run = run_result(records, concurrency=level)
        met = sum(r.ttft is not None and r.ttft <= 0.1 for r in records) / len(records)
        run["goodput_fraction"] = met if slo else None
        runs.append(run)
    return {
        "runs": runs,
        "capacity": capacity,
        "level_key": "max_concurrency",
        "slo": slo,
        "slo_fraction": 0.5,
    }


@pytest.mark.parametrize("metric", ["ttft", "itl"])
def test_sweep_latency_panels_have_one_point_per_level_and_percentile(tmp_path: Path, metric: str) -> None:
    data = sweep()
    path = tmp_path / "sweep.html"
    plots.plot(data, path)
    latency = panel(path.read_text(encoding="utf-8"), f"sweep-{metric}")
    by_level = {run["max_concurrency"]: run for run in data["runs"]}
    for p in ("p50", "p90", "p99"):
        points = [e for e in marked(latency, "data-series", p) if e.tag == f"{SVG}circle"]
        assert sorted(int(e.get("data-level", 0)) for e in points) == [1, 2, 4]
        for e in points:
            run = by_level[int(e.get("data-level", 0))]
            assert float(e.get("data-value", "nan")) == pytest.approx(run[f"{p}_{metric}_ms"])
        # Drawn against the run's output throughput: x grows with it.
        xs = {int(e.get("data-level", 0)): float(e.get("cx", 0)) for e in points}
        order = sorted(by_level, key=lambda level: by_level[level]["output_throughput"])
        assert [xs[level] for level in order] == sorted(xs.values())


def test_sweep_server_panels_show_each_levels_peak(tmp_path: Path) -> None:
    data = sweep()
    for level, run in zip(LEVELS, data["runs"], strict=True):
        # The scraper's max is exact where its samples were thinned: the peak is read from it.
        run["server_metrics"] = {RUNNING: {**series([(0.0, 0.0), (1.0, level)]), "max": level * 10.0}}
    path = tmp_path / "sweep.html"
    plots.plot(data, path)
    (peaks,) = [p for p in panels(path.read_text(encoding="utf-8")) if p.get("data-panel") == "sweep-server"]
    assert peaks.get("data-name") == RUNNING
    values = {e.get("data-level"): float(e.get("data-value", "nan")) for e in peaks.iter(f"{SVG}circle")}
    assert values == {"1": 10.0, "2": 20.0, "4": 40.0}


def goodput_panel(tmp_path: Path, data: Mapping[str, Any]) -> ET.Element:
    path = tmp_path / "sweep.html"
    plots.plot(data, path)
    return panel(path.read_text(encoding="utf-8"), "sweep-goodput")


def test_goodput_panel_marks_the_capacity_at_its_level(tmp_path: Path) -> None:
    goodput = goodput_panel(tmp_path, sweep(capacity=2))
    (capacity,) = marked(goodput, "data-mark", "capacity")
    assert capacity.get("data-level") == "2" and "capacity: 2" in text_of(capacity)
    (line,) = capacity.iter(f"{SVG}line")
    (point,) = [e for e in marked(goodput, "data-level", "2") if e.tag == f"{SVG}circle"]
    assert float(line.get("x1", 0)) == pytest.approx(float(point.get("cx", 1)))
    assert float(point.get("data-value", "nan")) == pytest.approx(50.0)  # TTFT 20..200 ms against 100 ms
    assert marked(goodput, "data-mark", "target")
    assert "no level met" not in text_of(goodput)


def test_goodput_panel_says_when_no_level_met_or_there_was_no_slo(tmp_path: Path) -> None:
    none_met = goodput_panel(tmp_path, sweep(capacity=None))
    assert not marked(none_met, "data-mark", "capacity")
    assert "no level met the SLOs" in text_of(none_met)
    no_slo = goodput_panel(tmp_path, sweep(capacity=None, slo=None))
    assert "no --goodput targets" in text_of(no_slo)
    assert not marked(no_slo, "data-series", "goodput")


def test_a_sweep_without_goodput_fractions_counts_them_from_the_records(tmp_path: Path) -> None:
    data = sweep()
    for run in data["runs"]:
        run["goodput_fraction"] = None  # as a run measured without SLOs has it
    goodput = goodput_panel(tmp_path, data)
    values = {e.get("data-level"): float(e.get("data-value", "nan")) for e in goodput.iter(f"{SVG}circle")}
    assert values == pytest.approx({"1": 100.0, "2": 50.0, "4": 20.0})


# PNG


def test_png_run_figure_has_the_panels_and_the_marks(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    figure = plots._figure_run(run_result(server=server_metrics()))
    try:
        titles = [ax.get_title() for ax in figure.axes]
        for name in ("TTFT CDF", "ITL CDF", "E2EL CDF", "Request timeline"):
            assert any(t.startswith(name) for t in titles), name
        (ttft,) = [ax for ax in figure.axes if ax.get_title().startswith("TTFT CDF")]
        labels = [str(line.get_label()) for line in ttft.get_lines()]
        for p in (50, 90, 99):
            assert f"p{p} {shown(expected(TTFTS, p))}" in labels
            (mark,) = [line for line in ttft.get_lines() if str(line.get_label()).startswith(f"p{p} ")]
            assert np.asarray(mark.get_ydata(), dtype=float).tolist() == [0, p]  # up to its share
        assert sum("streamkit_requests_running" in t for t in titles) == 1  # a server panel
    finally:
        plt.close(figure)
    path = tmp_path / "run.png"
    plots.plot(run_result(), path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    from PIL import Image

    with Image.open(path) as image:
        assert MODEL in image.info.get("Title", "")


def test_png_sweep_figure_marks_the_capacity(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    figure = plots._figure_sweep(sweep(capacity=2))
    try:
        lines = [line for ax in figure.axes for line in ax.get_lines()]
        (capacity,) = [line for line in lines if line.get_label() == "capacity: 2"]
        assert np.asarray(capacity.get_xdata(), dtype=float).tolist() == [
            1,
            1,
        ]  # levels 1, 2, 4 in order: 2 is the second
        assert any(line.get_label() == "target 50%" for line in lines)
    finally:
        plt.close(figure)
    figure = plots._figure_sweep(sweep(capacity=None))
    try:
        texts = [t.get_text() for ax in figure.axes for t in ax.texts]
        assert "no level met the SLOs" in texts
    finally:
        plt.close(figure)
    path = tmp_path / "sweep.png"
    plots.plot(sweep(), path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE


# Paths and ticks


def test_check_path_refuses_other_files_before_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"\.html or \.png file, not plot\.pdf"):
        plots.check_path(tmp_path / "plot.pdf")
    with pytest.raises(ValueError, match=r"not plot\.pdf"):
        plots.plot(run_result(), tmp_path / "plot.pdf")
    plots.check_path(tmp_path / "plot.html")
    plots.check_path(tmp_path / "plot.png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(RuntimeError, match=r'pip install -e "\.\[bench\]"'):
        plots.check_path(tmp_path / "plot.png")
    plots.check_path(tmp_path / "plot.html")


@pytest.mark.parametrize(
    ("low", "high"),
    [(0, 1), (0, 100), (50, 400), (9.7, 10.3), (0, 0.0042), (3, 3), (0, 939 * 1.12), (-5, 17)],
)
def test_ticks_are_four_to_six_round_values_around_the_range(low: float, high: float) -> None:
    ticks = plots._ticks(low, high)
    assert 4 <= len(ticks) <= 6
    assert ticks[0] <= low and ticks[-1] >= high
    steps = {round(b - a, 12) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1
    (step,) = steps
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 9) in (1, 2, 2.5, 5)
    assert all(round(t / step, 9) == round(t / step) for t in ticks)  # multiples of the step


def test_a_far_tail_cuts_the_cdf_axis_and_says_so(tmp_path: Path) -> None:
    records = [ok_record(i * 0.01, 50.0, 10.0) for i in range(100)]  # 300 gaps of 10 ms
    records.append(RequestRecord(2.0, 2.0, [0.05, 1.05], [1, 1], 2))  # one gap of a second
    path = tmp_path / "tail.html"
    plots.plot(run_result(records), path)
    itl = panel(path.read_text(encoding="utf-8"), "cdf-itl")
    assert "axis cut past p99: the longest 1000 ms" in text_of(itl)
    ticks = [
        t for t in itl.iter(f"{SVG}text") if t.get("fill") == "#444" and t.get("text-anchor") == "middle"
    ]
    assert (
        max(float(t.text or "nan") for t in ticks) < 20
    )  # the x axis: around the 10 ms gaps, not to a second
    (p99,) = marked(itl, "data-mark", "p99")
    assert float(p99.get("data-value", "nan")) == pytest.approx(expected([10.0] * 300 + [1000.0], 99))


def test_a_counters_rate_over_a_last_short_interval_is_not_a_spike() -> None:
    # Scrapes each second, and the last one 50 ms after the one before (at the run's end).
    samples = [(0.0, 0.0), (1.0, 10.0), (2.0, 30.0), (2.05, 35.0)]
    ((t1, r1), (t2, r2)) = plots._rates(samples)
    assert (t1, r1) == (1.0, 10.0) and t2 == 2.05 and r2 == pytest.approx(25.0 / 1.05)
    assert plots._rates([(0.0, 5.0), (1.0, 2.0)]) == [(1.0, 2.0)]  # a reset counts from 0
