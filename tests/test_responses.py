"""The Responses API, sans-I/O: decoding each event (`RESPONSES.decode`), the stream's rules (`flags`, `text`,
`error`), and `ResponseAccumulator` over streams in the shapes real servers send: OpenAI's early and later
streams, llama.cpp's (recorded, and by hand) and LiteLLM's."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamkit
from streamkit import ChunkDecodeError, SSEDecoder, StreamAPIError, UnknownEvent
from streamkit.protocols import END, ERROR, TOKEN, UnknownObject
from streamkit.protocols import responses as r
from streamkit.protocols.base import Model, OpenUnion
from streamkit.protocols.responses import (
    RESPONSES,
    ContentPart,
    OutputItem,
    Response,
    ResponseAccumulator,
    ResponseEvent,
)
from tests.conftest import FIXTURES

LLAMACPP_RESPONSES = FIXTURES / "llamacpp" / "responses.bin"


# Building streams


def sse(*events: dict[str, Any], event_lines: bool = True, done: bool = False) -> bytes:
    """The raw body of a stream: each event as compact JSON (as servers send it), with or without an
    `event:` line, and `data: [DONE]` at the end if asked."""
    body = b""
    for data in events:
        head = f"event: {data['type']}\n".encode() if event_lines else b""
        body += head + b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
    return body + (b"data: [DONE]\n\n" if done else b"")


def events_of(body: bytes, cuts: list[int] | None = None) -> list[ResponseEvent]:
    """The events of a body read in pieces cut at `cuts`, as `ResponseStream` reads them: nothing after a
    terminal event, and a `[DONE]` only after one."""
    decoder = SSEDecoder()
    bounds = [0, *sorted(cuts or []), len(body)]
    sent: list[Any] = []
    for start, end in itertools.pairwise(bounds):
        sent += decoder.feed(body[start:end])
    sent += decoder.close()
    events: list[ResponseEvent] = []
    for event in sent:
        if event.data.startswith("[DONE]"):
            assert events and RESPONSES.flags(events[-1]) & END
            break
        item = RESPONSES.decode(event.data.encode(), event.event)
        if item is not None:
            events.append(item)
            if RESPONSES.flags(item) & (END | ERROR):
                break
    return events


def aggregate(events: list[ResponseEvent]) -> Response:
    acc = ResponseAccumulator()
    for event in events:
        acc.add(event)
    return acc.final()


def final_of(body: bytes) -> Response:
    return aggregate(events_of(body))


def strip_ends(body: bytes) -> bytes:
    """The same stream as the deltas alone build it: every `*.done` and `*_part.done` event left out and the
    terminal event's `output` emptied, so the accumulator must build each item itself."""
    kept: list[dict[str, Any]] = []
    event_lines = b"event: " in body
    for event in SSEDecoder().feed(body):
        if event.data.startswith("[DONE]"):
            continue
        data = json.loads(event.data)
        if data["type"].endswith(".done"):
            continue
        if data["type"] in ("response.completed", "response.incomplete"):
            data["response"]["output"] = []
        kept.append(data)
    return sse(*kept, event_lines=event_lines)


# Real server shapes, written by hand


def openai_response(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1741476542,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "gpt-4o-2024-08-06",
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "generate_summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
    }
    return {**base, **fields}


CITATION: dict[str, Any] = {
    "type": "url_citation",
    "start_index": 4,
    "end_index": 16,
    "url": "https://example.com/sky?utm_source=openai",
    "title": "Why is the sky blue?",
}
WS: dict[str, Any] = {"id": "ws_67ccd2bf", "type": "web_search_call", "status": "completed"}
MSG_A = "msg_67ccd2c0a1b08190"
TEXT_A = "The sky is blue because of Rayleigh scattering."
MESSAGE_A: dict[str, Any] = {
    "id": MSG_A,
    "type": "message",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": TEXT_A, "annotations": [CITATION]}],
}
USAGE_A = {
    "input_tokens": 328,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 12,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 340,
}
IDS_A = {"item_id": MSG_A, "output_index": 1, "content_index": 0}

# (a) OpenAI, early 2025: `event:` lines, no `sequence_number`; a web search, then a message with a citation.
OPENAI_EARLY = sse(
    {"type": "response.created", "response": openai_response(tools=[{"type": "web_search_preview"}])},
    {"type": "response.in_progress", "response": openai_response(tools=[{"type": "web_search_preview"}])},
    {"type": "response.output_item.added", "output_index": 0, "item": {**WS, "status": "in_progress"}},
    {"type": "response.web_search_call.in_progress", "output_index": 0, "item_id": WS["id"]},
    {"type": "response.web_search_call.searching", "output_index": 0, "item_id": WS["id"]},
    {"type": "response.web_search_call.completed", "output_index": 0, "item_id": WS["id"]},
    {"type": "response.output_item.done", "output_index": 0, "item": WS},
    {
        "type": "response.output_item.added",
        "output_index": 1,
        "item": {"id": MSG_A, "type": "message", "status": "in_progress", "role": "assistant", "content": []},
    },
    {
        "type": "response.content_part.added",
        **IDS_A,
        "part": {"type": "output_text", "text": "", "annotations": []},
    },
    {"type": "response.output_text.delta", **IDS_A, "delta": "The sky"},
    {"type": "response.output_text.delta", **IDS_A, "delta": " is blue because"},
    {"type": "response.output_text.annotation.added", **IDS_A, "annotation_index": 0, "annotation": CITATION},
    {"type": "response.output_text.delta", **IDS_A, "delta": " of Rayleigh scattering."},
    {"type": "response.output_text.done", **IDS_A, "text": TEXT_A},
    {"type": "response.content_part.done", **IDS_A, "part": MESSAGE_A["content"][0]},
    {"type": "response.output_item.done", "output_index": 1, "item": MESSAGE_A},
    {
        "type": "response.completed",
        "response": openai_response(
            status="completed",
            tools=[{"type": "web_search_preview"}],
            output=[WS, MESSAGE_A],
            usage=USAGE_A,
        ),
    },
)

RS_B, FC_B = "rs_6876cf02e0bc8192", "fc_6876cf054f488192"
SUMMARY_B = "**Checking the weather**\n\nThe user wants the weather in Paris, so I call get_weather."
ARGS_B = '{"location":"Paris, France","unit":"celsius"}'
REASONING_B: dict[str, Any] = {
    "id": RS_B,
    "type": "reasoning",
    "summary": [{"type": "summary_text", "text": SUMMARY_B}],
}
CALL_B: dict[str, Any] = {
    "id": FC_B,
    "type": "function_call",
    "status": "completed",
    "arguments": ARGS_B,
    "call_id": "call_dUuQnVtNUWRnmGLGpXXeJqCs",
    "name": "get_weather",
}
USAGE_B = {
    "input_tokens": 62,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 150,
    "output_tokens_details": {"reasoning_tokens": 128},
    "total_tokens": 212,
}
TOOL_B = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather at a place.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    "strict": True,
}


