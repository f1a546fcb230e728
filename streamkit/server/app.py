"""The built-in OpenAI-compatible server: an aiohttp.web app serving the scripted model, faults on demand."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import web

from streamkit.protocols.chat import ChatCompletionAccumulator, ChatCompletionChunk
from streamkit.protocols.completions import CompletionAccumulator, CompletionChunk
from streamkit.server.faults import Faults, Timing
from streamkit.server.scripted import ChatRequest, CompletionRequest, Plan, plan_chat, plan_completion

__all__ = ["ServerConfig", "ServerStats", "create_app"]

FAULT_HEADER = "x-streamkit-fault"
TIMING_HEADER = "x-streamkit-timing"

HTML_PAGE = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"
SERVER_ERROR = {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error",
    "param": None,
    "code": "internal_error",
}
RATE_LIMIT_ERROR = {
    "message": "Rate limit reached. Please try again later.",
    "type": "requests",
    "param": None,
    "code": "rate_limit_exceeded",
}


def fault_error(status: int) -> dict[str, Any]:
    """The OpenAI error object answered with a `status=CODE` fault."""
    if status >= 500:
        return SERVER_ERROR
    if status == 429:
        return RATE_LIMIT_ERROR
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return {
        "message": f"{reason} (an injected fault).",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


_encode = msgspec.json.encode


@dataclass
class ServerConfig:
    """Settings of one server: where it listens, the model name it serves, its key, timing and faults."""

    host: str = "127.0.0.1"
    port: int = 0
    model: str = "scripted"
    api_key: str | None = None
    timing: Timing = field(default_factory=Timing)
    faults: Faults = field(default_factory=Faults)
    trace: bool = False  # record when each token chunk was written (ServerStats.traces, GET /streamkit/trace)

    def __repr__(self) -> str:  # never show the key
        key = "'***'" if self.api_key else "None"
        return f"ServerConfig(host={self.host!r}, port={self.port}, model={self.model!r}, api_key={key})"


@dataclass
class ServerStats:
    """What the server has done so far; read by tests and benchmarks."""

    requests: int = 0
    chunks: int = 0
    streams_open: int = 0
    peers: set[object] = field(default_factory=set)  # the client ends of the connections that sent requests
    bodies: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=100))
    """The JSON bodies of the last 100 valid requests, newest last: what a test can assert was sent."""
    traces: dict[str, list[float]] | None = None
    """With tracing on (`ServerConfig.trace`): per completion id, `time.perf_counter()` right after each
    token-carrying chunk was written: the ground truth a benchmark's measurements are checked against."""
    attempts: collections.Counter[str] = field(default_factory=collections.Counter)


CONFIG_KEY = web.AppKey("config", ServerConfig)
STATS_KEY = web.AppKey("stats", ServerStats)


class RequestError(Exception):
    """A request the API would reject, with OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {
            "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
        }


def error_response(status: int, error: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=_encode({"error": error}), content_type="application/json", headers=headers
    )


# Validation, with the API's own messages and codes

_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def _check_type(body: dict[str, Any], name: str, *kinds: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    # bool is an int in Python but not in JSON; an int is a fine number.
    ok = any(
        isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool)) for kind in kinds
    ) or (float in kinds and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        expected = " or ".join(_TYPE_NAMES[k] for k in kinds)
        got = _TYPE_NAMES.get(type(value), "null")
        raise RequestError(
            400,
            f"Invalid type for '{name}': expected {expected}, but got {got}.",
            name,
            "invalid_type",
        )
    return value


def _check_range(body: dict[str, Any], name: str, kind: type, low: float, high: float | None = None) -> Any:
    value = _check_type(body, name, kind)
    if value is None:
        return None
    if value < low:
        raise RequestError(
            400, f"Invalid '{name}': value below minimum. Expected a value >= {low}, but got {value}.", name,
            "integer_below_min_value" if kind is int else "decimal_below_min_value",
        )  # fmt: skip
    if high is not None and value > high:
        raise RequestError(
            400, f"Invalid '{name}': value above maximum. Expected a value <= {high}, but got {value}.", name,
            "integer_above_max_value" if kind is int else "decimal_above_max_value",
        )  # fmt: skip
    return value


def _common(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The checks both endpoints share; returns the settings the scripted model uses."""
    if "model" not in body:
        raise RequestError(400, "Missing required parameter: 'model'.", "model", "missing_required_parameter")
    _check_type(body, "model", str)
    if body["model"] != model:
        raise RequestError(
            404,
            f"The model `{body['model']}` does not exist or you do not have access to it.",
            None,
            "model_not_found",
        )
    _check_type(body, "stream", bool)
    _check_range(body, "temperature", float, 0, 2)
    _check_range(body, "top_p", float, 0, 1)
    _check_range(body, "presence_penalty", float, -2, 2)
    _check_range(body, "frequency_penalty", float, -2, 2)
    _check_type(body, "user", str)
    _check_type(body, "logit_bias", dict)
    n = _check_range(body, "n", int, 1, 128) or 1
    seed = _check_type(body, "seed", int) or 0
    stop = _check_type(body, "stop", str, list)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4 or not all(isinstance(s, str) for s in stops):
        raise RequestError(
            400,
            "Invalid 'stop': expected a string or an array of at most 4 strings.",
            "stop",
            "invalid_value",
        )
    options = _check_type(body, "stream_options", dict)
    if options is not None and not body.get("stream"):
        raise RequestError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            "invalid_value",
        )
    include_usage = bool(options and options.get("include_usage"))
    return {"n": n, "seed": seed, "stop": stops, "include_usage": include_usage}


