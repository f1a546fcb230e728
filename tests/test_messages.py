"""Anthropic Messages, sans-I/O: decoding each event (`MESSAGES.decode`), the stream's rules (`flags`, `text`,
`error`), `MessageAccumulator` over streams in the shapes real servers send (Anthropic's, llama.cpp's recorded
and by hand, LiteLLM's), and what conversations ask of the API object (`turn`, `reply`)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamkit
from streamkit import ChunkDecodeError, SSEDecoder, StreamAPIError, UnknownEvent
from streamkit.protocols import END, ERROR, TOKEN, UnknownObject
from streamkit.protocols import messages as m
from streamkit.protocols.base import Model
from streamkit.protocols.messages import MESSAGES, Message, MessageAccumulator, MessageEvent
from streamkit.streams import StreamMetrics
from streamkit.transports.mock import MockResponse
from tests.conftest import FIXTURES

LLAMACPP_MESSAGES = FIXTURES / "llamacpp" / "messages.bin"


# Building streams


def sse(*events: dict[str, Any], event_lines: bool = True) -> bytes:
    """The raw body of a stream: each event as compact JSON, with or without an `event:` line."""
    body = b""
    for data in events:
        head = f"event: {data['type']}\n".encode() if event_lines else b""
        body += head + b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
    return body


def events_of(body: bytes, cuts: list[int] | None = None) -> list[MessageEvent]:
    """The events of a body read in pieces cut at `cuts`, as `MessageStream` reads them: pings skipped, and
    nothing after `message_stop` or an error."""
    decoder = SSEDecoder()
    bounds = [0, *sorted(cuts or []), len(body)]
    sent: list[Any] = []
    for start, end in itertools.pairwise(bounds):
        sent += decoder.feed(body[start:end])
    sent += decoder.close()
    events: list[MessageEvent] = []
    for event in sent:
        item = MESSAGES.decode(event.data.encode(), event.event)
        if item is not None:
            events.append(item)
            if MESSAGES.flags(item) & (END | ERROR):
                break
    return events


def aggregate(events: list[MessageEvent]) -> Message:
    acc = MessageAccumulator()
    for event in events:
        acc.add(event)
    return acc.final()


def final_of(body: bytes) -> Message:
    return aggregate(events_of(body))


def decoded(data: dict[str, Any], event: str = "message") -> MessageEvent:
    item = MESSAGES.decode(json.dumps(data).encode(), event)
    assert item is not None
    return item


def start(**message: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "m",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    return {"type": "message_start", "message": {**base, **message}}


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": kind, **fields}}


def text(index: int, value: str) -> dict[str, Any]:
    return delta(index, "text_delta", text=value)


def json_part(index: int, value: str) -> dict[str, Any]:
    return delta(index, "input_json_delta", partial_json=value)


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str | None, usage: dict[str, Any] | None, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": stop_reason, **fields}}
    if usage is not None:
        event["usage"] = usage
    return event


PING = {"type": "ping"}
STOP = {"type": "message_stop"}


def pieces(value: str, size: int) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)]


# Real server shapes, written by hand

# (a) Anthropic with extended thinking and a tool: pings, a thinking block and its signature, a redacted
# thinking block, text, and a tool_use block whose input streams in many small fragments (the first one
# empty, as Anthropic sends it); message_delta repeats the running totals of every usage field.
THOUGHT = "The user wants the weather in Paris. I should call get_weather."
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aHAbMJDLjx2WkUESoGDbqKBEiHLnkG"
ANSWER = "I'll check the weather in Paris for you."
TOOL_ID = "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
TOOL_INPUT: dict[str, Any] = {
    "location": "Paris, France",
    "unit": "celsius",
    "days": [1, 2, 3],
    "hourly": True,
}
TOOL_JSON = json.dumps(TOOL_INPUT)
ANTHROPIC_START_USAGE = {
    "input_tokens": 472,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 2048,
    "output_tokens": 2,
    "service_tier": "standard",
}
ANTHROPIC_USAGE = {
    "input_tokens": 472,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 2048,
    "output_tokens": 89,
    "service_tier": "standard",
}
ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"
ANTHROPIC_EVENTS: list[dict[str, Any]] = [
    start(id="msg_01XFDUDYJgAACzvnptvVoYEL", model=ANTHROPIC_MODEL, usage=ANTHROPIC_START_USAGE),
    PING,
    block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    delta(0, "thinking_delta", thinking="The user wants the weather in Paris."),
    delta(0, "thinking_delta", thinking=" I should call get_weather."),
    delta(0, "signature_delta", signature=SIGNATURE),
    block_stop(0),
    block_start(1, {"type": "redacted_thinking", "data": REDACTED}),
    block_stop(1),
    block_start(2, {"type": "text", "text": ""}),
    text(2, "I'll check the weather"),
    PING,
    text(2, " in Paris for you."),
    block_stop(2),
    block_start(3, {"type": "tool_use", "id": TOOL_ID, "name": "get_weather", "input": {}}),
    json_part(3, ""),
    *(json_part(3, piece) for piece in pieces(TOOL_JSON, 3)),
    block_stop(3),
    PING,
    message_delta(
        "tool_use",
        {k: v for k, v in ANTHROPIC_USAGE.items() if k != "service_tier"},
        stop_sequence=None,
    ),
    STOP,
]
ANTHROPIC = sse(*ANTHROPIC_EVENTS)
ANTHROPIC_FINAL: dict[str, Any] = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": ANTHROPIC_MODEL,
    "content": [
        {"type": "thinking", "thinking": THOUGHT, "signature": SIGNATURE},
        {"type": "redacted_thinking", "data": REDACTED},
        {"type": "text", "text": ANSWER},
        {"type": "tool_use", "id": TOOL_ID, "name": "get_weather", "input": TOOL_INPUT},
    ],
    "stop_reason": "tool_use",
    "usage": ANTHROPIC_USAGE,
}

# (b) Anthropic with web search: a server_tool_use block whose input streams, its result (a block type this
# version does not know), then text with citations; server tool usage in message_delta.
SEARCH_ID = "srvtoolu_014hJH82Qum7Td6UV8gDXThB"
SEARCH_RESULT: dict[str, Any] = {
    "type": "web_search_tool_result",
    "tool_use_id": SEARCH_ID,
    "content": [
        {
            "type": "web_search_result",
            "title": "Paris weather",
            "url": "https://example.com/paris",
            "encrypted_content": "Eo8BCioIAhgBIiQ3",
            "page_age": "2 days ago",
        }
    ],
}
CITATION: dict[str, Any] = {
    "type": "web_search_result_location",
    "cited_text": "Sunny, 21 degrees.",
    "url": "https://example.com/paris",
    "title": "Paris weather",
    "encrypted_index": "Eo8BCioIAhgB",
}
SEARCH_USAGE = {
    "input_tokens": 10682,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "output_tokens": 510,
    "server_tool_use": {"web_search_requests": 1},
}
ANTHROPIC_SEARCH = sse(
    start(id="msg_search", model=ANTHROPIC_MODEL, usage={"input_tokens": 2679, "output_tokens": 3}),
    PING,
    block_start(0, {"type": "text", "text": ""}),
    text(0, "I'll search for the weather."),
    block_stop(0),
    block_start(1, {"type": "server_tool_use", "id": SEARCH_ID, "name": "web_search", "input": {}}),
    json_part(1, ""),
    json_part(1, '{"query'),
    json_part(1, '": "weather'),
    json_part(1, ' Paris"}'),
    block_stop(1),
    block_start(2, SEARCH_RESULT),
    block_stop(2),
    block_start(3, {"type": "text", "text": ""}),
    delta(3, "citations_delta", citation=CITATION),
    text(3, "It is sunny"),
    delta(3, "citations_delta", citation={**CITATION, "cited_text": "21 degrees"}),
    text(3, ", 21 degrees."),
    block_stop(3),
    message_delta("end_turn", SEARCH_USAGE, stop_sequence=None),
    STOP,
)

# (c) Anthropic calling a tool that has no parameters: its input is only an empty fragment.
ANTHROPIC_NO_INPUT = sse(
    start(id="msg_noinput", model=ANTHROPIC_MODEL, usage={"input_tokens": 380, "output_tokens": 1}),
    block_start(0, {"type": "tool_use", "id": "toolu_01NoInput", "name": "get_time", "input": {}}),
    PING,
    json_part(0, ""),
    block_stop(0),
    message_delta("tool_use", {"output_tokens": 30}, stop_sequence=None),
    STOP,
)

# (d) llama.cpp: no pings; a tool block opens without an `input` key; a stop-sequence hit ends with
# `end_turn` while `stop_sequence` is set.
LLAMA_START_USAGE = {"cache_read_input_tokens": 35, "input_tokens": 1, "output_tokens": 0}
LLAMACPP_TOOL = sse(
    start(id="chatcmpl-tool", model="smollm2", usage=LLAMA_START_USAGE),
    block_start(0, {"type": "tool_use", "id": "call_Fh6yJ2cwx8Qe", "name": "get_weather"}),
    json_part(0, '{"city'),
    json_part(0, '":"Par'),
    json_part(0, 'is"}'),
    block_stop(0),
    message_delta("tool_use", {"output_tokens": 9}, stop_sequence=None),
    STOP,
)
LLAMACPP_STOP_SEQUENCE = sse(
    start(id="chatcmpl-stop", model="smollm2", usage=LLAMA_START_USAGE),
    block_start(0, {"type": "text", "text": ""}),
    text(0, "One, two"),
    text(0, ", three"),
    block_stop(0),
    message_delta("end_turn", {"output_tokens": 5}, stop_sequence="four"),
    STOP,
)

# (e) LiteLLM: message_start's usage is all zeros and the real counts come in message_delta.
LITELLM = sse(
    start(id="chatcmpl-2c1f9a", model="gpt-4o-mini", usage={"input_tokens": 0, "output_tokens": 0}),
    block_start(0, {"type": "text", "text": ""}),
    text(0, "Hello"),
    text(0, " there!"),
    block_stop(0),
    message_delta("end_turn", {"input_tokens": 14, "output_tokens": 9}, stop_sequence=None),
    STOP,
)

STREAMS = {
    "anthropic": ANTHROPIC,
    "anthropic_search": ANTHROPIC_SEARCH,
    "anthropic_no_input": ANTHROPIC_NO_INPUT,
    "llamacpp_recorded": LLAMACPP_MESSAGES.read_bytes(),
    "llamacpp_tool": LLAMACPP_TOOL,
    "llamacpp_stop_sequence": LLAMACPP_STOP_SEQUENCE,
    "litellm": LITELLM,
    # A proxy that sends data-only frames: the data's `type` alone says what each event is.
    "anthropic_data_only": sse(*ANTHROPIC_EVENTS, event_lines=False),
}


# Decoding

EVENTS: dict[str, type[Any]] = {
    "message_start": m.MessageStartEvent,
    "content_block_start": m.ContentBlockStartEvent,
    "content_block_delta": m.ContentBlockDeltaEvent,
    "content_block_stop": m.ContentBlockStopEvent,
    "message_delta": m.MessageDeltaEvent,
    "message_stop": m.MessageStopEvent,
    "error": m.MessageErrorEvent,
}
SAMPLES: dict[str, dict[str, Any]] = {
    "message_start": start(usage=ANTHROPIC_START_USAGE),
    "content_block_start": block_start(2, {"type": "text", "text": ""}),
    "content_block_delta": text(2, "Hi"),
    "content_block_stop": block_stop(2),
    "message_delta": message_delta("end_turn", {"output_tokens": 5}, stop_sequence=None),
    "message_stop": STOP,
    "error": {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
}
DELTAS: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "text_delta": (m.TextDelta, {"text": "Hi"}),
    "input_json_delta": (m.InputJSONDelta, {"partial_json": '{"a'}),
    "thinking_delta": (m.ThinkingDelta, {"thinking": "Hmm"}),
    "signature_delta": (m.SignatureDelta, {"signature": SIGNATURE}),
    "citations_delta": (m.CitationsDelta, {"citation": CITATION}),
}
BLOCKS: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "text": (m.TextBlock, {"text": "Hi", "citations": [CITATION]}),
    "tool_use": (m.ToolUseBlock, {"id": TOOL_ID, "name": "get_weather", "input": {"city": "Paris"}}),
    "server_tool_use": (m.ServerToolUseBlock, {"id": SEARCH_ID, "name": "web_search", "input": {"q": "x"}}),
    "thinking": (m.ThinkingBlock, {"thinking": "Hmm", "signature": SIGNATURE}),
    "redacted_thinking": (m.RedactedThinkingBlock, {"data": REDACTED}),
}


def drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def dump(obj: object) -> Any:
    """A content block or delta as JSON, known or not."""
    if isinstance(obj, Model):
        return obj.to_dict()
    assert isinstance(obj, UnknownObject)
    return obj.data


def test_every_event_type_is_known() -> None:
    assert set(EVENTS) == MESSAGES.tags


@pytest.mark.parametrize("name", sorted(EVENTS))
@pytest.mark.parametrize("event_line", [True, False])
def test_every_event_decodes_to_its_class(name: str, event_line: bool) -> None:
    data = SAMPLES[name]
    event = MESSAGES.decode(json.dumps(data).encode(), name if event_line else "message")
    assert type(event) is EVENTS[name]
    assert event is not None and event.type == name
    assert event.to_dict() == drop_none(data)  # nothing is lost, but the nulls


@pytest.mark.parametrize("kind", sorted(DELTAS))
def test_every_delta_kind_decodes_to_its_class(kind: str) -> None:
    cls, fields = DELTAS[kind]
    event = decoded(delta(1, kind, **fields), "content_block_delta")
    assert isinstance(event, m.ContentBlockDeltaEvent) and event.index == 1
    assert type(event.delta) is cls and isinstance(event.delta, m.Delta)
    assert event.delta.type == kind
    assert dump(event.delta) == {"type": kind, **fields}


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_every_block_kind_decodes_to_its_class(kind: str) -> None:
    cls, fields = BLOCKS[kind]
    block = {"type": kind, **fields}
    event = decoded(block_start(0, block))
    assert isinstance(event, m.ContentBlockStartEvent)
    assert type(event.content_block) is cls and isinstance(event.content_block, m.ContentBlock)
    assert event.content_block.type == kind and dump(event.content_block) == block
    # The same block in a whole message (the answer to stream=False) and in message_start.
    whole = Message.from_json(json.dumps({"id": "msg_1", "content": [block]}))
    assert type(whole.content[0]) is cls and dump(whole.content[0]) == block
    started = decoded(start(content=[block]))
    assert isinstance(started, m.MessageStartEvent) and type(started.message.content[0]) is cls


def test_a_whole_message_decodes_with_every_field() -> None:
    data = {**ANTHROPIC_FINAL, "stop_sequence": None}
    message = Message.from_json(json.dumps(data))
    assert message.to_dict() == ANTHROPIC_FINAL
    assert message.stop_reason == "tool_use" and message.stop_sequence is None
    assert message.usage is not None and message.usage.cache_read_input_tokens == 2048
    assert message.usage.service_tier == "standard" and message.text == ANSWER
    with_cache = Message.from_json(b'{"usage": {"cache_creation_input_tokens": 7, "input_tokens": 1}}')
    assert with_cache.usage is not None and with_cache.usage.cache_creation_input_tokens == 7
    with pytest.raises(ChunkDecodeError) as caught:
        Message.from_json(b'{"content": "text"}')
    assert caught.value.raw == '{"content": "text"}'


def test_an_unknown_event_type_is_yielded_as_unknown_event() -> None:
    data = b'{"type":"message_annotation","index":0,"annotation":{"kind":"new"}}'
    for name in ("message_annotation", "message"):
        event = MESSAGES.decode(data, name)
        assert isinstance(event, UnknownEvent) and isinstance(event, streamkit.UnknownEvent)
        assert event.type == "message_annotation" and event.raw == data.decode()
        assert event.data["annotation"] == {"kind": "new"}
        assert MESSAGES.flags(event) == 0 and MESSAGES.text(event) is None
    # An unknown event changes nothing in the aggregate.
    events = events_of(ANTHROPIC)
    unknown = MESSAGES.decode(data)
    assert unknown is not None
    assert aggregate([*events[:5], unknown, *events[5:]]) == aggregate(events)


def test_an_unknown_delta_is_kept_and_changes_nothing() -> None:
    raw = {"type": "content_block_delta", "index": 0, "delta": {"type": "audio_delta", "audio": "UklGR"}}
    event = decoded(raw)
    assert isinstance(event, m.ContentBlockDeltaEvent)
    assert isinstance(event.delta, m.UnknownDelta) and isinstance(event.delta, UnknownObject)
    assert isinstance(event.delta, m.Delta)
    assert event.delta.type == "audio_delta" and event.delta.data == raw["delta"]
    assert event.to_dict() == raw
    assert MESSAGES.flags(event) == 0 and MESSAGES.text(event) is None
    events = events_of(LLAMACPP_MESSAGES.read_bytes())
    assert aggregate([*events[:3], event, *events[3:]]) == aggregate(events)


def test_an_unknown_block_is_kept_in_the_final_as_it_came() -> None:
    final = final_of(ANTHROPIC_SEARCH)
    result = final.content[2]
    assert isinstance(result, m.UnknownContentBlock) and isinstance(result, m.ContentBlock)
    assert result.type == "web_search_tool_result" and result.data == SEARCH_RESULT
    assert final.to_dict()["content"][2] == SEARCH_RESULT
    # A conversation's history leaves out what it cannot send back as it is.
    (turn,) = MESSAGES.reply(final)
    assert [block["type"] for block in turn["content"]] == ["text", "server_tool_use", "text"]


@pytest.mark.parametrize(
    "data",
    [
        {"type": "content_block_delta", "index": "0", "delta": {"type": "text_delta", "text": "x"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}},
        {"type": "content_block_delta", "index": 0, "delta": "text"},
        {"type": "content_block_delta", "delta": {"type": "input_json_delta", "partial_json": {}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": None}},
        {"type": "content_block_start", "index": 0, "content_block": ["text"]},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": 1}},
        {"type": "message_start", "message": None},
        {"type": "message_start", "message": {"content": "Hello"}},
        {"type": "message_start", "message": {"usage": {"input_tokens": "many"}}},
        {"type": "message_delta", "delta": {"stop_reason": 1}},
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 1.5}},
        {"type": "content_block_stop", "index": None},
        {"type": "error", "error": {"type": 529}},
    ],
)  # fmt: skip
def test_a_known_event_with_a_wrongly_typed_field_raises_chunk_decode_error(data: dict[str, Any]) -> None:
    raw = json.dumps(data)
    for name in (data["type"], "message"):
        with pytest.raises(ChunkDecodeError) as caught:
            MESSAGES.decode(raw.encode(), name)
        assert isinstance(caught.value, ValueError)
        assert caught.value.raw == raw


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "tru',
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"null",
        b"{}",
        b'{"type": 5}',
        b'{"type": ["message_stop"]}',
        b'{"type": null}',
    ],
)
def test_data_that_is_no_event_raises_chunk_decode_error(raw: bytes) -> None:
    with pytest.raises(ChunkDecodeError) as caught:
        MESSAGES.decode(raw)
    assert caught.value.raw == raw.decode()
    if not raw.startswith(b"{"):  # and whatever the SSE type says
        with pytest.raises(ChunkDecodeError):
            MESSAGES.decode(raw, "content_block_delta")


def test_bytes_that_are_not_utf8_raise_with_the_text_as_it_decodes() -> None:
    raw = b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "\xff'
    with pytest.raises(ChunkDecodeError) as caught:
        MESSAGES.decode(raw)
    assert caught.value.raw == raw.decode("utf-8", "replace")
    # A whole event with a stray byte in a string is read with the byte replaced, rather than lost.
    event = MESSAGES.decode(
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\xff"}}'
    )
    assert isinstance(event, m.ContentBlockDeltaEvent) and MESSAGES.text(event) == "a\ufffd"


@pytest.mark.parametrize(
    ("data", "event"),
    [
        (b'{"type":"ping"}', "ping"),
        (b'{"type":"ping"}', "message"),
        (b'{"type": "ping"}', "content_block_delta"),
        (b"{}", "ping"),
    ],
)
def test_ping_is_skipped(data: bytes, event: str) -> None:
    assert MESSAGES.decode(data, event) is None


def test_the_data_type_wins_over_the_sse_event_name() -> None:
    data = json.dumps(text(0, "x")).encode()
    for name in ("message_stop", "error", "ping", "message_annotation", "message"):
        event = MESSAGES.decode(data, name)
        assert isinstance(event, m.ContentBlockDeltaEvent) and MESSAGES.text(event) == "x"
    stop = MESSAGES.decode(b'{"type":"message_stop"}', "error")
    assert isinstance(stop, m.MessageStopEvent) and MESSAGES.flags(stop) == END
    error = MESSAGES.decode(json.dumps(SAMPLES["error"]).encode(), "message_stop")
    assert isinstance(error, m.MessageErrorEvent) and MESSAGES.flags(error) == ERROR


def test_data_without_a_type_takes_the_sse_event_name() -> None:
    event = MESSAGES.decode(b'{"index":0,"delta":{"type":"text_delta","text":"x"}}', "content_block_delta")
    assert isinstance(event, m.ContentBlockDeltaEvent) and event.type == "content_block_delta"
    assert MESSAGES.text(event) == "x"
    stop = MESSAGES.decode(b"{}", "message_stop")
    assert isinstance(stop, m.MessageStopEvent)
    error = MESSAGES.decode(b'{"error":{"type":"overloaded_error","message":"Overloaded"}}', "error")
    assert isinstance(error, m.MessageErrorEvent) and error.error.type == "overloaded_error"
    unknown = MESSAGES.decode(b'{"x":1}', "message_annotation")
    assert isinstance(unknown, UnknownEvent) and unknown.type == "message_annotation"


# The stream's rules


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_flags_and_text_of_each_event(name: str) -> None:
    event = decoded(SAMPLES[name])
    expected = {"message_stop": END, "error": ERROR, "content_block_delta": TOKEN}
    assert MESSAGES.flags(event) == expected.get(name, 0)
    assert MESSAGES.text(event) == ("Hi" if name == "content_block_delta" else None)
    assert MESSAGES.token_count(event) is None


@pytest.mark.parametrize("kind", sorted(DELTAS))
def test_flags_and_text_of_each_delta(kind: str) -> None:
    _, fields = DELTAS[kind]
    event = decoded(delta(0, kind, **fields))
    carries = kind in ("text_delta", "input_json_delta", "thinking_delta")
    assert MESSAGES.flags(event) == (TOKEN if carries else 0)
    assert MESSAGES.text(event) == ("Hi" if kind == "text_delta" else None)
    if carries:  # an empty delta carries no token
        (field,) = fields
        assert MESSAGES.flags(decoded(delta(0, kind, **{field: ""}))) == 0
    assert MESSAGES.flags(decoded({"type": "content_block_delta", "index": 0, "delta": None})) == 0


def test_error_of_an_error_event() -> None:
    event = decoded(SAMPLES["error"], "error")
    error = MESSAGES.error(event)
    assert isinstance(error, StreamAPIError) and isinstance(error, streamkit.StreamkitError)
    assert (error.message, error.type, error.code) == ("Overloaded", "overloaded_error", None)
    assert error.body == SAMPLES["error"] and "overloaded_error" in error.raw
    assert error.partial is None
    bare = MESSAGES.error(decoded({"type": "error"}))
    assert bare.message and bare.type is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"Overloaded", "Overloaded"),  # a proxy's plain-text error event
        (b'"Overloaded"', "Overloaded"),
        (b'{"error": "upstream timed out"}', "upstream timed out"),
    ],
)
def test_an_error_event_that_is_not_in_anthropics_shape_is_still_an_error(raw: bytes, message: str) -> None:
    try:
        item = MESSAGES.decode(raw, "error")
    except StreamAPIError as exc:  # an error with no item of its own
        error = exc
    else:
        assert item is not None and MESSAGES.flags(item) == ERROR
        error = MESSAGES.error(item)
    assert error.message == message


def test_a_chat_style_error_without_a_type_is_an_error() -> None:
    """What a proxy sends in a data-only stream when the upstream fails: no `type`, no `event:` line."""
    item = MESSAGES.decode(b'{"error": {"type": "api_error", "message": "upstream failed"}}', "message")
    assert isinstance(item, m.MessageErrorEvent) and MESSAGES.flags(item) == ERROR
    error = MESSAGES.error(item)
    assert (error.message, error.type) == ("upstream failed", "api_error")


REQUEST_ID = "req_011CSHoEeqs5C35K2UUqR7Fy"
# Anthropic's own shape: the error nested, the request's id beside it.
ANTHROPIC_ERROR = {**SAMPLES["error"], "request_id": REQUEST_ID}


@pytest.mark.parametrize(
    ("raw", "event", "message", "type", "request_id"),
    [
        (ANTHROPIC_ERROR, "error", "Overloaded", "overloaded_error", REQUEST_ID),
        # Flat, as other servers send it: the message without an `error` object, with or without a type.
        ({"type": "error", "message": "boom"}, "error", "boom", None, None),
        ({"type": "error", "message": "boom"}, "message", "boom", None, None),
        ({"message": "boom"}, "error", "boom", None, None),
        ({"message": "boom", "request_id": "req_1"}, "error", "boom", None, "req_1"),
    ],
)
def test_an_error_keeps_its_message_and_request_id_in_any_shape(
    raw: dict[str, Any], event: str, message: str, type: str | None, request_id: str | None
) -> None:
    item = decoded(raw, event)
    assert isinstance(item, m.MessageErrorEvent) and MESSAGES.flags(item) == ERROR
    error = MESSAGES.error(item)
    assert (error.message, error.type, error.request_id) == (message, type, request_id)
    assert isinstance(error.body, dict) and error.body.get("request_id") == request_id
    # And as a stream raises it, after the events before it.
    head = f"event: {event}\n".encode() if event != "message" else b""
    body = sse(start(), text(0, "Hi")) + head + b"data: " + json.dumps(raw).encode() + b"\n\n"
    stream = streamkit.MessageStream(MockResponse(body=[body]), StreamMetrics(0.0, 0.0))
    with pytest.raises(StreamAPIError) as caught:
        stream.get_final().send(None)  # a MockResponse never waits: the stream runs to its end at once
    assert (caught.value.message, caught.value.request_id) == (message, request_id)
    assert isinstance(caught.value.partial, Message) and caught.value.partial.text == "Hi"


def test_an_error_without_a_request_id_has_none() -> None:
    assert MESSAGES.error(decoded(SAMPLES["error"])).request_id is None
    assert StreamAPIError("boom", body="text").request_id is None
    assert StreamAPIError("boom", body={"request_id": 5}).request_id is None


# Aggregating real shapes


def test_anthropic_stream() -> None:
    events = events_of(ANTHROPIC)
    assert not any(e.type == "ping" for e in events)
    assert len(events) == len(ANTHROPIC_EVENTS) - 3  # the three pings
    final = aggregate(events)
    assert final.to_dict() == ANTHROPIC_FINAL
    thinking, redacted, answer, tool = final.content
    assert isinstance(thinking, m.ThinkingBlock) and thinking.signature == SIGNATURE
    assert isinstance(redacted, m.RedactedThinkingBlock)
    assert isinstance(answer, m.TextBlock) and answer.citations is None
    assert isinstance(tool, m.ToolUseBlock) and tool.input == TOOL_INPUT
    assert final.text == ANSWER and final.stop_sequence is None
    # 4 text and thinking deltas, the tool_use block's start (its name), its input fragments
    assert len([e for e in events if MESSAGES.flags(e) & TOKEN]) == 4 + 1 + len(pieces(TOOL_JSON, 3))
    # Without `event:` lines (a proxy's data-only frames), the same events and the same final.
    assert events_of(STREAMS["anthropic_data_only"]) == events


def test_anthropic_search_with_citations_and_server_tool_usage() -> None:
    final = final_of(ANTHROPIC_SEARCH)
    intro, search, result, answer = final.content
    assert isinstance(intro, m.TextBlock) and intro.citations is None
    assert isinstance(search, m.ServerToolUseBlock) and search.input == {"query": "weather Paris"}
    assert search.to_dict() == {
        "type": "server_tool_use",
        "id": SEARCH_ID,
        "name": "web_search",
        "input": {"query": "weather Paris"},
    }
    assert isinstance(result, m.UnknownContentBlock)
    assert isinstance(answer, m.TextBlock) and answer.text == "It is sunny, 21 degrees."
    assert answer.citations == [CITATION, {**CITATION, "cited_text": "21 degrees"}]
    assert final.text == "I'll search for the weather.It is sunny, 21 degrees."
    assert final.stop_reason == "end_turn"
    assert final.usage is not None and final.usage.to_dict() == SEARCH_USAGE
    assert final.usage.server_tool_use is not None and final.usage.server_tool_use.web_search_requests == 1


def test_llamacpp_recorded_stream() -> None:
    events = events_of(LLAMACPP_MESSAGES.read_bytes())
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    final = aggregate(events)
    assert final.text == "Hello, welcome to my little corner of the world."
    assert final.id == "chatcmpl-bZlrOed7cgzq276ayJdycFRQW1KL0CwO" and final.model == "smollm2"
    assert (final.stop_reason, final.stop_sequence) == ("end_turn", None)
    assert final.usage is not None
    assert final.usage.to_dict() == {"cache_read_input_tokens": 35, "input_tokens": 1, "output_tokens": 12}
    acc = MessageAccumulator()
    for event in events:
        acc.add(event)
    assert (acc.input_tokens, acc.output_tokens, acc.events) == (1, 12, len(events))
    assert acc.is_finished()


def test_llamacpp_tool_block_without_input() -> None:
    events = events_of(LLAMACPP_TOOL)
    started = events[1]
    assert isinstance(started, m.ContentBlockStartEvent)
    assert isinstance(started.content_block, m.ToolUseBlock) and started.content_block.input is None
    final = aggregate(events)
    (tool,) = final.content
    assert isinstance(tool, m.ToolUseBlock)
    assert (tool.id, tool.name, tool.input) == ("call_Fh6yJ2cwx8Qe", "get_weather", {"city": "Paris"})
    assert final.stop_reason == "tool_use"
    assert final.usage is not None and final.usage.to_dict() == {**LLAMA_START_USAGE, "output_tokens": 9}


def test_llamacpp_stop_sequence_hit_keeps_end_turn_and_the_sequence() -> None:
    final = final_of(LLAMACPP_STOP_SEQUENCE)
    assert (final.stop_reason, final.stop_sequence) == ("end_turn", "four")
    assert final.text == "One, two, three"
    assert final.usage is not None and final.usage.output_tokens == 5


def test_litellm_counts_come_in_message_delta() -> None:
    final = final_of(LITELLM)
    assert final.text == "Hello there!" and final.stop_reason == "end_turn"
    assert final.usage is not None and final.usage.to_dict() == {"input_tokens": 14, "output_tokens": 9}
    acc = MessageAccumulator()
    for event in events_of(LITELLM):
        acc.add(event)
    assert (acc.input_tokens, acc.output_tokens) == (14, 9)


# Tool input


def tool_stream(*fragments: str, stop: bool = True, end: bool = True) -> list[MessageEvent]:
    events = [
        start(),
        block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
        *(json_part(0, f) for f in fragments),
        *([block_stop(0)] if stop else []),
        *([message_delta("tool_use", {"output_tokens": 4}), STOP] if end else []),
    ]
    return [decoded(e) for e in events]


def tool_input(events: list[MessageEvent]) -> Any:
    tool = aggregate(events).content[0]
    assert isinstance(tool, m.ToolUseBlock)
    return tool.input


@pytest.mark.parametrize("stop", [True, False], ids=["stopped", "open-at-the-end"])
@pytest.mark.parametrize(
    "fragments",
    [('{"city": "Par',), ('{"city"', ': "Paris"', "}}"), ("not json",), ('{"a": [1, 2', "]"), ("[" * 5000,)],
)
def test_invalid_tool_json_is_kept_as_its_raw_string(fragments: tuple[str, ...], stop: bool) -> None:
    """What Anthropic's fine-grained tool streaming can send: input that is not valid JSON when the block
    stops, or a block still open when the message ends. Neither ever raises."""
    events = tool_stream(*fragments, stop=stop)
    assert tool_input(events) == "".join(fragments)
    acc = MessageAccumulator()
    for event in events:
        acc.add(event)
        acc.snapshot.to_dict()  # a snapshot mid-input never raises either
    assert acc.is_finished()


@pytest.mark.parametrize("stop", [True, False], ids=["stopped", "open-at-the-end"])
def test_a_block_still_open_at_the_end_is_finished_like_a_stopped_one(stop: bool) -> None:
    assert tool_input(tool_stream('{"city"', ': "Paris"}', stop=stop)) == {"city": "Paris"}
    # ... whether or not the message ends properly.
    assert tool_input(tool_stream('{"city"', ': "Paris"}', stop=stop, end=False)) == {"city": "Paris"}


def test_a_tool_without_input_keeps_the_input_it_started_with() -> None:
    """A tool with no parameters: Anthropic opens the block with `"input": {}` and sends only an empty
    `input_json_delta`. The input stays `{}`, as the anthropic SDK has it, not an empty string."""
    assert tool_input(tool_stream("")) == {}
    assert tool_input(tool_stream()) == {}
    assert tool_input(tool_stream("", stop=False)) == {}
    (tool,) = final_of(ANTHROPIC_NO_INPUT).content
    assert isinstance(tool, m.ToolUseBlock) and tool.input == {} and tool.name == "get_time"


def test_fragments_are_joined_in_order_across_blocks() -> None:
    events = [
        decoded(start()),
        decoded(block_start(0, {"type": "tool_use", "id": "a", "name": "f", "input": {}})),
        decoded(block_start(1, {"type": "tool_use", "id": "b", "name": "g", "input": {}})),
        decoded(json_part(1, '{"y"')),
        decoded(json_part(0, '{"x"')),
        decoded(json_part(0, ": 1}")),
        decoded(json_part(1, ": 2}")),
        decoded(block_stop(1)),
        decoded(block_stop(0)),
    ]
    final = aggregate(events)
    assert [dump(b)["input"] for b in final.content] == [{"x": 1}, {"y": 2}]


def test_tool_input_is_parsed_once_per_block_however_many_fragments(monkeypatch: pytest.MonkeyPatch) -> None:
    """The accumulator is linear in the stream's length: it appends each fragment and parses a block's
    input once, at its end, where the anthropic SDK re-parses the whole buffer at every fragment."""
    first = json.dumps({"rows": [{"n": i, "text": "x" * 10} for i in range(300)]})
    second = json.dumps({"query": "y" * 2000})
    events = [
        decoded(start()),
        decoded(block_start(0, {"type": "tool_use", "id": "a", "name": "f", "input": {}})),
        *(decoded(json_part(0, piece)) for piece in pieces(first, 2)),
        decoded(block_stop(0)),
        decoded(block_start(1, {"type": "server_tool_use", "id": "b", "name": "web_search", "input": {}})),
        *(decoded(json_part(1, piece)) for piece in pieces(second, 1)),
        # Left open: parsed when the message is built.
        decoded(message_delta("tool_use", {"output_tokens": 9})),
        decoded(STOP),
    ]
    assert len(events) > 7000
    parsed: list[str | bytes] = []
    real = msgspec.json.decode

    def counting(data: Any, *args: Any, **kwargs: Any) -> Any:
        parsed.append(data)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(msgspec.json, "decode", counting)
    acc = MessageAccumulator()
    for event in events:
        acc.add(event)
    assert parsed == [first]  # the stopped block, once, whole; nothing per fragment
    final = acc.final()
    assert parsed == [first, second]
    assert [dump(b)["input"] for b in final.content] == [json.loads(first), json.loads(second)]
    acc.final()  # a stopped block is never parsed again
    assert parsed.count(first) == 1


# Usage, stop reasons


def usage_of(*events: dict[str, Any]) -> dict[str, Any] | None:
    final = aggregate([decoded(e) for e in events])
    return None if final.usage is None else final.usage.to_dict()


def test_message_delta_usage_updates_field_by_field() -> None:
    begin = start(usage={"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 4})
    # A field message_delta leaves out keeps its value; one it gives replaces it.
    assert usage_of(begin, message_delta("end_turn", {"output_tokens": 7})) == {
        "input_tokens": 10,
        "output_tokens": 7,
        "cache_read_input_tokens": 4,
    }
    # Running totals (Anthropic) replace, never add up.
    totals = {"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 4}
    assert usage_of(begin, message_delta(None, totals), message_delta("end_turn", totals)) == totals
    # A null field, or a message_delta without usage, erases nothing.
    assert usage_of(
        begin,
        message_delta(None, {"input_tokens": None, "output_tokens": 3}),
        message_delta("end_turn", None),
    ) == {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 4}
    # Zeros at the start (LiteLLM) give way to the counts that come later.
    assert usage_of(
        start(usage={"input_tokens": 0, "output_tokens": 0}),
        message_delta("end_turn", {"input_tokens": 5, "output_tokens": 2, "cache_creation_input_tokens": 1}),
    ) == {"input_tokens": 5, "output_tokens": 2, "cache_creation_input_tokens": 1}
    assert usage_of(start(usage=None), message_delta("end_turn", None)) is None


def test_stop_reason_is_kept_once_given() -> None:
    acc = MessageAccumulator()
    acc.add(decoded(start()))
    assert not acc.is_finished() and acc.snapshot.stop_reason is None
    acc.add(decoded(message_delta("max_tokens", {"output_tokens": 2})))
    assert acc.is_finished()
    acc.add(decoded(message_delta(None, {"output_tokens": 3})))  # a later null never clears it
    final = acc.final()
    assert (final.stop_reason, final.stop_sequence) == ("max_tokens", None)
    acc.add(decoded(message_delta("stop_sequence", None, stop_sequence="END")))
    assert (acc.final().stop_reason, acc.final().stop_sequence) == ("stop_sequence", "END")
    # A stop reason already in message_start counts too.
    done = MessageAccumulator()
    done.add(decoded(start(stop_reason="end_turn")))
    assert done.is_finished()
    assert not MessageAccumulator().is_finished()


def test_blocks_are_keyed_by_index_in_any_order() -> None:
    final = aggregate(
        [
            decoded(start()),
            decoded(block_start(1, {"type": "text", "text": ""})),
            decoded(block_start(0, {"type": "thinking", "thinking": ""})),
            decoded(text(1, "B")),
            decoded(delta(0, "thinking_delta", thinking="A")),
            decoded(text(3, "D")),  # a delta for a block that never started: a text block
            decoded(block_stop(1)),
            decoded(text(1, "late")),  # after its stop: the block is done
        ]
    )
    assert [dump(b) for b in final.content] == [
        {"type": "thinking", "thinking": "A"},
        {"type": "text", "text": "B"},
        {"type": "text", "text": "D"},
    ]


def test_an_empty_accumulator_gives_an_empty_message() -> None:
    final = MessageAccumulator().final()
    assert final.content == [] and final.usage is None and final.stop_reason is None
    assert final.to_dict() == {"type": "message", "role": "assistant", "content": []}


# Snapshots


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_a_snapshot_never_changes_when_later_events_arrive(name: str) -> None:
    events = events_of(STREAMS[name])
    acc = MessageAccumulator()
    taken: list[tuple[Message, dict[str, Any]]] = []
    for event in events:
        acc.add(event)
        snapshot = acc.snapshot
        taken.append((snapshot, snapshot.to_dict()))
    assert acc.events == len(events)
    for snapshot, as_it_was in taken:
        assert snapshot.to_dict() == as_it_was
    assert acc.snapshot is not acc.snapshot
    assert acc.snapshot.to_dict() == acc.final().to_dict()


def test_snapshot_mid_stream_holds_what_came_so_far() -> None:
    events = events_of(ANTHROPIC)
    acc = MessageAccumulator()
    for event in events[:10]:  # up to the first text delta (the pings are skipped)
        acc.add(event)
    snapshot = acc.snapshot
    assert [b.type for b in snapshot.content] == ["thinking", "redacted_thinking", "text"]
    assert snapshot.text == "I'll check the weather" and snapshot.stop_reason is None
    assert snapshot.usage is not None and snapshot.usage.output_tokens == 2
    assert not acc.is_finished()
    for event in events[10:16]:  # the tool block and its first fragments: the input so far, raw
        acc.add(event)
    tool = acc.snapshot.content[3]
    assert isinstance(tool, m.ToolUseBlock) and tool.input == TOOL_JSON[:6]


# Properties


@st.composite
def cuts(draw: st.DrawFn, size: int) -> list[int]:
    return sorted(draw(st.lists(st.integers(0, size), max_size=40)))


FINALS = {name: final_of(body).to_dict() for name, body in STREAMS.items()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(sorted(STREAMS)))
def test_any_chunking_gives_the_same_final(data: st.DataObject, name: str) -> None:
    body = STREAMS[name]
    assert aggregate(events_of(body, data.draw(cuts(len(body))))).to_dict() == FINALS[name]


@settings(max_examples=100, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(STREAMS)), framing=st.sampled_from(["crlf", "cr", "lf"]))
def test_any_framing_and_chunking_gives_the_same_final(data: st.DataObject, name: str, framing: str) -> None:
    body = STREAMS[name].replace(b"\n\n", b"\n: keep-alive\n\n")
    if framing != "lf":
        body = body.replace(b"\n", b"\r\n" if framing == "crlf" else b"\r")
    framed = b"\xef\xbb\xbf" + body
    assert aggregate(events_of(framed, data.draw(cuts(len(framed))))).to_dict() == FINALS[name]


EVENT_DATAS = sorted(
    {(e.data.encode(), e.event) for body in STREAMS.values() for e in SSEDecoder().feed(body)}
    | {(json.dumps(SAMPLES["error"]).encode(), "error")}
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["type", "text", "id", "x", "input"]), inner, max_size=3)
    ),
    max_leaves=5,
)
FIELDS = ["index", "delta", "content_block", "message", "usage", "error", "text", "type"]
TYPES = st.sampled_from(sorted(MESSAGES.tags | {"ping", "message_annotation"}))
# A block's or delta's `type` may be no string at all. One that is absent or null is a kind not told, and a
# new string a kind this version does not know: either is kept as it came, an `UnknownContentBlock` or
# `UnknownDelta`. A number, a boolean, a list or an object names no kind: the event is broken and raises
# ChunkDecodeError, as an event whose own `type` is no string does. Every API's open unions follow this rule
# (`decode_hook`); `check_open_union` holds the fuzzed events to it.
ODD_TYPES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.lists(st.sampled_from([*DELTAS, *BLOCKS]), max_size=2)
    | st.dictionaries(st.just("type"), st.sampled_from([*DELTAS, *BLOCKS]), max_size=1)
)
BLOCK_TYPES = st.sampled_from([*BLOCKS, "web_search_tool_result"]) | ODD_TYPES
DELTA_TYPES = st.sampled_from([*DELTAS, "audio_delta"]) | ODD_TYPES
NESTED = {
    "content_block": st.fixed_dictionaries(
        {"type": BLOCK_TYPES}, optional={"text": json_values, "input": json_values, "thinking": json_values}
    ),
    "delta": st.fixed_dictionaries(
        {"type": DELTA_TYPES},
        optional={"text": json_values, "partial_json": st.text(max_size=8), "citation": json_values},
    ),
    "message": st.fixed_dictionaries(
        {},
        optional={
            "content": st.lists(st.fixed_dictionaries({"type": BLOCK_TYPES}), max_size=2),
            "usage": st.fixed_dictionaries({}, optional={"input_tokens": json_values}),
            "stop_reason": json_values,
        },
    ),
    "index": st.integers(0, 3),
}
fuzzed_events = st.builds(
    lambda kind, fields, nested: {**fields, **nested, "type": kind},
    TYPES | json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3),
    st.fixed_dictionaries({}, optional=NESTED),
)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for where, kind, byte in edits:
        at = where % (len(out) + 1)
        if kind == 0:
            out.insert(at, byte)
        elif out and kind == 1:
            del out[at % len(out)]
        elif out:
            out[at % len(out)] = byte
    return bytes(out)


def decode_or_reject(data: bytes, event: str) -> MessageEvent | None:
    """Decode, and check the only failure is `ChunkDecodeError` with the data as its `raw` (or, for an
    `event: error` whose data is no event at all, the error it stands for)."""
    try:
        return MESSAGES.decode(data, event)
    except ChunkDecodeError as exc:
        assert exc.raw == data.decode("utf-8", "replace")
        return None
    except StreamAPIError as exc:
        assert event == "error" and exc.raw == data.decode("utf-8", "replace")
        return None


OPEN_UNIONS: dict[str, tuple[str, dict[str, tuple[type[Any], dict[str, Any]]], type[UnknownObject]]] = {
    "content_block_start": ("content_block", BLOCKS, m.UnknownContentBlock),
    "content_block_delta": ("delta", DELTAS, m.UnknownDelta),
}


def check_open_union(data: Any, item: MessageEvent | None) -> None:
    """What the `type` of an event's block or delta makes of it (see `ODD_TYPES`): the class of a known kind,
    an unknown object as it came for a new kind or none, no item (ChunkDecodeError) for a `type` that is no
    string."""
    kind = data.get("type") if isinstance(data, dict) else None
    if (
        not isinstance(kind, str)
        or kind not in OPEN_UNIONS
        or not isinstance(data.get(OPEN_UNIONS[kind][0]), dict)
    ):
        return
    field, known, unknown = OPEN_UNIONS[kind]
    value = data[field]
    tag = value.get("type")
    if tag is not None and not isinstance(tag, str):
        assert item is None, item
    elif item is not None:
        got = getattr(item, field)
        if tag in known:
            assert isinstance(got, known[tag][0])
        else:
            assert isinstance(got, unknown) and got.data == value


@settings(max_examples=400, deadline=None)
@given(
    original=st.sampled_from(EVENT_DATAS),
    edits=st.lists(
        st.tuples(st.integers(0, 5000), st.integers(0, 2), st.integers(0, 255)), min_size=1, max_size=6
    ),
)
def test_mutated_bytes_decode_or_raise_chunk_decode_error(
    original: tuple[bytes, str], edits: list[tuple[int, int, int]]
) -> None:
    data, event = original
    decode_or_reject(mutate(data, edits), event)


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.tuples(fuzzed_events, TYPES | st.just("message")), min_size=1, max_size=5))
def test_arbitrary_events_decode_or_raise_and_never_break_the_aggregate(
    events: list[tuple[Any, str]],
) -> None:
    acc = MessageAccumulator()
    for data, event in events:
        item = decode_or_reject(json.dumps(data).encode(), event)
        check_open_union(data, item)
        if item is not None:
            flags = MESSAGES.flags(item)
            MESSAGES.text(item)
            if flags & ERROR:
                assert isinstance(MESSAGES.error(item), StreamAPIError)
            acc.add(item)
            acc.snapshot.to_dict()
    final = acc.final()
    final.text  # noqa: B018 (it must not raise)
    MESSAGES.reply(final)
    acc.is_finished()


# Conversations: the request of a turn and what an answer adds to the history


def test_turn_builds_a_messages_body() -> None:
    history = [{"role": "user", "content": "Hi"}]
    assert MESSAGES.history_start("Be brief.") == []
    assert MESSAGES.turn("m", history, "Be brief.") == {
        "model": "m",
        "messages": history,
        "system": "Be brief.",
        "max_tokens": 1024,
    }
    body = MESSAGES.turn("m", history, max_tokens=64, params={"stop": "END", "temperature": 0.5})
    assert body == {
        "model": "m",
        "messages": history,
        "max_tokens": 64,
        "stop_sequences": ["END"],
        "temperature": 0.5,
    }
    body = MESSAGES.turn("m", history, params={"max_tokens": 9, "stop": ["a", "b"], "top_k": 5})
    assert (body["max_tokens"], body["stop_sequences"], body["top_k"]) == (9, ["a", "b"], 5)
    # Anthropic requires a token limit: a None among the params never leaves it out.
    assert MESSAGES.turn("m", history, max_tokens=64, params={"max_tokens": None})["max_tokens"] == 64
    assert MESSAGES.turn("m", history, params={"max_tokens": None})["max_tokens"] == 1024
    for name in ("n", "seed"):
        with pytest.raises(ValueError, match=name):
            MESSAGES.turn("m", history, params={name: 2})


def test_reply_is_the_assistant_message_with_its_blocks() -> None:
    (turn,) = MESSAGES.reply(final_of(ANTHROPIC))
    assert turn == {"role": "assistant", "content": ANTHROPIC_FINAL["content"]}
    assert MESSAGES.reply(Message()) == []
