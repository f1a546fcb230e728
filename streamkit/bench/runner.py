"""Driving the load: one event loop sends the requests and records them; `run_workers` spreads a load over
several processes, one event loop each, and merges their records exactly.

The client's own honesty is measured along the way: how late the event loop wakes up (lag), how long requests
wait past their intended send time (queue), and how many events each socket read brought.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from time import perf_counter
from typing import Any, TypeVar

import streamkit
from streamkit.bench.metrics import RequestRecord, describe, span
from streamkit.bench.redact import public
from streamkit.bench.workload import BenchRequest, Share, arrival_times, dealt
from streamkit.protocols import APIS
from streamkit.protocols.chat import ChatCompletion
from streamkit.protocols.completions import Completion
from streamkit.protocols.messages import Message
from streamkit.protocols.responses import ReasoningItem, ReasoningText, Response
from streamkit.streams import Stream

__all__ = [
    "LoadConfig",
    "RunResult",
    "calibrate",
    "event_loop",
    "key_variable",
    "run_in_loop",
    "run_load",
    "run_workers",
    "split",
    "worker_limit",
]

LAG_INTERVAL = 0.005  # how often the lag probe wakes, in seconds

_T = TypeVar("_T")


@dataclass(frozen=True)
class LoadConfig:
    """How to send a list of requests."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)  # a repr, or a log line of one, never shows it
    api: str = "chat"
    """The API to measure: `chat`, `completions`, `responses` or `messages` (`streamkit.protocols.APIS`)."""
    concurrency: int | None = None
    """Closed loop with this many slots when `rate` is None; with a rate, a cap on requests in flight."""
    rate: float | None = None
    burstiness: float = 1.0
    duration: float | None = None
    """Stop sending after this many seconds (the requests in flight still finish)."""
    warmup: int = 0
    seed: int = 0
    timeout: float = 600.0
    transport: str = "aiohttp"
    loop: str = "auto"
    """The event loop of each process: `uvloop`, `asyncio`, or `auto` (uvloop where it is installed)."""


def key_variable(api: str) -> str:
    """The environment variable that holds the key of the API's provider: `OPENAI_API_KEY`, or
    `ANTHROPIC_API_KEY` for `messages`."""
    return f"{APIS[api].provider.upper()}_API_KEY"


@dataclass
class RunResult:
    """The records of a run and what the client saw of itself."""

    records: list[RequestRecord]
    duration: float
    start_wall: float
    """`time.time()` at the run's time zero: puts runs of several processes or machines on one timeline."""
    lag: list[float] = field(default_factory=list)
    """How late each wake-up of the lag probe was, in seconds."""
    workers: int = 1
    origin: float = 0.0
    """`time.perf_counter()` at the run's time zero (meaningful only within the process that ran it)."""
    worker_lags: dict[int, list[float]] = field(default_factory=dict)
    """Each worker's own lag samples, by worker index (a single process is worker 0)."""
    loop: str = "asyncio"
    """The event loop the run's processes ran on."""
    ray: dict[str, Any] | None = None
    """For a run on Ray actors (`streamkit.bench.ray`): its nodes, actors, clock offsets and failed actors."""

    @property
    def lag_stats(self) -> dict[str, float]:
        return describe(self.lag)


def event_loop(name: str) -> str:
    """The loop `auto` means here: uvloop where it is installed (the `bench` extra), else asyncio."""
    if name != "auto":
        return name
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run_in_loop(main: Coroutine[Any, Any, _T], loop: str = "auto") -> _T:
    """Run `main` to its end on a new event loop of the kind `loop` names (see `event_loop`). Raises
    ValueError for another name, and RuntimeError for uvloop when it is not installed."""
    kind = event_loop(loop)
    if kind == "asyncio":
        return asyncio.run(main)
    if kind != "uvloop":
        main.close()
        raise ValueError(f"unknown event loop {loop!r}: use auto, uvloop or asyncio")
    try:
        import uvloop
    except ImportError:
        main.close()
        raise RuntimeError(
            'uvloop is not installed: .venv/bin/pip install -e ".[bench]", or --loop asyncio'
        ) from None
    return uvloop.run(main)


