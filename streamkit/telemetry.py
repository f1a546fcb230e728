"""OpenTelemetry GenAI telemetry of every request: four metrics and a span, from what the stream measures.

Where `opentelemetry-api` is installed (the `otel` extra), every request of `AsyncClient` and `Client`
records through the global MeterProvider and TracerProvider, which do nothing until the application configures
the OpenTelemetry SDK. Without the package nothing is imported and nothing recorded; `telemetry=False` on a
client turns it off.

The names, units, instruments, attributes and bucket boundaries are those of the GenAI semantic conventions
as last released, in semantic-conventions v1.41.1 (2026-05-11; the GenAI conventions have since moved to the
semantic-conventions-genai repository, which has made no release, and whose unreleased main renames the
metrics `gen_ai.client.inference.*`):

| metric | instrument | unit | value |
| --- | --- | --- | --- |
| `gen_ai.client.operation.duration` | histogram | s | the call, retries included, to the end of its answer |
| `gen_ai.client.operation.time_to_first_chunk` | histogram | s | streams: `metrics.ttft` |
| `gen_ai.client.operation.time_per_output_chunk` | histogram | s | streams: each of `metrics.itl` |
| `gen_ai.client.token.usage` | histogram | {token} | input and output tokens (`gen_ai.token.type`) |

They are recorded once, when the stream ends (complete, failed or closed), from the arrival times it already
keeps; the per-event path does not change. A failed call records its duration with `error.type`, the
exception's class name.

Each request is one CLIENT span, `{gen_ai.operation.name} {gen_ai.request.model}`, from the call to the end of
its answer, with the request's parameters, the response's id, model and finish reasons, the usage, the time to
first chunk, and an event for each retry and each resend after a stale connection. Message content is
recorded only where `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` is true, as OpenTelemetry's own GenAI
instrumentations do: the request's messages (`gen_ai.input.messages`) and the answer's text
(`gen_ai.output.messages`), as JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from time import perf_counter, time_ns
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from streamkit._version import __version__

if TYPE_CHECKING:
    from streamkit.protocols.base import Api
    from streamkit.streams import StreamMetrics

try:
    from opentelemetry import context as _context
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
except ImportError:  # the `otel` extra is not installed
    _context = _metrics = _trace = None  # type: ignore[assignment]

__all__ = ["CAPTURE_CONTENT", "SCHEMA_URL", "Call", "Telemetry"]

SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.1"
CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# The conventions' advised bucket boundaries.
SECONDS_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
# The request's parameters a span carries, by their names in each API.
_PARAMETERS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
}


def _enabled_by_environment() -> bool:
    return os.environ.get(CAPTURE_CONTENT, "").strip().lower() in ("true", "1", "yes", "span_only")


class Telemetry:
    """A client's instruments and tracer, made once; `start` begins one request's `Call` (None when off)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and _metrics is not None
        if not self.enabled:
            return
        meter = _metrics.get_meter("streamkit", __version__, schema_url=SCHEMA_URL)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.time_to_first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk, from the request to the first chunk of the stream.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.time_per_output_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_per_output_chunk",
            unit="s",
            description="Time per output chunk, for each chunk received after the first one.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.tracer = _trace.get_tracer("streamkit", __version__, schema_url=SCHEMA_URL)

    def start(self, api: Api[Any, Any], url: str, body: Mapping[str, object], stream: bool) -> Call | None:
        """Begin one request's telemetry: its span starts now."""
        if not self.enabled:
            return None
        return Call(self, api, url, body, stream)


