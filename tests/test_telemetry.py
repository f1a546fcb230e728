"""OpenTelemetry telemetry (`streamkit.telemetry`), read back through the SDK's in-memory reader and exporter.

Every request of every API, streamed and not, through asyncio+aiohttp, asyncio+httpx, trio+httpx and the sync
`streamkit.Client`, against the built-in server: the four metrics (name, unit, buckets, attributes, how many
values and which), the CLIENT span (name, attributes, events, status), and what faults do to them. What a test
expects comes from the server's plan (the scripted model's answer to the very body the server parsed), from
the stream's own `metrics` (which the telemetry must equal), or from constants here; never from
`streamkit.telemetry` itself.

OpenTelemetry's global providers can be set only once per process: this module sets them once, and each test
asks for its own model name (the server answers any), by which it finds its own metrics and spans.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import streamkit
from streamkit.server import ServerConfig, ServerThread, Timing
from streamkit.server.apis import SERVER_APIS
from streamkit.server.scripted import answer
from streamkit.streams import StreamMetrics
from tests.hostile import HostileServer, Script, Send, chunked, head, sse_event

TOKENS = 6  # the natural length of every answer of this module's server
MODES = ["asyncio-aiohttp", "asyncio-httpx", "trio-httpx", "sync"]
APIS = ["chat", "completions", "responses", "messages"]
SAFE = streamkit.Timeout(connect=5.0, idle=10.0, total=30.0)
PROMPT = "Tell me a story."  # 4 words: 4 input tokens, apart from the 6 output tokens
# What each API's request carries, the model apart: the prompt, a token limit, temperature and top_p, which
# the span reports as gen_ai.request.max_tokens, .temperature and .top_p.
PARAMS: dict[str, dict[str, Any]] = {
    "chat": {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64},
    "completions": {"prompt": PROMPT, "max_tokens": 64},
    "responses": {"input": PROMPT, "max_output_tokens": 64},
    "messages": {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64},
}
HI = [{"role": "user", "content": "hi"}]
SAMPLING = {"temperature": 0.5, "top_p": 0.9}
# Chat and legacy completions stream their usage only when asked.
STREAM_USAGE: dict[str, dict[str, Any]] = {
    "chat": {"stream_options": {"include_usage": True}},
    "completions": {"stream_options": {"include_usage": True}},
    "responses": {},
    "messages": {},
}
OPERATION = {"chat": "chat", "completions": "text_completion", "responses": "chat", "messages": "chat"}
PROVIDER = {"chat": "openai", "completions": "openai", "responses": "openai", "messages": "anthropic"}
# How a whole answer of each API ends, in the server's words: gen_ai.response.finish_reasons.
FINISHED = {"chat": "stop", "completions": "stop", "responses": "completed", "messages": "end_turn"}
# Events after which each API's stream has carried two or three tokens, not all (a `drop` or `error` there).
MIDWAY = {"chat": 4, "completions": 3, "responses": 6, "messages": 5}

DURATION = "gen_ai.client.operation.duration"
TTFC = "gen_ai.client.operation.time_to_first_chunk"
TPOC = "gen_ai.client.operation.time_per_output_chunk"
USAGE = "gen_ai.client.token.usage"
UNITS = {DURATION: "s", TTFC: "s", TPOC: "s", USAGE: "{token}"}
# The conventions' advised bucket boundaries.
SECONDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_COUNTS = tuple(4.0**i for i in range(14))  # 1, 4, 16, ... 67108864
CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


# The SDK, set up once


@dataclass
class Otel:
    """The process's SDK providers, read back: the metrics and spans of one model name."""

    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter

    def points(self, model: str) -> dict[str, list[HistogramDataPoint]]:
        """Each metric's histogram points for requests of `model` (none: the metric is absent)."""
        found: dict[str, list[HistogramDataPoint]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                if scope.scope.name != "streamkit":
                    continue
                assert scope.scope.schema_url == "https://opentelemetry.io/schemas/1.41.1"
                assert scope.scope.version == streamkit.__version__
                for metric in scope.metrics:
                    assert metric.unit == UNITS[metric.name], metric.name
                    for point in metric.data.data_points:
                        assert isinstance(point, HistogramDataPoint), metric.name
                        if (point.attributes or {}).get("gen_ai.request.model") == model:
                            found.setdefault(metric.name, []).append(point)
        return found

    def spans(self, model: str) -> list[ReadableSpan]:
        return [
            span
            for span in self.exporter.get_finished_spans()
            if (span.attributes or {}).get("gen_ai.request.model") == model
        ]


@pytest.fixture(scope="module")
def otel() -> Iterator[Otel]:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(meter_provider)
    trace.set_tracer_provider(tracer_provider)
    if (
        metrics.get_meter_provider() is not meter_provider
        or trace.get_tracer_provider() is not tracer_provider
    ):
        pytest.fail("another module set OpenTelemetry's global providers first: they can be set once")
    yield Otel(reader, exporter)
    exporter.clear()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(ServerConfig(any_model=True, timing=Timing(itl=0.001, tokens=TOKENS))) as server:
        yield server


def new_model() -> str:
    """A model name no other request used: the key to one test's metrics and spans."""
    return f"m-{uuid.uuid4().hex[:12]}"


# One request, in any mode


@dataclass
class Outcome:
    final: Any  # the answer, or as far as it came (a stream's snapshot); None if no answer began
    error: BaseException | None
    metrics: StreamMetrics | None  # a stream's
    wall: float  # seconds around the call, from before it to after its end was met


def resource(client: Any, api: str) -> Any:
    return {
        "chat": client.chat.completions,
        "completions": client.completions,
        "responses": client.responses,
        "messages": client.messages,
    }[api]


def body_of(api: str, model: str, stream: bool, **extra: Any) -> dict[str, Any]:
    """The named parameters of a request (`create(**body)`)."""
    return {"model": model, **PARAMS[api], **SAMPLING, **(STREAM_USAGE[api] if stream else {}), **extra}


async def call_async(
    transport: str, base_url: str, api: str, body: dict[str, Any], stream: bool, options: dict[str, Any]
) -> Outcome:
    telemetry = options.pop("telemetry", True)
    max_retries = options.pop("max_retries", 2)
    close_after = options.pop("close_after", None)
    async with streamkit.AsyncClient(
        base_url=base_url,
        api_key="sk-test",
        transport=transport,  # type: ignore[arg-type]
        timeout=SAFE,
        max_retries=max_retries,
        telemetry=telemetry,
    ) as client:
        started = perf_counter()
        if not stream:
            try:
                final = await resource(client, api).create(**body, **options)
            except streamkit.StreamkitError as exc:
                return Outcome(None, exc, None, perf_counter() - started)
            return Outcome(final, None, None, perf_counter() - started)
        try:
            answer = await resource(client, api).create(**body, stream=True, **options)
        except streamkit.StreamkitError as exc:
            return Outcome(None, exc, None, perf_counter() - started)
        error: BaseException | None = None
        try:
            async with answer:
                async for item in answer:
                    if close_after is not None and answer.carries_token(item):
                        close_after -= 1
                        if close_after == 0:
                            break
        except streamkit.StreamkitError as exc:
            error = exc
        return Outcome(answer.snapshot, error, answer.metrics, perf_counter() - started)


def call_sync(
    base_url: str, api: str, body: dict[str, Any], stream: bool, options: dict[str, Any]
) -> Outcome:
    telemetry = options.pop("telemetry", True)
    max_retries = options.pop("max_retries", 2)
    close_after = options.pop("close_after", None)
    with streamkit.Client(
        base_url=base_url, api_key="sk-test", timeout=SAFE, max_retries=max_retries, telemetry=telemetry
    ) as client:
        started = perf_counter()
        if not stream:
            try:
                final = resource(client, api).create(**body, **options)
            except streamkit.StreamkitError as exc:
                return Outcome(None, exc, None, perf_counter() - started)
            return Outcome(final, None, None, perf_counter() - started)
        try:
            answer = resource(client, api).create(**body, stream=True, **options)
        except streamkit.StreamkitError as exc:
            return Outcome(None, exc, None, perf_counter() - started)
        error: BaseException | None = None
        try:
            with answer:
                for item in answer:
                    if close_after is not None and answer.carries_token(item):
                        close_after -= 1
                        if close_after == 0:
                            break
        except streamkit.StreamkitError as exc:
            error = exc
        return Outcome(answer.snapshot, error, answer.metrics, perf_counter() - started)


def call(
    mode: str, server: ServerThread, api: str, body: dict[str, Any], stream: bool, **options: Any
) -> Outcome:
    """Send one request in `mode` and read its answer to the end (or to its error, or, with `close_after=K`,
    close the stream after its K-th token-carrying item). `options`: the request's (`extra_headers`), and the
    client's `telemetry` and `max_retries`."""
    if mode == "sync":
        return call_sync(server.base_url, api, body, stream, options)
    loop, transport = mode.split("-")

    async def run() -> Outcome:
        return await call_async(transport, server.base_url, api, body, stream, options)

    return anyio.run(run, backend=loop)


# What the server planned


def sent(server: ServerThread, model: str) -> dict[str, Any]:
    """The last body the server took for `model`."""
    return [body for body in server.stats.bodies if body.get("model") == model][-1]


def planned_usage(api: str, body: dict[str, Any]) -> tuple[int, int]:
    """The input and output tokens of the usage that the server's plan reports for `body` (its own code, none
    of the client's)."""
    server_api = SERVER_APIS[api]
    script = server_api.parse_request(body, None)
    usage = server_api.render(script, answer(script, TOKENS), 1).whole["usage"]
    if api in ("chat", "completions"):
        return usage["prompt_tokens"], usage["completion_tokens"]
    return usage["input_tokens"], usage["output_tokens"]


def fault(spec: str) -> dict[str, str]:
    return {"x-streamkit-fault": spec}


# What was recorded


def attributes(api: str, model: str, server: ServerThread, **more: Any) -> dict[str, Any]:
    """The attributes of every metric of a request of `api`: its operation, provider, model and server."""
    return {
        "gen_ai.operation.name": OPERATION[api],
        "gen_ai.provider.name": PROVIDER[api],
        "gen_ai.request.model": model,
        "server.address": "127.0.0.1",
        "server.port": urlsplit(server.base_url).port,
        **more,
    }


def request_attributes(api: str, model: str, server: ServerThread, stream: bool) -> dict[str, Any]:
    """A span's attributes of the request: those of the metrics, and the parameters sent."""
    return {
        **attributes(api, model, server),
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.9,
        **({"gen_ai.request.stream": True} if stream else {}),
    }


def one(points: list[HistogramDataPoint], bounds: tuple[float, ...] = SECONDS) -> HistogramDataPoint:
    """The only point of a metric, which holds one value."""
    assert len(points) == 1, points
    (point,) = points
    assert point.count == 1 and point.min == point.max == point.sum
    assert tuple(point.explicit_bounds) == bounds
    return point


def check_duration(
    points: list[HistogramDataPoint], expected: dict[str, Any], outcome: Outcome
) -> HistogramDataPoint:
    """One duration, with the attributes `expected`, within the call's wall time (and, for a stream, no
    shorter than from the call's start to its last token)."""
    point = one(points)
    assert dict(point.attributes or {}) == expected
    assert 0 < point.sum <= outcome.wall
    m = outcome.metrics
    if m is not None and m.last_token is not None:
        assert point.sum >= m.last_token - m.call_started
    return point


def check_stream_times(
    found: dict[str, list[HistogramDataPoint]], expected: dict[str, Any], m: StreamMetrics
) -> None:
    """time_to_first_chunk is `m.ttft`, once; time_per_output_chunk one value per `m.itl` entry."""
    assert m.ttft is not None
    ttfc = one(found.pop(TTFC))
    assert dict(ttfc.attributes or {}) == expected and ttfc.sum == m.ttft
    if not m.itl:
        assert TPOC not in found
        return
    (tpoc,) = found.pop(TPOC)
    assert dict(tpoc.attributes or {}) == expected
    assert tpoc.count == len(m.itl)
    assert tpoc.min == min(m.itl) and tpoc.max == max(m.itl)
    assert tpoc.sum == pytest.approx(sum(m.itl), abs=1e-9)
    assert tuple(tpoc.explicit_bounds) == SECONDS


def check_usage(
    found: dict[str, list[HistogramDataPoint]], expected: dict[str, Any], usage: tuple[int, int]
) -> None:
    """Two token.usage values: the input tokens and the output tokens, each with its gen_ai.token.type."""
    points = found.pop(USAGE)
    by_type = {(p.attributes or {}).get("gen_ai.token.type"): p for p in points}
    assert len(points) == 2 and set(by_type) == {"input", "output"}
    for kind, tokens in zip(("input", "output"), usage, strict=True):
        point = one([by_type[kind]], TOKEN_COUNTS)
        assert dict(point.attributes or {}) == {**expected, "gen_ai.token.type": kind}
        assert point.sum == tokens


def the_span(otel: Otel, api: str, model: str) -> ReadableSpan:
    spans = otel.spans(model)
    assert len(spans) == 1, spans
    (span,) = spans
    assert span.name == f"{OPERATION[api]} {model}"
    assert span.kind is SpanKind.CLIENT
    assert span.instrumentation_scope is not None and span.instrumentation_scope.name == "streamkit"
    assert span.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.41.1"
    return span


def check_span_time(span: ReadableSpan, duration: HistogramDataPoint) -> None:
    """The span lasts what the duration metric says: from the call's start to the end of its answer."""
    assert span.start_time is not None and span.end_time is not None
    assert (span.end_time - span.start_time) / 1e9 == pytest.approx(duration.sum, abs=2e-6)


def events(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(event.name, dict(event.attributes or {})) for event in span.events]


# A whole answer


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("mode", MODES)
def test_an_answer_records_the_four_metrics_and_its_span(
    otel: Otel, server: ServerThread, mode: str, api: str, stream: bool
) -> None:
    model = new_model()
    outcome = call(mode, server, api, body_of(api, model, stream), stream)
    assert outcome.error is None
    usage = planned_usage(api, sent(server, model))
    expected = attributes(api, model, server, **{"gen_ai.response.model": model})

    found = otel.points(model)
    assert set(found) == ({DURATION, TTFC, TPOC, USAGE} if stream else {DURATION, USAGE})
    duration = check_duration(found.pop(DURATION), expected, outcome)
    check_usage(found, expected, usage)
    if stream:
        assert outcome.metrics is not None and len(outcome.metrics.itl) == TOKENS - 1
        check_stream_times(found, expected, outcome.metrics)
    assert found == {}

    span = the_span(otel, api, model)
    assert dict(span.attributes or {}) == {
        **request_attributes(api, model, server, stream),
        "gen_ai.response.id": outcome.final.id,
        "gen_ai.response.model": model,
        "gen_ai.response.finish_reasons": (FINISHED[api],),
        "gen_ai.usage.input_tokens": usage[0],
        "gen_ai.usage.output_tokens": usage[1],
        **(
            {"gen_ai.response.time_to_first_chunk": outcome.metrics.ttft}
            if outcome.metrics is not None
            else {}
        ),
    }
    assert span.status.status_code is StatusCode.UNSET
    assert events(span) == []
    check_span_time(span, duration)


@pytest.mark.parametrize("mode", MODES)
def test_a_chat_stream_without_usage_records_no_tokens(otel: Otel, server: ServerThread, mode: str) -> None:
    """Chat streams usage only when asked: without it, no token.usage, and no gen_ai.usage.* on the span."""
    model = new_model()
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    outcome = call(mode, server, "chat", body, True)
    assert outcome.error is None and outcome.final.usage is None
    found = otel.points(model)
    assert set(found) == {DURATION, TTFC, TPOC}
    span = the_span(otel, "chat", model)
    assert not any(name.startswith("gen_ai.usage.") for name in span.attributes or {})
    # Nor a parameter that was not sent.
    requested = {name for name in span.attributes or {} if name.startswith("gen_ai.request.")}
    assert requested == {"gen_ai.request.model", "gen_ai.request.stream"}


# Faults


@pytest.mark.parametrize("form", ["drop", "error"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("mode", MODES)
def test_a_stream_that_fails_midway_records_what_came_and_its_error(
    otel: Otel, server: ServerThread, mode: str, api: str, form: str
) -> None:
    """A connection dropped (ReadError) or an error sent in the stream (StreamAPIError) after a few tokens:
    the times of the tokens that came, one duration with error.type, and an ERROR span."""
    model = new_model()
    spec = f"drop={MIDWAY[api]}" if form == "drop" else f"error=event,error_after={MIDWAY[api]}"
    outcome = call(mode, server, api, body_of(api, model, True), True, extra_headers=fault(spec))
    error_type = "ReadError" if form == "drop" else "StreamAPIError"
    assert type(outcome.error).__name__ == error_type
    m = outcome.metrics
    assert m is not None and 2 <= len(m.token_arrivals) < TOKENS
    expected = attributes(api, model, server, **{"gen_ai.response.model": model})

    found = otel.points(model)
    duration = check_duration(found.pop(DURATION), {**expected, "error.type": error_type}, outcome)
    check_stream_times(found, expected, m)
    # Only Messages had usage by then: message_start's (the input, and Anthropic's running output count).
    usage = None
    if api == "messages":
        usage = (planned_usage(api, sent(server, model))[0], 1)
        check_usage(found, expected, usage)
    assert found == {}

    span = the_span(otel, api, model)
    assert dict(span.attributes or {}) == {
        **request_attributes(api, model, server, True),
        "gen_ai.response.id": outcome.final.id,
        "gen_ai.response.model": model,
        "gen_ai.response.time_to_first_chunk": m.ttft,
        "error.type": error_type,
        **({} if usage is None else {"gen_ai.usage.input_tokens": usage[0], "gen_ai.usage.output_tokens": 1}),
    }  # no finish reason: the answer had not ended
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description
    check_span_time(span, duration)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("mode", MODES)
def test_a_429_then_success_is_one_request_with_a_retry_event(
    otel: Otel, server: ServerThread, mode: str, api: str, stream: bool
) -> None:
    """The retry is an event of the one span; the metrics are those of the answer, the duration from the
    call's start (the 429 included), time_to_first_chunk the answering attempt's (`metrics.ttft`)."""
    model = new_model()
    headers = fault(f"status=429:1,retry_after=0,key={uuid.uuid4().hex}")
    outcome = call(mode, server, api, body_of(api, model, stream), stream, extra_headers=headers)
    assert outcome.error is None
    usage = planned_usage(api, sent(server, model))
    expected = attributes(api, model, server, **{"gen_ai.response.model": model})

    found = otel.points(model)
    duration = check_duration(found.pop(DURATION), expected, outcome)
    check_usage(found, expected, usage)
    if stream:
        m = outcome.metrics
        assert m is not None and m.attempts == 2
        assert m.ttft is not None and m.call_ttft is not None and m.ttft < m.call_ttft
        check_stream_times(found, expected, m)
        assert duration.sum >= m.request_sent - m.call_started + m.ttft
    assert found == {}

    span = the_span(otel, api, model)
    assert (span.attributes or {})["gen_ai.usage.output_tokens"] == usage[1]
    assert "error.type" not in (span.attributes or {})
    if outcome.metrics is not None:
        assert (span.attributes or {})["gen_ai.response.time_to_first_chunk"] == outcome.metrics.ttft
    assert span.status.status_code is StatusCode.UNSET
    assert events(span) == [("retry", {"reason": "HTTP 429", "wait_seconds": 0.0})]
    (retry,) = span.events
    assert span.start_time is not None and span.end_time is not None
    assert span.start_time <= retry.timestamp <= span.end_time
    check_span_time(span, duration)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("mode", MODES)
def test_a_request_that_gets_no_answer_records_its_duration_and_error(
    otel: Otel, server: ServerThread, mode: str, api: str, stream: bool
) -> None:
    """429 on every attempt, one retry allowed: one duration with error.type, nothing else, and an ERROR span
    with the request's attributes and the retry."""
    model = new_model()
    headers = fault(f"status=429,retry_after=0,key={uuid.uuid4().hex}")
    outcome = call(
        mode, server, api, body_of(api, model, stream), stream, extra_headers=headers, max_retries=1
    )
    assert type(outcome.error).__name__ == "RateLimitError" and outcome.final is None

    found = otel.points(model)
    expected = attributes(api, model, server, **{"error.type": "RateLimitError"})  # no response model
    duration = check_duration(found.pop(DURATION), expected, outcome)
    assert found == {}

    span = the_span(otel, api, model)
    assert dict(span.attributes or {}) == {
        **request_attributes(api, model, server, stream),
        "error.type": "RateLimitError",
    }
    assert span.status.status_code is StatusCode.ERROR
    assert events(span) == [("retry", {"reason": "HTTP 429", "wait_seconds": 0.0})]
    check_span_time(span, duration)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("mode", MODES)
def test_a_stream_closed_early_records_what_came_without_an_error(
    otel: Otel, server: ServerThread, mode: str, api: str
) -> None:
    """Closed by its reader after two tokens: not a failure (no error.type, status UNSET), no finish reason,
    and the times of the two tokens."""
    model = new_model()
    slow = {"x-streamkit-timing": "itl=0.05"}  # each token in a read of its own
    outcome = call(mode, server, api, body_of(api, model, True), True, close_after=2, extra_headers=slow)
    m = outcome.metrics
    assert outcome.error is None and m is not None and len(m.token_arrivals) == 2
    expected = attributes(api, model, server, **{"gen_ai.response.model": model})
    found = otel.points(model)
    duration = check_duration(found.pop(DURATION), expected, outcome)
    check_stream_times(found, expected, m)
    found.pop(USAGE, None)  # Messages' message_start usage; checked with the faults above
    assert found == {}
    span = the_span(otel, api, model)
    assert "error.type" not in (span.attributes or {})
    assert "gen_ai.response.finish_reasons" not in (span.attributes or {})
    assert span.status.status_code is StatusCode.UNSET
    check_span_time(span, duration)


ONE_PER_CONNECTION = Script(
    [
        Send(
            head("200 OK", "Content-Type: text/event-stream", "Transfer-Encoding: chunked")
            + chunked(sse_event("Hi", role="assistant"), sse_event(finish="stop"), b"data: [DONE]\n\n")
        )
    ],
    one_per_connection=True,
)


@pytest.mark.parametrize("mode", MODES)
def test_a_stale_connection_resent_is_an_event_not_a_retry(otel: Otel, mode: str) -> None:
    """A server that closes each connection after one answer: the second request, sent on the pooled
    connection the server closed, is sent again at once; its span has a "stale connection resent" event."""
    first, second = new_model(), new_model()
    with HostileServer() as hostile:
        base_url = hostile.add(ONE_PER_CONNECTION)

        if mode == "sync":
            with streamkit.Client(base_url=base_url, max_retries=0, timeout=SAFE) as client:
                for model in (first, second):
                    stream = client.chat.completions.create(model=model, messages=HI, stream=True)
                    stream.get_final()
                attempts = stream.metrics.attempts
        else:
            loop, transport = mode.split("-")

            async def run() -> int:
                async with streamkit.AsyncClient(
                    base_url=base_url,
                    transport=transport,  # type: ignore[arg-type]
                    max_retries=0,
                    timeout=SAFE,
                ) as client:
                    for model in (first, second):
                        stream = await client.chat.completions.create(model=model, messages=HI, stream=True)
                        await stream.get_final()
                    return stream.metrics.attempts

            attempts = anyio.run(run, backend=loop)
    assert attempts == 2
    assert events(the_span(otel, "chat", first)) == []
    ((name, attributes),) = events(the_span(otel, "chat", second))
    assert name == "stale connection resent" and set(attributes) == {"reason"}
    assert attributes["reason"] in ("ReadError", "ConnectError")


# Turned off, content, no SDK


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("mode", MODES)
def test_telemetry_false_records_nothing(
    otel: Otel, server: ServerThread, mode: str, api: str, stream: bool
) -> None:
    off, on = new_model(), new_model()
    assert call(mode, server, api, body_of(api, off, stream), stream, telemetry=False).error is None
    failed = call(
        mode, server, api, body_of(api, off, stream), stream, telemetry=False, max_retries=0,
        extra_headers=fault(f"status=429,key={uuid.uuid4().hex}"),
    )  # fmt: skip
    assert type(failed.error).__name__ == "RateLimitError"
    assert call(mode, server, api, body_of(api, on, stream), stream).error is None  # the control
    assert otel.points(off) == {} and otel.spans(off) == []
    assert DURATION in otel.points(on) and len(otel.spans(on)) == 1


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("api", APIS)
def test_content_is_captured_only_with_the_environment_variable(
    otel: Otel, server: ServerThread, monkeypatch: pytest.MonkeyPatch, api: str, stream: bool
) -> None:
    monkeypatch.delenv(CAPTURE, raising=False)
    for value in (None, "false"):
        if value is not None:
            monkeypatch.setenv(CAPTURE, value)
        model = new_model()
        assert call("asyncio-httpx", server, api, body_of(api, model, stream), stream).error is None
        span = the_span(otel, api, model)
        assert "gen_ai.input.messages" not in (span.attributes or {})
        assert "gen_ai.output.messages" not in (span.attributes or {})

    monkeypatch.setenv(CAPTURE, "true")
    model = new_model()
    assert call("asyncio-httpx", server, api, body_of(api, model, stream), stream).error is None
    recorded = the_span(otel, api, model).attributes or {}
    prompt = PARAMS[api]["prompt" if api == "completions" else "input" if api == "responses" else "messages"]
    assert json.loads(str(recorded["gen_ai.input.messages"])) == prompt
    assert isinstance(json.loads(str(recorded["gen_ai.output.messages"])), list)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("api", APIS)
def test_captured_output_holds_the_answer(
    otel: Otel, server: ServerThread, monkeypatch: pytest.MonkeyPatch, api: str, stream: bool
) -> None:
    """The answer's text, as the server planned it, is in gen_ai.output.messages."""
    monkeypatch.setenv(CAPTURE, "true")
    model = new_model()
    assert call("sync", server, api, body_of(api, model, stream), stream).error is None
    recorded = the_span(otel, api, model).attributes or {}
    script = SERVER_APIS[api].parse_request(sent(server, model), None)
    (planned,) = answer(script, TOKENS)
    output = json.dumps(json.loads(str(recorded["gen_ai.output.messages"])), ensure_ascii=False)
    assert "".join(planned.tokens) in output


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("api", ["chat", "completions"])
def test_captured_output_holds_every_choice(
    otel: Otel, server: ServerThread, monkeypatch: pytest.MonkeyPatch, api: str, stream: bool
) -> None:
    """With `n=2`, the span's finish reasons are both choices', and so are its output messages."""
    monkeypatch.setenv(CAPTURE, "true")
    model = new_model()
    outcome = call("sync", server, api, body_of(api, model, stream, n=2), stream)
    assert outcome.error is None
    recorded = the_span(otel, api, model).attributes or {}
    assert recorded["gen_ai.response.finish_reasons"] == ("stop", "stop")
    script = SERVER_APIS[api].parse_request(sent(server, model), None)
    texts = ["".join(planned.tokens) for planned in answer(script, TOKENS)]
    assert len(texts) == 2 and texts[0] != texts[1]
    output = json.dumps(json.loads(str(recorded["gen_ai.output.messages"])), ensure_ascii=False)
    assert [text in output for text in texts] == [True, True]


NO_OPENTELEMETRY = """
import json
import sys

sys.modules["opentelemetry"] = None  # how Python spells "not installed"
import anyio
import streamkit
import streamkit.telemetry

assert not streamkit.telemetry.Telemetry().enabled
messages = [{"role": "user", "content": "hi"}]
with streamkit.Client(base_url=sys.argv[1], api_key="k") as client:
    stream = client.chat.completions.create(model="m", messages=messages, stream=True)
    with stream:
        sync_text = "".join(stream.text_deltas())


async def main() -> str:
    async with streamkit.AsyncClient(base_url=sys.argv[1], api_key="k", transport="httpx") as client:
        stream = await client.chat.completions.create(model="m", messages=messages, stream=True)
        async with stream:
            return "".join([t async for t in stream.text_deltas()])


async_text = anyio.run(main)
with streamkit.Client(base_url=sys.argv[1], api_key="k") as client:
    whole = client.chat.completions.create(model="m", messages=messages)
loaded = sorted(n for n, m in sys.modules.items() if n.split(".")[0] == "opentelemetry" and m is not None)
print(json.dumps([sync_text, async_text, whole.choices[0].message.content, loaded]))
"""


def test_without_opentelemetry_nothing_is_imported_and_streams_work(server: ServerThread) -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_OPENTELEMETRY, server.base_url],
        capture_output=True, text=True, timeout=60, env={**os.environ, CAPTURE: "true"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    sync_text, async_text, whole, loaded = json.loads(result.stdout)
    assert sync_text and sync_text == async_text == whole
    assert loaded == []


# Where the span sits in the application's trace


@pytest.mark.parametrize("mode", ["asyncio-httpx", "sync"])
@pytest.mark.parametrize("where", ["inside", "after"])
def test_the_span_is_a_child_of_the_span_current_at_the_call(
    otel: Otel, server: ServerThread, mode: str, where: str
) -> None:
    """A request made inside the application's span is its child, wherever its stream is then read: inside
    that span, or after it ended (a stream handed to other code, read later)."""
    model = new_model()
    tracer = trace.get_tracer("app")
    body = body_of("chat", model, True)

    if mode == "sync":
        with streamkit.Client(base_url=server.base_url, api_key="sk-test", timeout=SAFE) as client:
            with tracer.start_as_current_span("parent") as parent:
                stream = client.chat.completions.create(**body, stream=True)
                if where == "inside":
                    stream.get_final()
            stream.get_final()
    else:

        async def run() -> trace.Span:
            async with streamkit.AsyncClient(
                base_url=server.base_url, api_key="sk-test", transport="httpx", timeout=SAFE
            ) as client:
                with tracer.start_as_current_span("parent") as parent:
                    stream = await client.chat.completions.create(**body, stream=True)
                    if where == "inside":
                        await stream.get_final()
                await stream.get_final()
                return parent

        parent = anyio.run(run)

    span = the_span(otel, "chat", model)
    assert span.parent is not None, "the span has no parent"
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.context is not None and span.context.trace_id == parent.get_span_context().trace_id


def test_anthropic_input_tokens_include_the_prompt_caches_reads_and_writes() -> None:
    """The conventions' input tokens include cached ones; Anthropic's `input_tokens` leaves out the cache's
    reads and writes, which it counts apart."""
    from streamkit.protocols.messages import MESSAGES, Message

    usage = b'{"input_tokens":3,"output_tokens":5,'
    usage += b'"cache_read_input_tokens":100,"cache_creation_input_tokens":20}'
    message = Message.from_json(b'{"id":"m","model":"c","stop_reason":"end_turn","usage":' + usage + b"}")
    outcome = MESSAGES.outcome(message)
    assert (outcome.input_tokens, outcome.output_tokens) == (123, 5)
