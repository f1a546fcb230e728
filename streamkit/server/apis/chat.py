"""Chat Completions as the built-in server speaks it (`/v1/chat/completions`), and what legacy Completions
shares with it: OpenAI's request checks, error bodies and injected errors.

A stream is `chat.completion.chunk`s, the choices of `n > 1` interleaved, an optional usage chunk, then
`data: [DONE]`. The whole answer is the `chat.completion` OpenAI sends for `stream: false`: each choice's
message written from its answer, tool calls without the stream's `index`, and always its usage.
"""

from __future__ import annotations

import random
from http import HTTPStatus
from typing import Any

from streamkit.server.apis.base import ServerApi
from streamkit.server.scripted import (
    SYSTEM_FINGERPRINT,
    VOCABULARY,
    Answer,
    Frame,
    Plan,
    RequestError,
    Script,
    Tool,
    check_model,
    check_range,
    check_stop,
    check_type,
    groups,
    logprob_of,
    new_id,
    now,
    word_count,
)

__all__ = [
    "CHAT",
    "RATE_LIMIT_ERROR",
    "SERVER_ERROR",
    "ChatServer",
    "OpenAIChunkServer",
    "interleave",
    "openai_error_body",
    "openai_fault_error",
    "openai_sampling",
    "openai_usage",
]

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


def openai_error_body(error: RequestError) -> dict[str, Any]:
    """`{"error": {message, type, param, code}}`, as every OpenAI API answers an error."""
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}


def openai_fault_error(status: int) -> RequestError:
    """OpenAI's error for an injected status: a server error, a rate limit, or the status's reason."""
    fields = SERVER_ERROR if status >= 500 else RATE_LIMIT_ERROR if status == 429 else None
    if fields is not None:
        return RequestError(status, fields["message"], None, fields["code"], fields["type"])  # type: ignore[arg-type]
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return RequestError(status, f"{reason} (an injected fault).")


def openai_sampling(body: dict[str, Any], model: str | None) -> Script:
    """The checks chat and legacy completions share, and the script they give."""
    model = check_model(body, model)
    check_type(body, "stream", bool)
    check_range(body, "temperature", float, 0, 2)
    check_range(body, "top_p", float, 0, 1)
    check_range(body, "presence_penalty", float, -2, 2)
    check_range(body, "frequency_penalty", float, -2, 2)
    check_type(body, "user", str)
    check_type(body, "logit_bias", dict)
    n = check_range(body, "n", int, 1, 128) or 1
    seed = check_type(body, "seed", int) or 0
    stop = check_stop(check_type(body, "stop", str, list))
    options = check_type(body, "stream_options", dict)
    stream = bool(body.get("stream"))
    if options is not None and not stream:
        raise RequestError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            "invalid_value",
        )
    # A whole answer always has its usage; a stream only when asked.
    include_usage = not stream or bool(options and options.get("include_usage"))
    return Script(model, n=n, seed=seed, stop=stop, include_usage=include_usage, stream=stream)


def openai_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def interleave(per_choice: list[list[Frame]]) -> list[Frame]:
    """Round-robin over the choices' own frames, as OpenAI interleaves them for n > 1."""
    out: list[Frame] = []
    for step in range(max(map(len, per_choice), default=0)):
        out += [frames[step] for frames in per_choice if step < len(frames)]
    return out


class OpenAIChunkServer(ServerApi):
    """What chat and legacy completions share: chunks until `data: [DONE]`, OpenAI's error shapes."""

    error_forms = ("object", "string", "event")
    malformed = b'{"id": "chatcmpl-broken", "choices": [{"delta": {"content": "tru'

    def error_body(self, error: RequestError) -> dict[str, Any]:
        return openai_error_body(error)

    def fault_error(self, status: int) -> RequestError:
        return openai_fault_error(status)

    def error_frames(self, form: str, plan: Plan, sent: int) -> list[Frame]:
        # object: data {"error": {...}}; string: data {"error": "..."}; event: the object as `event: error`.
        error = SERVER_ERROR["message"] if form == "string" else SERVER_ERROR
        return [Frame({"error": error}, "error" if form == "event" else None)]

    @staticmethod
    def plan(
        script: Script,
        answers: list[Answer],
        head: dict[str, Any],
        per_choice: list[list[Frame]],
        whole: dict[str, Any],
    ) -> Plan:
        """The plan of chunks: each choice's frames interleaved, the usage chunk where it was asked, then
        `[DONE]`; and `whole`, the whole answer, with its usage, which it always has."""
        frames = interleave(per_choice)
        output_tokens = sum(a.output_tokens for a in answers)
        usage = openai_usage(script.prompt_tokens, output_tokens)
        if script.include_usage:
            frames.append(Frame({**head, "choices": [], "usage": usage}))
        return Plan(head["id"], frames, [Frame(b"[DONE]")], output_tokens, {**whole, "usage": usage})