def openai_later() -> bytes:
    """(b) OpenAI, later: `sequence_number` on every event and `obfuscation` on deltas; a reasoning item with
    a streamed summary, then a function call whose arguments stream."""
    response = openai_response(
        id="resp_6876cf01e0bc8192",
        model="o4-mini-2025-04-16",
        reasoning={"effort": "medium", "summary": "auto"},
        tools=[TOOL_B],
        background=False,
        service_tier="auto",
    )
    s = {"item_id": RS_B, "output_index": 0, "summary_index": 0}
    f = {"item_id": FC_B, "output_index": 1}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response},
        {"type": "response.in_progress", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": {**REASONING_B, "summary": []}},
        {"type": "response.reasoning_summary_part.added", **s, "part": {"type": "summary_text", "text": ""}},
        {"type": "response.reasoning_summary_text.delta", **s, "delta": "**Checking the weather**\n\n"},
        {"type": "response.reasoning_summary_text.delta", **s, "delta": "The user wants the weather in "},
        {"type": "response.reasoning_summary_text.delta", **s, "delta": "Paris, so I call get_weather."},
        {"type": "response.reasoning_summary_text.done", **s, "text": SUMMARY_B},
        {"type": "response.reasoning_summary_part.done", **s, "part": REASONING_B["summary"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": REASONING_B},
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {**CALL_B, "status": "in_progress", "arguments": ""},
        },
        {"type": "response.function_call_arguments.delta", **f, "delta": '{"location":'},
        {"type": "response.function_call_arguments.delta", **f, "delta": '"Paris, France",'},
        {"type": "response.function_call_arguments.delta", **f, "delta": '"unit":"celsius"}'},
        {"type": "response.function_call_arguments.done", **f, "arguments": ARGS_B},
        {"type": "response.output_item.done", "output_index": 1, "item": CALL_B},
        {
            "type": "response.completed",
            "response": {
                **response,
                "status": "completed",
                "output": [REASONING_B, CALL_B],
                "usage": USAGE_B,
            },
        },
    ]
    for number, event in enumerate(events):
        event["sequence_number"] = number
        if event["type"].endswith(".delta"):
            event["obfuscation"] = "x7Qz"[: 1 + number % 4]
    return sse(*events)


OPENAI_LATER = openai_later()

# (c) llama.cpp: no `sequence_number`, `output_index` or `content_index` anywhere, items known by `item_id`;
# the lifecycle events' response is a stub. A reasoning item (reasoning text, streamed) and then a message.
LLAMA_RS, LLAMA_MSG, LLAMA_FC = "rs_q1IuLHwz", "msg_eF9Eif9VO2ny", "fc_Fh6yJ2cwx8Qe"
LLAMA_REASONING = "The user greets me. I greet back."
LLAMA_TEXT = "Hello! How are you?"
LLAMA_STUB = {"id": "resp_4wWcgH9TTKxjg", "object": "response", "status": "in_progress"}
LLAMA_USAGE = {"input_tokens": 36, "output_tokens": 20, "total_tokens": 56}
LLAMA_REASONING_ITEM: dict[str, Any] = {
    "type": "reasoning",
    "id": LLAMA_RS,
    "summary": [],
    "content": [{"type": "reasoning_text", "text": LLAMA_REASONING}],
    "status": "completed",
}
LLAMA_MESSAGE: dict[str, Any] = {
    "type": "message",
    "status": "completed",
    "id": LLAMA_MSG,
    "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": LLAMA_TEXT}],
    "role": "assistant",
}
LLAMACPP_TWO_ITEMS = sse(
    {"type": "response.created", "response": LLAMA_STUB},
    {"type": "response.in_progress", "response": LLAMA_STUB},
    {"type": "response.output_item.added", "item": {"id": LLAMA_RS, "type": "reasoning", "summary": []}},
    {"type": "response.reasoning_text.delta", "item_id": LLAMA_RS, "delta": "The user greets me."},
    {"type": "response.reasoning_text.delta", "item_id": LLAMA_RS, "delta": " I greet back."},
    {"type": "response.reasoning_text.done", "item_id": LLAMA_RS, "text": LLAMA_REASONING},
    {"type": "response.output_item.done", "item": LLAMA_REASONING_ITEM},
    {
        "type": "response.output_item.added",
        "item": {
            "content": [],
            "id": LLAMA_MSG,
            "role": "assistant",
            "status": "in_progress",
            "type": "message",
        },
    },
    {
        "type": "response.content_part.added",
        "item_id": LLAMA_MSG,
        "part": {"type": "output_text", "text": ""},
    },
    {"type": "response.output_text.delta", "item_id": LLAMA_MSG, "delta": "Hello!"},
    {"type": "response.output_text.delta", "item_id": LLAMA_MSG, "delta": " How are"},
    {"type": "response.output_text.delta", "item_id": LLAMA_MSG, "delta": " you?"},
    {"type": "response.output_text.done", "item_id": LLAMA_MSG, "text": LLAMA_TEXT},
    {"type": "response.content_part.done", "item_id": LLAMA_MSG, "part": LLAMA_MESSAGE["content"][0]},
    {"type": "response.output_item.done", "item": LLAMA_MESSAGE},
    {
        "type": "response.completed",
        "response": {
            **LLAMA_STUB,
            "created_at": 1796161605,
            "status": "completed",
            "model": "smollm2",
            "output": [LLAMA_REASONING_ITEM, LLAMA_MESSAGE],
            "usage": LLAMA_USAGE,
        },
        "timings": {"prompt_n": 36, "predicted_n": 20},
    },
)
LLAMA_CALL: dict[str, Any] = {
    "arguments": '{"city":"Paris"}',
    "call_id": LLAMA_FC,
    "id": LLAMA_FC,
    "name": "get_weather",
    "status": "completed",
    "type": "function_call",
}
LLAMACPP_CALL = sse(
    {"type": "response.created", "response": LLAMA_STUB},
    {"type": "response.in_progress", "response": LLAMA_STUB},
    {"type": "response.output_item.added", "item": {**LLAMA_CALL, "arguments": "", "status": "in_progress"}},
    {"type": "response.function_call_arguments.delta", "item_id": LLAMA_FC, "delta": '{"city'},
    {"type": "response.function_call_arguments.delta", "item_id": LLAMA_FC, "delta": '":"Par'},
    {"type": "response.function_call_arguments.delta", "item_id": LLAMA_FC, "delta": 'is"}'},
    {"type": "response.function_call_arguments.done", "item_id": LLAMA_FC, "arguments": '{"city":"Paris"}'},
    {"type": "response.output_item.done", "item": LLAMA_CALL},
    {
        "type": "response.completed",
        "response": {**LLAMA_STUB, "status": "completed", "output": [LLAMA_CALL], "usage": LLAMA_USAGE},
    },
)

