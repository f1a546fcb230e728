"""An accumulator's `add(item)`, the stream's one call per item, returns what the item means to the stream:
checked, for every API, against a reading of the item's own JSON written here from the APIs' documents (which
deltas carry a token, which events end a stream or are errors), on scripted and recorded streams and on
arbitrary items."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit import SSEDecoder
from streamkit.protocols import CHAT, COMPLETIONS, MESSAGES, RESPONSES
from streamkit.protocols.base import COUNTED, END, ERROR, TOKEN, Api
from streamkit.server.apis import SERVER_APIS
from streamkit.server.scripted import Script, Tool, answer
from streamkit.streams import ChatCompletionStream, StreamMetrics
from streamkit.transports.mock import MockResponse
from tests.conftest import FIXTURES, OPENAI_STREAMS

APIS: dict[str, Api[Any, Any]] = {
    "chat": CHAT,
    "completions": COMPLETIONS,
    "responses": RESPONSES,
    "messages": MESSAGES,
}


# The reading: what an item means, from its JSON alone.


def chat_meaning(obj: dict[str, Any]) -> int:
    """A chunk carries a token when a choice's delta has content, a refusal, reasoning or a tool call; it says
    how many when that choice has logprobs."""
    for choice in obj.get("choices") or []:
        delta = choice.get("delta") or {}
        fields = ("content", "refusal", "reasoning_content", "reasoning", "tool_calls", "function_call")
        if any(delta.get(name) for name in fields):
            return TOKEN | (COUNTED if choice.get("logprobs") is not None else 0)
    return 0


def legacy_meaning(obj: dict[str, Any]) -> int:
    for choice in obj.get("choices") or []:
        if choice.get("text"):
            return TOKEN | (COUNTED if choice.get("logprobs") is not None else 0)
    return 0


RESPONSE_TOKEN_DELTAS = {
    "response.output_text.delta",
    "response.refusal.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
    "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta",
    "response.mcp_call_arguments.delta",
    "response.code_interpreter_call_code.delta",
}
RESPONSE_ENDS = {
    "response.completed": END,
    "response.incomplete": END,
    "response.failed": ERROR,
    "error": ERROR,
}


def responses_meaning(obj: dict[str, Any]) -> int:
    """A non-empty text, refusal, reasoning, summary or argument delta carries a token (a text delta with
    logprobs says how many); so does a named call's announcement, as chat's first tool-call chunk does."""
    kind = obj.get("type")
    if kind in RESPONSE_TOKEN_DELTAS:
        if not obj.get("delta"):
            return 0
        return TOKEN | (COUNTED if kind == "response.output_text.delta" and obj.get("logprobs") else 0)
    if kind == "response.output_item.added":
        item = obj.get("item") or {}
        named = item.get("type") in ("function_call", "custom_tool_call", "mcp_call")
        return TOKEN if named and item.get("name") else 0
    return RESPONSE_ENDS.get(str(kind), 0)


MESSAGE_TOKEN_FIELDS = {
    "text_delta": "text",
    "input_json_delta": "partial_json",
    "thinking_delta": "thinking",
}


def messages_meaning(obj: dict[str, Any]) -> int:
    """A non-empty text, tool-input or thinking delta carries a token, as does a named tool use's start."""
    kind = obj.get("type")
    if kind == "content_block_delta":
        delta = obj.get("delta") or {}
        field = MESSAGE_TOKEN_FIELDS.get(str(delta.get("type")))
        return TOKEN if field is not None and delta.get(field) else 0
    if kind == "content_block_start":
        block = obj.get("content_block") or {}
        return TOKEN if block.get("type") in ("tool_use", "server_tool_use") and block.get("name") else 0
    return {"message_stop": END, "error": ERROR}.get(str(kind), 0)


MEANINGS = {
    "chat": chat_meaning,
    "completions": legacy_meaning,
    "responses": responses_meaning,
    "messages": messages_meaning,
}