def _word_count(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_word_count(v.get("text") if isinstance(v, dict) else v) for v in value)
    return 0


def parse_chat(body: dict[str, Any], model: str) -> ChatRequest:
    """Validate a chat request. Raises `RequestError` where the API would answer 4xx."""
    common = _common(body, model)
    messages = body.get("messages")
    if messages is None:
        raise RequestError(
            400, "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    _check_type(body, "messages", list)
    if not messages:
        raise RequestError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            "messages",
            "empty_array",
        )
    roles = ("system", "developer", "user", "assistant", "tool", "function")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in roles:
            raise RequestError(
                400, f"Invalid value for 'messages[{i}].role': expected one of {', '.join(roles)}.",
                f"messages[{i}].role", "invalid_value",
            )  # fmt: skip
    max_tokens = _check_range(body, "max_completion_tokens", int, 1) or _check_range(
        body, "max_tokens", int, 1
    )
    logprobs = bool(_check_type(body, "logprobs", bool))
    top_logprobs = _check_range(body, "top_logprobs", int, 0, 20) or 0
    if top_logprobs and not logprobs:
        raise RequestError(
            400,
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true.",
            "top_logprobs",
            "invalid_value",
        )
    tools = _check_type(body, "tools", list) or []
    for i, tool in enumerate(tools):
        if not (
            isinstance(tool, dict) and isinstance(tool.get("function"), dict) and tool["function"].get("name")
        ):
            raise RequestError(
                400,
                f"Missing required parameter: 'tools[{i}].function.name'.",
                f"tools[{i}].function.name",
                "missing_required_parameter",
            )
    tool_choice = body.get("tool_choice", "auto" if tools else "none")
    if tool_choice not in ("none", "auto", "required") and not (
        isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict)
    ):
        raise RequestError(400, "Invalid value for 'tool_choice'.", "tool_choice", "invalid_value")
    if tool_choice != "none" and not tools and body.get("tool_choice") is not None:
        raise RequestError(
            400,
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            "tool_choice",
            None,
        )
    _check_type(body, "response_format", dict)
    parallel = _check_type(body, "parallel_tool_calls", bool)
    return ChatRequest(
        model=model,
        prompt_tokens=sum(_word_count(m.get("content")) for m in messages),
        max_tokens=max_tokens,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel is not False,
        **common,
    )