# (d) LiteLLM: data-only frames, a top-level `model` on every event, `data: [DONE]` at the end; a refusal.
REFUSAL = "I'm sorry, I can't help with that."
LITE_MSG = "msg_2c1f9a"
LITE_IDS = {"item_id": LITE_MSG, "output_index": 0, "content_index": 0}
LITE_MESSAGE: dict[str, Any] = {
    "type": "message",
    "id": LITE_MSG,
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "refusal", "refusal": REFUSAL}],
}
LITE_RESPONSE = openai_response(id="resp_2c1f9a", model="gpt-4o-mini")
LITE_USAGE = {"input_tokens": 14, "output_tokens": 10, "total_tokens": 24}
LITE_EVENTS: list[dict[str, Any]] = [
    {"type": "response.created", "response": LITE_RESPONSE},
    {"type": "response.in_progress", "response": LITE_RESPONSE},
    {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {**LITE_MESSAGE, "content": []},
    },
    {"type": "response.content_part.added", **LITE_IDS, "part": {"type": "refusal", "refusal": ""}},
    {"type": "response.refusal.delta", **LITE_IDS, "delta": "I'm sorry, "},
    {"type": "response.refusal.delta", **LITE_IDS, "delta": "I can't help with that."},
    {"type": "response.refusal.done", **LITE_IDS, "refusal": REFUSAL},
    {"type": "response.content_part.done", **LITE_IDS, "part": LITE_MESSAGE["content"][0]},
    {"type": "response.output_item.done", "output_index": 0, "item": LITE_MESSAGE},
    {
        "type": "response.completed",
        "response": {
            **LITE_RESPONSE,
            "status": "completed",
            "output": [LITE_MESSAGE],
            "usage": LITE_USAGE,
        },
    },
]
LITELLM = sse(*({**event, "model": "gpt-4o-mini"} for event in LITE_EVENTS), event_lines=False, done=True)

STREAMS = {
    "openai_early": OPENAI_EARLY,
    "openai_later": OPENAI_LATER,
    "llamacpp_two_items": LLAMACPP_TWO_ITEMS,
    "llamacpp_call": LLAMACPP_CALL,
    "llamacpp_recorded": LLAMACPP_RESPONSES.read_bytes(),
    "litellm": LITELLM,
}


# Decoding

# Every event the Responses API documents, and the class it decodes into.
DOCUMENTED: dict[str, type[Any]] = {
    "response.created": r.ResponseCreatedEvent,
    "response.queued": r.ResponseQueuedEvent,
    "response.in_progress": r.ResponseInProgressEvent,
    "response.completed": r.ResponseCompletedEvent,
    "response.incomplete": r.ResponseIncompleteEvent,
    "response.failed": r.ResponseFailedEvent,
    "error": r.ResponseErrorEvent,
    "response.output_item.added": r.ResponseOutputItemAddedEvent,
    "response.output_item.done": r.ResponseOutputItemDoneEvent,
    "response.content_part.added": r.ResponseContentPartAddedEvent,
    "response.content_part.done": r.ResponseContentPartDoneEvent,
    "response.output_text.delta": r.ResponseTextDeltaEvent,
    "response.output_text.done": r.ResponseTextDoneEvent,
    "response.output_text.annotation.added": r.ResponseOutputTextAnnotationAddedEvent,
    "response.refusal.delta": r.ResponseRefusalDeltaEvent,
    "response.refusal.done": r.ResponseRefusalDoneEvent,
    "response.function_call_arguments.delta": r.ResponseFunctionCallArgumentsDeltaEvent,
    "response.function_call_arguments.done": r.ResponseFunctionCallArgumentsDoneEvent,
    "response.custom_tool_call_input.delta": r.ResponseCustomToolCallInputDeltaEvent,
    "response.custom_tool_call_input.done": r.ResponseCustomToolCallInputDoneEvent,
    "response.mcp_call_arguments.delta": r.ResponseMcpCallArgumentsDeltaEvent,
    "response.mcp_call_arguments.done": r.ResponseMcpCallArgumentsDoneEvent,
    "response.code_interpreter_call_code.delta": r.ResponseCodeInterpreterCallCodeDeltaEvent,
    "response.code_interpreter_call_code.done": r.ResponseCodeInterpreterCallCodeDoneEvent,
    "response.reasoning_summary_part.added": r.ResponseReasoningSummaryPartAddedEvent,
    "response.reasoning_summary_part.done": r.ResponseReasoningSummaryPartDoneEvent,
    "response.reasoning_summary_text.delta": r.ResponseReasoningSummaryTextDeltaEvent,
    "response.reasoning_summary_text.done": r.ResponseReasoningSummaryTextDoneEvent,
    "response.reasoning_text.delta": r.ResponseReasoningTextDeltaEvent,
    "response.reasoning_text.done": r.ResponseReasoningTextDoneEvent,
    "response.file_search_call.in_progress": r.ResponseFileSearchCallInProgressEvent,
    "response.file_search_call.searching": r.ResponseFileSearchCallSearchingEvent,
    "response.file_search_call.completed": r.ResponseFileSearchCallCompletedEvent,
    "response.web_search_call.in_progress": r.ResponseWebSearchCallInProgressEvent,
    "response.web_search_call.searching": r.ResponseWebSearchCallSearchingEvent,
    "response.web_search_call.completed": r.ResponseWebSearchCallCompletedEvent,
    "response.code_interpreter_call.in_progress": r.ResponseCodeInterpreterCallInProgressEvent,
    "response.code_interpreter_call.interpreting": r.ResponseCodeInterpreterCallInterpretingEvent,
    "response.code_interpreter_call.completed": r.ResponseCodeInterpreterCallCompletedEvent,
    "response.image_generation_call.in_progress": r.ResponseImageGenCallInProgressEvent,
    "response.image_generation_call.generating": r.ResponseImageGenCallGeneratingEvent,
    "response.image_generation_call.completed": r.ResponseImageGenCallCompletedEvent,
    "response.image_generation_call.partial_image": r.ResponseImageGenCallPartialImageEvent,
    "response.mcp_call.in_progress": r.ResponseMcpCallInProgressEvent,
    "response.mcp_call.completed": r.ResponseMcpCallCompletedEvent,
    "response.mcp_call.failed": r.ResponseMcpCallFailedEvent,
    "response.mcp_list_tools.in_progress": r.ResponseMcpListToolsInProgressEvent,
    "response.mcp_list_tools.completed": r.ResponseMcpListToolsCompletedEvent,
    "response.mcp_list_tools.failed": r.ResponseMcpListToolsFailedEvent,
    "response.audio.delta": r.ResponseAudioDeltaEvent,
    "response.audio.done": r.ResponseAudioDoneEvent,
    "response.audio.transcript.delta": r.ResponseAudioTranscriptDeltaEvent,
    "response.audio.transcript.done": r.ResponseAudioTranscriptDoneEvent,
}