class ChatServer(OpenAIChunkServer):
    """Chat Completions for the scripted model."""

    name = "chat"
    path = "/chat/completions"

    def parse_request(self, body: dict[str, Any], model: str | None) -> Script:
        script = openai_sampling(body, model)
        messages = body.get("messages")
        if messages is None:
            raise RequestError(
                400, "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
            )
        check_type(body, "messages", list)
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
        script.max_tokens = check_range(body, "max_completion_tokens", int, 1) or check_range(
            body, "max_tokens", int, 1
        )
        script.logprobs = bool(check_type(body, "logprobs", bool))
        script.top_logprobs = check_range(body, "top_logprobs", int, 0, 20) or 0
        if script.top_logprobs and not script.logprobs:
            raise RequestError(
                400,
                "Invalid value for 'top_logprobs': 'logprobs' must be set to true.",
                "top_logprobs",
                "invalid_value",
            )
        tools = check_type(body, "tools", list) or []
        for i, tool in enumerate(tools):
            if not (
                isinstance(tool, dict)
                and isinstance(tool.get("function"), dict)
                and tool["function"].get("name")
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
        check_type(body, "response_format", dict)
        parallel = check_type(body, "parallel_tool_calls", bool) is not False
        named = [Tool(t["function"]["name"], t["function"].get("parameters") or {}) for t in tools]
        if isinstance(tool_choice, dict):
            named = [t for t in named if t.name == tool_choice["function"].get("name")]
        script.tools = [] if tool_choice == "none" else named if parallel else named[:1]
        script.prompt_tokens = word_count(messages)
        return script

    def render(self, script: Script, answers: list[Answer], tokens_per_chunk: int) -> Plan:
        id = new_id("chatcmpl-")
        head = {
            "id": id,
            "object": "chat.completion.chunk",
            "created": now(),
            "model": script.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> Any:
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            return {**head, "choices": [choice]}

        per_choice = []
        choices = []  # the whole answer's
        for a in answers:
            message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
            logprobs = None
            if a.calls:
                frames = [Frame(chunk(a.index, {"role": "assistant", "content": None}))]
                for i, call in enumerate(a.calls):
                    function = {"name": call.name, "arguments": ""}
                    start = {"index": i, "id": call.id, "type": "function", "function": function}
                    frames.append(Frame(chunk(a.index, {"tool_calls": [start]}), tokens=1))
                    for group in groups(call.pieces, tokens_per_chunk):
                        delta = {"tool_calls": [{"index": i, "function": {"arguments": "".join(group)}}]}
                        frames.append(Frame(chunk(a.index, delta), tokens=len(group)))
                message["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in a.calls
                ]
            else:
                first = chunk(a.index, {"role": "assistant", "content": ""})
                token_logprobs = []
                if script.logprobs:
                    token_logprobs = [_logprob(t, a.rng, script.top_logprobs) for t in a.tokens]
                    first["choices"][0]["logprobs"] = {"content": []}
                    logprobs = {"content": token_logprobs, "refusal": None}
                frames = [Frame(first)]
                for at in range(0, len(a.tokens), tokens_per_chunk):
                    group = a.tokens[at : at + tokens_per_chunk]
                    some = token_logprobs[at : at + tokens_per_chunk]
                    frames.append(
                        Frame(
                            chunk(
                                a.index,
                                {"content": "".join(group)},
                                logprobs={"content": some} if script.logprobs else None,
                            ),
                            tokens=len(group),
                        )
                    )
                message["content"] = "".join(a.tokens)
            frames.append(Frame(chunk(a.index, {}, a.finish)))
            per_choice.append(frames)
            choices.append(
                {"index": a.index, "message": message, "logprobs": logprobs, "finish_reason": a.finish}
            )
        return self.plan(
            script, answers, head, per_choice, {**head, "object": "chat.completion", "choices": choices}
        )


def _logprob(token: str, rng: random.Random, top: int) -> dict[str, Any]:
    logprob = logprob_of(rng)
    alternates = [(token, logprob)] + [
        (rng.choice(VOCABULARY), round(logprob - 1 - i, 4)) for i in range(top - 1)
    ]
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in alternates[:top]
        ],
    }


CHAT = ChatServer()