def _generated_chars(final: object) -> int:
    """The characters a chat or legacy answer generated (text, reasoning, refusals, tool arguments): what N is
    estimated from when the server sent no usage. Other APIs always send usage."""
    if isinstance(final, Completion):
        return sum(len(c.text) for c in final.choices)
    if isinstance(final, ChatCompletion):
        size = 0
        for choice in final.choices:
            message = choice.message
            for text in (message.content, message.reasoning_content, message.reasoning, message.refusal):
                size += len(text or "")
            for call in message.tool_calls or []:
                if call.function is not None:
                    size += len(call.function.arguments or "") + len(call.function.name or "")
        return size
    return 0


def _hidden_reasoning(final: object) -> int:
    """The reasoning tokens that usage counts among the output tokens but the stream never carried: a
    reasoning model's hidden thoughts (OpenAI's reasoning models count them in `reasoning_tokens` and stream
    none of them, or only a summary). Where the stream carried the reasoning itself (chat's
    `reasoning_content` or `reasoning`, a Responses `reasoning_text` part), none is hidden. Anthropic's usage
    does not say how many of its output tokens were thinking: none is taken off there."""
    if isinstance(final, ChatCompletion) and final.usage is not None:
        details = final.usage.completion_tokens_details
        reasoning = None if details is None else details.reasoning_tokens
        streamed = any(c.message.reasoning_content or c.message.reasoning for c in final.choices)
    elif isinstance(final, Response) and final.usage is not None:
        output = final.usage.output_tokens_details
        reasoning = None if output is None else output.reasoning_tokens
        streamed = any(
            isinstance(part, ReasoningText) and part.text
            for item in final.output
            if isinstance(item, ReasoningItem)
            for part in item.content or []
        )
    else:
        return 0
    return 0 if streamed else reasoning or 0


def _prompt_tokens(final: object, reported: int | None) -> int | None:
    """The prompt's tokens as usage reported them, the cached part included. Anthropic's `input_tokens` leave
    out the tokens read from the prompt cache and those written to it, which OpenAI's APIs count in: they are
    added back, so that the input of every API is the whole prompt."""
    if isinstance(final, Message) and final.usage is not None and reported is not None:
        usage = final.usage
        return reported + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
    return reported


def record_stream(
    record: RequestRecord,
    stream: Stream[Any, Any],
    origin: float,
    max_tokens: int | None = None,
    final: object | None = None,
) -> None:
    """Fill `record` from a stream that ended: its metrics stamp each token-carrying item at its read, with
    the tokens it carried where it says; its aggregate gives the usage, the finish and the id.

    Without usage, N is counted: exactly from logprobs; else, for a single choice that finished for `length`,
    as the request's `max_tokens` (the limit it reached); else estimated from the text, 4 characters a token.
    Either way the record says that N is the client's (`tokens_estimated`). With usage, the reasoning tokens
    it counts that were never streamed are noted apart (`hidden_tokens`), and a Messages prompt's cached
    tokens are counted in. `final` is the aggregate where the caller has it already (else the stream's
    snapshot is taken)."""
    metrics = stream.metrics
    record.t0 = metrics.request_sent - origin
    sent = metrics.request_sent
    record.token_times = [t - sent for t in metrics.token_arrivals]
    if final is None:
        final = stream.snapshot
    record.output_tokens = metrics.completion_tokens
    record.hidden_tokens = _hidden_reasoning(final) if record.output_tokens is not None else 0
    record.prompt_tokens = _prompt_tokens(final, metrics.prompt_tokens)
    if record.error is None and metrics.chunks and not stream.is_finished():
        record.error = "Unfinished"  # a server that ends a stream with [DONE] when it gives up on a request
        record.error_message = "the stream ended before the answer was whole"
    counts = metrics.token_counts + [None] * (len(metrics.token_arrivals) - len(metrics.token_counts))
    known = [c for c in counts if c is not None]
    if len(known) == len(counts):
        record.token_counts = known
        record.counted_tokens = sum(known)
    else:
        cut = isinstance(final, ChatCompletion | Completion) and [c.finish_reason for c in final.choices] == [
            "length"
        ]
        limit = max_tokens if cut else None
        estimate = max(len(counts), round(_generated_chars(final) / 4))
        record.counted_tokens = estimate if limit is None else limit
        n = record.output_tokens - record.hidden_tokens if record.output_tokens is not None else limit
        if n == len(counts):
            record.token_counts = [1] * len(counts)
    record.chunks = metrics.chunks
    record.reads = metrics.reads
    record.response_id = getattr(final, "id", None)