# A realistic example of the events with fields of their own; the others need only `type`.
SAMPLES: dict[str, dict[str, Any]] = {
    "response.completed": {"response": openai_response(status="completed", usage=USAGE_A)},
    "error": {"code": "server_error", "message": "Something went wrong", "param": None},
    "response.output_item.added": {"output_index": 0, "item": {**CALL_B, "status": "in_progress"}},
    "response.content_part.added": {**IDS_A, "part": {"type": "output_text", "text": "", "annotations": []}},
    "response.output_text.delta": {
        **IDS_A,
        "delta": "Hi",
        "logprobs": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}],
            }
        ],
    },
    "response.output_text.annotation.added": {**IDS_A, "annotation_index": 0, "annotation": CITATION},
    "response.function_call_arguments.done": {"item_id": FC_B, "output_index": 1, "arguments": ARGS_B},
    "response.reasoning_summary_part.added": {
        "item_id": RS_B,
        "output_index": 0,
        "summary_index": 0,
        "part": {"type": "summary_text", "text": ""},
    },
    "response.image_generation_call.partial_image": {
        "item_id": "ig_1",
        "output_index": 0,
        "partial_image_b64": "iVBORw0KGgo=",
        "partial_image_index": 0,
    },
}


def test_every_documented_event_is_known() -> None:
    assert set(DOCUMENTED) == RESPONSES.tags


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
@pytest.mark.parametrize("event_line", [True, False])
def test_every_documented_event_decodes_to_its_class(name: str, event_line: bool) -> None:
    data = {"type": name, "sequence_number": 7, **SAMPLES.get(name, {})}
    event = RESPONSES.decode(json.dumps(data).encode(), name if event_line else "message")
    assert type(event) is DOCUMENTED[name]
    assert event is not None and event.type == name
    assert event.sequence_number == 7  # type: ignore[union-attr]
    as_dict = event.to_dict()
    assert as_dict["type"] == name
    if name in SAMPLES:  # nothing is lost: the event gives back what came, less the nulls
        assert as_dict == drop_none(data)


def test_unknown_event_type_is_yielded_as_unknown_event() -> None:
    data = (
        b'{"type":"response.shell_call_command.delta","item_id":"sh_1","delta":"ls -la","sequence_number":4}'
    )
    for event_name in ("response.shell_call_command.delta", "message"):
        event = RESPONSES.decode(data, event_name)
        assert isinstance(event, UnknownEvent) and isinstance(event, streamkit.UnknownEvent)
        assert event.type == "response.shell_call_command.delta"
        assert event.raw == data.decode()
        assert event.data["delta"] == "ls -la"
        assert RESPONSES.flags(event) == 0 and RESPONSES.text(event) is None
    # An unknown event changes nothing in the aggregate.
    events = events_of(OPENAI_EARLY)
    with_unknown = [*events[:5], RESPONSES.decode(data), *events[5:]]
    assert aggregate(with_unknown).to_dict() == aggregate(events).to_dict()  # type: ignore[arg-type]


def test_unknown_output_item_and_content_part_are_kept() -> None:
    item = {"type": "shell_call", "id": "sh_1", "action": {"commands": ["ls"]}, "status": "in_progress"}
    added = RESPONSES.decode(
        sse_data({"type": "response.output_item.added", "output_index": 0, "item": item})
    )
    assert isinstance(added, r.ResponseOutputItemAddedEvent)
    assert isinstance(added.item, r.UnknownOutputItem) and isinstance(added.item, UnknownObject)
    assert isinstance(added.item, r.OutputItem)
    assert added.item.type == "shell_call" and added.item.data == item
    assert added.to_dict()["item"] == item
    part = {"type": "output_audio", "data": "UklGR", "transcript": "hi"}
    part_added = RESPONSES.decode(
        sse_data({"type": "response.content_part.added", **IDS_A, "part": part}),
        "response.content_part.added",
    )
    assert isinstance(part_added, r.ResponseContentPartAddedEvent)
    assert isinstance(part_added.part, r.UnknownContentPart) and isinstance(part_added.part, r.ContentPart)
    assert part_added.part.type == "output_audio" and part_added.part.data == part
    # Both stay in the aggregate, as they came.
    message = {"type": "message", "id": MSG_A, "role": "assistant", "status": "completed", "content": [part]}
    final = aggregate(
        [
            added,
            decoded(
                {"type": "response.output_item.added", "output_index": 1, "item": {**message, "content": []}}
            ),
            part_added,
            decoded({"type": "response.output_item.done", "output_index": 1, "item": message}),
            decoded({"type": "response.completed", "response": {"status": "completed"}}),
        ]
    )
    assert final.to_dict()["output"] == [item, message]
    assert isinstance(final.output[0], r.UnknownOutputItem)
    message_item = final.output[1]
    assert isinstance(message_item, r.OutputMessage)
    content = message_item.content
    assert isinstance(content[0], r.UnknownContentPart) and content[0].data == part
    assert final.output_text == ""


def dump(obj: object) -> Any:
    """An output item or content part as JSON, known or not."""
    if isinstance(obj, Model):
        return obj.to_dict()
    assert isinstance(obj, UnknownObject)
    return obj.data


def dump_message(item: object) -> r.OutputMessage:
    assert isinstance(item, r.OutputMessage)
    return item


def drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def sse_data(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def decoded(data: dict[str, Any], event: str = "message") -> ResponseEvent:
    item = RESPONSES.decode(sse_data(data), event)
    assert item is not None
    return item


@pytest.mark.parametrize(
    "data",
    [
        {"type": "response.output_text.delta", "delta": 5},
        {"type": "response.output_text.delta", "delta": "x", "output_index": "0"},
        {"type": "response.output_item.added", "item": {"type": "message", "content": "not a list"}},
        {"type": "response.output_item.added", "item": "not an object"},
        {"type": "response.content_part.added", "part": {"type": "output_text", "text": 1}},
        {"type": "response.completed", "response": {"usage": {"input_tokens": "many"}}},
        {"type": "response.completed", "response": None},
        {"type": "response.output_text.delta", "delta": "x", "logprobs": [{"token": "x"}]},
        {"type": "error", "code": 500},
        {"type": "response.output_text.delta", "sequence_number": 1.5},
    ],
)
def test_a_known_event_with_a_wrongly_typed_field_raises_chunk_decode_error(data: dict[str, Any]) -> None:
    raw = json.dumps(data)
    for event_name in (data["type"], "message"):
        with pytest.raises(ChunkDecodeError) as caught:
            RESPONSES.decode(raw.encode(), event_name)
        assert isinstance(caught.value, ValueError)
        assert caught.value.raw == raw


@pytest.mark.parametrize(
    "raw",
    [b'{"type": "response.output_text.delta", "delta": "tru', b"not json", b"[1, 2]", b'"text"', b"null"],
)
def test_data_that_is_no_json_object_raises_chunk_decode_error(raw: bytes) -> None:
    with pytest.raises(ChunkDecodeError) as caught:
        RESPONSES.decode(raw, "response.output_text.delta")
    assert caught.value.raw == raw.decode()


@pytest.mark.parametrize(
    ("data", "event"),
    [
        (b"{}", "ping"),
        (b'{"type":"ping"}', "message"),
        (b'{"type":"ping"}', "ping"),
        (b'{"type":"ping"}', "x"),
    ],
)
def test_ping_is_skipped(data: bytes, event: str) -> None:
    assert RESPONSES.decode(data, event) is None


def test_the_data_type_wins_over_the_sse_event_name() -> None:
    data = b'{"type":"response.output_text.delta","item_id":"m","delta":"x"}'
    for name in ("response.completed", "error", "ping", "response.unknown", "message"):
        event = RESPONSES.decode(data, name)
        assert isinstance(event, r.ResponseTextDeltaEvent) and event.delta == "x"
    completed = RESPONSES.decode(b'{"type":"response.completed","response":{"status":"completed"}}', "error")
    assert isinstance(completed, r.ResponseCompletedEvent)
    assert RESPONSES.flags(completed) == END


def test_data_without_a_type_takes_the_sse_event_name() -> None:
    delta = RESPONSES.decode(b'{"item_id":"m","delta":"x"}', "response.output_text.delta")
    assert isinstance(delta, r.ResponseTextDeltaEvent) and delta.type == "response.output_text.delta"
    assert delta.delta == "x" and delta.item_id == "m"
    error = RESPONSES.decode(b'{"code":"server_error","message":"boom"}', "error")
    assert isinstance(error, r.ResponseErrorEvent) and error.message == "boom"
    unknown = RESPONSES.decode(b'{"delta":"x"}', "response.brand_new.delta")
    assert isinstance(unknown, UnknownEvent) and unknown.type == "response.brand_new.delta"


def test_a_type_that_is_no_string_is_an_invalid_event() -> None:
    for raw in (b'{"type":["response.completed"]}', b'{"type":{"a":1}}', b'{"type":5}', b'{"type":true}'):
        with pytest.raises(ChunkDecodeError):
            RESPONSES.decode(raw)
    for raw in (b'{"type":"response.output_item.added","item":{"type":[1]}}',):
        with pytest.raises(ChunkDecodeError):
            RESPONSES.decode(raw)


# Aggregating real shapes


def test_openai_early_stream() -> None:
    events = events_of(OPENAI_EARLY)
    assert [e.type for e in events][:3] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
    ]
    assert all(getattr(e, "sequence_number", None) is None for e in events)
    final = aggregate(events)
    assert final.status == "completed"
    assert final.output_text == TEXT_A
    assert final.usage is not None and final.usage.to_dict() == USAGE_A
    assert final.model == "gpt-4o-2024-08-06" and final.id == openai_response()["id"]
    assert final.to_dict()["created_at"] == 1741476542 and isinstance(final.created_at, int)
    assert [type(item) for item in final.output] == [r.WebSearchCallItem, r.OutputMessage]
    assert final.to_dict()["output"] == [WS, MESSAGE_A]
    message = final.output[1]
    assert isinstance(message, r.OutputMessage) and isinstance(message.content[0], r.OutputText)
    assert message.content[0].annotations == [CITATION]


def test_openai_later_stream() -> None:
    events = events_of(OPENAI_LATER)
    assert [getattr(e, "sequence_number", None) for e in events] == list(range(len(events)))
    final = aggregate(events)
    assert final.status == "completed" and final.output_text == ""
    assert final.usage is not None and final.usage.to_dict() == USAGE_B
    assert final.usage.output_tokens_details is not None
    assert final.usage.output_tokens_details.reasoning_tokens == 128
    reasoning, call = final.output
    assert isinstance(reasoning, r.ReasoningItem) and isinstance(reasoning.summary[0], r.SummaryText)
    assert reasoning.summary[0].text == SUMMARY_B
    assert isinstance(call, r.FunctionCallItem)
    assert (call.name, call.call_id, call.arguments, call.status) == (
        "get_weather",
        CALL_B["call_id"],
        ARGS_B,
        "completed",
    )
    assert json.loads(call.arguments) == {"location": "Paris, France", "unit": "celsius"}
    assert final.service_tier == "auto" and final.reasoning == {"effort": "medium", "summary": "auto"}
    assert final.to_dict()["output"] == [REASONING_B, CALL_B]


def test_llamacpp_stream_with_two_items_known_by_id() -> None:
    final = final_of(LLAMACPP_TWO_ITEMS)
    assert final.status == "completed" and final.model == "smollm2"
    assert final.output_text == LLAMA_TEXT
    assert final.usage is not None and final.usage.to_dict() == LLAMA_USAGE
    reasoning, message = final.output
    assert isinstance(reasoning, r.ReasoningItem) and reasoning.content is not None
    assert [dump(p) for p in reasoning.content] == [{"type": "reasoning_text", "text": LLAMA_REASONING}]
    assert isinstance(message, r.OutputMessage) and message.id == LLAMA_MSG


def test_llamacpp_function_call() -> None:
    (call,) = final_of(LLAMACPP_CALL).output
    assert isinstance(call, r.FunctionCallItem)
    assert (call.name, call.arguments, call.call_id) == ("get_weather", '{"city":"Paris"}', LLAMA_FC)


def test_recorded_llamacpp_stream() -> None:
    body = LLAMACPP_RESPONSES.read_bytes()
    events = events_of(body)
    deltas = [e.delta for e in events if isinstance(e, r.ResponseTextDeltaEvent)]
    assert len(deltas) > 3
    assert all(getattr(e, "sequence_number", None) is None for e in events)
    assert all(getattr(e, "output_index", None) is None for e in events)
    final = aggregate(events)
    assert final.status == "completed"
    assert final.output_text == "".join(deltas) != ""
    usage = final.usage
    assert usage is not None and usage.input_tokens and usage.output_tokens  # the stop token counts too
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert final.model == "smollm2"
    (message,) = final.output
    assert isinstance(message, r.OutputMessage) and message.status == "completed"
    # The deltas alone build the same text.
    assert final_of(strip_ends(body)).output_text == final.output_text


def test_litellm_stream_with_a_refusal() -> None:
    assert b"event:" not in LITELLM and LITELLM.endswith(b"data: [DONE]\n\n")
    final = final_of(LITELLM)
    assert final.status == "completed" and final.output_text == ""
    assert final.usage is not None and final.usage.to_dict() == LITE_USAGE
    (message,) = final.output
    assert isinstance(message, r.OutputMessage)
    assert [(type(p), dump(p)["refusal"]) for p in message.content] == [(r.Refusal, REFUSAL)]
    assert final.to_dict()["output"] == [LITE_MESSAGE]


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_the_deltas_alone_build_the_same_content(name: str) -> None:
    """Without any `*.done` event and with no output in the terminal event, the accumulator builds every item
    from the announcements and deltas alone."""
    whole, built = final_of(STREAMS[name]), final_of(strip_ends(STREAMS[name]))
    assert built.status == whole.status and built.usage == whole.usage
    assert len(built.output) == len(whole.output)
    for got, expected in zip(built.output, whole.output, strict=True):
        assert type(got) is type(expected)
        assert content_of(got) == content_of(expected)


def content_of(item: Any) -> Any:
    """What the deltas of an item carry: text and refusals, reasoning, arguments, annotations."""
    if isinstance(item, r.OutputMessage):
        parts = [dump(part) for part in item.content]
        return [{k: v for k, v in part.items() if k != "logprobs" or v} for part in parts]
    if isinstance(item, r.ReasoningItem):
        return [dump(p) for p in item.summary], [dump(p) for p in item.content or []]
    if isinstance(item, r.FunctionCallItem):
        return item.name, item.call_id, item.arguments
    return item.type


