"""`streamkit.bench.scrape.MetricsScraper`: scraping a Prometheus endpoint from a thread of its own while the
bench runs. Against an aiohttp app in a thread that serves a registry the test sets between scrapes (and
some text of its own), and against llama.cpp's own `/metrics` in the local model."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from itertools import groupby
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from streamkit.bench import scrape
from streamkit.bench.scrape import MetricsScraper, series_key
from streamkit.server.local import LocalModel, LocalModelUnavailable

THREAD = "streamkit-metrics-scraper"
# Beyond the registry: labels out of order with a quote to escape, a NaN, a gauge that is named `_created`
# but is no counter's, a counter's `_created` in the form the 0.0.4 text format gives it, and a counter
# named without `_total` (as llama.cpp's `llamacpp:n_tokens_max`).
EXTRA = (
    '# TYPE raw_gauge gauge\nraw_gauge{z="1",a="q\\"uote",m="back\\\\slash"} 2\n'
    "# TYPE nan_gauge gauge\nnan_gauge NaN\n"
    "# TYPE jobs_created gauge\njobs_created 4\n"
    "# TYPE old counter\nold_total 6\nold_created 1.7e9\n"
    "# TYPE llamacpp:n_tokens_max counter\nllamacpp:n_tokens_max 36\n"
)


class MetricsApp:
    """An aiohttp app in a thread with its own loop: `/metrics` serves `generate_latest(registry)` and then
    `extra`, counting each request in the counter `hits` first; 503 while `failing`. It keeps the
    Authorization header of each request."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.hits = Counter("hits", "requests for /metrics", registry=self.registry)
        self.extra = ""
        self.failing = False
        self.authorizations: list[str | None] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    async def _metrics(self, request: web.Request) -> web.Response:
        self.authorizations.append(request.headers.get("Authorization"))
        if self.failing:
            return web.Response(status=503, text="busy")
        self.hits.inc()
        body = generate_latest(self.registry) + self.extra.encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> MetricsApp:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


@pytest.fixture
def app() -> Iterator[MetricsApp]:
    with MetricsApp() as served:
        yield served


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.002)


def scraped(scraper: MetricsScraper, more: int) -> None:
    """Wait for `more` scrapes after those taken so far: at least `more - 1` of them began after now."""
    target = scraper.scrapes + more
    wait_until(lambda: scraper.scrapes >= target, f"{target} scrapes")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def scraper_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == THREAD]


def values(entry: dict[str, Any]) -> list[Any]:
    return [value for _, value in entry["samples"]]


def changes(entry: dict[str, Any]) -> list[Any]:
    """The sample values, each run of the same value as one."""
    return [value for value, _ in groupby(values(entry))]


def test_the_values_set_between_scrapes_are_sampled_in_order(app: MetricsApp) -> None:
    gauge = Gauge("queue_depth", "requests waiting", ["zone", "app"], registry=app.registry)
    counter = Counter("requests", "requests served", registry=app.registry)
    histogram = Histogram("latency_seconds", "latency", buckets=[0.5], registry=app.registry)
    app.extra = EXTRA
    plan = [3.0, 7.0, 1.0, 5.0]
    series = gauge.labels(zone="eu", app="bench")
    series.set(plan[0])
    histogram.observe(0.1)
    histogram.observe(2.0)
    with MetricsScraper(app.url, interval=0.05) as scraper:
        origin = time.time()
        assert scraper_threads()
        scraped(scraper, 2)
        for value in plan[1:]:
            series.set(value)
            counter.inc()
            scraped(scraper, 2)
    assert not scraper_threads() and scraper.failures == 0
    result = scraper.result(origin)
    json.dumps(result, allow_nan=False)  # the result file's JSON is strict

    queue = result['queue_depth{app="bench",zone="eu"}']
    assert queue["type"] == "gauge" and changes(queue) == plan
    assert (queue["first"], queue["last"], queue["max"], queue["min"]) == (3.0, 5.0, 7.0, 1.0)
    requests = result["requests_total"]
    assert requests["type"] == "counter" and changes(requests) == [0.0, 1.0, 2.0, 3.0]
    assert (requests["first"], requests["last"], requests["max"], requests["min"]) == (0.0, 3.0, 3.0, 0.0)
    assert result['latency_seconds_bucket{le="0.5"}']["last"] == 1.0
    assert result['latency_seconds_bucket{le="+Inf"}']["last"] == 2.0
    assert result["latency_seconds_count"]["type"] == "histogram"
    assert result["latency_seconds_sum"]["last"] == pytest.approx(2.1)

    # Every scrape stamps every series, in order; the first before the run's start.
    times = [t for t, _ in queue["samples"]]
    assert len(times) == scraper.scrapes and times == sorted(times) and times[0] <= 0
    later = scraper.result(origin - 10.0)['queue_depth{app="bench",zone="eu"}']["samples"]
    assert [t for t, _ in later] == pytest.approx([t + 10.0 for t in times], abs=0.0015)


