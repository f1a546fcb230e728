"""What the built-in server sends on `/v1/responses`, byte for byte: the events of a text answer and of a
function call, the end of an incomplete answer, the faults in the Responses form, and validation errors in
OpenAI's shape."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from streamkit.server import ServerThread
from streamkit.server.app import SERVER_ERROR
from streamkit.server.scripted import tokens_for
from tests.server.raw import RawResponse, post

BODY: dict[str, Any] = {"model": "scripted", "input": "Hello there", "stream": True}
FRAME = re.compile(rb"event: ([a-z_.]+)\ndata: (\{.*?\})\n\n", re.S)
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 16,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def responses(server: ServerThread, fault: str | None = None, timing: str = "", **params: Any) -> RawResponse:
    headers = {"x-streamkit-fault": fault} if fault is not None else {}
    headers["x-streamkit-timing"] = timing
    body = {k: v for k, v in {**BODY, **params}.items() if v is not ...}
    return post(server.url, "/v1/responses", body, headers)


def frames(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Each event as its `event:` name and its data; the body must be made of nothing else."""
    found = FRAME.findall(body)
    assert b"".join(b"event: " + name + b"\ndata: " + data + b"\n\n" for name, data in found) == body
    return [(name.decode(), json.loads(data)) for name, data in found]


