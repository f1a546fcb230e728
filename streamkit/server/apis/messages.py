"""Anthropic Messages as the built-in server speaks it (`/v1/messages`).

A stream is `message_start` and a `ping`, then each content block (a thinking block when asked, the text,
tool uses) started, its deltas and its stop, then `message_delta` with the stop reason and the output usage,
and `message_stop`. The whole answer is the `Message` Anthropic sends for `stream: false`, its blocks written
from the answer.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from streamkit.server.apis.base import ServerApi
from streamkit.server.scripted import (
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
    new_id,
    word_count,
)

__all__ = ["MESSAGES", "MessagesServer"]

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class MessagesServer(ServerApi):
    """Anthropic Messages for the scripted model."""

    name = "messages"
    path = "/messages"
    provider = "anthropic"
    error_forms = ("event",)
    malformed = b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "tru'

    def parse_request(self, body: dict[str, Any], model: str | None) -> Script:
        model = check_model(body, model)
        stream = bool(check_type(body, "stream", bool))
        if body.get("max_tokens") is None:
            raise RequestError(400, "max_tokens: Field required", "max_tokens")
        max_tokens = check_range(body, "max_tokens", int, 1)
        messages = body.get("messages")
        if messages is None:
            raise RequestError(400, "messages: Field required", "messages")
        check_type(body, "messages", list)
        if not messages:
            raise RequestError(400, "messages: at least one message is required", "messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                raise RequestError(
                    400, f"messages.{i}.role: Input should be 'user' or 'assistant'", f"messages.{i}.role"
                )
        system = check_type(body, "system", str, list)
        check_range(body, "temperature", float, 0, 1)
        check_range(body, "top_p", float, 0, 1)
        check_range(body, "top_k", int, 0)
        check_type(body, "metadata", dict)
        stop = check_stop(check_type(body, "stop_sequences", list), "stop_sequences")
        tools = check_type(body, "tools", list) or []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not tool.get("name"):
                raise RequestError(400, f"tools.{i}.name: Field required", f"tools.{i}.name")
        choice = check_type(body, "tool_choice", dict) or {"type": "auto"}
        if choice.get("type") not in ("auto", "any", "tool", "none"):
            raise RequestError(400, "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
        named = [Tool(t["name"], t.get("input_schema") or {}) for t in tools if "input_schema" in t]
        if choice.get("type") == "tool":
            named = [t for t in named if t.name == choice.get("name")]
        thinking = check_type(body, "thinking", dict)
        if thinking is not None and thinking.get("type") not in ("enabled", "disabled"):
            raise RequestError(400, "thinking.type: Input should be 'enabled' or 'disabled'", "thinking.type")
        parallel = not choice.get("disable_parallel_tool_use", False)
        return Script(
            model,
            prompt_tokens=word_count(messages) + word_count(system),
            seed=check_type(body, "seed", int) or 0,  # not Anthropic's: what makes the scripted text vary
            max_tokens=max_tokens,
            stop=stop,
            tools=[] if choice.get("type") == "none" else named if parallel else named[:1],
            include_usage=True,
            stream=stream,
            request=body,
        )

    def render(self, script: Script, answers: list[Answer], tokens_per_chunk: int) -> Plan:
        (a,) = answers

        def event(type: str, *, tokens: int = 0, **fields: Any) -> Frame:
            return Frame({"type": type, **fields}, type, tokens)

        id = new_id("msg_")
        usage = {
            "input_tokens": script.prompt_tokens,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        message: dict[str, Any] = {
            "id": id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": script.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        frames = [event("message_start", message=message), event("ping")]
        blocks: list[dict[str, Any]] = []  # the whole answer's content
        index = itertools.count()
        output_tokens = a.output_tokens
        thinking = script.request.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "enabled":
            # A thought before the answer: the answer's own first words, as the scripted model has no other.
            i = next(index)
            thought = a.tokens[:4] or ["Let", " me", " think"]
            frames.append(
                event("content_block_start", index=i, content_block={"type": "thinking", "thinking": ""})
            )
            frames += [
                event(
                    "content_block_delta",
                    tokens=len(g),
                    index=i,
                    delta={"type": "thinking_delta", "thinking": "".join(g)},
                )
                for g in groups(thought, tokens_per_chunk)
            ]
            signature = new_id("sig_")
            frames.append(
                event(
                    "content_block_delta", index=i, delta={"type": "signature_delta", "signature": signature}
                )
            )
            frames.append(event("content_block_stop", index=i))
            blocks.append({"type": "thinking", "thinking": "".join(thought), "signature": signature})
            output_tokens += len(thought)
        if a.tokens:
            i = next(index)
            frames.append(event("content_block_start", index=i, content_block={"type": "text", "text": ""}))
            frames += [
                event(
                    "content_block_delta",
                    tokens=len(g),
                    index=i,
                    delta={"type": "text_delta", "text": "".join(g)},
                )
                for g in groups(a.tokens, tokens_per_chunk)
            ]
            frames.append(event("content_block_stop", index=i))
            blocks.append({"type": "text", "text": "".join(a.tokens)})
        for call in a.calls:
            i = next(index)
            block = {
                "type": "tool_use",
                "id": call.id.replace("call_", "toolu_"),
                "name": call.name,
                "input": {},
            }
            # The tool's name: one token, as chat's first tool-call chunk carries it.
            frames.append(event("content_block_start", tokens=1, index=i, content_block=block))
            frames.append(
                event("content_block_delta", index=i, delta={"type": "input_json_delta", "partial_json": ""})
            )
            frames += [
                event(
                    "content_block_delta",
                    tokens=len(g),
                    index=i,
                    delta={"type": "input_json_delta", "partial_json": "".join(g)},
                )
                for g in groups(call.pieces, tokens_per_chunk)
            ]
            frames.append(event("content_block_stop", index=i))
            blocks.append({**block, "input": json.loads(call.arguments)})
        stop_reason = "stop_sequence" if a.stop_sequence else _STOP_REASONS[a.finish]
        delta = {"stop_reason": stop_reason, "stop_sequence": a.stop_sequence}
        frames.append(event("message_delta", delta=delta, usage={"output_tokens": output_tokens}))
        whole = {**message, **delta, "content": blocks, "usage": {**usage, "output_tokens": output_tokens}}
        return Plan(id, frames, [event("message_stop")], output_tokens, whole)

    def error_body(self, error: RequestError) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(error.status, "api_error" if error.status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": error.message}}

    def fault_error(self, status: int) -> RequestError:
        messages = {429: "Number of requests has exceeded your rate limit.", 529: "Overloaded"}
        return RequestError(
            status, messages.get(status, "Internal server error" if status >= 500 else "Invalid request")
        )

    def error_frames(self, form: str, plan: Plan, sent: int) -> list[Frame]:
        # event: an `error` event, as Anthropic sends when it is overloaded mid-stream.
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return [Frame(error, "error")]


MESSAGES = MessagesServer()
