"""The built-in server: an aiohttp.web app that speaks every API of `streamkit.server.apis` for the scripted
model, with faults on demand.

One handler serves every API. The API's own server object (`streamkit.server.apis`) checks the request,
renders the scripted model's answer as the events of its stream and as its whole form, and shapes its errors;
this module does the HTTP: the key, the timing, the faults, the slots, and writing the events or the
whole answer. None of it uses the client's side of an API (`streamkit.protocols`): the server is the client's
oracle.

With `slots=N` (`Timing.slots`), the server answers at most N requests at once, as a real LLM server does
with its slots: a valid request waits in one first-come-first-served queue after its checks (key, body,
model) and before anything of its answer, its `stall_head` and `status` faults included, plays; it holds its
slot until its answer is written whole or its connection is gone. So the wait is part of its time to first
token. `GET /metrics` serves, in Prometheus' text format, what the server is doing per API (`_Metrics`).

On the Responses API, `background: true` creates a background response (`streamkit.server.background`): a
task of the server produces its events once, with its timing, holding the slot, and keeps them; the request
gets its Response object at once, or, with `stream: true`, reads its events as they are kept, as does any
`GET /v1/responses/{id}?stream=true&starting_after=N` later, so that a client whose connection broke picks the
stream up where it was. `GET /v1/responses/{id}` returns a kept response as it stands, and `POST
/v1/responses/{id}/cancel` cancels a background one.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hmac
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from streamkit.server.apis import SERVER_APIS, ServerApi
from streamkit.server.apis.chat import SERVER_ERROR
from streamkit.server.apis.responses import RESPONSES
from streamkit.server.background import BackgroundStore, StoredResponse
from streamkit.server.faults import Faults, Timing
from streamkit.server.scripted import Frame, Plan, RequestError, Script, answer

__all__ = [
    "BODIES_KEPT",
    "BODIES_KEPT_BYTES",
    "FAULT_HEADER",
    "FAULT_KEYS_KEPT",
    "MAX_BODY_BYTES",
    "PEERS_KEPT",
    "SERVER_ERROR",
    "TIMING_HEADER",
    "ServerConfig",
    "ServerStats",
    "create_app",
]

FAULT_HEADER = "x-streamkit-fault"
TIMING_HEADER = "x-streamkit-timing"

# The largest request body read (aiohttp's default, named): far more than any test's request, and what a
# hostile one can make the server parse. Larger is refused with a 413 in the API's shape.
MAX_BODY_BYTES = 1024 * 1024
# The bodies of valid requests that `ServerStats.bodies` keeps, newest last: a test looks at the last few it
# sent, and a shared server (the pytest fixture) serves many tests. At most this many, in at most this many
# bytes of JSON all together: kept as sent, they cost what they weigh (100 parsed bodies of 1 MiB of small
# JSON values took 2.4 GiB).
BODIES_KEPT = 100
BODIES_KEPT_BYTES = 4 * 1024 * 1024
# The `status` faults' attempts are counted per key, the least recently used key forgotten beyond this many:
# a test's retries of one key come close together, while a session's fixture serves thousands of keys.
FAULT_KEYS_KEPT = 1024
# The client ends of connections that `ServerStats.peers` keeps: enough for a test to count the connections
# of a few calls (any one is forgotten beyond this many), never one per connection a server ever had.
PEERS_KEPT = 1024

HTML_PAGE = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"
PARSE_ERROR = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The OpenAI API expects a JSON payload.)"
)

_encode = msgspec.json.encode


@dataclass
class ServerConfig:
    """Settings of one server: where it listens, the model name it serves, its key, timing and faults.

    The scripted model answers to `model`, the name `/v1/models` lists; any other name gets the API's 404, as
    a real server answers a name it does not serve. With `any_model`, it answers every name, each under the
    name asked (the `model` of its answer), as `streamkit serve` does: a client's code then runs unchanged,
    whatever model it asks for."""

    host: str = "127.0.0.1"
    port: int = 0
    model: str = "scripted"
    any_model: bool = False
    api_key: str | None = None
    timing: Timing = field(default_factory=Timing)
    faults: Faults = field(default_factory=Faults)
    trace: bool = False
    """Record when each request was received and each of its token events sent (`ServerStats.received` and
    `traces`, served at `GET /streamkit/received` and `GET /streamkit/trace`)."""

    def __repr__(self) -> str:  # never show the key
        key = "'***'" if self.api_key else "None"
        return (
            f"ServerConfig(host={self.host!r}, port={self.port}, model={self.model!r}, "
            f"any_model={self.any_model}, api_key={key})"
        )


@dataclass
class ServerStats:
    """What the server has done so far; read by tests and benchmarks."""

    requests: int = 0
    chunks: int = 0
    streams_open: int = 0
    peers: set[object] = field(default_factory=set)
    """The client ends of the connections that sent requests: at most `PEERS_KEPT`, any one forgotten
    beyond."""
    traces: dict[str, list[float]] | None = None
    """With tracing on (`ServerConfig.trace`): per answer id (a completion's or response's `id`),
    `time.perf_counter()` as each token-carrying event was handed to the connection: the ground truth a
    benchmark's measurements are checked against. No reader on this machine can have a token earlier."""
    received: dict[str, float] | None = None
    """With tracing on: per answer id, `time.perf_counter()` as its request was received, before its checks
    and its wait for a slot. So `traces[id][0] - received[id]` is the server's own time to first token, the
    queue included. Only valid requests (those that have an answer id) are kept."""
    attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    """The attempts of each `status` fault's key: the last `FAULT_KEYS_KEPT` keys used."""
    _bodies: collections.deque[bytes] = field(default_factory=collections.deque, init=False, repr=False)
    _bodies_size: int = field(default=0, init=False, repr=False)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the last valid requests, newest last: what a test can assert was sent. At most
        `BODIES_KEPT` of them, in at most `BODIES_KEPT_BYTES` all together. A request that the server refuses
        (its key, its checks, its bounds) is never kept; one that a `status` fault answers is. Each read
        decodes them afresh."""
        return [json.loads(raw) for raw in self._bodies]

    def keep_body(self, raw: bytes) -> None:
        """Keep the body of a valid request, forgetting the oldest beyond `BODIES_KEPT` or
        `BODIES_KEPT_BYTES`."""
        self._bodies.append(raw)
        self._bodies_size += len(raw)
        while len(self._bodies) > BODIES_KEPT or self._bodies_size > BODIES_KEPT_BYTES:
            self._bodies_size -= len(self._bodies.popleft())

    def count_attempt(self, key: str) -> int:
        """Count one attempt of the `status` fault keyed `key`; returns its attempts so far. The least
        recently used key is forgotten beyond `FAULT_KEYS_KEPT`."""
        attempts = self.attempts
        attempts[key] = attempts.pop(key, 0) + 1  # most recently used last
        while len(attempts) > FAULT_KEYS_KEPT:
            del attempts[next(iter(attempts))]
        return attempts[key]

    def add_peer(self, peer: object) -> None:
        """Remember the client end of a connection that sent a request, at most `PEERS_KEPT` of them."""
        if peer not in self.peers and len(self.peers) >= PEERS_KEPT:
            self.peers.pop()
        self.peers.add(peer)


@dataclass
class _ApiMetrics:
    """One API's children of the server's series (its `api` label), looked up once, not per request."""

    running: Gauge
    waiting: Gauge
    requests: Counter
    output_tokens: Counter
    prompt_tokens: Counter


class _Metrics:
    """The series of `GET /metrics`, each labelled `api` with an API's name in `SERVER_APIS` (`chat`,
    `completions`, `responses`, `messages`), in a registry of this server's own: one process runs many
    servers, and the default registry is the process's.

    - `streamkit_requests_running` (gauge): requests that hold a slot, being answered, now; without `slots`,
      every valid request being answered.
    - `streamkit_requests_waiting` (gauge): requests waiting for a slot now; always 0 without `slots`.
    - `streamkit_requests_total` (counter): valid requests that got a slot, counted as each ends, whole or cut
      short (a fault, its client gone); a `status` or `html` fault's answer is one of them.
    - `streamkit_output_tokens_total` (counter): the tokens of the answers written, added as each ends: a
      stream's token events handed to the connection (each event's `Frame.tokens`), or a whole answer's
      tokens (`Plan.output_tokens`) once its body is written.
    - `streamkit_prompt_tokens_total` (counter): the prompt tokens of those requests (the scripted model's
      count: the prompt's words), added as each ends.

    A background response counts as its producer does: running while it produces, in a slot, and ended with
    the tokens it produced; the connections that stream it count nothing. A `status` or `html` fault on a
    background request counts as a request at once, without a slot.

    Every API's series exist from the start, at 0, so that the first scrape shows them all."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        running = Gauge("streamkit_requests_running", "Requests being answered now", ["api"], registry=r)
        waiting = Gauge("streamkit_requests_waiting", "Requests waiting for a slot now", ["api"], registry=r)
        requests = Counter("streamkit_requests", "Requests answered", ["api"], registry=r)
        output = Counter("streamkit_output_tokens", "Tokens of the answers written", ["api"], registry=r)
        prompt = Counter("streamkit_prompt_tokens", "Prompt tokens of requests answered", ["api"], registry=r)
        self.apis = {
            name: _ApiMetrics(
                running.labels(name),
                waiting.labels(name),
                requests.labels(name),
                output.labels(name),
                prompt.labels(name),
            )
            for name in SERVER_APIS
        }


CONFIG_KEY = web.AppKey("config", ServerConfig)
STATS_KEY = web.AppKey("stats", ServerStats)


class _Handler:
    def __init__(self, config: ServerConfig, stats: ServerStats) -> None:
        self.config = config
        self.stats = stats
        self.series = _Metrics()
        # The server's slots: one queue for every API, first come first served (asyncio's Semaphore wakes its
        # waiters in order, and lets no newcomer pass one). None: no limit.
        self.slots = asyncio.Semaphore(config.timing.slots) if config.timing.slots else None
        self.store = BackgroundStore()  # the Responses API's kept responses, background ones and the others

    def _settings(self, request: web.Request, api: ServerApi) -> tuple[Timing, Faults]:
        try:
            timing = Timing.parse(request.headers.get(TIMING_HEADER, ""), self.config.timing)
            spec = request.headers.get(FAULT_HEADER)
            faults = Faults.parse(spec) if spec is not None else self.config.faults
        except ValueError as exc:
            raise RequestError(400, f"Invalid streamkit header: {exc}", None, "invalid_value") from None
        if (timing.slots or 0) != (self.config.timing.slots or 0):  # one queue for all: no request's own
            raise RequestError(
                400, "Invalid streamkit header: slots is a server setting", None, "invalid_value"
            )
        if faults.error is not None and faults.error not in api.error_forms:
            forms = ", ".join(api.error_forms)
            raise RequestError(
                400, f"Invalid streamkit header: error must be one of {forms}", None, "invalid_value"
            )
        return timing, faults

    def _authorize(self, request: web.Request, api: ServerApi) -> None:
        """Raises `RequestError` (401) unless the server has no key or `request` carries it: as a Bearer
        token, or, on an Anthropic API, as `x-api-key`."""
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("Authorization", "")
        if api.provider == "anthropic" and "x-api-key" in request.headers:
            given = f"Bearer {request.headers['x-api-key']}"
        # In constant time, so that how long a refusal takes says nothing of how much of the key was right.
        # Bytes, as compare_digest takes str only in ASCII; surrogatepass encodes any str.
        if not hmac.compare_digest(
            given.encode("utf-8", "surrogatepass"), f"Bearer {key}".encode("utf-8", "surrogatepass")
        ):
            raise RequestError(401, "Incorrect API key provided.", None, "invalid_api_key")

    def _refused(self, request: web.Request) -> web.Response | None:
        """For a path that serves the clients of every API (`/v1/models`, the trace): a 401 in OpenAI's shape
        unless `request` carries the server's key in either provider's header; None when it may go on."""
        try:
            self._authorize(request, SERVER_APIS["messages"])
        except RequestError as exc:
            return self._error(SERVER_APIS["chat"], exc)
        return None

    async def trace(self, request: web.Request) -> web.Response:
        """The token write times recorded so far (`ServerStats.traces`), as `{id: [time, ...]}`; `?clear=1`
        forgets them after, and nothing else."""
        return self._times(request, self.stats.traces)

    async def received(self, request: web.Request) -> web.Response:
        """When each request was received (`ServerStats.received`), as `{id: time}`; `?clear=1` forgets them
        after, and nothing else. A path of its own, so that the trace keeps the shape its readers expect."""
        return self._times(request, self.stats.received)

    def _times(self, request: web.Request, times: dict[str, Any] | None) -> web.Response:
        """`times` as JSON, for a request with the server's key; cleared after with `?clear=1`."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        times = times if times is not None else {}
        response = web.json_response(times)
        if request.query.get("clear"):
            times.clear()
        return response

    async def metrics(self, request: web.Request) -> web.Response:
        """The server's series in Prometheus' text format (`_Metrics`). No key is asked, as a real server's
        metrics endpoint asks none: they are counts, and say nothing of any request's content or key."""
        return web.Response(
            body=generate_latest(self.series.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def models(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "streamkit"}
        return web.json_response({"object": "list", "data": [model]})

    def handler(self, api: ServerApi) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, api)

        return serve

    def _error(
        self, api: ServerApi, error: RequestError, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            status=error.status,
            body=_encode(api.error_body(error)),
            content_type="application/json",
            headers=headers,
        )

    async def _serve(self, request: web.Request, api: ServerApi) -> web.StreamResponse:
        received = time.perf_counter()  # before the checks and the queue: both are part of the wait
        self._begin(request)
        try:
            self._authorize(request, api)
            timing, faults = self._settings(request, api)
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise RequestError(
                    413, f"The request body is larger than {MAX_BODY_BYTES} bytes.", None, "request_too_large"
                ) from None
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
                body = None
            if not isinstance(body, dict):
                raise RequestError(400, PARSE_ERROR)
            script = api.parse_request(body, None if self.config.any_model else self.config.model)
            plan = api.render(script, answer(script, timing.tokens), timing.tokens_per_chunk)
        except RequestError as exc:
            return self._error(api, exc)
        self.stats.keep_body(raw)
        if self.stats.received is not None:
            self.stats.received[plan.id] = received
        if script.background:
            return await self._serve_background(request, api, script, plan, timing, faults)

        metrics = self.series.apis[api.name]
        await self._take_slot(metrics)
        stream: _Stream | None = None
        written = 0  # the tokens of a whole answer, once its body is written
        try:
            if faults.stall_head:
                await asyncio.sleep(faults.stall_head)
            response = self._fault_response(api, faults)
            if response is None and script.stream:
                stream = _Stream(request, api, plan, timing, faults, self.stats)
                streamed = await stream.run()
                if stream.whole:
                    self._keep(api, script, plan)
                return streamed
            whole = response is None
            if response is None:
                response = web.json_response(plan.whole, dumps=lambda o: _encode(o).decode())
            # Written here, in the slot, rather than by aiohttp once the handler has returned.
            await response.prepare(request)
            await response.write_eof()
            if whole:
                written = plan.output_tokens
                self._keep(api, script, plan)
            return response
        finally:
            # Whatever ended the answer, a client gone (aiohttp cancels the handler) included.
            self._free_slot(metrics, script.prompt_tokens, stream.written if stream is not None else written)

    async def _take_slot(self, metrics: _ApiMetrics) -> None:
        """Wait for a slot (with `slots`), then count one more request being answered. Cancelled while it
        waits (its client gone), it takes no slot."""
        if self.slots is not None:
            metrics.waiting.inc()
            try:
                await self.slots.acquire()
            finally:
                metrics.waiting.dec()
        metrics.running.inc()

    def _free_slot(self, metrics: _ApiMetrics, prompt_tokens: int, output_tokens: int) -> None:
        """Give back the slot `_take_slot` took, and count the request answered with its tokens."""
        if self.slots is not None:
            self.slots.release()
        metrics.running.dec()
        metrics.requests.inc()
        metrics.prompt_tokens.inc(prompt_tokens)
        metrics.output_tokens.inc(output_tokens)

    def _keep(self, api: ServerApi, script: Script, plan: Plan) -> None:
        """Keep a Responses answer written whole for `GET /v1/responses/{id}`, unless it asked `store:
        false`."""
        if api is RESPONSES and script.request.get("store") is not False:
            self.store.add(StoredResponse.whole(plan.id, plan.whole, _cost(script, plan), self.store.clock))

    async def _serve_background(
        self, request: web.Request, api: ServerApi, script: Script, plan: Plan, timing: Timing, faults: Faults
    ) -> web.StreamResponse:
        """A background response: its producer (`_produce`) is started and holds the slot; the request gets
        the Response object at once (`queued`), or, with `stream: true`, reads the events from the store as
        the first of the connections that stream it. A `status` or `html` fault answers at once, without a
        slot, and creates no response."""
        response = self._fault_response(api, faults)
        if response is not None:
            metrics = self.series.apis[api.name]
            metrics.requests.inc()
            metrics.prompt_tokens.inc(script.prompt_tokens)
            if faults.stall_head:
                await asyncio.sleep(faults.stall_head)
            return response
        stored = StoredResponse(
            plan.id,
            plan.frames[0].data["response"],
            background=True,
            stream=script.stream,
            cuts=faults.cut,
            cost=_cost(script, plan),
            clock=self.store.clock,
        )
        self.store.add(stored)
        stored.producer = asyncio.get_running_loop().create_task(
            self._produce(stored, api, script, plan, timing, faults)
        )
        # The first connection that streams it is this one, whatever comes during its `stall_head`.
        replay = _Replay(request, api, stored, -1, timing, faults, self.stats) if script.stream else None
        if faults.stall_head:
            await asyncio.sleep(faults.stall_head)
        if replay is not None:
            return await replay.run()
        return web.json_response(stored.object(), dumps=lambda o: _encode(o).decode())

    async def _produce(
        self,
        stored: StoredResponse,
        api: ServerApi,
        script: Script,
        plan: Plan,
        timing: Timing,
        faults: Faults,
    ) -> None:
        """Play a background response's plan with its timing, into `stored`, once: each event is kept as it
        is produced, whoever reads it or not. It holds a slot (with `slots`) from its first event to its
        last, and counts in `/metrics` as the request does; the trace stamps each token as it is kept, before
        which no reader can have it. `stall` pauses it, and `error` ends it with the error's events, which
        fail the response. Cancelled (the response cancelled or forgotten, the app shutting down), it stops,
        its slot given back."""
        metrics, stats, frames = self.series.apis[api.name], self.stats, plan.frames
        try:
            await self._take_slot(metrics)
            written = 0
            try:
                stored.start()
                rng, first_token = random.Random(), True
                for sent in range(len(frames) + 1):
                    last = sent == len(frames)
                    if faults.stall is not None and _due(faults.stall[0], sent, last):
                        await asyncio.sleep(faults.stall[1])
                    if faults.error is not None and _due(faults.error_after, sent, last):
                        for frame in api.error_frames(faults.error, plan, sent):
                            stored.add(frame)
                        return
                    if last:
                        break
                    frame = frames[sent]
                    if frame.tokens:
                        wait = timing.ttft if first_token else timing.itl * frame.tokens
                        await asyncio.sleep(_jittered(wait, timing.jitter, rng))
                        first_token = False
                        if stats.traces is not None:
                            stats.traces.setdefault(plan.id, []).append(time.perf_counter())
                    stored.add(frame)
                    written += frame.tokens
                for frame in plan.end:
                    stored.add(frame)
            finally:
                self._free_slot(metrics, script.prompt_tokens, written)
        finally:
            stored.end("cancelled")  # nothing when its terminal event has ended it

    def _stored(self, request: web.Request) -> StoredResponse:
        """The response kept as the path's `response_id`. Raises `RequestError` (404) in OpenAI's words when
        there is none."""
        id = request.match_info["response_id"]
        stored = self.store.get(id)
        if stored is None:
            raise RequestError(404, f"Response with id '{id}' not found.")
        return stored

    def _begin(self, request: web.Request) -> None:
        """What every request does first: count it and its connection."""
        self.stats.requests += 1
        self.stats.add_peer(request.transport.get_extra_info("peername") if request.transport else None)

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/responses/{response_id}`: the kept response's Response object as it stands, or, with
        `?stream=true`, its events after `starting_after` (a sequence number; default: all of them), those
        produced already at once and the others as they come, until it ends. Only a background response
        created with `stream: true` can be streamed (OpenAI's background mode guide); any other is, on
        `stream=true`, a 404 as an unknown id is (what OpenAI answered for a stored response that was not in
        the background). `starting_after` at or past the last event of a response that has ended: an empty
        stream, which ends at once; without `stream=true` it says nothing, but must be an integer still. The
        request's own `x-streamkit-fault` plays on its connection; `cut`, `stall` and `error` belong to the
        response's production, and are ignored here (a client that resumes repeats the creating request's
        headers)."""
        self._begin(request)
        api = RESPONSES
        try:
            self._authorize(request, api)
            timing, faults = self._settings(request, api)
            # A client that resumes sends the headers of the request that created the response again; its
            # production's faults are that request's, and are left out here.
            faults = dataclasses.replace(faults, cut=(), stall=None, error=None)
            stream = _query_bool(request, "stream")
            after = _query_int(request, "starting_after")
            stored = self._stored(request)
            if stream and not (stored.background and stored.stream):
                raise RequestError(404, f"Response with id '{stored.id}' not found.")
        except RequestError as exc:
            return self._error(api, exc)
        if faults.stall_head:
            await asyncio.sleep(faults.stall_head)
        response = self._fault_response(api, faults)
        if response is not None:
            return response
        if stream:
            return await _Replay(request, api, stored, after, timing, faults, self.stats).run()
        return web.json_response(stored.object(), dumps=lambda o: _encode(o).decode())

    async def cancel(self, request: web.Request) -> web.Response:
        """`POST /v1/responses/{response_id}/cancel`: stops a background response that is queued or in
        progress (its producer, and so its slot), and returns its Response object, `cancelled`; its streams
        end once they have written the events kept, with no event of their own (none is documented). One that
        has ended is returned as it is: OpenAI's guide says cancelling twice is idempotent, "subsequent calls
        simply return the final Response object". One not created in the background is a 400 (a synchronous
        response is cancelled by closing its connection), an unknown id a 404."""
        self._begin(request)
        api = RESPONSES
        try:
            self._authorize(request, api)
            stored = self._stored(request)
            if not stored.background:
                raise RequestError(400, "Cannot cancel a synchronous response.")
        except RequestError as exc:
            return self._error(api, exc)
        producer = stored.producer
        stored.stop()
        if producer is not None:
            await asyncio.wait({producer})  # its slot is free once the answer says so
        return web.json_response(stored.object(), dumps=lambda o: _encode(o).decode())

    def _fault_response(self, api: ServerApi, faults: Faults) -> web.Response | None:
        """The answer of a `status` fault due on this attempt, or of `html`; None when neither plays."""
        if faults.status is not None:
            attempt = self.stats.count_attempt(faults.key)
            if faults.fail_times is None or attempt <= faults.fail_times:
                headers = {}
                if faults.retry_after is not None:
                    headers["Retry-After"] = faults.retry_after
                if faults.retry_after_ms is not None:
                    headers["retry-after-ms"] = faults.retry_after_ms
                return self._error(api, api.fault_error(faults.status), headers)
        if faults.html:
            return web.Response(body=HTML_PAGE, content_type="text/html")
        return None


class _Writer:
    """Writes events to one connection as its faults shape the bytes: the line ends, the batches of a write
    (`events_per_write`, `write_bytes`), the pieces (`split`), and the `cut` fault (`cut_at`)."""

    def __init__(
        self, request: web.Request, api: ServerApi, timing: Timing, faults: Faults, stats: ServerStats
    ) -> None:
        self.request = request
        self.api = api
        self.timing = timing
        self.faults = faults
        self.stats = stats
        self.end = faults.line_end
        self.batch: list[bytes] = []  # events held back for one write (events_per_write, write_bytes)
        self.batched = 0  # their bytes
        self.batch_tokens = 0  # their tokens
        self.written = 0  # the tokens of the events handed to the connection so far
        self.faulty = dataclasses.replace(faults, key="") != Faults()  # a fault may need what is held back
        self.cut_at: float | None = None  # the `cut` fault's entry for this connection
        self.response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )

    def event(self, frame: Frame) -> bytes:
        data = frame.data if isinstance(frame.data, bytes) else _encode(frame.data)
        head = b"event: " + frame.event.encode() + self.end if frame.event else b""
        return head + b"data: " + data + self.end + self.end

    async def write(self, data: bytes, tokens: int = 0) -> None:
        """Write `data`, events carrying `tokens` tokens, or hold it back for a batch's write."""
        timing = self.timing
        if timing.events_per_write > 1 or timing.write_bytes:
            self.batch.append(data)
            self.batched += len(data)
            self.batch_tokens += tokens
            if len(self.batch) >= timing.events_per_write > 1 or self.batched >= timing.write_bytes > 0:
                await self.flush()
            return
        await self.send(data)
        self.written += tokens

    async def flush(self) -> None:
        if self.batch:
            data = b"".join(self.batch)
            tokens = self.batch_tokens
            self.batch.clear()
            self.batched = self.batch_tokens = 0
            await self.send(data)
            self.written += tokens

    async def send(self, data: bytes) -> None:
        split = self.faults.split
        if split is None:
            await self.response.write(data)
            return
        for i in range(0, len(data), split):
            await self.response.write(data[i : i + split])
            await asyncio.sleep(0)  # let each piece leave as its own write

    async def keepalive(self) -> None:
        """A keep-alive comment or a ping event, as the faults say."""
        if self.faults.keepalive:
            await self.write(b": keep-alive" + self.end + self.end)
        else:
            await self.write(self.event(Frame(b"{}", "ping")))

    async def cut(self, sent: int, following: Frame | None) -> bool:
        """Play the `cut` fault if it is due after `sent` events of this connection, `following` the event
        that would come next (None: none); True when it cut the connection. A fraction of an event writes that
        part of `following`'s bytes (one at least, never all) before the abort, which waits (a second at most)
        for what was written to leave, so that the client has every byte promised."""
        at = self.cut_at
        if at is None or int(at) != sent:
            return False
        await self.flush()
        if at > sent and following is not None:
            data = self.event(following)
            await self.send(data[: min(len(data) - 1, max(1, int(len(data) * (at - sent))))])
        transport = self.request.transport
        if transport is not None:
            deadline = time.monotonic() + 1
            while transport.get_write_buffer_size() and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            transport.abort()
        return True


class _Stream(_Writer):
    """Writes one planned stream with its timing and faults."""

    def __init__(
        self,
        request: web.Request,
        api: ServerApi,
        plan: Plan,
        timing: Timing,
        faults: Faults,
        stats: ServerStats,
    ) -> None:
        super().__init__(request, api, timing, faults, stats)
        self.plan = plan
        self.rng = random.Random()
        self.cut_at = faults.cut[0] if faults.cut else None  # a stream of its own: its only connection
        self.whole = False  # every event written and the body ended properly

    async def wait(self, seconds: float) -> None:
        """Sleep, sending a keep-alive comment or a ping event every interval if the faults say so."""
        if seconds <= 0:
            return
        await self.flush()
        interval = self.faults.keepalive or self.faults.ping
        deadline = time.monotonic() + seconds
        while interval and deadline - time.monotonic() >= interval:
            await asyncio.sleep(interval)
            await self.keepalive()
        remaining = deadline - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)

    def delay(self, seconds: float) -> float:
        return _jittered(seconds, self.timing.jitter, self.rng)

    async def run(self) -> web.StreamResponse:
        faults, stats, frames, end = self.faults, self.stats, self.plan.frames, self.plan.end
        await self.response.prepare(self.request)
        stats.streams_open += 1
        try:
            if faults.bom:
                await self.write(b"\xef\xbb\xbf")
            first_token = True
            for sent, frame in enumerate(frames):
                if await self.fault(sent):
                    return self.response
                if frame.tokens:
                    await self.wait(
                        self.delay(self.timing.ttft if first_token else self.timing.itl * frame.tokens)
                    )
                    first_token = False
                # Stamped as the bytes are handed to the connection, never after: a client on this machine
                # (the same clock) cannot have them before this moment, however the two are scheduled.
                if frame.tokens and stats.traces is not None:
                    stats.traces.setdefault(self.plan.id, []).append(time.perf_counter())
                await self.write(self.event(frame), frame.tokens)
                stats.chunks += 1
            if await self.fault(len(frames)):
                return self.response
            sent = len(frames)
            if not faults.no_done:
                for frame in end:
                    if sent > len(frames) and await self.cut(sent, frame):
                        return self.response
                    await self.write(self.event(frame))
                    sent += 1
            await self.flush()
            if await self.cut(sent, None):
                return self.response
            await self.response.write_eof()
            self.whole = not faults.no_done
            return self.response
        finally:
            stats.streams_open -= 1

    async def fault(self, sent: int) -> bool:
        """Play the faults due after `sent` events; True when one of them ended the stream. A fault set past
        the last event plays before the end of the stream (`[DONE]`, the terminal event); `cut` only at its
        count."""
        f = self.faults
        last = sent == len(self.plan.frames)
        if self.faulty:
            await self.flush()

        def due(k: int | None) -> bool:
            return _due(k, sent, last)

        if f.stall is not None and due(f.stall[0]):
            await self.wait(f.stall[1])
        following = self.plan.frames[sent] if not last else None
        if last and self.plan.end and not f.no_done:
            following = self.plan.end[0]
        if await self.cut(sent, following):
            return True
        if due(f.drop):
            if self.request.transport is not None:
                self.request.transport.abort()
            return True
        if due(f.truncate):
            await self.response.write_eof()
            return True
        if due(f.malformed):
            await self.write(self.event(Frame(self.api.malformed)))
        elif f.error is not None and due(f.error_after):
            for frame in self.api.error_frames(f.error, self.plan, sent):
                await self.write(self.event(frame))
        else:
            return False
        await self.response.write_eof()
        return True


class _Replay(_Writer):
    """Writes a kept background response's events to one connection: those after sequence number `after`
    kept already, at once, then each as the producer keeps it, until the response ends (its terminal event,
    or cancelled: then the body just ends). The connection counts as one more that streams the response,
    which picks its `cut`. Its own faults play here, counted from its first event: `drop`, `truncate`,
    `malformed` (past its last event: before the terminal event), `no_done` (the terminal event left out),
    and the bytes' (`framing`, `bom`, `split`, batches); `keepalive` and `ping` fill its waits for the next
    event. It holds no slot: the producer does."""

    def __init__(
        self,
        request: web.Request,
        api: ServerApi,
        stored: StoredResponse,
        after: int,
        timing: Timing,
        faults: Faults,
        stats: ServerStats,
    ) -> None:
        super().__init__(request, api, timing, faults, stats)
        self.stored = stored
        self.next = max(after + 1, 0)  # sequence numbers are the events' indexes, from 0
        self.cut_at = stored.connect()

    async def run(self) -> web.StreamResponse:
        stored, faults, stats = self.stored, self.faults, self.stats
        await self.response.prepare(self.request)
        stats.streams_open += 1
        try:
            if faults.bom:
                await self.write(b"\xef\xbb\xbf")
            sent = 0
            while True:
                # Due at this count, a fault plays now rather than once the next event comes, unless it needs
                # that event (a cut inside it) or has to know whether it ends the stream (one set past it).
                to_come = self.next >= len(stored.events) and not stored.ended
                inside = self.cut_at is not None and self.cut_at != int(self.cut_at)
                if to_come and not inside and await self.fault(sent, None, False):
                    return self.response
                await self.until_next()
                index = self.next
                frame = stored.events[index] if index < len(stored.events) else None
                terminal = frame is not None and stored.is_terminal(index)
                if await self.fault(sent, frame, frame is None or terminal):
                    return self.response
                if frame is None or (terminal and faults.no_done):
                    break
                await self.write(self.event(frame), frame.tokens)
                stats.chunks += 1
                sent += 1
                self.next += 1
                if terminal:
                    break
            if await self.cut(sent, None):
                return self.response
            await self.flush()
            await self.response.write_eof()
            return self.response
        finally:
            stats.streams_open -= 1

    async def until_next(self) -> None:
        """Wait until the next event is kept or the response has ended, flushing what is held back first, and
        sending a keep-alive or a ping every interval of the wait if the faults say so."""
        stored, interval = self.stored, self.faults.keepalive or self.faults.ping
        while self.next >= len(stored.events) and not stored.ended:
            await self.flush()
            changed = stored.changed()
            if not interval:
                await changed
                continue
            try:
                await asyncio.wait_for(changed, interval)
            except TimeoutError:
                await self.keepalive()

    async def fault(self, sent: int, following: Frame | None, last: bool) -> bool:
        """Play this connection's faults due after `sent` of its events, `following` the event that comes
        next and `last` whether it ends the stream (or there is none); True when one of them ended the
        stream."""
        f = self.faults
        if self.faulty:
            await self.flush()
        if await self.cut(sent, following):
            return True
        if _due(f.drop, sent, last):
            if self.request.transport is not None:
                self.request.transport.abort()
            return True
        if _due(f.truncate, sent, last):
            await self.response.write_eof()
            return True
        if _due(f.malformed, sent, last):
            await self.write(self.event(Frame(self.api.malformed)))
            await self.flush()
            await self.response.write_eof()
            return True
        return False


def _due(k: int | None, sent: int, last: bool) -> bool:
    """Whether a fault set after `k` events plays after `sent` of them: at its count, or, set past the last
    event, before the end (`last`: the next event ends the stream, or there is none)."""
    return k is not None and (sent == k or (last and k > sent))


def _jittered(seconds: float, jitter: float, rng: random.Random) -> float:
    """`seconds` scaled by a random factor in [1 - jitter, 1 + jitter]."""
    return seconds * (1 + rng.uniform(-jitter, jitter)) if jitter else seconds


def _cost(script: Script, plan: Plan) -> int:
    """An answer's planned tokens as `MAX_REQUEST_TOKENS` counts them (a logprob alternate is one): what a
    kept response weighs (`BACKGROUND_KEPT_TOKENS`)."""
    return plan.output_tokens * (1 + script.top_logprobs if script.logprobs else 1)


def _query_bool(request: web.Request, name: str) -> bool:
    """A query parameter `true` or `false` (absent: false). Raises `RequestError` (400) on any other."""
    value = request.query.get(name, "false").lower()
    if value not in ("true", "false"):
        raise RequestError(400, f"Invalid value for '{name}': expected true or false.", name, "invalid_value")
    return value == "true"


def _query_int(request: web.Request, name: str) -> int:
    """A query parameter that is an integer (absent: -1, before the first sequence number). Raises
    `RequestError` (400) on any other."""
    value = request.query.get(name)
    if value is None:
        return -1
    try:
        return int(value)
    except ValueError:
        raise RequestError(
            400, f"Invalid type for '{name}': expected an integer, but got a string.", name, "invalid_type"
        ) from None


def create_app(config: ServerConfig | None = None, stats: ServerStats | None = None) -> web.Application:
    """The aiohttp.web application of the built-in server: each API of `streamkit.server.apis` under `/v1`,
    `GET /v1/responses/{id}` and `POST /v1/responses/{id}/cancel` (`_Handler.retrieve`, `_Handler.cancel`),
    `/v1/models`, and `GET /metrics` (no key asked); with `config.trace`, `GET /streamkit/trace` and
    `GET /streamkit/received` too (the server's key asked, as `/v1/models` does). Background responses still
    produced are stopped as the app shuts down, and their streams end."""
    config = config or ServerConfig()
    handler = _Handler(config, stats or ServerStats())
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[CONFIG_KEY] = config
    app[STATS_KEY] = handler.stats
    for api in SERVER_APIS.values():
        app.router.add_post(f"/v1{api.path}", handler.handler(api))
    app.router.add_get(f"/v1{RESPONSES.path}/{{response_id}}", handler.retrieve, allow_head=False)
    app.router.add_post(f"/v1{RESPONSES.path}/{{response_id}}/cancel", handler.cancel)
    app.router.add_get("/v1/models", handler.models)
    app.router.add_get("/metrics", handler.metrics)

    async def shutdown(app: web.Application) -> None:  # the streams still open end at once
        handler.store.close()

    async def cleanup(app: web.Application) -> None:
        await handler.store.wait_closed()

    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    if config.trace:
        handler.stats.traces = {}
        handler.stats.received = {}
        app.router.add_get("/streamkit/trace", handler.trace)
        app.router.add_get("/streamkit/received", handler.received)
    return app
