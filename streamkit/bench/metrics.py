"""What one request measured, and what many add up to (no I/O).

Times are seconds on one clock (`time.perf_counter()`), relative to the start of the run:

- `t_sched`: when the request was meant to be sent; `t0`: when it was sent; queue time = `t0 - t_sched`.
- TTFT: the first token-carrying event - `t0`. Arrivals are stamped when a read's bytes come off the socket,
  before decoding. A token-carrying event has content, reasoning, a refusal or a tool call; role-only, empty
  and usage-only chunks and comments are not.
- E2EL: the last token-carrying event - `t0`.
- N: `usage.completion_tokens` (the bench asks for `include_usage`); else counted on the client (from
  logprobs, or `max_tokens` for a stream that finished for `length`, or the text) and marked estimated.
  Chunks are never counted as tokens. Output throughput is the sum of N.
- streamed N: the tokens the stream carried. Per token event where each one's count is known; else N less
  the reasoning tokens that usage counts but the stream never carried (a reasoning model's hidden thoughts).
- TPOT: `(E2EL - TTFT) / (streamed N - 1)`: hidden reasoning is thought before the first token event, not
  between the token events that TPOT spans.
- ITL: each gap between token events, divided over the tokens the later one carried (known from logprobs, or
  when streamed N equals the number of token events). ICL: the raw gaps, which is all there is when the
  tokens per chunk are unknown.

docs/bench.md has the table of these names against vLLM's, GuideLLM's and AIPerf's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PERCENTILES",
    "RequestRecord",
    "Slo",
    "Summary",
    "describe",
    "percentile",
    "percentile_name",
    "span",
    "summarize",
]

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


@dataclass
class RequestRecord:
    """One request of a run, as measured."""

    t_sched: float
    t0: float
    token_times: list[float] = field(default_factory=list)
    """Arrival of each token-carrying event, in seconds after `t0`."""
    token_counts: list[int] | None = None
    """Tokens each of those events carried, when known (from logprobs, or when usage equals their number)."""
    output_tokens: int | None = None
    """`usage.completion_tokens`, when the server reported it."""
    counted_tokens: int = 0
    """Tokens counted on the client (logprob entries, or an estimate from the text) when usage is missing."""
    hidden_tokens: int = 0
    """Of `output_tokens`, the reasoning tokens that the stream never carried (usage's `reasoning_tokens`
    where no reasoning text was streamed)."""
    prompt_tokens: int | None = None
    input_len: int = 0
    chunks: int = 0
    reads: int = 0
    error: str | None = None
    """The error's class name, for a failed request."""
    error_message: str = ""
    worker: int = 0
    response_id: str | None = None
    """The completion's `id`, from its first chunk."""

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.token_times)

    @property
    def tokens(self) -> int:
        """N: the server's count when it gave one, else the client's."""
        return self.output_tokens if self.output_tokens is not None else self.counted_tokens

    @property
    def tokens_estimated(self) -> bool:
        return self.output_tokens is None

    @property
    def queue(self) -> float:
        return self.t0 - self.t_sched

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] if self.token_times else None

    @property
    def e2el(self) -> float | None:
        return self.token_times[-1] if self.token_times else None

    @property
    def streamed_tokens(self) -> int:
        """The tokens the stream carried: the sum of `token_counts` where every token event's is known, else
        N less the reasoning tokens that were never streamed."""
        if self.token_counts is not None:
            return sum(self.token_counts)
        return max(0, self.tokens - self.hidden_tokens)

    @property
    def tpot(self) -> float | None:
        """(E2EL - TTFT) over the streamed tokens after the first."""
        streamed = self.streamed_tokens
        if not self.token_times or streamed < 2:
            return None
        return (self.token_times[-1] - self.token_times[0]) / (streamed - 1)

    @property
    def icl(self) -> list[float]:
        times = self.token_times
        return [times[i] - times[i - 1] for i in range(1, len(times))]

    @property
    def itl(self) -> list[float] | None:
        """Per-token latencies, or None when the tokens each event carried are unknown."""
        counts = self.token_counts
        if counts is None:
            return None
        latencies: list[float] = []
        for gap, count in zip(self.icl, counts[1:], strict=True):
            if count > 0:
                latencies += [gap / count] * count
        return latencies

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestRecord:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile with linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    rank = (len(sorted_values) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def describe(values: Iterable[float]) -> dict[str, float]:
    """mean, std (population), min, max and the PERCENTILES of `values`; NaN for an empty list."""
    ordered = sorted(values)
    n = len(ordered)
    mean = sum(ordered) / n if n else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in ordered) / n) if n else math.nan
    stats = {
        "count": float(n),
        "mean": mean,
        "std": std,
        "min": ordered[0] if n else math.nan,
        "max": ordered[-1] if n else math.nan,
        "median": percentile(ordered, 50),
    }
    for p in PERCENTILES:
        stats[f"p{percentile_name(p)}"] = percentile(ordered, p)
    return stats


def percentile_name(p: float) -> str:
    """`99` for 99.0, `99.9` for 99.9: how percentiles are spelled in keys such as `p99.9_ttft_ms`."""
    return str(int(p)) if p == int(p) else str(p)


def span(records: Sequence[RequestRecord]) -> float:
    """From the first send to the last token event, in seconds; 0 for no records."""
    if not records:
        return 0.0
    return max(r.t0 + (r.e2el or 0.0) for r in records) - min(r.t0 for r in records)