async def send_one(
    client: streamkit.AsyncClient, config: LoadConfig, request: BenchRequest, t_sched: float, origin: float
) -> RequestRecord:
    """Send one streamed request and record it: any Exception it raises is recorded, by its class name and
    message (with no URL's credentials), not raised. The stream is read to its end without the bench
    touching its items: the stream's own stamps and aggregate are all it needs."""
    record = RequestRecord(t_sched=t_sched, t0=perf_counter() - origin, input_len=request.input_len)
    api = APIS[config.api]
    stream: Stream[Any, Any] | None = None
    final = None
    try:
        # One limit for the whole request, where the client's `total` would guard every read with a cancel
        # scope of its own: at one event per read, the scopes would cost more than the events. The bench
        # runs on asyncio (or uvloop) only, where asyncio's own timeout costs less than anyio's scope.
        async with asyncio.timeout(config.timeout):
            stream = await client.stream(api, api.ask_usage({"model": config.model, **request.body}))
            async with stream:
                final = await stream.get_final()
    except Exception as exc:
        # Any exception is this request's failure, by its class name, and the run goes on: a StreamkitError,
        # or whatever else one request raises (a bug, or an answer the client did not foresee). Cancellation
        # and Ctrl-C are no Exception: they stop the run.
        if isinstance(exc, TimeoutError) and not isinstance(exc, streamkit.StreamkitError):
            exc = streamkit.TotalTimeout("the request took longer than the total timeout")  # asyncio's limit
        record.error = type(exc).__name__
        record.error_message = public(str(exc))[:200]  # cut after: a cut URL might hide its `@`
    if stream is not None:
        limit = request.body.get("max_tokens", request.body.get("max_completion_tokens"))
        record_stream(record, stream, origin, limit if isinstance(limit, int) else None, final)
    return record