# The rules of the aggregate


def message_events(*deltas: str, output_index: int = 0, item_id: str = "msg_1") -> list[ResponseEvent]:
    ids = {"item_id": item_id, "output_index": output_index, "content_index": 0}
    return [
        decoded(
            {
                "type": "response.output_item.added",
                "output_index": output_index,
                "item": {"type": "message", "id": item_id, "role": "assistant", "content": []},
            }
        ),
        decoded({"type": "response.content_part.added", **ids, "part": {"type": "output_text", "text": ""}}),
        *(decoded({"type": "response.output_text.delta", **ids, "delta": d}) for d in deltas),
    ]


def test_a_done_event_replaces_what_the_deltas_built() -> None:
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events = [
        *message_events("Hel", "lo"),
        decoded({"type": "response.output_text.done", **ids, "text": "Hi!"}),
    ]
    assert aggregate(events).output_text == "Hi!"
    part_done = {"type": "response.content_part.done", **ids, "part": {"type": "output_text", "text": "Part"}}
    assert aggregate([*events, decoded(part_done)]).output_text == "Part"
    whole = {"type": "message", "id": "msg_1", "content": [{"type": "output_text", "text": "Whole"}]}
    item_done = decoded({"type": "response.output_item.done", "output_index": 0, "item": whole})
    assert aggregate([*events, decoded(part_done), item_done]).output_text == "Whole"
    # Refusals, arguments, summaries and reasoning text, likewise.
    refusal = [
        decoded({"type": "response.refusal.delta", **ids, "delta": "No"}),
        decoded({"type": "response.refusal.done", **ids, "refusal": "No way."}),
    ]
    (message,) = aggregate(refusal).output
    assert dump(message)["content"] == [{"type": "refusal", "refusal": "No way."}]
    f = {"item_id": "fc_1", "output_index": 0}
    call = aggregate(
        [
            decoded({"type": "response.function_call_arguments.delta", **f, "delta": '{"a"'}),
            decoded(
                {"type": "response.function_call_arguments.done", **f, "arguments": '{"a": 2}', "name": "g"}
            ),
        ]
    ).output[0]
    assert isinstance(call, r.FunctionCallItem) and (call.arguments, call.name) == ('{"a": 2}', "g")
    s = {"item_id": "rs_1", "output_index": 0, "summary_index": 0}
    reasoning = aggregate(
        [
            decoded({"type": "response.reasoning_summary_text.delta", **s, "delta": "draft"}),
            decoded({"type": "response.reasoning_summary_text.done", **s, "text": "Summary."}),
            decoded(
                {"type": "response.reasoning_text.delta", "item_id": "rs_1", "output_index": 0, "delta": "t"}
            ),
            decoded(
                {
                    "type": "response.reasoning_text.done",
                    "item_id": "rs_1",
                    "output_index": 0,
                    "text": "Text.",
                }
            ),
        ]
    ).output[0]
    assert isinstance(reasoning, r.ReasoningItem)
    assert reasoning.to_dict()["summary"] == [{"type": "summary_text", "text": "Summary."}]
    assert reasoning.to_dict()["content"] == [{"type": "reasoning_text", "text": "Text."}]


def test_the_terminal_response_is_authoritative() -> None:
    created = decoded(
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "model": "m"}}
    )
    deltas = message_events("Hel", "lo")
    usage = {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    # With an output: it replaces the built one.
    item = {"type": "message", "id": "msg_1", "content": [{"type": "output_text", "text": "Hello, world"}]}
    done = {"id": "resp_1", "status": "completed", "output": [item], "usage": usage, "model": "m"}
    final = aggregate([created, *deltas, decoded({"type": "response.completed", "response": done})])
    assert (final.status, final.output_text, final.id) == ("completed", "Hello, world", "resp_1")
    assert final.usage is not None and final.usage.to_dict() == usage
    # With an empty output: the built one stays.
    empty = {**done, "output": []}
    final = aggregate([created, *deltas, decoded({"type": "response.completed", "response": empty})])
    assert (final.status, final.output_text) == ("completed", "Hello")
    # Without output at all, likewise.
    bare = {"status": "completed", "usage": usage}
    final = aggregate([created, *deltas, decoded({"type": "response.completed", "response": bare})])
    assert (final.status, final.output_text) == ("completed", "Hello")
    assert final.usage is not None and final.usage.total_tokens == 5


def test_response_incomplete() -> None:
    incomplete = decoded(
        {
            "type": "response.incomplete",
            "response": {
                "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
                "usage": {"input_tokens": 1, "output_tokens": 16, "total_tokens": 17},
            },
        }
    )
    assert RESPONSES.flags(incomplete) == END
    acc = ResponseAccumulator()
    for event in [*message_events("Once", " upon"), incomplete]:
        acc.add(event)
    assert acc.is_finished()
    final = acc.final()
    assert final.status == "incomplete" and final.output_text == "Once upon"
    assert final.incomplete_details is not None and final.incomplete_details.reason == "max_output_tokens"
    assert acc.output_tokens == 16


def test_response_failed_and_error_events() -> None:
    failed = decoded(
        {
            "type": "response.failed",
            "response": {
                "status": "failed",
                "error": {"code": "server_error", "message": "The model crashed."},
            },
        }
    )
    assert RESPONSES.flags(failed) == ERROR
    final = aggregate([*message_events("Par", "tial"), failed])
    assert final.status == "failed" and final.output_text == "Partial"
    assert final.error is not None and (final.error.code, final.error.message) == (
        "server_error",
        "The model crashed.",
    )
    error = RESPONSES.error(failed)
    assert isinstance(error, StreamAPIError)
    assert (error.message, error.code) == ("The model crashed.", "server_error")
    assert "The model crashed." in error.raw

    event = decoded({"type": "error", "code": "rate_limit_exceeded", "message": "Slow down.", "param": None})
    assert RESPONSES.flags(event) == ERROR
    error = RESPONSES.error(event)
    assert (error.message, error.code, error.param) == ("Slow down.", "rate_limit_exceeded", None)
    final = aggregate([*message_events("Par"), event])
    assert final.error is not None and (final.error.code, final.error.message) == (
        "rate_limit_exceeded",
        "Slow down.",
    )


NESTED_ERROR = {
    "type": "too_many_requests",
    "code": "too_many_requests",
    "message": "Too Many Requests",
    "param": None,
}


@pytest.mark.parametrize(
    ("raw", "event"),
    [
        # What OpenAI's live API sends, though its reference documents the fields flat.
        ({"type": "error", "sequence_number": 2, "error": NESTED_ERROR}, "error"),
        ({"type": "error", "sequence_number": 2, "error": NESTED_ERROR}, "message"),
        # A proxy's chat-style error inside a Responses stream, with or without `event: error`.
        ({"error": NESTED_ERROR}, "message"),
        ({"error": NESTED_ERROR}, "error"),
    ],
)
def test_an_error_nested_under_error_keeps_its_code_and_message(raw: dict[str, Any], event: str) -> None:
    item = decoded(raw, event)
    assert RESPONSES.flags(item) == ERROR
    error = RESPONSES.error(item)
    assert (error.message, error.code, error.type) == (
        "Too Many Requests",
        "too_many_requests",
        "too_many_requests",
    )
    final = aggregate([*message_events("Par"), item])
    assert final.error is not None and (final.error.code, final.error.message) == (
        "too_many_requests",
        "Too Many Requests",
    )


def test_an_error_that_is_only_text() -> None:
    item = decoded({"error": "upstream timed out"})
    assert RESPONSES.flags(item) == ERROR
    assert RESPONSES.error(item).message == "upstream timed out"


def test_output_text_joins_the_text_parts_of_message_items() -> None:
    response = Response.from_json(
        json.dumps(
            {
                "output": [
                    {
                        "type": "reasoning",
                        "summary": [{"type": "summary_text", "text": "S"}],
                        "content": [{"type": "reasoning_text", "text": "R"}],
                    },
                    {
                        "type": "message",
                        "content": [
                            {"type": "output_text", "text": "a"},
                            {"type": "refusal", "refusal": "no"},
                            {"type": "output_text", "text": "b"},
                        ],
                    },
                    {"type": "function_call", "name": "f", "arguments": "{}"},
                    {"type": "message", "content": [{"type": "output_text", "text": "c"}]},
                ]
            }
        )
    )
    assert response.output_text == "abc"
    assert Response().output_text == ""


def test_items_are_keyed_by_output_index_in_any_order() -> None:
    first, second = (
        message_events("A", output_index=0, item_id="m0"),
        message_events("B", output_index=1, item_id="m1"),
    )
    interleaved = [second[0], first[0], second[1], first[1], second[2], first[2]]
    final = aggregate(interleaved)
    assert [dump(item)["id"] for item in final.output] == ["m0", "m1"]
    assert final.output_text == "AB"
    # A delta that names only the item's id finds it, wherever it is.
    late = decoded({"type": "response.output_text.delta", "item_id": "m0", "delta": "a"})
    assert aggregate([*interleaved, late]).output_text == "AaB"


def test_content_parts_are_keyed_by_content_index() -> None:
    def ids(index: int) -> dict[str, Any]:
        return {"item_id": "msg_1", "output_index": 0, "content_index": index}

    final = aggregate(
        [
            *message_events(),
            decoded(
                {"type": "response.content_part.added", **ids(1), "part": {"type": "refusal", "refusal": ""}}
            ),
            decoded({"type": "response.output_text.delta", **ids(2), "delta": "B"}),
            decoded({"type": "response.refusal.delta", **ids(1), "delta": "No"}),
            decoded({"type": "response.output_text.delta", **ids(0), "delta": "A"}),
        ]
    )
    assert final.output_text == "AB"
    assert [dump(part) for part in dump_message(final.output[0]).content] == [
        {"type": "output_text", "text": "A", "annotations": []},
        {"type": "refusal", "refusal": "No"},
        {"type": "output_text", "text": "B", "annotations": []},
    ]


def test_logprobs_are_extended_and_annotations_appended() -> None:
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}

    def delta(text: str) -> ResponseEvent:
        logprob = {"token": text, "logprob": -0.5, "bytes": list(text.encode()), "top_logprobs": []}
        return decoded({"type": "response.output_text.delta", **ids, "delta": text, "logprobs": [logprob]})

    def annotation(index: int) -> ResponseEvent:
        return decoded(
            {
                "type": "response.output_text.annotation.added",
                **ids,
                "annotation_index": index,
                "annotation": {**CITATION, "start_index": index},
            }
        )

    final = aggregate([*message_events(), delta("a"), annotation(0), delta("b"), annotation(1)])
    (part,) = dump_message(final.output[0]).content
    assert isinstance(part, r.OutputText) and part.logprobs is not None
    assert [lp.token for lp in part.logprobs] == ["a", "b"]
    assert [a["start_index"] for a in part.annotations] == [0, 1]


