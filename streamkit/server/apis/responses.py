"""The Responses API as the built-in server speaks it (`/v1/responses`).

A stream is `response.created` and `response.in_progress`, then each output item (a message of one
`output_text` part, or function calls) added, its deltas, its `*.done` events and `output_item.done`, then
`response.completed` (or `response.incomplete` at the token limit), every event numbered in
`sequence_number`. The whole answer is the final `Response` that the terminal event carries.

`background: true` asks for a background response (`streamkit.server.background`): the same events, produced
once by the server and kept, which `GET /v1/responses/{id}` reads (`streamkit.server.app`). As OpenAI's
background mode guide says, it needs `store` (`store: false` is refused).
"""

from __future__ import annotations

import itertools
from typing import Any

from streamkit.server.apis.base import ServerApi
from streamkit.server.apis.chat import SERVER_ERROR, openai_error_body, openai_fault_error
from streamkit.server.scripted import (
    Answer,
    Frame,
    Plan,
    RequestError,
    Script,
    Tool,
    check_model,
    check_range,
    check_type,
    groups,
    logprob_of,
    new_id,
    now,
    word_count,
)

__all__ = ["RESPONSES", "ResponsesServer"]


class ResponsesServer(ServerApi):
    """The Responses API for the scripted model."""

    name = "responses"
    path = "/responses"
    error_forms = ("event", "failed")
    malformed = b'{"type": "response.output_text.delta", "delta": "tru'

    def parse_request(self, body: dict[str, Any], model: str | None) -> Script:
        model = check_model(body, model)
        stream = bool(check_type(body, "stream", bool))
        if body.get("input") is None:
            raise RequestError(
                400, "Missing required parameter: 'input'.", "input", "missing_required_parameter"
            )
        check_type(body, "input", str, list)
        check_type(body, "instructions", str)
        max_tokens = check_range(body, "max_output_tokens", int, 16)
        check_range(body, "temperature", float, 0, 2)
        check_range(body, "top_p", float, 0, 1)
        top_logprobs = check_range(body, "top_logprobs", int, 0, 20) or 0
        for name in ("text", "reasoning", "metadata"):
            check_type(body, name, dict)
        for name in ("previous_response_id", "truncation", "user"):
            check_type(body, name, str)
        store = check_type(body, "store", bool)
        background = bool(check_type(body, "background", bool))
        if background and store is False:  # OpenAI's background mode guide: "stateless requests are rejected"
            raise RequestError(400, "Background mode requires store=true.", "store", "invalid_value")
        include = check_type(body, "include", list) or []
        if check_type(body, "stream_options", dict) is not None and not stream:
            raise RequestError(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
                "invalid_value",
            )
        tools = check_type(body, "tools", list) or []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
                raise RequestError(
                    400, f"Missing required parameter: 'tools[{i}].type'.", f"tools[{i}].type",
                    "missing_required_parameter",
                )  # fmt: skip
            if tool["type"] == "function" and not tool.get("name"):
                raise RequestError(
                    400, f"Missing required parameter: 'tools[{i}].name'.", f"tools[{i}].name",
                    "missing_required_parameter",
                )  # fmt: skip
        functions = [Tool(t["name"], t.get("parameters") or {}) for t in tools if t["type"] == "function"]
        choice = body.get("tool_choice", "auto")
        if choice not in ("none", "auto", "required") and not (
            isinstance(choice, dict) and choice.get("type")
        ):
            raise RequestError(400, "Invalid value for 'tool_choice'.", "tool_choice", "invalid_value")
        if isinstance(choice, dict):
            functions = [t for t in functions if t.name == choice.get("name")]
        parallel = check_type(body, "parallel_tool_calls", bool) is not False
        return Script(
            model,
            prompt_tokens=word_count(body["input"]) + word_count(body.get("instructions")),
            seed=check_type(body, "seed", int)
            or 0,  # not OpenAI's: what makes the scripted model's text vary
            max_tokens=max_tokens,
            logprobs="message.output_text.logprobs" in include,
            top_logprobs=top_logprobs,
            tools=[] if choice == "none" else functions if parallel else functions[:1],
            include_usage=True,
            stream=stream,
            background=background,
            request=body,
        )

    def render(self, script: Script, answers: list[Answer], tokens_per_chunk: int) -> Plan:
        (a,) = answers
        sequence = itertools.count()

        def event(type: str, *, tokens: int = 0, **fields: Any) -> Frame:
            return Frame({"type": type, "sequence_number": next(sequence), **fields}, type, tokens)

        request = script.request
        response: dict[str, Any] = {
            "id": new_id("resp_"),
            "object": "response",
            "created_at": now(),
            "status": "in_progress",
            "background": script.background,
            "error": None,
            "incomplete_details": None,
            "instructions": request.get("instructions"),
            "max_output_tokens": script.max_tokens,
            "model": script.model,
            "output": [],
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": request.get("previous_response_id"),
            "reasoning": request.get("reasoning", {"effort": None, "summary": None}),
            "store": request.get("store", True),
            "temperature": request.get("temperature", 1.0),
            "text": request.get("text", {"format": {"type": "text"}}),
            "tool_choice": request.get("tool_choice", "auto"),
            "tools": request.get("tools", []),
            "top_p": request.get("top_p", 1.0),
            "truncation": request.get("truncation", "disabled"),
            "usage": None,
            "user": request.get("user"),
            "metadata": request.get("metadata", {}),
        }
        frames = [
            event("response.created", response=response),
            event("response.in_progress", response=response),
        ]
        output: list[dict[str, Any]] = []
        status = "incomplete" if a.finish == "length" else "completed"
        if a.calls:
            for i, call in enumerate(a.calls):
                item: dict[str, Any] = {
                    "type": "function_call",
                    "id": new_id("fc_"),
                    "call_id": call.id,
                    "name": call.name,
                }
                ids: dict[str, Any] = {"item_id": item["id"], "output_index": i}
                frames.append(
                    event(
                        "response.output_item.added",
                        tokens=1,  # the call's name, as chat's first tool-call chunk carries it
                        output_index=i,
                        item={**item, "arguments": "", "status": "in_progress"},
                    )
                )
                delta = "response.function_call_arguments.delta"
                frames += [
                    event(delta, tokens=len(group), **ids, delta="".join(group))
                    for group in groups(call.pieces, tokens_per_chunk)
                ]
                frames.append(event("response.function_call_arguments.done", **ids, arguments=call.arguments))
                done = {**item, "arguments": call.arguments, "status": "completed"}
                frames.append(event("response.output_item.done", output_index=i, item=done))
                output.append(done)
        else:
            item = {"type": "message", "id": new_id("msg_"), "role": "assistant"}
            ids = {"item_id": item["id"], "output_index": 0, "content_index": 0}
            frames.append(
                event(
                    "response.output_item.added",
                    output_index=0,
                    item={**item, "status": "in_progress", "content": []},
                )
            )
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            frames.append(event("response.content_part.added", **ids, part=empty))
            logprobs: list[dict[str, Any]] = []
            for group in groups(a.tokens, tokens_per_chunk):
                some = [_logprob(t, a.rng, script.top_logprobs) for t in group] if script.logprobs else []
                logprobs += some
                frames.append(
                    event(
                        "response.output_text.delta",
                        tokens=len(group),
                        **ids,
                        delta="".join(group),
                        logprobs=some,
                    )
                )
            text = "".join(a.tokens)
            frames.append(event("response.output_text.done", **ids, text=text, logprobs=logprobs))
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}
            frames.append(event("response.content_part.done", **ids, part=part))
            done = {**item, "status": status, "content": [part]}
            frames.append(event("response.output_item.done", output_index=0, item=done))
            output.append(done)
        final = {
            **response,
            "status": status,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "output": output,
            "usage": {
                "input_tokens": script.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": a.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": script.prompt_tokens + a.output_tokens,
            },
        }
        end = [event(f"response.{status}", response=final)]
        return Plan(response["id"], frames, end, a.output_tokens, final)

    def error_body(self, error: RequestError) -> dict[str, Any]:
        return openai_error_body(error)

    def fault_error(self, status: int) -> RequestError:
        return openai_fault_error(status)

    def error_frames(self, form: str, plan: Plan, sent: int) -> list[Frame]:
        # event: an `error` event; failed: `response.failed`, its response carrying the error.
        sequence = sent
        code, message = "server_error", SERVER_ERROR["message"]
        if form == "failed":
            response = {**plan.frames[0].data["response"], "status": "failed"}
            response["error"] = {"code": code, "message": message}
            data = {"type": "response.failed", "sequence_number": sequence, "response": response}
            return [Frame(data, "response.failed")]
        data = {"type": "error", "sequence_number": sequence, "code": code, "message": message, "param": None}
        return [Frame(data, "error")]


def _logprob(token: str, rng: Any, top: int) -> dict[str, Any]:
    logprob = logprob_of(rng)
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [{"token": token, "logprob": logprob, "bytes": list(token.encode())}][:top],
    }


RESPONSES = ResponsesServer()
