"""Stream one answer and print what streamkit recorded through OpenTelemetry: its span, then its metrics."""

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

import streamkit

# The SDK, set up once, before the first request: streamkit records through the global providers.
resource = Resource.create({"service.name": "telemetry-console"})
# Metrics are printed every minute, and once more at shutdown.
meter_provider = MeterProvider(
    resource=resource, metric_readers=[PeriodicExportingMetricReader(ConsoleMetricExporter())]
)
metrics.set_meter_provider(meter_provider)
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))  # in batches, and at shutdown
trace.set_tracer_provider(tracer_provider)

with streamkit.Client() as client:  # OPENAI_API_KEY, OPENAI_BASE_URL
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What is a server-sent event?"}],
        stream=True,
        stream_options={"include_usage": True},  # the usage, for gen_ai.client.token.usage
    )
    with stream:
        for text in stream.text_deltas():
            print(text, end="", flush=True)
    print()
    m = stream.metrics  # what the telemetry recorded, as the stream measured it
    ttft = "-" if m.ttft is None else f"{m.ttft:.3f}s"
    print(f"ttft={ttft} gaps={len(m.itl)} tokens={m.prompt_tokens} in, {m.completion_tokens} out")

tracer_provider.shutdown()  # prints the span: chat gpt-4o-mini
meter_provider.shutdown()  # prints the four histograms