def parse_completion(body: dict[str, Any], model: str) -> CompletionRequest:
    """Validate a legacy completion request. Raises `RequestError` where the API would answer 4xx."""
    common = _common(body, model)
    if "prompt" not in body:
        raise RequestError(
            400, "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    prompt = _check_type(body, "prompt", str, list)
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise RequestError(
            400, "Invalid 'prompt': expected a string or an array of strings.", "prompt", "invalid_type"
        )
    suffix = _check_type(body, "suffix", str)
    echo = bool(_check_type(body, "echo", bool))
    logprobs = _check_range(body, "logprobs", int, 0, 5)
    max_tokens = _check_range(body, "max_tokens", int, 0)
    best_of = _check_range(body, "best_of", int, 1, 20)
    if best_of is not None and best_of < common["n"]:
        raise RequestError(400, "best_of must be greater than or equal to n.", "best_of", "invalid_value")
    if best_of is not None and best_of > common["n"] and body.get("stream"):
        raise RequestError(
            400, "Cannot stream results when best_of is greater than n.", "best_of", "invalid_value"
        )
    return CompletionRequest(
        model=model,
        prompts=prompts,
        prompt_tokens=sum(_word_count(p) for p in prompts),
        max_tokens=16 if max_tokens is None else max_tokens,
        logprobs=logprobs,
        echo=echo,
        suffix=suffix,
        **common,
    )


# Serving


class _Handler:
    def __init__(self, config: ServerConfig, stats: ServerStats) -> None:
        self.config = config
        self.stats = stats

    def _settings(self, request: web.Request) -> tuple[Timing, Faults]:
        try:
            timing = Timing.parse(request.headers.get(TIMING_HEADER, ""), self.config.timing)
            spec = request.headers.get(FAULT_HEADER)
            faults = Faults.parse(spec) if spec is not None else self.config.faults
        except ValueError as exc:
            raise RequestError(400, f"Invalid streamkit header: {exc}", None, "invalid_value") from None
        return timing, faults

    def _authorize(self, request: web.Request) -> None:
        key = self.config.api_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            raise RequestError(401, "Incorrect API key provided.", None, "invalid_api_key")

    async def trace(self, request: web.Request) -> web.Response:
        """The token write times recorded so far, by completion id; `?clear=1` forgets them after."""
        traces = self.stats.traces or {}
        response = web.json_response(traces)
        if request.query.get("clear"):
            traces.clear()
        return response

    async def models(self, request: web.Request) -> web.Response:
        try:
            self._authorize(request)
        except RequestError as exc:
            return web.json_response(exc.body, status=exc.status)
        model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "streamkit"}
        return web.json_response({"object": "list", "data": [model]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completion")

    async def _serve(self, request: web.Request, kind: str) -> web.StreamResponse:
        self.stats.requests += 1
        self.stats.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        try:
            self._authorize(request)
            timing, faults = self._settings(request)
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise RequestError(
                    400,
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                    "using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
                )
            self.stats.bodies.append(body)
            if kind == "chat":
                chat = parse_chat(body, self.config.model)
                chat.include_usage |= not body.get("stream")  # a whole answer always has its usage
                plan = plan_chat(chat, timing.tokens, timing.tokens_per_chunk)
            else:
                legacy = parse_completion(body, self.config.model)
                legacy.include_usage |= not body.get("stream")
                plan = plan_completion(legacy, timing.tokens, timing.tokens_per_chunk)
        except RequestError as exc:
            return web.json_response(exc.body, status=exc.status)

        if faults.stall_head:
            await asyncio.sleep(faults.stall_head)
        if faults.status is not None:
            self.stats.attempts[faults.key] += 1
            if self.stats.attempts[faults.key] <= faults.fail_times:
                headers = {}
                if faults.retry_after is not None:
                    headers["Retry-After"] = faults.retry_after
                if faults.retry_after_ms is not None:
                    headers["retry-after-ms"] = faults.retry_after_ms
                error = fault_error(faults.status)
                return error_response(faults.status, error, headers)
        if faults.html:
            return web.Response(body=HTML_PAGE, content_type="text/html")
        if not body.get("stream"):
            return web.json_response(_aggregate(plan, kind), dumps=lambda o: _encode(o).decode())
        return await _Stream(request, plan, timing, faults, self.stats).run()


def _aggregate(plan: Plan, kind: str) -> dict[str, Any]:
    """The non-streamed answer: exactly the aggregate of the chunks the stream would have sent."""
    if kind == "chat":
        chat = ChatCompletionAccumulator()
        for chunk in plan.chunks:
            chat.add(msgspec.convert(chunk, ChatCompletionChunk))
        result = chat.final().to_dict()
    else:
        legacy = CompletionAccumulator()
        for chunk in plan.chunks:
            legacy.add(msgspec.convert(chunk, CompletionChunk))
        result = legacy.final().to_dict()
    return result


class _Stream:
    """Writes one planned stream with its timing and faults."""

    def __init__(
        self, request: web.Request, plan: Plan, timing: Timing, faults: Faults, stats: ServerStats
    ) -> None:
        self.request = request
        self.plan = plan
        self.timing = timing
        self.faults = faults
        self.stats = stats
        self.end = faults.line_end
        self.rng = random.Random()
        self.batch: list[bytes] = []  # events held back to go out in one write (events_per_write)
        self.faulty = dataclasses.replace(faults, key="") != Faults()  # a fault may need what is held back
        self.response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )

    def event(self, data: bytes, event: str | None = None) -> bytes:
        head = b"event: " + event.encode() + self.end if event else b""
        return head + b"data: " + data + self.end + self.end

    async def write(self, data: bytes) -> None:
        if self.timing.events_per_write > 1:
            self.batch.append(data)
            if len(self.batch) >= self.timing.events_per_write:
                await self.flush()
            return
        await self.send(data)

    async def flush(self) -> None:
        if self.batch:
            data = b"".join(self.batch)
            self.batch.clear()
            await self.send(data)

    async def send(self, data: bytes) -> None:
        split = self.faults.split
        if split is None:
            await self.response.write(data)
            return
        for i in range(0, len(data), split):
            await self.response.write(data[i : i + split])
            await asyncio.sleep(0)  # let each piece leave as its own write

    async def wait(self, seconds: float) -> None:
        """Sleep, sending a keep-alive comment or a ping event every interval if the faults say so."""
        if seconds <= 0:
            return
        await self.flush()
        interval = self.faults.keepalive or self.faults.ping
        deadline = time.monotonic() + seconds
        while interval and deadline - time.monotonic() >= interval:
            await asyncio.sleep(interval)
            if self.faults.keepalive:
                await self.write(b": keep-alive" + self.end + self.end)
            else:
                await self.write(self.event(b"{}", "ping"))
        remaining = deadline - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)

    def delay(self, seconds: float) -> float:
        jitter = self.timing.jitter
        return seconds * (1 + self.rng.uniform(-jitter, jitter)) if jitter else seconds

    async def run(self) -> web.StreamResponse:
        faults, stats = self.faults, self.stats
        await self.response.prepare(self.request)
        stats.streams_open += 1
        try:
            if faults.bom:
                await self.write(b"\xef\xbb\xbf")
            first_token = True
            for sent, (chunk, ntokens) in enumerate(zip(self.plan.chunks, self.plan.tokens, strict=True)):
                if await self.fault(sent):
                    return self.response
                if ntokens:
                    await self.wait(
                        self.delay(self.timing.ttft if first_token else self.timing.itl * ntokens)
                    )
                    first_token = False
                await self.write(self.event(_encode(chunk)))
                stats.chunks += 1
                if ntokens and stats.traces is not None:
                    stats.traces.setdefault(chunk["id"], []).append(time.perf_counter())
            if await self.fault(len(self.plan.chunks)):
                return self.response
            if not faults.no_done:
                await self.write(self.event(b"[DONE]"))
            await self.flush()
            await self.response.write_eof()
            return self.response
        finally:
            stats.streams_open -= 1

    async def fault(self, sent: int) -> bool:
        """Play the faults due after `sent` chunks; True when one of them ended the stream. A fault set past
        the last chunk plays before `[DONE]`."""
        f = self.faults
        last = sent == len(self.plan.chunks)
        if self.faulty:
            await self.flush()

        def due(k: int | None) -> bool:
            return k is not None and (sent == k or (last and k > sent))

        if f.stall is not None and due(f.stall[0]):
            await self.wait(f.stall[1])
        if due(f.drop):
            if self.request.transport is not None:
                self.request.transport.abort()
            return True
        if due(f.truncate):
            await self.response.write_eof()
            return True
        if due(f.malformed):
            await self.write(self.event(b'{"id": "chatcmpl-broken", "choices": [{"delta": {"content": "tru'))
        elif f.error is not None and due(f.error_after):
            error = _encode({"error": SERVER_ERROR["message"] if f.error == "string" else SERVER_ERROR})
            await self.write(self.event(error, "error" if f.error == "event" else None))
        else:
            return False
        await self.response.write_eof()
        return True


def create_app(config: ServerConfig | None = None, stats: ServerStats | None = None) -> web.Application:
    """The aiohttp.web application of the built-in server."""
    config = config or ServerConfig()
    handler = _Handler(config, stats or ServerStats())
    app = web.Application()
    app[CONFIG_KEY] = config
    app[STATS_KEY] = handler.stats
    app.router.add_post("/v1/chat/completions", handler.chat)
    app.router.add_post("/v1/completions", handler.completions)
    app.router.add_get("/v1/models", handler.models)
    if config.trace:
        handler.stats.traces = {}
        app.router.add_get("/streamkit/trace", handler.trace)
    return app