@dataclass(frozen=True)
class Slo:
    """Service-level objectives in seconds; a request meets them all or is not good put."""

    ttft: float | None = None
    tpot: float | None = None
    e2el: float | None = None

    @classmethod
    def parse(cls, spec: str) -> Slo:
        """Targets in milliseconds, in streamkit's spelling (`ttft=500,tpot=50,e2el=10000`) or vLLM's
        (`ttft:500 tpot:50 e2el:10000`), separated by commas or spaces. Raises ValueError."""
        values: dict[str, float] = {}
        for item in spec.replace(",", " ").split():
            name, sep, value = item.partition("=") if "=" in item else item.partition(":")
            if name not in ("ttft", "tpot", "e2el"):
                raise ValueError(f"unknown SLO {name!r}: use ttft, tpot or e2el")
            if not sep:
                raise ValueError(f"SLO {name} needs a number of milliseconds: {name}:MS")
            try:
                ms = float(value)
            except ValueError:
                raise ValueError(f"SLO {name} needs a number of milliseconds, not {value!r}") from None
            if not ms > 0 or math.isinf(ms):
                raise ValueError(f"SLO {name} must be a positive number of milliseconds, not {value}")
            values[name] = ms / 1000
        if not values:
            raise ValueError("no SLO given: use ttft:MS, tpot:MS or e2el:MS")
        return cls(**values)

    @property
    def targets(self) -> dict[str, float]:
        """The targets that are set, by name, in seconds."""
        limits = (("ttft", self.ttft), ("tpot", self.tpot), ("e2el", self.e2el))
        return {name: value for name, value in limits if value is not None}

    def met_each(self, record: RequestRecord) -> dict[str, bool]:
        """Whether `record` met each target that is set. A failed request meets none: it is no good put."""
        values = {"ttft": record.ttft, "tpot": record.tpot, "e2el": record.e2el}
        met = {}
        for name, limit in self.targets.items():
            value = values[name]
            met[name] = record.ok and value is not None and value <= limit
        return met

    def met(self, record: RequestRecord) -> bool:
        """Whether `record` met every target."""
        return all(self.met_each(record).values())

    def __str__(self) -> str:
        return ",".join(f"{name}={value * 1000:g}" for name, value in self.targets.items())


@dataclass
class Summary:
    """The figures of a run, computed from its records alone (so merged runs are summarized exactly)."""

    completed: int
    failed: int
    duration: float
    failures: dict[str, int]
    total_input_tokens: int
    total_output_tokens: int
    tokens_estimated: bool
    itl_known: bool
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    request_goodput: float | None
    goodput_fraction: float | None
    """The share of the requests sent (failed ones included) that met every SLO; None without SLOs."""
    slo_met: dict[str, float]
    """The share of the requests sent that met each SLO, by its name (`ttft`, `tpot`, `e2el`)."""
    ttft: dict[str, float]
    tpot: dict[str, float]
    itl: dict[str, float]
    icl: dict[str, float]
    e2el: dict[str, float]
    queue: dict[str, float]
    events_per_read: float
    coalesced: float
    """The share of the gaps between token events that are zero: both came in one read. The client read late
    (its loop was busy), or the server sent them together; either way such gaps are not the server's ITL."""


def _shares(slo: Slo, records: Sequence[RequestRecord]) -> dict[str, float]:
    met = dict.fromkeys(slo.targets, 0)
    for record in records:
        for name, good in slo.met_each(record).items():
            met[name] += good
    return {name: count / len(records) for name, count in met.items()}


def summarize(records: Sequence[RequestRecord], duration: float, slo: Slo | None = None) -> Summary:
    """The figures of a run of `duration` seconds (first send to last event)."""
    ok = [r for r in records if r.ok]
    failures: dict[str, int] = {}
    for r in records:
        if not r.ok:
            name = r.error or "NoTokens"
            failures[name] = failures.get(name, 0) + 1
    output = sum(r.tokens for r in ok)
    inputs = sum(r.prompt_tokens if r.prompt_tokens is not None else r.input_len for r in ok)
    itls = [r.itl for r in ok]
    duration = duration if duration > 0 else math.nan
    reads = sum(r.reads for r in ok)
    gaps = [gap for r in ok for gap in r.icl]
    return Summary(
        completed=len(ok),
        failed=len(records) - len(ok),
        duration=duration,
        failures=failures,
        total_input_tokens=inputs,
        total_output_tokens=output,
        tokens_estimated=any(r.tokens_estimated for r in ok),
        itl_known=all(i is not None for i in itls),
        request_throughput=len(ok) / duration,
        output_throughput=output / duration,
        total_token_throughput=(inputs + output) / duration,
        request_goodput=None if slo is None else sum(slo.met(r) for r in ok) / duration,
        goodput_fraction=None if slo is None or not records else sum(map(slo.met, records)) / len(records),
        slo_met={} if slo is None or not records else _shares(slo, records),
        ttft=describe(r.ttft for r in ok if r.ttft is not None),
        tpot=describe(r.tpot for r in ok if r.tpot is not None),
        itl=describe(v for i in itls if i is not None for v in i),
        icl=describe(gaps),
        e2el=describe(r.e2el for r in ok if r.e2el is not None),
        queue=describe(r.queue for r in records),
        events_per_read=sum(r.chunks for r in ok) / reads if reads else math.nan,
        coalesced=sum(gap == 0 for gap in gaps) / len(gaps) if gaps else 0.0,
    )
