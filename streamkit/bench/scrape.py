"""Scraping a server's Prometheus endpoint while the bench runs: `streamkit bench --server-metrics URL`.

    with MetricsScraper("http://127.0.0.1:8080/metrics") as scraper:
        ...  # the run
    result["server_metrics"] = scraper.result(origin_wall=start_wall)

The bench's event loop is the instrument that measures, so the scraper never runs on it: it scrapes from a
daemon thread of its own, with blocking I/O (`urllib`), once at `start()`, about every `interval` seconds,
and once more at `stop()`. The first scrape is made in `start()` itself, so that a wrong URL fails before the
run does (ValueError for a URL that is not `http(s)://host...`, RuntimeError for one that cannot be scraped,
each one line). A scrape that fails later (the server busy, a timeout) is counted in `failures`, with the
last error's text in `last_error`, and the run goes on. The thread shares the process's GIL: parsing a
scrape is Python code, which is little for one server's metrics (llama.cpp's: 15 series).

The text is parsed by `prometheus_client`'s parser. Each series is keyed by its sample's name as the server
wrote it (a counter's keeps its `_total`, a histogram's bucket its `_bucket`) and its labels, sorted by name
and escaped as in the exposition format: `name{a="x",b="y"}`, or `name` without labels. Each maps to

    {"type": "counter", "first": 1.0, "last": 9.0, "max": 9.0, "min": 1.0, "samples": [[-0.012, 1.0], ...]}

`type` is the family's (`counter`, `gauge`, `histogram`, `summary`, `unknown`, ...); each sample is
`[t, value]`, `t` in seconds from the run's start (`origin_wall`, a `time.time()`; the first scrape comes
before it, at a negative `t`), rounded to the millisecond. A scrape is stamped with `time.time()` halfway
between the request and its answer, not with a timestamp the exposition may carry. `first`, `last`, `max`
and `min` are over every sample taken, NaN left out (None when there is none); a NaN is kept in `samples` as
None, so that the result is JSON. A series that comes or goes during the run has the samples of the scrapes
it was in. The `_created` samples of counters, histograms and summaries (when each began: a timestamp, not a
measurement) are left out, in either form: in their family, or as the gauge `NAME_created` that the 0.0.4
text format makes of them.

Memory is bounded: a series keeps at most `MAX_SAMPLES` samples (an hour at one a second). One more, and it
keeps every other one (the first and the last among them), so that a long run is downsampled evenly enough,
the older part twice as sparse each time it happens; `first`, `last`, `max` and `min` stay exact.

Credentials: a URL may carry them (`http://user:password@host/metrics`), sent as basic auth (urllib does not
do it itself), and `headers` (as `Authorization: Bearer KEY`) are sent with every scrape. Neither is ever
shown: `url`, errors and the repr show the URL through `redact.public` and name no header's value.
Redirects are not followed (an answer would carry the credentials to wherever it points): a 3xx is an error
that says so.
"""

from __future__ import annotations

import base64
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from email.message import Message
from types import TracebackType
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

from streamkit.bench.redact import public

__all__ = ["MAX_BYTES", "MAX_SAMPLES", "MetricsScraper", "series_key"]

# Samples kept per series: an hour at one a second. One more halves them.
MAX_SAMPLES = 3600
# The most of a scrape that is read: far more than a server's metrics take (kilobytes, or hundreds of them).
MAX_BYTES = 32 * 1024 * 1024
# How much of an error's text is kept in `last_error`.
_ERROR_CHARS = 300
# A header's name (RFC 9110's token).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# `# TYPE x counter`: prometheus_client's parser names the samples of a counter so declared, without
# `_total` (`x 3`, as llama.cpp's `llamacpp:n_tokens_max`), `x_total`, as OpenMetrics would; the scraper
# keys them by the name that the server gave them.
_COUNTER = re.compile(r"^[ \t]*#[ \t]+TYPE[ \t]+(\S+)[ \t]+counter[ \t]*\r?$", re.MULTILINE)
# Families whose `NAME_created` samples are timestamps.
_CREATED_TYPES = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