async def _lag_probe(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        expected = loop.time() + LAG_INTERVAL
        await asyncio.sleep(LAG_INTERVAL)
        lags.append(max(0.0, loop.time() - expected))


async def run_load(
    config: LoadConfig,
    requests: Sequence[BenchRequest],
    *,
    progress: Callable[[RequestRecord], None] | None = None,
) -> RunResult:
    """Send `requests` as `config` says, in this event loop, and return what was measured."""
    # No limit per read, neither `total` nor `idle`, each of which costs a timer at every read (aiohttp
    # reschedules its `sock_read` timer at every chunk): `send_one` puts one limit around each request.
    timeout = streamkit.Timeout(connect=30, idle=None, total=None)
    async with streamkit.AsyncClient(
        base_url=config.base_url,
        api_key=config.api_key,
        transport=config.transport,  # type: ignore[arg-type]
        max_retries=0,
        timeout=timeout,
    ) as client:
        if config.warmup:
            warm = [requests[i % len(requests)] for i in range(config.warmup)]
            await asyncio.gather(*(send_one(client, config, r, 0.0, perf_counter()) for r in warm))
        lags: list[float] = []
        stop = asyncio.Event()
        probe = asyncio.ensure_future(_lag_probe(lags, stop))
        start_wall, origin = time.time(), perf_counter()
        records: list[RequestRecord] = []

        def done(record: RequestRecord) -> None:
            records.append(record)
            if progress is not None:
                progress(record)

        deadline = math.inf if config.duration is None else config.duration
        if config.rate is None:
            await _closed_loop(client, config, requests, origin, deadline, done)
        else:
            await _open_loop(client, config, requests, origin, deadline, done)
        duration = span(records)
        stop.set()
        await probe
    records.sort(key=lambda r: r.t_sched)
    loop = "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"
    return RunResult(records, duration, start_wall, lags, origin=origin, worker_lags={0: lags}, loop=loop)


async def _closed_loop(
    client: streamkit.AsyncClient,
    config: LoadConfig,
    requests: Sequence[BenchRequest],
    origin: float,
    deadline: float,
    done: Callable[[RequestRecord], None],
) -> None:
    queue = iter(requests)

    async def slot() -> None:
        for request in queue:
            t_sched = perf_counter() - origin
            if t_sched >= deadline:
                return
            done(await send_one(client, config, request, t_sched, origin))

    await asyncio.gather(*(slot() for _ in range(config.concurrency or 1)))


async def _open_loop(
    client: streamkit.AsyncClient,
    config: LoadConfig,
    requests: Sequence[BenchRequest],
    origin: float,
    deadline: float,
    done: Callable[[RequestRecord], None],
) -> None:
    assert config.rate is not None
    limit = asyncio.Semaphore(config.concurrency) if config.concurrency else contextlib.nullcontext()

    async def send(request: BenchRequest, t_sched: float) -> None:
        async with limit:
            done(await send_one(client, config, request, t_sched, origin))

    # A task group: a run stopped while it sends (Ctrl-C) cancels the requests in flight and waits for them,
    # rather than leaving them to meet the client closed under them.
    async with asyncio.TaskGroup() as group:
        for request, t_sched in zip(
            requests, arrival_times(config.rate, config.burstiness, config.seed), strict=False
        ):
            if t_sched >= deadline:
                break
            wait = t_sched - (perf_counter() - origin)
            if wait > 0:
                await asyncio.sleep(wait)
            group.create_task(send(request, t_sched))


async def calibrate(requests: int = 30, tokens: int = 16) -> dict[str, float]:
    """The client's own floor, measured against the built-in server in this process, which answers at once
    and then writes a token every 2 ms, recording when it wrote each (`ServerConfig.trace`):

    - `ttft_*`: TTFT with no model behind it: the client's request and response path, and loopback.
    - `late_*`: how long after the server wrote a token the client stamped its arrival.

    Whatever is measured here is the client and the loopback, never the model."""
    from streamkit.server import ServerConfig, Timing, start_server

    timing = Timing(itl=0.002, tokens=tokens)
    async with await start_server(ServerConfig(timing=timing, trace=True)) as server:
        config = LoadConfig(base_url=server.base_url, model="scripted", concurrency=1)
        body = {"messages": [{"role": "user", "content": "calibration"}], "max_tokens": tokens}
        result = await run_load(config, [BenchRequest(body, 1)] * requests)
        written = server.stats.traces or {}
    ttft = describe(r.ttft for r in result.records if r.ttft is not None)
    late = describe(
        result.origin + r.t0 + arrival - write
        for r in result.records
        for arrival, write in zip(r.token_times, written.get(r.response_id or "", []), strict=False)
    )
    return {f"{name}_{p}": s[p] for name, s in (("ttft", ttft), ("late", late)) for p in ("p50", "p99")}


def _worker(config: LoadConfig, requests: Sequence[BenchRequest], worker: int) -> dict[str, Any]:
    result = run_in_loop(run_load(config, requests), config.loop)
    return {
        "records": [replace(r, worker=worker).to_dict() for r in result.records],
        "start_wall": result.start_wall,
        "lag": result.lag,
        "worker": worker,
        "loop": result.loop,
    }


def _slots(config: LoadConfig) -> int | None:
    """The load's concurrency slots: `concurrency`, or the one slot of a closed loop without it; None for an
    open loop without a cap."""
    return config.concurrency or (1 if config.rate is None else None)


def worker_limit(config: LoadConfig, count: int) -> tuple[int, str]:
    """The most workers a load of `count` requests keeps busy, and what limits them, in words: a worker needs
    a request, and one of the load's slots where it has some (`_slots`). One more would send nothing."""
    limits = [(count, f"{count} request{'s' if count != 1 else ''}")]
    cap = _slots(config)
    if cap is not None:
        limits.append((cap, f"concurrency {cap}"))
    most, what = min(limits)
    return max(1, most), f"the load keeps only {most} busy ({what})"


def split(
    config: LoadConfig, requests: Sequence[BenchRequest], k: int
) -> list[tuple[LoadConfig, Sequence[BenchRequest]]]:
    """The shares of up to `k` workers: no more workers than the load keeps busy (`worker_limit`), each a
    scaled copy of the whole. The slots (one per worker without a cap) are dealt out in turn; request `j`
    goes to the worker of slot `j % slots`, and each worker has the rate and the warmup in proportion to its
    slots. Together the shares send every request, at the whole rate, with every slot."""
    k = min(k, worker_limit(config, len(requests))[0])
    cap = _slots(config)
    period = k if cap is None else cap
    shares: list[tuple[LoadConfig, Sequence[BenchRequest]]] = []
    for i in range(k):
        mine = range(i, period, k)
        part = replace(
            config,
            concurrency=None if cap is None else len(mine),
            rate=None if config.rate is None else config.rate * len(mine) / period,
            seed=config.seed + i,
            warmup=dealt(config.warmup, period, mine),
        )
        shares.append((part, Share(requests, period, mine)))
    return shares


def run_workers(config: LoadConfig, requests: Sequence[BenchRequest], k: int) -> RunResult:
    """Run the load in up to `k` processes at once (no more than it keeps busy: `split`) and merge their
    records onto one timeline."""
    context = multiprocessing.get_context("spawn")
    shares = split(config, requests, k)
    with context.Pool(len(shares)) as pool:
        parts = pool.starmap(_worker, [(c, r, i) for i, (c, r) in enumerate(shares)])
    return merge_parts(parts, workers=len(shares))


def merge_parts(parts: Sequence[Mapping[str, Any]], workers: int | None = None) -> RunResult:
    """Records of several runs on one timeline: each shifted by its start's offset from the earliest.

    A part's `start_wall` is on the clock of the machine that ran it. A part may say by how much that clock
    was ahead of this one's (`clock_offset`, in seconds, as measured by `streamkit.bench.ray`): it is taken
    off first, so that every record lands on this machine's clock. Without it, the clocks are taken to agree.
    """
    walls = [p["start_wall"] - p.get("clock_offset", 0.0) for p in parts]
    start = min(walls)
    records: list[RequestRecord] = []
    lag: list[float] = []
    worker_lags: dict[int, list[float]] = {}
    for index, (part, wall) in enumerate(zip(parts, walls, strict=True)):
        shift = wall - start
        for data in part["records"]:
            record = RequestRecord.from_dict(data)
            record.t_sched += shift
            record.t0 += shift
            records.append(record)
        lag += part.get("lag", [])
        worker_lags.setdefault(part.get("worker", index), []).extend(part.get("lag", []))
    records.sort(key=lambda r: r.t_sched)
    loops = {p.get("loop", "asyncio") for p in parts}
    return RunResult(
        records,
        span(records),
        start,
        lag,
        workers or len(parts),
        worker_lags=worker_lags,
        loop=loops.pop() if len(loops) == 1 else "mixed",
    )
