"""Driving the load: one event loop sends the requests and records them; `run_workers` spreads a load over
several processes, one event loop each, and merges their records exactly.

The client's own honesty is measured along the way: how late the event loop wakes up (lag), how long requests
wait past their intended send time (queue), and how many events each socket read brought.

What the measuring process does while it measures is kept lean, so that its reads run when their bytes come:

- Before measuring, a warm-up opens one connection per slot (`warm_slots`), each with a one-token request
  that is not measured (`LoadConfig.warm_connections`): the first wave's connection set-up, which the server
  never sees and which holds up the loop as hundreds of connections open at once, is out of what is measured.
- While it measures, the cyclic garbage collector is off (`_quiet_gc`): its passes over the records and the
  streams in flight stopped the loop for milliseconds at a time, under every read that came meanwhile.
- At the end of each request, the record is filled from the stream's stamps and aggregate once
  (`record_stream`); what only the report needs is computed from the record later.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import multiprocessing
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
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
    "auto_workers",
    "calibrate",
    "event_loop",
    "key_variable",
    "run_in_loop",
    "run_load",
    "run_workers",
    "split",
    "warm_slots",
    "worker_limit",
]

LAG_INTERVAL = 0.005  # how often the lag probe wakes, in seconds
# The connections an open loop without a cap warms up: as many as it is expected to have in flight
# (`_in_flight`), but no more than this, so that a high rate does not open hundreds of connections to a
# server that its run may not use before they expire (aiohttp keeps an idle one 15 s; uvicorn, vLLM's server,
# closes one after 5 s).
WARM_OPEN_LIMIT = 64
# How long a request is taken to last where the load does not say how many are in flight (an open loop
# without a cap): by Little's law, rate x this many seconds are in flight. A floor: an LLM's answer of the
# bench's default 128 tokens lasts longer.
REQUEST_SECONDS = 1.0
# The streams in flight that one worker (one event loop) measures with its loop lag p99 under 5 ms, with a
# token every 50 ms on each: see `auto_workers`.
STREAMS_PER_WORKER = 128

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
    """Full requests sent first, all at once, and not measured."""
    warm_connections: bool = True
    """Open one connection per slot before measuring (`warm_slots`), each with a one-token request that is not
    measured, so that no measured request waits for a connection to open."""
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
    warmed: int = 0
    """The connections the warm-up opened before measuring (`LoadConfig.warm_connections`), one short
    unmeasured request each: of all the workers, for a run of several."""
    warm_failed: int = 0
    """Of those warm-up requests, how many failed (the run went on: a server that fails them fails the
    measured requests too, and the run says so)."""

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
    # This runs on the loop at the end of every request, while the other streams wait: each list is built
    # once, and the text is walked only where its estimate is the record's count.
    metrics = stream.metrics
    sent = metrics.request_sent
    record.t0 = sent - origin
    arrivals = metrics.token_arrivals
    record.token_times = [t - sent for t in arrivals]
    if final is None:
        final = stream.snapshot
    record.output_tokens = metrics.completion_tokens
    record.hidden_tokens = _hidden_reasoning(final) if record.output_tokens is not None else 0
    record.prompt_tokens = _prompt_tokens(final, metrics.prompt_tokens)
    if record.error is None and metrics.chunks and not stream.is_finished():
        record.error = "Unfinished"  # a server that ends a stream with [DONE] when it gives up on a request
        record.error_message = "the stream ended before the answer was whole"
    # The tokens each token event carried, where it said (None where it did not; shorter than the events
    # where the last ones did not): known only where every event said.
    events = len(arrivals)
    said = metrics.token_counts
    known = [c for c in said if c is not None] if len(said) == events else None
    if known is not None and len(known) == events:
        record.token_counts = known
        record.counted_tokens = sum(known)
    else:
        cut = isinstance(final, ChatCompletion | Completion) and [c.finish_reason for c in final.choices] == [
            "length"
        ]
        limit = max_tokens if cut else None
        if limit is None:
            record.counted_tokens = max(events, round(_generated_chars(final) / 4))
        else:
            record.counted_tokens = limit
        n = record.output_tokens - record.hidden_tokens if record.output_tokens is not None else limit
        if n == events:
            record.token_counts = [1] * events
    record.chunks = metrics.chunks
    record.reads = metrics.reads
    record.response_id = getattr(final, "id", None)


def _untangle(exc: BaseException) -> None:
    """Drop the tracebacks of an exception that is recorded and not raised, and of the exceptions it came
    from: their frames hold the stream that holds the exception, a cycle that only the garbage collector
    frees. Untangled, a failed request leaves no garbage behind (about 50 to 80 objects each, else), which a
    run that measures with the collector off (`_quiet_gc`) would keep until its end."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        each = todo.pop()
        if each is None or any(each is s for s in seen):
            continue
        seen.append(each)
        each.__traceback__ = None
        todo += [each.__cause__, each.__context__]


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
        _untangle(exc)
        if isinstance(exc, TimeoutError) and not isinstance(exc, streamkit.StreamkitError):
            exc = streamkit.TotalTimeout("the request took longer than the total timeout")  # asyncio's limit
        record.error = type(exc).__name__
        record.error_message = public(str(exc))[:200]  # cut after: a cut URL might hide its `@`
    if stream is not None:
        limit = request.body.get("max_tokens", request.body.get("max_completion_tokens"))
        record_stream(record, stream, origin, limit if isinstance(limit, int) else None, final)
    return record