def test_series_are_named_as_in_the_exposition_format(app: MetricsApp) -> None:
    Counter("requests", "requests served", registry=app.registry).inc(2)
    Histogram("latency_seconds", "latency", buckets=[0.5], registry=app.registry).observe(0.1)
    app.extra = EXTRA
    with MetricsScraper(app.url, interval=60) as scraper:
        pass
    result = scraper.result(time.time())
    assert 'raw_gauge{a="q\\"uote",m="back\\\\slash",z="1"}' in result  # sorted by label name, escaped
    assert result["requests_total"]["last"] == 2.0 and result["old_total"]["last"] == 6.0  # `_total` kept
    assert {'latency_seconds_bucket{le="0.5"}', 'latency_seconds_bucket{le="+Inf"}'} <= result.keys()
    assert result["llamacpp:n_tokens_max"]["type"] == "counter"  # the name it has, no `_total` added
    assert "llamacpp:n_tokens_max_total" not in result
    # The counters' and histogram's `_created` are timestamps, left out; a gauge so named is no timestamp.
    assert [key for key in result if key.endswith("_created")] == ["jobs_created"]
    jobs = {name: value for name, value in result["jobs_created"].items() if name != "samples"}
    assert jobs == {"type": "gauge", "first": 4.0, "last": 4.0, "max": 4.0, "min": 4.0}
    nan = result["nan_gauge"]  # NaN is kept, as JSON's null, and in no summary
    assert values(nan) == [None, None]
    assert (nan["first"], nan["last"], nan["max"], nan["min"]) == (None, None, None, None)
    assert series_key("n", {}) == "n" and series_key("n", {"b": "\n", "a": ""}) == 'n{a="",b="\\n"}'


def test_a_bad_url_fails_at_start_naming_it_without_its_password() -> None:
    port = free_port()
    scraper = MetricsScraper(f"http://u:secret@127.0.0.1:{port}/metrics?token=tok-secret")
    with pytest.raises(RuntimeError) as raised:
        scraper.start()
    message = str(raised.value)
    assert f"http://127.0.0.1:{port}/metrics?token=***" in message and "refused" in message
    assert "secret" not in message and "\n" not in message
    assert scraper.failures == 1 and scraper.last_error and "secret" not in scraper.last_error
    assert not scraper_threads()
    scraper.stop()  # nothing to stop


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/metrics", "file:///etc/passwd", "127.0.0.1:9/metrics"])
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        MetricsScraper(url)


def test_a_url_with_credentials_is_scraped_with_basic_auth(app: MetricsApp) -> None:
    with MetricsScraper(app.url.replace("//", "//me:p%40ss@"), interval=60) as scraper:
        assert "p%40ss" not in repr(scraper) + scraper.url and scraper.url == app.url
    assert scraper.scrapes == 2
    assert app.authorizations == ["Basic " + base64.b64encode(b"me:p@ss").decode()] * 2
    with pytest.raises(ValueError, match="give one"):
        MetricsScraper(app.url.replace("//", "//me:pass@"), headers={"authorization": "Bearer k"})


def test_a_server_that_starts_failing_is_counted_and_its_samples_kept(app: MetricsApp) -> None:
    with MetricsScraper(app.url, interval=0.02) as scraper:
        scraped(scraper, 3)
        app.failing = True
        wait_until(lambda: scraper.failures >= 2, "two failed scrapes")
        ok = scraper.scrapes
    assert scraper.scrapes == ok >= 3 and scraper.failures >= 3  # stop()'s scrape failed too, quietly
    assert scraper.last_error == "HTTP 503 Service Unavailable"
    hits = scraper.result(time.time())["hits_total"]
    assert values(hits) == [float(n) for n in range(1, ok + 1)]  # each a request the app served