def series_key(name: str, labels: Mapping[str, str]) -> str:
    """`name{a="x",b="y"}`: the labels sorted by name, their values escaped as in the exposition format
    (backslash, double quote, newline); `name` alone without labels."""
    if not labels:
        return name
    pairs = ",".join(f'{label}="{_escaped(labels[label])}"' for label in sorted(labels))
    return f"{name}{{{pairs}}}"


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is answered as an HTTPError: following it would send the credentials on."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


class _Series:
    """One series' samples and the summary of all it has taken."""

    __slots__ = ("first", "last", "max", "min", "samples", "type")

    def __init__(self, type_: str) -> None:
        self.type = type_
        self.first: float | None = None
        self.last: float | None = None
        self.max: float | None = None
        self.min: float | None = None
        self.samples: list[tuple[float, float | None]] = []

    def add(self, wall: float, value: float) -> None:
        if math.isnan(value):
            self.samples.append((wall, None))
        else:
            if self.first is None:
                self.first = value
            self.last = value
            self.max = value if self.max is None else max(self.max, value)
            self.min = value if self.min is None else min(self.min, value)
            self.samples.append((wall, value))
        if len(self.samples) > MAX_SAMPLES:
            kept = self.samples[::2]
            if kept[-1] is not self.samples[-1]:
                kept.append(self.samples[-1])
            self.samples = kept


