"""An accumulator's `take(item)`, the stream's one call per item, merges as `add` does and returns exactly
`Api.flags(item)`: for every API, on scripted and recorded streams and on arbitrary items."""

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
from streamkit.protocols.base import TOKEN, Api
from streamkit.protocols.scripted import Script, Tool, answer
from streamkit.streams import ChatCompletionStream, StreamMetrics
from streamkit.transports.mock import MockResponse
from tests.conftest import FIXTURES, OPENAI_STREAMS

APIS: dict[str, Api[Any, Any]] = {
    "chat": CHAT,
    "completions": COMPLETIONS,
    "responses": RESPONSES,
    "messages": MESSAGES,
}


def items_of(api: Api[Any, Any], body: bytes) -> list[Any]:
    items = []
    for event, data in SSEDecoder().feed_raw(body):
        if data == b"[DONE]":
            break
        item = api.decode(data, event)
        if item is not None:
            items.append(item)
    return items


def scripted(api: Api[Any, Any], script: Script) -> list[Any]:
    plan = api.render(script, answer(script, 12), 2)
    items = []
    for frame in plan.frames + plan.end:
        data = frame.data if isinstance(frame.data, bytes) else msgspec.json.encode(frame.data)
        if data != b"[DONE]":
            item = api.decode(data, frame.event or "message")
            if item is not None:
                items.append(item)
    return items


def check(api: Api[Any, Any], items: list[Any]) -> None:
    """`take` gives each item's flags, and leaves the same final as `add`."""
    taker, adder = api.accumulator(), api.accumulator()
    for item in items:
        assert taker.take(item) == api.flags(item), item  # type: ignore[attr-defined]
        adder.add(item)
    assert msgspec.json.encode(taker.final()) == msgspec.json.encode(adder.final())


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
def test_take_says_the_flags_of_every_scripted_item(name: str, script: dict[str, Any]) -> None:
    check(APIS[name], scripted(APIS[name], Script("m", **script)))


@pytest.mark.parametrize("path", OPENAI_STREAMS, ids=lambda p: p.stem)
def test_take_says_the_flags_of_every_recorded_chat_chunk(path: Path) -> None:
    check(CHAT, items_of(CHAT, path.read_bytes()))


@pytest.mark.parametrize("name", ["responses", "messages"])
def test_take_says_the_flags_of_every_recorded_llamacpp_event(name: str) -> None:
    check(APIS[name], items_of(APIS[name], (FIXTURES / "llamacpp" / f"{name}.bin").read_bytes()))


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
def test_take_says_the_flags_of_any_chat_chunk(chunks: list[dict[str, Any]]) -> None:
    check(CHAT, [CHAT.decode(json.dumps(c).encode()) for c in chunks])


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
def test_take_says_the_flags_of_any_legacy_chunk(chunks: list[dict[str, Any]]) -> None:
    check(COMPLETIONS, [COMPLETIONS.decode(json.dumps(c).encode()) for c in chunks])


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
def test_take_says_the_flags_of_any_messages_event(events: list[dict[str, Any]]) -> None:
    check(MESSAGES, [MESSAGES.decode(json.dumps(e).encode()) for e in events])


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
def test_take_says_the_flags_of_any_responses_event(events: list[dict[str, Any]]) -> None:
    check(RESPONSES, [RESPONSES.decode(json.dumps(e).encode()) for e in events])


class Counting:
    """An accumulator of a caller's own, with `add` and no `take`: it counts what it was given."""

    def __init__(self) -> None:
        self.inner = CHAT.accumulator()
        self.added = 0

    def add(self, item: Any) -> None:
        self.added += 1
        self.inner.add(item)

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
async def test_a_stream_given_an_accumulator_without_take_adds_then_flags(anyio_backend: str) -> None:
    path = OPENAI_STREAMS[0]
    chunks = items_of(CHAT, path.read_bytes())
    pieces = [path.read_bytes()[i : i + 300] for i in range(0, len(path.read_bytes()), 300)]
    accumulator = Counting()
    stream = ChatCompletionStream(MockResponse(body=pieces), StreamMetrics(0.0, 0.0), accumulator=accumulator)
    final = await stream.get_final_completion()
    assert accumulator.added == len(chunks)
    assert final.to_dict() == json.loads(path.with_suffix(".final.json").read_text())
    assert len(stream.metrics.token_arrivals) == sum(bool(CHAT.flags(c) & TOKEN) for c in chunks) > 0
