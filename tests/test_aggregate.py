"""The accumulators: recorded OpenAI streams, the merge rules' edge cases, and properties."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit import (
    ChatCompletionAccumulator,
    ChatCompletionChunk,
    CompletionAccumulator,
    CompletionChunk,
    SSEDecoder,
)
from tests.conftest import OPENAI_STREAMS


def chat_chunks_of(body: bytes, chunk_size: int | None = None) -> list[ChatCompletionChunk]:
    decoder = SSEDecoder()
    size = chunk_size or len(body)
    chunks: list[ChatCompletionChunk] = []
    for i in range(0, len(body), size):
        for event in decoder.feed(body[i : i + size]):
            if event.data.startswith("[DONE]"):
                return chunks
            chunks.append(ChatCompletionChunk.from_json(event.data))
    raise AssertionError("no [DONE]")


@pytest.mark.parametrize("path", OPENAI_STREAMS, ids=lambda p: p.stem)
@pytest.mark.parametrize("chunk_size", [None, 1, 7, 4096])
def test_recorded_openai_stream_aggregates_to_its_final(path: Path, chunk_size: int | None) -> None:
    expected = json.loads(path.with_suffix(".final.json").read_text())
    acc = ChatCompletionAccumulator()
    for chunk in chat_chunks_of(path.read_bytes(), chunk_size):
        acc.add(chunk)
    assert acc.final().to_dict() == expected
    assert acc.is_finished()


def test_there_are_twelve_recorded_streams() -> None:
    assert len(OPENAI_STREAMS) == 12


# Edge cases, written as OpenAI-shaped chunk dicts.

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def chunk(*choices: dict[str, Any], **extra: Any) -> ChatCompletionChunk:
    return ChatCompletionChunk.from_json(json.dumps({**HEAD, "choices": list(choices), **extra}))


def choice(
    index: int = 0, finish_reason: str | None = None, logprobs: Any = None, **delta: Any
) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}


def aggregate(*chunks: ChatCompletionChunk) -> dict[str, Any]:
    acc = ChatCompletionAccumulator()
    for c in chunks:
        acc.add(c)
    return acc.final().to_dict()


def test_choice_one_arriving_first_and_a_gap() -> None:
    result = aggregate(
        chunk(choice(3, role="assistant", content="d")),
        chunk(choice(1, role="assistant", content="b")),
        chunk(choice(3, content="D", finish_reason="stop")),
        chunk(choice(1, content="B", finish_reason="stop")),
    )
    assert [(c["index"], c["message"]["content"]) for c in result["choices"]] == [(1, "bB"), (3, "dD")]


def test_repeated_tool_call_id_type_and_name_are_not_doubled() -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
    result = aggregate(
        chunk(choice(role="assistant", tool_calls=[call])),
        chunk(choice(tool_calls=[{**call, "function": {"name": "f", "arguments": ": 1}"}}])),
        chunk(choice(tool_calls=[{"index": 0, "id": "", "function": {"name": "", "arguments": ""}}])),
        chunk(choice(finish_reason="tool_calls")),
    )
    calls = result["choices"][0]["message"]["tool_calls"]
    assert calls == [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    assert result["choices"][0]["finish_reason"] == "tool_calls"


def test_two_tool_calls_in_one_chunk() -> None:
    result = aggregate(
        chunk(
            choice(
                tool_calls=[
                    {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{"}},
                    {"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": "["}},
                ]
            )
        ),
        chunk(
            choice(
                tool_calls=[
                    {"index": 1, "function": {"arguments": "]"}},
                    {"index": 0, "function": {"arguments": "}"}},
                ]
            )
        ),
    )
    calls = result["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("a", "f", "{}"),
        ("b", "g", "[]"),
    ]


def test_tool_calls_without_index_are_told_apart_by_id() -> None:
    result = aggregate(
        chunk(
            choice(tool_calls=[{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{"}}])
        ),
        chunk(choice(tool_calls=[{"function": {"arguments": "}"}}])),
        chunk(
            choice(tool_calls=[{"id": "b", "type": "function", "function": {"name": "g", "arguments": "[]"}}])
        ),
        chunk(choice(tool_calls=[{"id": "a", "function": {"arguments": ""}}])),
    )
    calls = result["choices"][0]["message"]["tool_calls"]
    assert [(c["index"], c["id"], c["function"]["arguments"]) for c in calls] == [
        (0, "a", "{}"),
        (1, "b", "[]"),
    ]


def test_legacy_function_call() -> None:
    result = aggregate(
        chunk(choice(role="assistant", function_call={"name": "f", "arguments": ""})),
        chunk(choice(function_call={"arguments": '{"x":'})),
        chunk(choice(function_call={"name": "f", "arguments": "1}"})),
        chunk(choice(finish_reason="function_call")),
    )
    assert result["choices"][0]["message"]["function_call"] == {"name": "f", "arguments": '{"x":1}'}


@pytest.mark.parametrize("separate", [False, True])
def test_finish_reason_on_last_content_chunk_or_separate(separate: bool) -> None:
    chunks = [chunk(choice(role="assistant", content="")), chunk(choice(content="hi"))]
    if separate:
        chunks += [chunk(choice(content="!")), chunk(choice(finish_reason="stop"))]
    else:
        chunks += [chunk(choice(content="!", finish_reason="stop"))]
    result = aggregate(*chunks)
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "hi!"}
    assert result["choices"][0]["finish_reason"] == "stop"


def test_later_null_finish_reason_never_clears_it_and_last_non_null_wins() -> None:
    result = aggregate(
        chunk(choice(content="a", finish_reason="length")),
        chunk(choice(content="")),
        chunk(choice(finish_reason="stop")),
        chunk(choice()),
    )
    assert result["choices"][0]["finish_reason"] == "stop"


def test_usage_chunk_then_nothing_and_usage_never_erased() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    acc = ChatCompletionAccumulator()
    acc.add(chunk(choice(role="assistant", content="hi", finish_reason="stop")))
    acc.add(ChatCompletionChunk.from_json(json.dumps({**HEAD, "choices": [], "usage": usage})))
    assert acc.final().to_dict()["usage"] == usage
    acc.add(chunk(choice(content=""), usage=None))
    assert acc.final().to_dict()["usage"] == usage
    newer = {**usage, "completion_tokens": 4, "total_tokens": 7}
    acc.add(ChatCompletionChunk.from_json(json.dumps({**HEAD, "choices": [], "usage": newer})))
    assert acc.final().to_dict()["usage"] == newer


def test_reasoning_content_and_reasoning_are_concatenated() -> None:
    result = aggregate(
        chunk(choice(role="assistant", reasoning_content="Let me ")),
        chunk(choice(reasoning_content="think.", reasoning="Hmm")),
        chunk(choice(reasoning=", yes.", content="42", finish_reason="stop")),
    )
    message = result["choices"][0]["message"]
    assert message["reasoning_content"] == "Let me think."
    assert message["reasoning"] == "Hmm, yes."
    assert message["content"] == "42"


def test_role_is_set_once_and_empty_role_does_not_count() -> None:
    result = aggregate(
        chunk(choice(role="", content="a")), chunk(choice(role="assistant")), chunk(choice(role="assistant"))
    )
    assert result["choices"][0]["message"]["role"] == "assistant"
    assert aggregate(chunk(choice(role="tool")), chunk(choice(role="assistant")))["choices"][0]["message"][
        "role"
    ] == ("tool")


def test_header_fields_come_from_the_first_chunk_that_has_them() -> None:
    first = ChatCompletionChunk.from_json(json.dumps({"id": "", "choices": [choice(content="a")]}))
    second = chunk(choice(content="b"), system_fingerprint="fp_1", service_tier="default")
    third = ChatCompletionChunk.from_json(
        json.dumps({"id": "other", "model": "x", "created": 9, "system_fingerprint": "fp_2", "choices": []})
    )
    result = aggregate(first, second, third)
    assert (result["id"], result["model"], result["created"]) == ("chatcmpl-1", "m", 1)
    assert (result["system_fingerprint"], result["service_tier"]) == ("fp_1", "default")


def test_logprobs_are_extended() -> None:
    def lp(token: str) -> dict[str, Any]:
        return {"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": []}

    result = aggregate(
        chunk(choice(role="assistant", content="", logprobs={"content": [], "refusal": None})),
        chunk(choice(content="a", logprobs={"content": [lp("a")]})),
        chunk(choice(content="b", logprobs=None)),
        chunk(choice(content="c", logprobs={"content": [lp("c")]})),
    )
    assert [t["token"] for t in result["choices"][0]["logprobs"]["content"]] == ["a", "c"]
    assert "refusal" not in result["choices"][0]["logprobs"]


def test_snapshot_is_independent_of_later_chunks() -> None:
    acc = ChatCompletionAccumulator()
    acc.add(chunk(choice(role="assistant", content="a")))
    before = acc.snapshot
    acc.add(chunk(choice(content="b")))
    assert before.choices[0].message.content == "a"
    assert acc.snapshot.choices[0].message.content == "ab"
    assert acc.chunks == 2


@pytest.mark.parametrize("path", OPENAI_STREAMS, ids=lambda p: p.stem)
def test_a_snapshot_never_changes_when_later_chunks_arrive(path: Path) -> None:
    # Every list a snapshot holds is its own: logprobs (extended as chunks come), tool calls, choices.
    chunks = chat_chunks_of(path.read_bytes())
    acc = ChatCompletionAccumulator()
    snapshots = []
    for c in chunks:
        acc.add(c)
        snapshots.append((acc.snapshot, acc.snapshot.to_dict()))
    for snapshot, as_taken in snapshots:
        assert snapshot.to_dict() == as_taken


def test_a_legacy_snapshot_never_changes_when_later_chunks_arrive() -> None:
    acc = CompletionAccumulator()
    logprobs = {"tokens": ["a"], "token_logprobs": [-1.0], "top_logprobs": [{"a": -1.0}], "text_offset": [0]}
    acc.add(completion_chunk({"index": 0, "text": "a", "logprobs": logprobs, "finish_reason": None}))
    before = acc.snapshot
    as_taken = before.to_dict()
    acc.add(completion_chunk({"index": 0, "text": "a", "logprobs": logprobs, "finish_reason": "stop"}))
    assert before.to_dict() == as_taken
    assert acc.snapshot.to_dict()["choices"][0]["logprobs"]["tokens"] == ["a", "a"]


def test_empty_accumulator() -> None:
    acc = ChatCompletionAccumulator()
    assert acc.final().to_dict() == {"object": "chat.completion", "choices": []}
    assert not acc.is_finished()


def test_is_finished_needs_every_choice_finished() -> None:
    acc = ChatCompletionAccumulator()
    acc.add(chunk(choice(0, content="a", finish_reason="stop"), choice(1, content="b")))
    assert not acc.is_finished()
    acc.add(chunk(choice(1, finish_reason="length")))
    assert acc.is_finished()


# Legacy completions


def completion_chunk(*choices: dict[str, Any], **extra: Any) -> CompletionChunk:
    head = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m"}
    return CompletionChunk.from_json(json.dumps({**head, "choices": list(choices), **extra}))


def test_legacy_completion_n2_echo_and_logprobs() -> None:
    def c(index: int, text: str, offset: int, finish: str | None = None) -> dict[str, Any]:
        logprobs = {
            "tokens": [text],
            "token_logprobs": [None if offset == 0 else -1.0],
            "top_logprobs": [None if offset == 0 else {text: -1.0}],
            "text_offset": [offset],
        }
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}

    acc = CompletionAccumulator()
    acc.add(completion_chunk(c(0, "Say", 0), c(1, "Say", 0)))  # echo: the prompt comes first
    acc.add(completion_chunk(c(1, " hi", 3)))
    acc.add(completion_chunk(c(0, " yo", 3, "stop")))
    acc.add(completion_chunk(c(1, "!", 6, "length")))
    acc.add(completion_chunk(usage={"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}))
    result = acc.final().to_dict()
    assert [(x["index"], x["text"], x["finish_reason"]) for x in result["choices"]] == [
        (0, "Say yo", "stop"),
        (1, "Say hi!", "length"),
    ]
    logprobs = result["choices"][1]["logprobs"]
    assert logprobs == {
        "tokens": ["Say", " hi", "!"],
        "token_logprobs": [None, -1.0, -1.0],
        "top_logprobs": [None, {" hi": -1.0}, {"!": -1.0}],
        "text_offset": [0, 3, 6],
    }
    assert result["usage"]["total_tokens"] == 4
    assert acc.is_finished()
    assert acc.chunks == 5


def test_legacy_completion_without_logprobs() -> None:
    acc = CompletionAccumulator()
    acc.add(completion_chunk({"index": 0, "text": "a", "finish_reason": None}))
    acc.add(completion_chunk({"index": 0, "text": "b", "logprobs": None, "finish_reason": "stop"}))
    assert acc.snapshot.to_dict()["choices"] == [{"index": 0, "text": "ab", "finish_reason": "stop"}]


# Properties


@st.composite
def split_choices(draw: st.DrawFn) -> tuple[dict[int, tuple[str, str]], list[ChatCompletionChunk]]:
    """Choices with known content and finish_reason, cut into deltas and interleaved in a random order."""
    indices = draw(st.lists(st.integers(0, 6), min_size=1, max_size=4, unique=True))
    truth: dict[int, tuple[str, str]] = {}
    queues: list[list[dict[str, Any]]] = []
    for index in indices:
        text = draw(st.text(max_size=30))
        finish = draw(st.sampled_from(["stop", "length", "content_filter"]))
        truth[index] = (text, finish)
        cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=6)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        deltas = [choice(index, role="assistant", content="")] + [choice(index, content=p) for p in pieces]
        if draw(st.booleans()):
            deltas.append(choice(index, finish_reason=finish))
        else:
            deltas[-1]["finish_reason"] = finish
        deltas.append(choice(index))  # a trailing null finish_reason must not clear it
        queues.append(deltas)
    chunks = []
    while any(queues):
        queue = draw(st.sampled_from([q for q in queues if q]))
        chunks.append(chunk(queue.pop(0)))
    return truth, chunks


@settings(max_examples=300, deadline=None)
@given(split_choices())
def test_any_split_and_interleaving_aggregates_to_the_truth(
    case: tuple[dict[int, tuple[str, str]], list[ChatCompletionChunk]],
) -> None:
    truth, chunks = case
    acc = ChatCompletionAccumulator()
    for c in chunks:
        acc.add(c)
    final = acc.final()
    assert [result.index for result in final.choices] == sorted(truth)
    for result in final.choices:
        assert (result.message.content, result.finish_reason) == truth[result.index]
        assert result.message.role == "assistant"
    assert acc.is_finished()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=8), max_size=10), st.integers(1, 64))
def test_tool_arguments_in_any_pieces(pieces: list[str], chunk_size: int) -> None:
    arguments = "".join(pieces)
    head = {"index": 0, "id": "call_x", "type": "function", "function": {"name": "f", "arguments": ""}}
    chunks = [chunk(choice(role="assistant", tool_calls=[head]))]
    chunks += [chunk(choice(tool_calls=[{"index": 0, "function": {"arguments": p}}])) for p in pieces]
    call = aggregate(*chunks)["choices"][0]["message"]["tool_calls"][0]
    assert call == {
        "index": 0,
        "id": "call_x",
        "type": "function",
        "function": {"name": "f", "arguments": arguments},
    }