class MetricsScraper:
    """Scrapes a Prometheus text endpoint at `start()`, every `interval` seconds in a daemon thread, and at
    `stop()`; `result(origin_wall)` is the bench result's `server_metrics`. `timeout` bounds each scrape;
    `headers` go with each one. A context manager: entering starts it, leaving stops it.

    `url` is the URL without its credentials (`redact.public`). `scrapes` counts the scrapes that succeeded,
    `failures` those that did not, `last_error` is the last failure's text (one line, credentials taken out),
    None while there has been none."""

    def __init__(
        self,
        url: str,
        interval: float = 1.0,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not interval > 0 or not timeout > 0:
            raise ValueError("the scrape interval and timeout must be positive")
        self.url = public(url)
        self.interval = interval
        self.timeout = timeout
        self.scrapes = 0
        self.failures = 0
        self.last_error: str | None = None
        self._target, self._headers, self._secrets = _request_parts(url, headers or {})
        self._opener = urllib.request.build_opener(_NoRedirect())
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()  # the series, between the thread and result()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = self._stopped = False

    def __repr__(self) -> str:
        return (
            f"MetricsScraper(url={self.url!r}, interval={self.interval}, timeout={self.timeout}, "
            f"scrapes={self.scrapes}, failures={self.failures})"
        )

    def start(self) -> None:
        """Take the first sample here, and start the thread. Raises RuntimeError, one line naming the URL
        without its credentials, when that sample cannot be taken; and if started before."""
        if self._started:
            raise RuntimeError("the metrics scraper was started before")
        self._started = True
        error = self._scrape()
        if error is not None:
            self._stopped = True
            raise RuntimeError(f"cannot scrape the server's metrics at {self.url}: {error}")
        self._thread = threading.Thread(target=self._run, name="streamkit-metrics-scraper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (at once, unless it is in a scrape: then when that ends) and take the last sample
        here; a failure is counted, not raised. Idempotent; nothing to do before `start()`."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self._scrape()

    def result(self, origin_wall: float) -> dict[str, dict[str, Any]]:
        """Each series' summary and samples, times in seconds from `origin_wall` (a `time.time()`)."""
        with self._lock:
            return {
                key: {
                    "type": series.type,
                    "first": series.first,
                    "last": series.last,
                    "max": series.max,
                    "min": series.min,
                    "samples": [[round(wall - origin_wall, 3), value] for wall, value in series.samples],
                }
                for key, series in self._series.items()
            }

    def __enter__(self) -> MetricsScraper:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        """The thread: a scrape at each multiple of `interval` from now, skipping those a slow scrape
        overran, until `stop()`."""
        origin = time.monotonic()
        ticks = 1
        while not self._stopping.wait(max(0.0, origin + ticks * self.interval - time.monotonic())):
            self._scrape()
            ticks = max(ticks + 1, math.ceil((time.monotonic() - origin) / self.interval))

    def _scrape(self) -> str | None:
        """One scrape into the series; the error's text if it failed (counted), else None."""
        try:
            before = time.time()
            text = self._fetch()
            wall = (before + time.time()) / 2
            families = list(text_string_to_metric_families(text))
        except Exception as exc:  # any failure is counted, and the run goes on
            self.failures += 1
            self.last_error = self._reason(exc)
            return self.last_error
        timed = {family.name for family in families if family.type in _CREATED_TYPES}
        bare = {name for name in _COUNTER.findall(text) if not name.endswith("_total")}
        with self._lock:
            for family in families:
                for sample in family.samples:
                    if sample.name.endswith("_created") and sample.name[: -len("_created")] in timed:
                        continue
                    name = sample.name
                    if family.type == "counter" and family.name in bare and name == f"{family.name}_total":
                        name = family.name
                    key = series_key(name, sample.labels)
                    series = self._series.get(key)
                    if series is None:
                        series = self._series[key] = _Series(family.type)
                    series.type = family.type
                    series.add(wall, float(sample.value))
        self.scrapes += 1
        return None

    def _fetch(self) -> str:
        request = urllib.request.Request(self._target, headers=self._headers)
        with self._opener.open(request, timeout=self.timeout) as response:
            body: bytes = response.read(MAX_BYTES + 1)
        if len(body) > MAX_BYTES:
            raise ValueError(f"the answer is over {MAX_BYTES // (1024 * 1024)} MiB")
        return body.decode("utf-8", errors="replace")

    def _reason(self, exc: BaseException) -> str:
        """One line saying why a scrape failed, without the credentials."""
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
            if 300 <= exc.code < 400:
                reason += " (redirects are not followed: give the URL it points to)"
        elif isinstance(exc, TimeoutError) or (
            isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, TimeoutError)
        ):
            reason = f"no answer within {self.timeout:g} s"
        elif isinstance(exc, urllib.error.URLError):
            reason = str(exc.reason)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        reason = public(" ".join(reason.split()))
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        return reason[:_ERROR_CHARS]


def _request_parts(url: str, headers: Mapping[str, str]) -> tuple[str, dict[str, str], list[str]]:
    """The URL to request (without userinfo), the headers to send (with basic auth for the userinfo), and
    the secrets to take out of an error's text (the headers' values, the password; the short ones would
    take out too much else, and are never in an error's text anyway). Raises ValueError, naming neither
    credentials nor header values, for a URL that is not http(s) with a host, or a header that is not one
    line of text."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"not a URL to scrape: {public(url)}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s):// URL to scrape: {public(url)}")
    sent: dict[str, str] = {}
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"not a header name: {name!r}")
        if not value.isprintable():
            raise ValueError(f"the value of the header {name!r} is not printable text on one line")
        sent[name] = value
    secrets = list(sent.values())
    userinfo, at, host = parts.netloc.rpartition("@")
    if at:
        if any(name.lower() == "authorization" for name in sent):
            raise ValueError("the URL carries credentials and there is an Authorization header: give one")
        user, _, password = userinfo.partition(":")
        token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
        sent["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
        secrets += [password, urllib.parse.unquote(password), sent["Authorization"]]
    if not any(name.lower() == "accept" for name in sent):
        sent["Accept"] = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"
    secrets = sorted({secret for secret in secrets if len(secret) >= 4}, key=len, reverse=True)
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), sent, secrets