def _in_flight(config: LoadConfig, count: int) -> int:
    """How many of a load's `count` requests are in flight at once: its slots (`_slots`), or for an open loop
    without a cap, `rate` x `REQUEST_SECONDS` (all, at an infinite rate); never more than `count`."""
    slots = _slots(config)
    if slots is None:
        assert config.rate is not None
        slots = count if math.isinf(config.rate) else math.ceil(config.rate * REQUEST_SECONDS)
    return max(0, min(slots, count))


def warm_slots(config: LoadConfig, count: int) -> int:
    """How many connections `run_load`'s warm-up opens for a load of `count` requests, in one process: one
    per slot the load fills (its concurrency, the cap of an open loop, the one slot of a closed loop without
    one), and for an open loop without a cap, as many as it is expected to have in flight (`_in_flight`), up
    to `WARM_OPEN_LIMIT`. 0 with `warm_connections` off. With several workers, each warms its own share's
    (`split`): `sum(warm_slots(c, len(r)) for c, r in split(config, requests, k))`."""
    if not config.warm_connections:
        return 0
    warm = _in_flight(config, count)
    return warm if _slots(config) is not None else min(warm, WARM_OPEN_LIMIT)


def _one_token(api: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """`body` asking for the fewest output tokens its API takes: 1, under the body's own name for it (chat's
    `max_completion_tokens` where it has that, else `max_tokens`), and 16 for the Responses API's
    `max_output_tokens`, the least that OpenAI (and the built-in server) accept."""
    if api == "responses":
        return {**body, "max_output_tokens": 16}
    names = [n for n in ("max_tokens", "max_completion_tokens") if n in body] if api == "chat" else []
    return {**body, **dict.fromkeys(names or ["max_tokens"], 1)}


async def _warm_connections(
    client: streamkit.AsyncClient, config: LoadConfig, request: BenchRequest, count: int
) -> int:
    """Open `count` connections, each with a request of `request`'s body asking for one token (`_one_token`),
    not measured, and return how many of those requests failed. They go back to the client's pool, where the
    measured requests find them (aiohttp keeps an idle one 15 s, httpx 5 s: the run begins at once).

    All are sent at once, so that each opens a connection of its own: every connect begins in the same turn
    of the loop, before any answer can come back. And each holds its answer open until all have theirs, for
    a transport that holds a connection until its answer is read (httpx): one answered at once would hand its
    connection to the next. (aiohttp hands a connection back as soon as the whole answer is in, read or not.)
    A failure is not raised (a server that fails them fails the measured requests too); one that the server
    answered (an error status, say) opened its connection all the same."""
    api = APIS[config.api]
    body = api.ask_usage({"model": config.model, **_one_token(config.api, request.body)})
    opened = failed = 0
    everyone = asyncio.Event()

    async def one() -> None:
        nonlocal opened, failed
        try:
            async with asyncio.timeout(config.timeout):
                try:
                    stream = await client.stream(api, body)
                finally:
                    opened += 1
                    if opened == count:
                        everyone.set()
                async with stream:
                    await everyone.wait()
                    await stream.get_final()
        except Exception:  # as `send_one`: any Exception is this request's failure, and the run goes on
            failed += 1

    await asyncio.gather(*(one() for _ in range(count)))
    return failed


# While a run measures with the collector off, one young collection runs each time this many objects that the
# collector tracks have been made, and kept, since the last: a bound on the memory that cyclic garbage made by
# others (a `progress` callback) can take. The requests leave none (`_untangle`); a stream in flight
# holds about 80 such objects and a record about 1.4, so that a run of good requests meets the bound once per
# some 70,000 requests (and once early, beyond some 1,200 streams in one loop), at a pause of about 35 ms.
GC_BOUND = 100_000


@contextlib.contextmanager
def _quiet_gc() -> Iterator[Callable[[], None]]:
    """The cyclic garbage collector off while a run measures, and back as it was after, even when the run
    raises: enabled or not, and what was frozen (`gc.freeze`).

    With the collector on, its passes over the streams in flight and the records stopped the loop while every
    read that came meanwhile waited to be stamped: with 512 streams, a token every 50 ms each, some 110 young
    passes, 10 middle ones and one full one in 1,024 requests, 70 to 90 ms of CPU in all, one pass up to 6 ms
    (young), 15 ms (middle), 19 ms (full). Off, there are none. What exists when the run starts is frozen
    (where the caller froze nothing), so that a `gc.collect()` that another library runs meanwhile does not
    walk it. Yields `check`, to call after each request: it runs a young collection past `GC_BOUND`."""
    enabled = gc.isenabled()
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    gc.disable()

    def check() -> None:
        if gc.get_count()[0] > GC_BOUND:
            gc.collect(0)  # the survivors go to the middle generation, which no collection walks meanwhile

    try:
        yield check
    finally:
        if freeze:
            gc.unfreeze()
        if enabled:
            gc.enable()


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
    """Send `requests` as `config` says, in this event loop, and return what was measured.

    First, unmeasured: the `warmup` full requests, then one connection per slot (`warm_slots`); the result
    says how many connections the warm-up opened (`warmed`) and how many of its requests failed. While it
    measures, the garbage collector is off (`_quiet_gc`), and back as it was when it returns or raises."""
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
        warmed = warm_slots(config, len(requests))
        warm_failed = await _warm_connections(client, config, requests[0], warmed) if warmed else 0
        lags: list[float] = []
        records: list[RequestRecord] = []
        with _quiet_gc() as check_gc:

            def done(record: RequestRecord) -> None:
                records.append(record)
                check_gc()
                if progress is not None:
                    progress(record)

            stop = asyncio.Event()
            probe = asyncio.ensure_future(_lag_probe(lags, stop))
            start_wall, origin = time.time(), perf_counter()
            deadline = math.inf if config.duration is None else config.duration
            try:
                if config.rate is None:
                    await _closed_loop(client, config, requests, origin, deadline, done)
                else:
                    await _open_loop(client, config, requests, origin, deadline, done)
            finally:
                stop.set()
                await probe
        duration = span(records)
    records.sort(key=lambda r: r.t_sched)
    loop = "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"
    return RunResult(
        records,
        duration,
        start_wall,
        lags,
        origin=origin,
        worker_lags={0: lags},
        loop=loop,
        warmed=warmed,
        warm_failed=warm_failed,
    )


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
        "warmed": result.warmed,
        "warm_failed": result.warm_failed,
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


def auto_workers(config: LoadConfig, count: int, cores: int) -> int:
    """The workers `--workers auto` runs a load of `count` requests on: one per `STREAMS_PER_WORKER` (128)
    streams it has in flight (`_in_flight`: its slots, or for an open loop without a cap, rate x
    `REQUEST_SECONDS`), rounded up; at least 1, and no more than `cores` nor than the load keeps busy
    (`worker_limit`).

    What it predicts: that one event loop measures up to 128 streams with its lag p99 under 5 ms, and that
    beyond, its reads run late enough to move the ITL p99 by milliseconds, which more loops, each in its own
    process, take off. Measured on the 2-core development machine (Python 3.11, uvloop; the built-in server
    in a process of its own, 20 tokens a request, one every 50 ms +-20%; closed loops of 2 x concurrency
    requests each, with this module's warm-up and quiet collector; other tests running beside it), one
    worker's lag p99, the median of 3 to 9 runs: 2 ms at 128 and at 160 streams, 6.4 ms at 192, 9.9 ms at
    256, 20 ms at 512. The rule counts streams, not token events: with faster tokens one loop holds fewer (at
    10 ms a token, 64 streams make as many events as 320 do at 50 ms)."""
    need = math.ceil(_in_flight(config, count) / STREAMS_PER_WORKER)
    return max(1, min(need, cores, worker_limit(config, count)[0]))


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
        warmed=sum(p.get("warmed", 0) for p in parts),
        warm_failed=sum(p.get("warm_failed", 0) for p in parts),
    )