def check(name: str, datas: list[bytes]) -> None:
    """`add` returns, for each event's data, what the reading says it means."""
    api, meaning = APIS[name], MEANINGS[name]
    accumulator = api.accumulator()
    for data in datas:
        item = api.decode(data)
        if item is not None:
            assert accumulator.add(item) == meaning(json.loads(data)), data


def datas_of(body: bytes) -> list[bytes]:
    datas = []
    for _, data in SSEDecoder().feed_raw(body):
        if data == b"[DONE]":
            break
        datas.append(data)
    return datas


def scripted(name: str, script: Script) -> list[bytes]:
    """The data of every event the built-in server's plan for `script` holds (the server is the oracle)."""
    plan = SERVER_APIS[name].render(script, answer(script, 12), 2)
    return [
        msgspec.json.encode(frame.data) for frame in plan.frames + plan.end if isinstance(frame.data, dict)
    ]


SCRIPTS: dict[str, dict[str, Any]] = {
    "text": {},
    "usage": {"include_usage": True},
    "logprobs": {"logprobs": True, "top_logprobs": 2},
    "stop": {"stop": ["e"]},
    "tools": {"tools": [Tool("get_weather", {"type": "object"}), Tool("lookup")]},
    "n=2": {"n": 2},
}


@pytest.mark.parametrize(
    ("name", "script"),
    [
        pytest.param(name, script, id=f"{name}-{kind}")
        for name in APIS
        for kind, script in SCRIPTS.items()
        if not (script.get("n") and name in ("responses", "messages"))  # one answer per request
    ],
)
def test_add_says_what_every_scripted_item_means(name: str, script: dict[str, Any]) -> None:
    check(name, scripted(name, Script("m", **script)))


@pytest.mark.parametrize("path", OPENAI_STREAMS, ids=lambda p: p.stem)
def test_add_says_what_every_recorded_chat_chunk_means(path: Path) -> None:
    check("chat", datas_of(path.read_bytes()))


@pytest.mark.parametrize("name", ["responses", "messages"])
def test_add_says_what_every_recorded_llamacpp_event_means(name: str) -> None:
    check(name, datas_of((FIXTURES / "llamacpp" / f"{name}.bin").read_bytes()))


# Arbitrary items: the fields that decide the flags, each present, empty or absent.

maybe_text = st.sampled_from([None, "", "tok"])
LOGPROBS = {"content": [{"token": "t", "logprob": -0.1, "top_logprobs": []}], "refusal": None}


@st.composite
def chat_chunks(draw: st.DrawFn) -> dict[str, Any]:
    choices = []
    for index in draw(st.lists(st.integers(0, 2), max_size=3)):
        delta: dict[str, Any] = {
            field: value
            for field in ("content", "refusal", "reasoning_content", "reasoning")
            if (value := draw(maybe_text)) is not None
        }
        if draw(st.booleans()):
            delta["tool_calls"] = draw(st.sampled_from([[], [{"index": 0, "function": {"arguments": "{"}}]]))
        if draw(st.integers(0, 5)) == 0:
            delta["function_call"] = {"name": "f", "arguments": ""}
        logprobs = draw(st.sampled_from([None, LOGPROBS]))
        choices.append({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None})
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices}


@settings(max_examples=300, deadline=None)
@given(st.lists(chat_chunks(), max_size=6))
def test_add_says_what_any_chat_chunk_means(chunks: list[dict[str, Any]]) -> None:
    check("chat", [json.dumps(c).encode() for c in chunks])


@st.composite
def legacy_chunks(draw: st.DrawFn) -> dict[str, Any]:
    choices = [
        {
            "index": index,
            "text": draw(st.sampled_from(["", "tok"])),
            "logprobs": draw(st.sampled_from([None, {"tokens": ["t"], "token_logprobs": [-0.1]}])),
            "finish_reason": None,
        }
        for index in draw(st.lists(st.integers(0, 2), max_size=3))
    ]
    return {"id": "c", "object": "text_completion", "created": 1, "model": "m", "choices": choices}