def test_stop_wakes_the_thread_at_once() -> None:
    with MetricsApp() as app:
        scraper = MetricsScraper(app.url, interval=60)
        scraper.start()
        assert len(scraper_threads()) == 1
        stopping = threading.Thread(target=scraper.stop)
        stopping.start()
        stopping.join(30)  # half the interval: a thread that sleeps it out would still be asleep
        assert not stopping.is_alive(), "stop() waited for the interval to end"
        assert not scraper_threads() and scraper.scrapes == 2
        scraper.stop()  # idempotent
        assert scraper.scrapes == 2


def test_headers_are_sent_and_never_shown(app: MetricsApp) -> None:
    key = "sk-scrape-secret"
    with MetricsScraper(app.url, interval=0.02, headers={"Authorization": f"Bearer {key}"}) as scraper:
        scraped(scraper, 2)
        assert key not in repr(scraper) and app.url in repr(scraper)
    assert len(app.authorizations) == scraper.scrapes and set(app.authorizations) == {f"Bearer {key}"}
    with pytest.raises(ValueError) as raised:
        MetricsScraper(app.url, headers={"Authorization": f"Bearer {key}\nX-Evil: 1"})
    assert key not in str(raised.value)


def test_a_long_run_is_downsampled_exactly_at_the_ends(
    app: MetricsApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scrape, "MAX_SAMPLES", 8)
    with MetricsScraper(app.url, interval=0.005) as scraper:
        wait_until(lambda: scraper.scrapes >= 40, "40 scrapes")
    hits = scraper.result(time.time())["hits_total"]
    kept = values(hits)
    assert 4 <= len(kept) <= 8 and kept == sorted(kept) and len(set(kept)) == len(kept)
    assert kept[0] == hits["first"] == hits["min"] == 1.0  # the first request's count, kept
    assert kept[-1] == hits["last"] == hits["max"] == float(scraper.scrapes)  # and the last one's


@pytest.mark.parametrize(("most", "kept"), [(4, [1, 3, 5]), (3, [1, 3, 4])])
def test_downsampling_keeps_every_other_sample_and_the_last(
    most: int, kept: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scrape, "MAX_SAMPLES", most)
    series = scrape._Series("gauge")
    for n in range(1, most + 2):  # one more than it keeps
        series.add(float(n), float(n))
    assert series.samples == [(float(n), float(n)) for n in kept]
    assert (series.first, series.last, series.max, series.min) == (1.0, most + 1.0, most + 1.0, 1.0)


def test_metrics_url_needs_metrics() -> None:
    with pytest.raises(RuntimeError, match="started without metrics"):
        _ = LocalModel().metrics_url
    assert LocalModel(port=8080, metrics=True).metrics_url == "http://127.0.0.1:8080/metrics"
    try:
        assert "--metrics" in LocalModel(metrics=True)._command()
    except LocalModelUnavailable:
        pytest.skip("the `local` extra is not installed")
    assert "--metrics" not in LocalModel()._command()


@pytest.mark.real_model
def test_llama_cpps_metrics_are_scraped_while_a_chat_streams() -> None:
    key = "sk-local-metrics"
    model = LocalModel(metrics=True, api_key=key)
    try:
        model.start()
    except LocalModelUnavailable as exc:
        pytest.skip(str(exc))
    try:
        with pytest.raises(RuntimeError, match="HTTP 401"):  # like every path but /health, it needs the key
            MetricsScraper(model.metrics_url).start()
        headers = {"Authorization": f"Bearer {key}"}
        with MetricsScraper(model.metrics_url, interval=0.05, headers=headers) as scraper:
            body = {
                "model": "smollm2",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 20,
                "stream": True,
            }
            request = urllib.request.Request(
                f"{model.base_url}/chat/completions",
                data=json.dumps(body).encode(),
                headers={**headers, "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                lines = [line for line in response if line.startswith(b"data: {")]
            assert lines

            def grew() -> bool:
                tokens = scraper.result(0.0).get("llamacpp:tokens_predicted_total")
                return tokens is not None and tokens["last"] > tokens["first"]

            wait_until(grew, "llama.cpp counted the tokens")  # it counts them as the request ends
    finally:
        model.stop()
    result = scraper.result(time.time())
    assert scraper.failures == 0
    assert {"llamacpp:requests_processing", "llamacpp:n_tokens_max"} <= result.keys()  # as llama.cpp has them
    tokens = result["llamacpp:tokens_predicted_total"]
    assert tokens["type"] == "counter" and tokens["first"] == 0.0 and tokens["last"] >= 1.0
    decodes = result["llamacpp:n_decode_total"]
    assert decodes["last"] > decodes["first"] and not any(math.isnan(v) for v in values(decodes))
