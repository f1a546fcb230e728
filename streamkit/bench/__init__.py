"""`streamkit bench`: a load generator that measures the server, not itself. See `streamkit.bench.metrics`
for the definitions."""

from streamkit.bench.metrics import RequestRecord, Slo, Summary, describe, percentile, summarize
from streamkit.bench.runner import LoadConfig, RunResult, calibrate, run_load, run_workers
from streamkit.bench.workload import BenchRequest, Requests, arrival_times, generated_requests, load_requests

__all__ = [
    "BenchRequest",
    "LoadConfig",
    "RequestRecord",
    "Requests",
    "RunResult",
    "Slo",
    "Summary",
    "arrival_times",
    "calibrate",
    "describe",
    "generated_requests",
    "load_requests",
    "percentile",
    "run_load",
    "run_workers",
    "summarize",
]