# Snapshots


def snapshot_stream() -> list[ResponseEvent]:
    """A stream whose message grows by deltas with logprobs and annotations, then a second item."""
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events: list[ResponseEvent] = [
        decoded({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
        *message_events(),
    ]
    for i, text in enumerate(["One", " two", " three"]):
        logprob = {"token": text, "logprob": -0.1 * i, "bytes": list(text.encode()), "top_logprobs": []}
        events.append(
            decoded({"type": "response.output_text.delta", **ids, "delta": text, "logprobs": [logprob]})
        )
        events.append(
            decoded(
                {
                    "type": "response.output_text.annotation.added",
                    **ids,
                    "annotation_index": i,
                    "annotation": {"type": "file_citation", "index": i, "file_id": f"file-{i}"},
                }
            )
        )
    f = {"item_id": "fc_1", "output_index": 1}
    events += [
        decoded(
            {
                "type": "response.output_item.added",
                "output_index": 1,
                "item": {"type": "function_call", "id": "fc_1", "name": "f"},
            }
        ),
        decoded({"type": "response.function_call_arguments.delta", **f, "delta": "{"}),
        decoded({"type": "response.function_call_arguments.delta", **f, "delta": "}"}),
        decoded({"type": "response.output_text.done", **ids, "text": "One two three", "logprobs": []}),
        decoded(
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": {"type": "message", "id": "msg_1"},
            }
        ),
        decoded({"type": "response.completed", "response": {"id": "resp_1", "status": "completed"}}),
    ]
    return events


@pytest.mark.parametrize("name", ["snapshot_stream", *sorted(STREAMS)])
def test_a_snapshot_never_changes_when_later_events_arrive(name: str) -> None:
    events = snapshot_stream() if name == "snapshot_stream" else events_of(STREAMS[name])
    acc = ResponseAccumulator()
    taken: list[tuple[Response, dict[str, Any]]] = []
    for event in events:
        acc.add(event)
        snapshot = acc.snapshot
        taken.append((snapshot, snapshot.to_dict()))
    assert acc.events == len(events)
    for snapshot, as_it_was in taken:
        assert snapshot.to_dict() == as_it_was
    # Two snapshots are two objects.
    assert acc.snapshot is not acc.snapshot
    assert acc.snapshot.to_dict() == acc.final().to_dict()


def test_snapshot_mid_stream_holds_the_text_so_far() -> None:
    events = snapshot_stream()
    acc = ResponseAccumulator()
    for event in events[:6]:
        acc.add(event)
    snapshot = acc.snapshot
    assert snapshot.output_text == "One two" and snapshot.status == "in_progress"
    assert not acc.is_finished()
    (part,) = dump_message(snapshot.output[0]).content
    assert isinstance(part, r.OutputText) and part.logprobs is not None and len(part.logprobs) == 2
    assert len(part.annotations) == 1


# Properties


@st.composite
def cuts(draw: st.DrawFn, size: int) -> list[int]:
    return sorted(draw(st.lists(st.integers(0, size), max_size=40)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(sorted(STREAMS)))
def test_any_chunking_gives_the_same_final(data: st.DataObject, name: str) -> None:
    body = STREAMS[name]
    where = data.draw(cuts(len(body)))
    assert aggregate(events_of(body, where)).to_dict() == final_of(body).to_dict()


@settings(max_examples=100, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(STREAMS)), crlf=st.booleans())
def test_any_framing_and_chunking_gives_the_same_final(data: st.DataObject, name: str, crlf: bool) -> None:
    body = STREAMS[name]
    framed = b"\xef\xbb\xbf" + (
        body.replace(b"\n", b"\r\n") if crlf else body.replace(b"\n\n", b"\n:keep-alive\n\n")
    )
    where = data.draw(cuts(len(framed)))
    assert aggregate(events_of(framed, where)).to_dict() == final_of(body).to_dict()


EVENT_DATAS = sorted(
    {
        (e.data.encode(), e.event)
        for body in STREAMS.values()
        for e in SSEDecoder().feed(body)
        if e.data != "[DONE]"
    }
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["type", "text", "id", "x"]), inner, max_size=3)
    ),
    max_leaves=5,
)
FIELDS = [
    "sequence_number", "response", "item", "part", "output_index", "content_index", "summary_index",
    "item_id", "delta", "text", "refusal", "arguments", "name", "logprobs", "annotation", "annotation_index",
    "code", "message", "param", "error", "input", "partial_image_b64",
]  # fmt: skip
TYPES = st.sampled_from(sorted(RESPONSES.tags | {"ping", "response.new_thing"}))
# An item's or part's `type` may be no string at all: absent or null, or a new string, it is kept as an
# unknown object; a number, a boolean, a list or an object names no kind, and the event raises
# ChunkDecodeError (the rule of every API's open unions, `decode_hook`, which `check_open_union` holds the
# fuzzed events to).
ODD_TYPES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.lists(st.sampled_from(["message", "output_text"]), max_size=2)
    | st.dictionaries(st.just("type"), st.sampled_from(["message", "output_text"]), max_size=1)
)
NESTED = {
    "item": st.fixed_dictionaries(
        {"type": st.sampled_from(["message", "function_call", "reasoning", "z"]) | ODD_TYPES}
    ),
    "part": st.fixed_dictionaries(
        {"type": st.sampled_from(["output_text", "refusal", "summary_text", "z"]) | ODD_TYPES}
    ),
    "response": st.fixed_dictionaries(
        {}, optional={"output": st.lists(json_values, max_size=2), "status": json_values}
    ),
}
fuzzed_events = st.builds(
    lambda kind, fields, nested: {**fields, **nested, "type": kind},
    TYPES | json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
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


def decode_or_reject(data: bytes, event: str) -> ResponseEvent | None:
    """Decode, and check the only failure is `ChunkDecodeError` with the data as its `raw`, or, for an
    `event: error` whose data is no event (a proxy's plain text), the `StreamAPIError` it stands for."""
    try:
        return RESPONSES.decode(data, event)
    except ChunkDecodeError as exc:
        assert exc.raw == data.decode("utf-8", "replace")
        return None
    except StreamAPIError as exc:
        assert event == "error" and exc.raw == data.decode("utf-8", "replace")
        return None


OPEN_UNIONS: dict[str, tuple[str, type[OpenUnion]]] = {
    "response.output_item.added": ("item", OutputItem),
    "response.output_item.done": ("item", OutputItem),
    "response.content_part.added": ("part", ContentPart),
    "response.content_part.done": ("part", ContentPart),
    "response.reasoning_summary_part.added": ("part", ContentPart),
    "response.reasoning_summary_part.done": ("part", ContentPart),
}


def check_open_union(data: Any, item: ResponseEvent | None) -> None:
    """What the `type` of an event's item or part makes of it (see `ODD_TYPES`): the variant of a known kind,
    an unknown object as it came for a new kind or none, no item (ChunkDecodeError) for a `type` that is no
    string."""
    kind = data.get("type") if isinstance(data, dict) else None
    if (
        not isinstance(kind, str)
        or kind not in OPEN_UNIONS
        or not isinstance(data.get(OPEN_UNIONS[kind][0]), dict)
    ):
        return
    field, union = OPEN_UNIONS[kind]
    value = data[field]
    tag = value.get("type")
    if tag is not None and not isinstance(tag, str):
        assert item is None, item
    elif item is not None:
        got = getattr(item, field)
        known = {str(v.__struct_config__.tag): v for v in union.variants}
        if tag in known:
            assert isinstance(got, known[tag])
        else:
            assert isinstance(got, union.unknown) and got.data == value


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


@settings(max_examples=150, deadline=None)
@given(events=st.lists(st.tuples(fuzzed_events, TYPES | st.just("message")), min_size=1, max_size=4))
def test_arbitrary_events_decode_or_raise_and_never_break_the_aggregate(
    events: list[tuple[Any, str]],
) -> None:
    acc = ResponseAccumulator()
    for data, event in events:
        item = decode_or_reject(json.dumps(data).encode(), event)
        check_open_union(data, item)
        if item is not None:
            RESPONSES.flags(item)
            RESPONSES.text(item)
            if RESPONSES.flags(item) & ERROR:
                assert isinstance(RESPONSES.error(item), StreamAPIError)
            acc.add(item)
            acc.snapshot.to_dict()
    acc.final().output_text  # noqa: B018 (it must not raise)


# The stream's rules

TOKEN_DELTAS = {
    "response.output_text.delta",
    "response.refusal.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
    "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta",
    "response.mcp_call_arguments.delta",
    "response.code_interpreter_call_code.delta",
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_flags(name: str) -> None:
    expected = {
        "response.completed": END,
        "response.incomplete": END,
        "response.failed": ERROR,
        "error": ERROR,
    }
    event = decoded({"type": name, **SAMPLES.get(name, {})})
    if name in TOKEN_DELTAS:
        assert RESPONSES.flags(decoded({"type": name, "delta": "x"})) == TOKEN
        assert RESPONSES.flags(decoded({"type": name, "delta": ""})) == 0
    elif name == "response.output_item.added":
        # A call's announcement carries its name, as chat's first tool-call chunk does: a token.
        call = {"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f", "arguments": ""}
        assert RESPONSES.flags(decoded({"type": name, "output_index": 0, "item": call})) == TOKEN
        message = {"type": "message", "id": "m", "role": "assistant", "content": []}
        assert RESPONSES.flags(decoded({"type": name, "output_index": 0, "item": message})) == 0
    else:
        assert RESPONSES.flags(event) == expected.get(name, 0)
    text = RESPONSES.text(decoded({"type": name, "delta": "x"}))
    assert text == ("x" if name == "response.output_text.delta" else None)


def test_error_of_each_error_event() -> None:
    flat = decoded({"type": "error", "code": "server_error", "message": "boom", "param": "input"})
    error = RESPONSES.error(flat)
    assert isinstance(error, StreamAPIError) and isinstance(error, streamkit.StreamkitError)
    assert (error.message, error.code, error.param) == ("boom", "server_error", "input")
    assert "boom" in error.raw and error.request_id is None  # flat by design, and OpenAI's names no request
    bare = RESPONSES.error(decoded({"type": "response.failed", "response": {"status": "failed"}}))
    assert bare.message and bare.code is None