@settings(max_examples=200, deadline=None)
@given(st.lists(legacy_chunks(), max_size=6))
def test_add_says_what_any_legacy_chunk_means(chunks: list[dict[str, Any]]) -> None:
    check("completions", [json.dumps(c).encode() for c in chunks])


MESSAGE_DELTAS = [
    {"type": "text_delta", "text": "tok"},
    {"type": "text_delta", "text": ""},
    {"type": "input_json_delta", "partial_json": '{"a'},
    {"type": "input_json_delta", "partial_json": ""},
    {"type": "thinking_delta", "thinking": "hm"},
    {"type": "thinking_delta", "thinking": ""},
    {"type": "signature_delta", "signature": "s"},
    {"type": "citations_delta", "citation": {"type": "char_location"}},
    {"type": "a_new_delta", "x": 1},
]
MESSAGE_EVENTS = [
    *({"type": "content_block_delta", "index": i, "delta": d} for d in MESSAGE_DELTAS for i in (0, 1)),
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "t", "name": "f"},
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
    {"type": "message_stop"},
    {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
    {"type": "a_new_event"},
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(MESSAGE_EVENTS), max_size=12))
def test_add_says_what_any_messages_event_means(events: list[dict[str, Any]]) -> None:
    check("messages", [json.dumps(e).encode() for e in events])


def text_delta(delta: str, logprobs: Any, output_index: int) -> dict[str, Any]:
    event = {"type": "response.output_text.delta", "item_id": "m", "output_index": output_index}
    return event | {"content_index": 0, "delta": delta, "logprobs": logprobs}


RESPONSE_EVENTS = [
    *(
        text_delta(delta, logprobs, index)
        for delta in ("", "tok")
        for logprobs in (None, [], [{"token": "t", "logprob": -0.1}])
        for index in (0, 1)
    ),
    {"type": "response.refusal.delta", "item_id": "m", "output_index": 0, "content_index": 0, "delta": "no"},
    {"type": "response.function_call_arguments.delta", "item_id": "f", "output_index": 1, "delta": ""},
    {"type": "response.output_item.added", "output_index": 1, "item": {"type": "function_call", "name": "f"}},
    {"type": "response.completed", "response": {"id": "r", "status": "completed"}},
    {"type": "error", "message": "busy", "code": "server_error"},
    {"type": "response.a_new_event"},
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(RESPONSE_EVENTS), max_size=12))
def test_add_says_what_any_responses_event_means(events: list[dict[str, Any]]) -> None:
    check("responses", [json.dumps(e).encode() for e in events])


class Counting:
    """An accumulator of a caller's own: it counts what it was given, and returns the flags as `add` must."""

    def __init__(self) -> None:
        self.inner = CHAT.accumulator()
        self.added = 0

    def add(self, item: Any) -> int:
        self.added += 1
        self.inner.add(item)
        return CHAT.flags(item)

    @property
    def snapshot(self) -> Any:
        return self.inner.snapshot

    def final(self) -> Any:
        return self.inner.final()

    def is_finished(self) -> bool:
        return self.inner.is_finished()

    @property
    def output_tokens(self) -> int | None:
        return self.inner.output_tokens

    @property
    def input_tokens(self) -> int | None:
        return self.inner.input_tokens


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_stream_takes_an_accumulator_of_ones_own(anyio_backend: str) -> None:
    path = OPENAI_STREAMS[0]
    datas = datas_of(path.read_bytes())
    pieces = [path.read_bytes()[i : i + 300] for i in range(0, len(path.read_bytes()), 300)]
    accumulator = Counting()
    stream = ChatCompletionStream(MockResponse(body=pieces), StreamMetrics(0.0, 0.0), accumulator=accumulator)
    final = await stream.get_final_completion()
    assert accumulator.added == len(datas)
    assert final.to_dict() == json.loads(path.with_suffix(".final.json").read_text())
    tokens = sum(bool(chat_meaning(json.loads(d)) & TOKEN) for d in datas)
    assert len(stream.metrics.token_arrivals) == tokens > 0