def test_a_text_answer(streamkit_server: ServerThread) -> None:
    response = responses(streamkit_server, seed=7)
    assert response.status == 200 and response.complete
    assert response.headers["content-type"] == "text/event-stream"
    events = frames(response.body)
    assert [name for name, _ in events] == TEXT_EVENTS
    assert all(name == data["type"] for name, data in events)  # `event:` names the data's type
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert b"[DONE]" not in response.body

    created, in_progress = events[0][1]["response"], events[1][1]["response"]
    assert created == in_progress
    assert created["id"].startswith("resp_") and created["object"] == "response"
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    assert isinstance(created["created_at"], int) and created["model"] == "scripted"

    item = events[2][1]
    assert item["output_index"] == 0
    assert item["item"] == {
        "type": "message",
        "id": item["item"]["id"],
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    item_id = item["item"]["id"]
    assert item_id.startswith("msg_")
    for _, data in events[3:22]:  # every part and text event names its item, output and content index
        assert (data["item_id"], data["output_index"], data["content_index"]) == (item_id, 0, 0)
    assert events[3][1]["part"] == {"type": "output_text", "text": "", "annotations": [], "logprobs": []}

    text = "".join(tokens_for(7000, 16))
    deltas = [data["delta"] for name, data in events if name == "response.output_text.delta"]
    assert "".join(deltas) == text and all(deltas)
    assert events[20][1]["text"] == text
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    assert events[21][1]["part"] == part
    done = events[22][1]
    assert done["output_index"] == 0
    assert done["item"] == {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": "completed",
        "content": [part],
    }

    final = events[23][1]["response"]
    assert final["id"] == created["id"] and final["status"] == "completed"
    assert final["output"] == [done["item"]]
    assert final["incomplete_details"] is None and final["error"] is None
    assert final["usage"] == {
        "input_tokens": 2,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 16,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 18,
    }


def test_the_request_is_echoed_in_the_response(streamkit_server: ServerThread) -> None:
    params: dict[str, Any] = {
        "instructions": "Be brief.",
        "temperature": 0.3,
        "top_p": 0.8,
        "max_output_tokens": 64,
        "metadata": {"k": "v"},
        "store": False,
        "parallel_tool_calls": False,
        "text": {"format": {"type": "text"}},
        "user": "u1",
    }
    created = frames(responses(streamkit_server, **params).body)[0][1]["response"]
    assert {k: created[k] for k in params} == params


def test_a_function_call(streamkit_server: ServerThread) -> None:
    response = responses(streamkit_server, tools=[WEATHER], tool_choice="required")
    events = frames(response.body)
    names = [name for name, _ in events]
    deltas = names.count("response.function_call_arguments.delta")
    assert deltas > 1
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = events[2][1]["item"]
    assert added["type"] == "function_call" and added["name"] == "get_weather"
    assert added["id"].startswith("fc_") and added["call_id"] and added["arguments"] == ""
    arguments = "".join(data["delta"] for name, data in events if name.endswith(".delta"))
    assert json.loads(arguments).keys() == {"city"}
    for _, data in events[3 : 4 + deltas]:
        assert (data["item_id"], data["output_index"]) == (added["id"], 0)
    assert events[-3][1]["arguments"] == arguments
    assert events[-2][1]["item"] == {**added, "arguments": arguments, "status": "completed"}
    assert events[-1][1]["response"]["output"] == [events[-2][1]["item"]]


def test_max_output_tokens_ends_with_response_incomplete(streamkit_server: ServerThread) -> None:
    events = frames(responses(streamkit_server, "", "tokens=40", max_output_tokens=16).body)
    name, data = events[-1]
    assert name == "response.incomplete"
    final = data["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["usage"]["output_tokens"] == 16 and final["max_output_tokens"] == 16
    assert [n for n, _ in events].count("response.output_text.delta") == 16
    assert events[-2][1]["item"]["status"] == "incomplete"


def test_the_non_streamed_answer_is_what_the_stream_carried(streamkit_server: ServerThread) -> None:
    events = frames(responses(streamkit_server, seed=4).body)
    whole = responses(streamkit_server, stream=False, seed=4)
    assert whole.status == 200 and whole.headers["content-type"].startswith("application/json")
    answer = whole.json()
    assert answer["id"].startswith("resp_") and answer["object"] == "response"
    assert isinstance(answer["created_at"], int)  # as the stream has it, and as OpenAI sends it
    assert answer["status"] == "completed" and answer["model"] == "scripted"
    # The text, from the scripted model's seed; the stream's deltas join to it, and so does the whole answer.
    text = "".join(tokens_for(4000, 16))
    assert "".join(data["delta"] for name, data in events if name == "response.output_text.delta") == text
    (message,) = answer["output"]
    assert (
        message["type"] == "message" and message["role"] == "assistant" and message["status"] == "completed"
    )
    assert [part["text"] for part in message["content"]] == [text]
    assert (
        answer["usage"]["output_tokens"]
        == 16
        == answer["usage"]["total_tokens"] - answer["usage"]["input_tokens"]
    )
    # The items the stream said were done are the whole answer's (their ids are drawn anew).
    done = [data["item"] for name, data in events if name == "response.output_item.done"]
    for item in (*answer["output"], *done):
        item.pop("id")
    assert done == answer["output"]


# Faults in the Responses form


def test_error_event(streamkit_server: ServerThread) -> None:
    response = responses(streamkit_server, "error=event,error_after=5")
    assert response.complete
    events = frames(response.body)
    assert [name for name, _ in events] == [*TEXT_EVENTS[:5], "error"]
    error = events[-1][1]
    assert error == {
        "type": "error",
        "sequence_number": error["sequence_number"],
        "code": "server_error",
        "message": SERVER_ERROR["message"],
        "param": None,
    }


def test_response_failed(streamkit_server: ServerThread) -> None:
    events = frames(responses(streamkit_server, "error=failed,error_after=6").body)
    assert [name for name, _ in events] == [*TEXT_EVENTS[:6], "response.failed"]
    failed = events[-1][1]["response"]
    assert failed["id"] == events[0][1]["response"]["id"] and failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": SERVER_ERROR["message"]}


@pytest.mark.parametrize("form", ["event", "failed"])
def test_an_error_event_continues_the_sequence_numbers(streamkit_server: ServerThread, form: str) -> None:
    events = frames(responses(streamkit_server, f"error={form},error_after=5").body)
    assert [data["sequence_number"] for _, data in events] == list(range(6))


def test_no_done_leaves_out_the_terminal_event(streamkit_server: ServerThread) -> None:
    response = responses(streamkit_server, "no_done")
    assert response.complete
    assert [name for name, _ in frames(response.body)] == TEXT_EVENTS[:-1]


def test_truncate_and_drop(streamkit_server: ServerThread) -> None:
    truncated = responses(streamkit_server, "truncate=4")
    assert truncated.complete and [name for name, _ in frames(truncated.body)] == TEXT_EVENTS[:4]
    dropped = responses(streamkit_server, "drop=6")
    assert not dropped.complete and [name for name, _ in frames(dropped.body)] == TEXT_EVENTS[:6]


def test_malformed(streamkit_server: ServerThread) -> None:
    body = responses(streamkit_server, "malformed=3").body
    assert body.endswith(b'data: {"type": "response.output_text.delta", "delta": "tru\n\n')
    assert [name for name, _ in frames(body[: body.rindex(b"data: ")])] == TEXT_EVENTS[:3]


def test_status_fault_in_openai_shape(streamkit_server: ServerThread) -> None:
    response = responses(streamkit_server, "status=429:1,retry_after=1,key=test_responses_wire_429")
    assert response.status == 429 and response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "rate_limit_exceeded"
    assert responses(streamkit_server, "status=429:1,retry_after=1,key=test_responses_wire_429").status == 200


def test_a_chat_only_error_form_is_a_400_that_names_the_allowed_ones(streamkit_server: ServerThread) -> None:
    for form in ("object", "string"):
        response = responses(streamkit_server, f"error={form}")
        assert response.status == 400
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert "event" in error["message"] and "failed" in error["message"]
        assert error["code"] == "invalid_value"


# Validation


@pytest.mark.parametrize(
    ("params", "status", "param", "code"),
    [
        ({"input": ...}, 400, "input", "missing_required_parameter"),
        ({"input": None}, 400, "input", "missing_required_parameter"),
        ({"input": 5}, 400, "input", "invalid_type"),
        ({"model": ...}, 400, "model", "missing_required_parameter"),
        ({"model": None}, 400, "model", "missing_required_parameter"),
        ({"model": 5}, 400, "model", "invalid_type"),
        ({"model": "gpt-9"}, 404, None, "model_not_found"),
        ({"max_output_tokens": 15}, 400, "max_output_tokens", "integer_below_min_value"),
        ({"max_output_tokens": "16"}, 400, "max_output_tokens", "invalid_type"),
        ({"temperature": 2.5}, 400, "temperature", "decimal_above_max_value"),
        ({"tools": [{"type": "function"}]}, 400, "tools[0].name", "missing_required_parameter"),
        ({"tools": [{"name": "f"}]}, 400, "tools[0].type", "missing_required_parameter"),
        ({"tool_choice": "sometimes"}, 400, "tool_choice", "invalid_value"),
        ({"stream": ..., "stream_options": {}}, 400, "stream_options", "invalid_value"),
        ({"stream": False, "stream_options": {}}, 400, "stream_options", "invalid_value"),
        ({"stream": "yes"}, 400, "stream", "invalid_type"),
    ],
)  # fmt: skip
def test_bad_requests_get_openai_errors(
    streamkit_server: ServerThread, params: dict[str, Any], status: int, param: str | None, code: str
) -> None:
    response = responses(streamkit_server, **params)
    assert response.status == status
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert error["message"]