class Call:
    """One request's telemetry. Nothing is computed while the request is under way, so that the time to its
    first token pays for nothing: the call keeps its start and its retries, and its span is made whole when
    it ends (`ended`, `failed`), with the times they happened."""

    __slots__ = (
        "_api",
        "_body",
        "_context",
        "_done",
        "_events",
        "_stream",
        "_telemetry",
        "_url",
        "started",
        "started_ns",
    )

    def __init__(
        self, telemetry: Telemetry, api: Api[Any, Any], url: str, body: Mapping[str, object], stream: bool
    ) -> None:
        self._telemetry = telemetry
        self._api = api
        self._url = url
        self._body = body
        self._stream = stream
        self._done = False
        self._events: list[tuple[str, dict[str, Any], int]] = []
        self.started = perf_counter()
        self.started_ns = time_ns()
        self._context = _context.get_current()  # the span's parent: the span current at the call

    def retried(self, reason: str, wait: float | None) -> None:
        """A retry (or, with no wait, a resend after a stale connection) is about to happen."""
        attributes: dict[str, Any] = {"reason": reason}
        if wait is None:
            self._events.append(("stale connection resent", attributes, time_ns()))
        else:
            attributes["wait_seconds"] = wait
            self._events.append(("retry", attributes, time_ns()))

    def _attributes(self) -> dict[str, Any]:
        """The attributes of every metric and of the span: the operation, provider, model and server."""
        api, body = self._api, self._body
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": api.operation,
            "gen_ai.provider.name": api.provider,
        }
        model = body.get("model")
        if isinstance(model, str):
            attributes["gen_ai.request.model"] = model
        try:
            parts = urlsplit(self._url)
            host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:  # a URL the request could not be sent to: no server to name
            host = None
        if host:
            attributes["server.address"] = host
            attributes["server.port"] = port
        return attributes

    def _span(self, attributes: dict[str, Any], end: float) -> Any:
        """The request's span, from the call's start: its request attributes and events set, not yet ended.
        `end` is the call's end on `perf_counter`'s clock."""
        api, body = self._api, self._body
        span_attributes = dict(attributes)
        for name, key in _PARAMETERS.items():
            value = body.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                span_attributes[key] = value
        if self._stream:
            span_attributes["gen_ai.request.stream"] = True
        stop = body.get("stop", body.get("stop_sequences"))
        if isinstance(stop, str):
            stop = [stop]
        if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            span_attributes["gen_ai.request.stop_sequences"] = stop
        if _enabled_by_environment():
            prompt = body.get(api.prompt_field)
            span_attributes["gen_ai.input.messages"] = json.dumps(prompt, ensure_ascii=False, default=str)
        model = body.get("model")
        name = f"{api.operation} {model}" if isinstance(model, str) else api.operation
        span = self._telemetry.tracer.start_span(
            name,
            context=self._context,
            kind=_trace.SpanKind.CLIENT,
            attributes=span_attributes,
            start_time=self.started_ns,
        )
        for event, event_attributes, at in self._events:
            span.add_event(event, event_attributes, timestamp=at)
        return span

    def _end_ns(self, end: float) -> int:
        return self.started_ns + int((end - self.started) * 1e9)

    def failed(self, error: BaseException) -> None:
        """The call failed before any answer: its duration, with `error.type`, and the span."""
        if self._done:
            return
        self._done = True
        end = perf_counter()
        kind = type(error).__qualname__
        attributes = self._attributes()
        self._telemetry.duration.record(end - self.started, {**attributes, "error.type": kind})
        span = self._span(attributes, end)
        span.set_attribute("error.type", kind)
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(error)))
        span.end(end_time=self._end_ns(end))

    def ended(
        self, final: Any, metrics: StreamMetrics | None, error: BaseException | None, end: float | None = None
    ) -> None:
        """The answer ended: whole, failed (with `error`) or closed early. `final` is the answer as far as it
        came; `metrics` the stream's (None for an answer that was not streamed); `end` when it ended, on
        `perf_counter`'s clock (default: now)."""
        if self._done:
            return
        self._done = True
        end = perf_counter() if end is None else end
        telemetry = self._telemetry
        outcome = self._api.outcome(final)
        attributes = self._attributes()
        span = self._span(attributes, end)
        if outcome.model:
            attributes["gen_ai.response.model"] = outcome.model
        span_attributes: dict[str, Any] = {}
        if outcome.id:
            span_attributes["gen_ai.response.id"] = outcome.id
        if outcome.model:
            span_attributes["gen_ai.response.model"] = outcome.model
        reasons = [reason for reason in outcome.finish_reasons if reason is not None]
        if reasons:
            span_attributes["gen_ai.response.finish_reasons"] = reasons
        if metrics is not None:
            ttft = metrics.ttft
            if ttft is not None:
                telemetry.time_to_first_chunk.record(ttft, attributes)
                span_attributes["gen_ai.response.time_to_first_chunk"] = ttft
                record = telemetry.time_per_output_chunk.record
                for gap in metrics.itl:
                    record(gap, attributes)
        for kind, tokens in (("input", outcome.input_tokens), ("output", outcome.output_tokens)):
            if tokens is not None:
                telemetry.token_usage.record(tokens, {**attributes, "gen_ai.token.type": kind})
                span_attributes[f"gen_ai.usage.{kind}_tokens"] = tokens
        if _enabled_by_environment():
            span_attributes["gen_ai.output.messages"] = json.dumps(
                self._api.output_messages(final), ensure_ascii=False, default=str
            )
        if error is not None:
            kind = type(error).__qualname__
            attributes = {**attributes, "error.type": kind}
            span_attributes["error.type"] = kind
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(error)))
        telemetry.duration.record(end - self.started, attributes)
        span.set_attributes(span_attributes)
        span.end(end_time=self._end_ns(end))
