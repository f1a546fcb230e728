"""`client.messages.create` through each transport: against the built-in server (its events, its final, its
metrics, its tools and every fault in the Messages form), a `Conversation` over Messages, and fed exact bytes
by `MockTransport` (the headers, keys and URLs of each provider)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

import streamkit
from streamkit.protocols import messages as m
from streamkit.server import ServerThread
from streamkit.server.apis.messages import MESSAGES as SERVER
from streamkit.server.scripted import tokens_for
from streamkit.transports.base import Request
from streamkit.transports.mock import MockResponse, MockTransport
from tests.client.conftest import HI, fault, timing

pytestmark = pytest.mark.anyio

PROMPT = [{"role": "user", "content": "Tell me a story."}]
# Every call gets bounds, so that no test can hang whatever the server does.
SAFE = streamkit.Timeout(connect=5.0, idle=10.0, total=30.0)
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "The weather forecast for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"enum": ["c", "f"]},
        },
        "required": ["city", "days", "unit"],
    },
}
CLOCK: dict[str, Any] = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
# What the server sends for a 16-token answer, less its ping (skipped).
TEXT_EVENTS = [
    "message_start",
    "content_block_start",
    *["content_block_delta"] * 16,
    "content_block_stop",
    "message_delta",
    "message_stop",
]
# The server's frames are these with a ping after message_start: a fault "after K events" counts it.
SENT_BEFORE = {k: k - 1 if k > 1 else k for k in range(30)}


async def stream_of(
    client: streamkit.AsyncClient, headers: dict[str, str] | None = None, **params: Any
) -> streamkit.MessageStream:
    params.setdefault("timeout", SAFE)
    return await client.messages.create(
        model="scripted",
        messages=params.pop("messages", PROMPT),
        max_tokens=params.pop("max_tokens", 256),
        stream=True,
        extra_headers=headers or {},
        **params,
    )


async def whole_of(
    client: streamkit.AsyncClient, headers: dict[str, str] | None = None, **params: Any
) -> streamkit.Message:
    params.setdefault("timeout", SAFE)
    whole: streamkit.Message = await client.messages.create(
        model="scripted",
        messages=params.pop("messages", PROMPT),
        max_tokens=params.pop("max_tokens", 256),
        extra_headers=headers or {},
        **params,
    )
    return whole


def without_ids(message: streamkit.Message) -> dict[str, Any]:
    """A message as JSON, less what each answer draws anew: its id, its tool ids, its thinking signature."""
    data = message.to_dict()
    data.pop("id", None)
    for block in data["content"]:
        block.pop("id", None)
        block.pop("signature", None)
    return data


def deltas_of(events: list[streamkit.MessageEvent]) -> list[m.Delta]:
    return [e.delta for e in events if isinstance(e, m.ContentBlockDeltaEvent) and e.delta is not None]


def text_of(events: list[streamkit.MessageEvent]) -> str:
    return "".join(d.text for d in deltas_of(events) if isinstance(d, m.TextDelta))


E = TypeVar("E", bound=streamkit.StreamkitError)


async def events_before(
    stream: streamkit.MessageStream, error: type[E]
) -> tuple[list[streamkit.MessageEvent], E]:
    """The events a stream yields before it raises `error`, and the error."""
    events: list[streamkit.MessageEvent] = []
    with pytest.raises(error) as caught:
        async for event in stream:
            events.append(event)  # noqa: PERF401 (the events before the error are the point)
    return events, caught.value


def partial_of(error: streamkit.StreamkitError) -> streamkit.Message:
    assert isinstance(error.partial, streamkit.Message)
    return error.partial


# A normal stream


async def test_a_text_stream_yields_typed_events_in_order(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, extra_body={"seed": 3})
    async with stream:
        events = [event async for event in stream]
    assert [event.type for event in events] == TEXT_EVENTS
    kinds = [m.MessageStartEvent, m.ContentBlockStartEvent, *[m.ContentBlockDeltaEvent] * 16]
    assert [type(event) for event in events[:18]] == kinds
    assert [type(event) for event in events[18:]] == [
        m.ContentBlockStopEvent,
        m.MessageDeltaEvent,
        m.MessageStopEvent,
    ]
    assert all(isinstance(d, m.TextDelta) for d in deltas_of(events))
    final = await stream.get_final_message()
    assert isinstance(final, streamkit.Message)
    assert final.text == text_of(events) == "".join(tokens_for(3000, 16))
    assert (final.stop_reason, final.stop_sequence, final.model, final.role) == (
        "end_turn",
        None,
        "scripted",
        "assistant",
    )
    assert final.id == events[0].message.id  # type: ignore[union-attr]
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (4, 16)
    assert stream.completed and stream.is_finished()


async def test_text_deltas_join_to_the_text(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, timing("tokens=24"), extra_body={"seed": 4})
    texts = [text async for text in stream.text_deltas()]
    final = await stream.get_final_message()
    assert len(texts) == 24 and "".join(texts) == final.text == "".join(tokens_for(4000, 24))


async def test_ttft_is_taken_at_the_first_text_delta(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, timing("ttft=0.02,itl=0.002,tokens=6"))
    events = [event async for event in stream]
    metrics = stream.metrics
    deltas = [i for i, event in enumerate(events) if isinstance(event, m.ContentBlockDeltaEvent)]
    assert len(deltas) == 6 and len(metrics.token_arrivals) == len(deltas)
    assert metrics.token_arrivals == [metrics.arrivals[i] for i in deltas]
    assert metrics.first_token == metrics.arrivals[deltas[0]] >= metrics.arrivals[0]
    assert metrics.ttft == metrics.token_arrivals[0] - metrics.request_sent
    # True however busy the machine: the server sleeps 20 ms before the first delta.
    assert metrics.ttft >= 0.02
    assert len(metrics.itl) == 5 and metrics.completion_tokens == 6 and metrics.prompt_tokens == 4
    assert metrics.arrivals == sorted(metrics.arrivals) and metrics.chunks == len(events)


async def test_ttft_is_taken_at_the_first_thinking_delta(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, timing("tokens=6"), thinking={"type": "enabled", "budget_tokens": 1024})
    events = [event async for event in stream]
    metrics = stream.metrics
    kinds = [type(d) for d in deltas_of(events)]
    assert kinds == [m.ThinkingDelta] * 4 + [m.SignatureDelta] + [m.TextDelta] * 6
    tokens = [
        i
        for i, e in enumerate(events)
        if isinstance(e, m.ContentBlockDeltaEvent) and not isinstance(e.delta, m.SignatureDelta)
    ]
    assert metrics.token_arrivals == [metrics.arrivals[i] for i in tokens]  # the signature carries none
    assert metrics.first_token == metrics.arrivals[2]  # message_start, the thinking block's start, its delta
    final = await stream.get_final_message()
    thinking, answer = final.content
    assert isinstance(thinking, m.ThinkingBlock) and thinking.signature and thinking.thinking
    assert isinstance(answer, m.TextBlock) and answer.text == final.text
    assert final.usage is not None and final.usage.output_tokens == 6 + 4


async def test_max_tokens_ends_with_stop_reason_max_tokens(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, timing("tokens=40"), max_tokens=16, extra_body={"seed": 2})
    events = [event async for event in stream]
    final = await stream.get_final_message()
    assert events[-1].type == "message_stop" and stream.completed
    assert (final.stop_reason, final.stop_sequence) == ("max_tokens", None)
    assert final.text == "".join(tokens_for(2000, 16))
    assert final.usage is not None and final.usage.output_tokens == 16


async def test_stop_sequences_end_with_stop_reason_stop_sequence(client: streamkit.AsyncClient) -> None:
    text = "".join(tokens_for(2000, 16))
    stop = text.split()[3]
    stream = await stream_of(client, stop_sequences=["never-there", stop], extra_body={"seed": 2})
    final = await stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)
    assert final.text == text[: text.index(stop)]


@pytest.mark.parametrize(
    "choice", [{"type": "any"}, {"type": "tool", "name": "get_weather"}], ids=["any", "named"]
)
async def test_a_forced_tool(client: streamkit.AsyncClient, choice: dict[str, Any]) -> None:
    tools = [WEATHER] if choice["type"] == "any" else [CLOCK, WEATHER]
    stream = await stream_of(client, tools=tools, tool_choice=choice)
    events = [event async for event in stream]
    final = await stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.text == ""
    (tool,) = final.content
    assert isinstance(tool, m.ToolUseBlock)
    assert tool.name == "get_weather" and tool.id and tool.id.startswith("toolu_")
    assert isinstance(tool.input, dict) and set(tool.input) == set(WEATHER["input_schema"]["required"])
    assert isinstance(tool.input["city"], str) and isinstance(tool.input["days"], int)
    assert tool.input["unit"] in ("c", "f")
    fragments = [d.partial_json for d in deltas_of(events) if isinstance(d, m.InputJSONDelta)]
    assert len(fragments) > 2 and json.loads("".join(fragments)) == tool.input
    # The block's start names the tool (a token, as chat's first tool-call chunk); the empty fragment: none.
    assert len(stream.metrics.token_arrivals) == 1 + len([f for f in fragments if f])
    first = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, m.ContentBlockStartEvent) and isinstance(e.content_block, m.ToolUseBlock)
    )
    assert stream.metrics.first_token == stream.metrics.arrivals[first]  # ttft: the tool's name
    assert text_of(events) == "" and [t async for t in stream.text_deltas()] == []


async def test_tool_choice_none_answers_with_text(client: streamkit.AsyncClient) -> None:
    final = await (await stream_of(client, tools=[WEATHER], tool_choice={"type": "none"})).get_final_message()
    assert final.stop_reason == "end_turn" and [b.type for b in final.content] == ["text"]


# Requests

OPTIONS = {"extra_body", "extra_headers", "extra_query", "timeout"}
ALL_PARAMS: dict[str, Any] = {
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "stop_sequences": ["END"],
    "temperature": 0.5,
    "top_k": 40,
    "top_p": 0.9,
    "tools": [WEATHER],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "service_tier": "standard_only",
    "container": "container_011CPR5CNjB747bTd36fQLFk",
    "mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse", "name": "example"}],
}


def test_all_params_name_every_parameter() -> None:
    assert set(ALL_PARAMS) | {"metadata"} == set(streamkit.MessageParams.__optional_keys__) - OPTIONS


async def test_every_parameter_reaches_the_server(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    user = uuid.uuid4().hex
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    stream = await stream_of(
        client,
        messages=messages,
        max_tokens=100,
        metadata={"user_id": user},
        extra_body={"seed": 5},
        extra_query={"beta": "true"},
        **ALL_PARAMS,
    )
    await stream.get_final_message()
    (body,) = [b for b in streamkit_server.stats.bodies if b.get("metadata") == {"user_id": user}]
    assert body == {
        "model": "scripted",
        "messages": messages,
        "max_tokens": 100,
        "stream": True,
        **ALL_PARAMS,
        "metadata": {"user_id": user},
        "seed": 5,
    }


async def test_none_leaves_a_parameter_out(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    user = uuid.uuid4().hex
    await whole_of(client, metadata={"user_id": user}, system=None, temperature=None, tools=None, top_k=None)
    (body,) = [b for b in streamkit_server.stats.bodies if b.get("metadata") == {"user_id": user}]
    assert body == {
        "model": "scripted",
        "messages": PROMPT,
        "max_tokens": 256,
        "stream": False,
        "metadata": {"user_id": user},
    }


async def test_validation_errors_come_as_bad_request_errors(client: streamkit.AsyncClient) -> None:
    with pytest.raises(streamkit.BadRequestError) as caught:
        await stream_of(client, max_tokens=0)
    error = caught.value
    assert (error.status_code, error.type) == (400, "invalid_request_error")
    assert error.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": error.message},
    }
    assert "max_tokens" in error.message
    with pytest.raises(streamkit.BadRequestError) as bad_role:
        await stream_of(client, messages=[{"role": "system", "content": "hi"}])
    assert "messages.0.role" in bad_role.value.message
    with pytest.raises(streamkit.NotFoundError) as missing:
        await client.messages.create(model="nope", messages=PROMPT, max_tokens=8, stream=True, timeout=SAFE)
    assert missing.value.type == "not_found_error"


# Faults, in the Messages form


async def test_an_overloaded_error_event_raises_after_the_events_before_it(
    client: streamkit.AsyncClient,
) -> None:
    stream = await stream_of(client, fault("error=event,error_after=6"), extra_body={"seed": 7})
    events, error = await events_before(stream, streamkit.StreamAPIError)
    assert [e.type for e in events] == TEXT_EVENTS[: SENT_BEFORE[6]]
    assert (error.message, error.type, error.code) == ("Overloaded", "overloaded_error", None)
    assert error.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert json.loads(error.raw) == error.body
    partial = partial_of(error)
    assert partial.text == text_of(events) == "".join(tokens_for(7000, 3))
    assert partial.stop_reason is None and partial.usage is not None and partial.usage.input_tokens == 4
    with pytest.raises(streamkit.StreamAPIError) as again:
        await stream.get_final_message()
    assert again.value is error
    assert not stream.completed


async def test_an_error_event_before_any_token_is_not_retried(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    key = uuid.uuid4().hex
    stream = await stream_of(client, fault("error=event,error_after=1"), metadata={"user_id": key})
    events, error = await events_before(stream, streamkit.StreamAPIError)
    assert [e.type for e in events] == ["message_start"] and error.type == "overloaded_error"
    assert stream.metrics.attempts == 1
    assert len([b for b in streamkit_server.stats.bodies if b.get("metadata") == {"user_id": key}]) == 1


async def test_no_message_stop_after_a_stop_reason_ends_normally(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, fault("no_done"), extra_body={"seed": 6})
    events = [event async for event in stream]
    assert [e.type for e in events] == TEXT_EVENTS[:-1]
    final = await stream.get_final_message()
    assert stream.completed and final.stop_reason == "end_turn"
    assert final.text == "".join(tokens_for(6000, 16))


@pytest.mark.parametrize("k", [0, 1, 4, 20])
async def test_a_body_cut_before_the_stop_reason_is_incomplete(client: streamkit.AsyncClient, k: int) -> None:
    stream = await stream_of(client, fault(f"truncate={k}"))
    events, error = await events_before(stream, streamkit.IncompleteStreamError)
    assert [e.type for e in events] == TEXT_EVENTS[: SENT_BEFORE[k]]
    partial = partial_of(error)
    assert partial.text == text_of(events) and partial.stop_reason is None
    assert partial.id == (events[0].message.id if events else None)  # type: ignore[union-attr]
    with pytest.raises(streamkit.IncompleteStreamError) as again:
        await stream.get_final_message()
    assert again.value is error


async def test_a_dropped_connection_raises_read_error(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, fault("drop=8"))
    events, error = await events_before(stream, streamkit.ReadError)
    assert len(events) == SENT_BEFORE[8]
    assert partial_of(error).text == text_of(events)
    with pytest.raises(streamkit.ReadError) as again:
        await stream.get_final_message()
    assert again.value is error


async def test_malformed_data_raises_chunk_decode_error(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, fault("malformed=5"))
    events, error = await events_before(stream, streamkit.ChunkDecodeError)
    assert len(events) == SENT_BEFORE[5] and isinstance(error, ValueError)
    assert error.raw == SERVER.malformed.decode()
    assert partial_of(error).text == text_of(events)
    with pytest.raises(streamkit.ChunkDecodeError) as again:
        await stream.get_final_message()
    assert again.value is error


async def test_overloaded_529_is_retried_then_served(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    key = uuid.uuid4().hex
    stream = await stream_of(client, fault(f"status=529:1,retry_after=0,key={key}"))
    assert (await stream.get_final_message()).stop_reason == "end_turn"
    assert streamkit_server.stats.attempts[key] == 2 and stream.metrics.attempts == 2
    whole = await whole_of(client, fault(f"status=529,fail_times=1,retry_after_ms=1,key={key}-whole"))
    assert whole.stop_reason == "end_turn" and streamkit_server.stats.attempts[f"{key}-whole"] == 2


async def test_retry_after_is_honoured(client: streamkit.AsyncClient, streamkit_server: ServerThread) -> None:
    key = uuid.uuid4().hex
    stream = await stream_of(client, fault(f"status=429:1,retry_after=0.2,key={key}"))
    await stream.get_final_message()
    metrics = stream.metrics
    assert metrics.attempts == 2 and metrics.request_sent - metrics.call_started >= 0.2
    # A wait longer than the client will sleep: the error at once, not retried.
    with pytest.raises(streamkit.RateLimitError) as caught:
        await stream_of(client, fault(f"status=429,retry_after=120,key={key}-long"))
    assert streamkit_server.stats.attempts[f"{key}-long"] == 1
    assert caught.value.headers["retry-after"] == "120" and caught.value.type == "rate_limit_error"


async def test_overloaded_errors_have_anthropic_fields(client: streamkit.AsyncClient) -> None:
    key = uuid.uuid4().hex
    with pytest.raises(streamkit.InternalServerError) as caught:
        await stream_of(client, fault(f"status=529,retry_after=0,fail_times=9,key={key}"))
    error = caught.value
    assert (error.status_code, error.type, error.message) == (529, "overloaded_error", "Overloaded")
    assert error.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert error.partial is None


async def test_an_html_page_raises_unexpected_content_type(client: streamkit.AsyncClient) -> None:
    with pytest.raises(streamkit.UnexpectedContentType) as caught:
        await stream_of(client, fault("html"))
    assert caught.value.content_type.startswith("text/html") and "502 Bad Gateway" in caught.value.raw


async def test_a_stall_before_the_first_token_raises_first_token_timeout(
    client: streamkit.AsyncClient,
) -> None:
    stream = await stream_of(
        client,
        fault("stall=3:2,keepalive=0.02"),
        timeout=streamkit.Timeout(first_token=0.3, idle=10, total=30),
    )
    events, error = await events_before(stream, streamkit.FirstTokenTimeout)
    assert [e.type for e in events] == TEXT_EVENTS[:2]
    assert isinstance(error, TimeoutError)
    partial = partial_of(error)
    assert partial.text == "" and [b.type for b in partial.content] == ["text"]
    with pytest.raises(streamkit.FirstTokenTimeout) as again:
        await stream.get_final_message()
    assert again.value is error


async def test_a_stall_mid_stream_raises_idle_timeout(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, fault("stall=7:2"), timeout=streamkit.Timeout(idle=0.3, total=30))
    events, error = await events_before(stream, streamkit.IdleTimeout)
    assert len(events) == SENT_BEFORE[7] and isinstance(error, TimeoutError)
    assert partial_of(error).text == text_of(events)
    with pytest.raises(streamkit.IdleTimeout) as again:
        await stream.get_final_message()
    assert again.value is error


@pytest.mark.parametrize(
    "spec",
    [
        "framing=crlf",
        "framing=cr",
        "bom",
        "split=3",
        "ping=0.005,stall=4:0.05",
        "keepalive=0.005,stall=3:0.05",
    ],
)
async def test_framing_faults_give_the_same_final(client: streamkit.AsyncClient, spec: str) -> None:
    whole = await whole_of(client, extra_body={"seed": 8}, tools=[WEATHER], thinking={"type": "enabled"})
    stream = await stream_of(
        client, fault(spec), extra_body={"seed": 8}, tools=[WEATHER], thinking={"type": "enabled"}
    )
    assert without_ids(await stream.get_final_message()) == without_ids(whole)


# A conversation over Messages


async def final_of(stream: streamkit.Stream[Any, Any]) -> streamkit.Message:
    assert isinstance(stream, streamkit.MessageStream)
    return await stream.get_final_message()


async def test_a_conversation_keeps_its_history(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    user = uuid.uuid4().hex
    conversation = streamkit.Conversation(
        client,
        model="scripted",
        system="Be brief.",
        api="messages",
        max_tokens=64,
        metadata={"user_id": user},
        timeout=SAFE,
    )
    assert conversation.messages == []  # the system prompt goes with each request, not in the history
    first = await conversation.send("What is TLS?")
    assert isinstance(first, streamkit.MessageStream)
    answer = await first.get_final_message()
    assert conversation.messages == [
        {"role": "user", "content": "What is TLS?"},
        {"role": "assistant", "content": [{"type": "text", "text": answer.text}]},
    ]
    second = await conversation.send("And mTLS?", temperature=0.5)
    async with second:
        texts = [text async for text in second.text_deltas()]
    assert [turn["role"] for turn in conversation.messages] == ["user", "assistant", "user", "assistant"]
    assert conversation.messages[-1]["content"] == [{"type": "text", "text": "".join(texts)}]
    bodies = [b for b in streamkit_server.stats.bodies if b.get("metadata") == {"user_id": user}]
    assert [b["messages"] for b in bodies] == [conversation.messages[:1], conversation.messages[:3]]
    for body in bodies:
        assert body["system"] == "Be brief." and body["max_tokens"] == 64 and body["stream"] is True
        assert all(turn["role"] != "system" for turn in body["messages"])
    assert bodies[1]["temperature"] == 0.5 and "temperature" not in bodies[0]
    conversation.reset()
    assert conversation.messages == []


async def test_a_failed_turn_leaves_the_history_as_it_was(client: streamkit.AsyncClient) -> None:
    conversation = streamkit.Conversation(client, model="scripted", api="messages", timeout=SAFE)
    await final_of(await conversation.send("Hi"))
    history = list(conversation.messages)
    stream = await conversation.send("Again", extra_headers=fault("error=event,error_after=4"))
    with pytest.raises(streamkit.StreamAPIError):
        await final_of(stream)
    assert conversation.messages == history


async def test_a_conversation_turn_with_a_tool_call_and_its_result(client: streamkit.AsyncClient) -> None:
    conversation = streamkit.Conversation(
        client, model="scripted", api="messages", tools=[WEATHER], tool_choice={"type": "any"}, timeout=SAFE
    )
    final = await final_of(await conversation.send("Weather in Paris?"))
    (tool,) = final.content
    assert isinstance(tool, m.ToolUseBlock) and isinstance(tool.input, dict)
    assert conversation.messages[-1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": tool.id, "name": "get_weather", "input": tool.input}],
    }
    result = {"type": "tool_result", "tool_use_id": tool.id, "content": "Sunny"}
    stream = await conversation.send({"role": "user", "content": [result]}, tool_choice={"type": "none"})
    assert (await final_of(stream)).stop_reason == "end_turn"
    assert conversation.messages[2] == {"role": "user", "content": [result]}


# Headers, keys and URLs, through MockTransport

CANNED_EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {"id": "msg_1", "usage": {"input_tokens": 2, "output_tokens": 1}},
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
    {"type": "message_stop"},
]
CANNED = b"".join(
    b"event: " + e["type"].encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n" for e in CANNED_EVENTS
)
WHOLE = json.dumps({"id": "msg_1", "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn"})
CHAT = (
    b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
RESPONSE = (
    b"event: response.completed\n"
    b'data: {"type":"response.completed","response":{"id":"r","status":"completed"}}\n\n'
)
ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")


def answer(request: Request) -> MockResponse:
    if not request.stream:
        return MockResponse(200, WHOLE.encode(), {"content-type": "application/json"})
    if request.url.split("?")[0].endswith("/messages"):
        return MockResponse(200, CANNED)
    return MockResponse(200, RESPONSE if "/responses" in request.url else CHAT)


def recording(
    monkeypatch: pytest.MonkeyPatch, handler: Callable[[Request], MockResponse] = answer, **env: str
) -> MockTransport:
    """A transport that answers every API (or as `handler` says), with the environment set to `env` alone."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return MockTransport(handler)


async def call_every_api(client: streamkit.AsyncClient) -> None:
    async with client:
        await (
            await client.messages.create(model="m", messages=HI, max_tokens=8, stream=True)
        ).get_final_message()
        await client.messages.create(model="m", messages=HI, max_tokens=8)
        await (
            await client.chat.completions.create(model="m", messages=HI, stream=True)
        ).get_final_completion()
        await (await client.responses.create(model="m", input="hi", stream=True)).get_final_response()


def sent(transport: MockTransport, path: str) -> list[Request]:
    return [r for r in transport.requests if r.url.split("?")[0].endswith(path)]


def secrets_in(request: Request) -> str:
    return request.url + " " + " ".join(f"{k}: {v}" for k, v in request.headers.items())


async def test_messages_send_x_api_key_and_anthropic_version(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = recording(monkeypatch)
    client = streamkit.AsyncClient(api_key="sk-ant-given", base_url="http://api.test/v1", transport=transport)
    await call_every_api(client)
    for request in sent(transport, "/messages"):
        assert request.url == "http://api.test/v1/messages"
        assert request.headers["x-api-key"] == "sk-ant-given"
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert "Authorization" not in request.headers and "authorization" not in request.headers
        assert request.headers["Content-Type"] == "application/json"
    stream, whole = sent(transport, "/messages")
    assert stream.headers["Accept"] == "text/event-stream" and "Accept" not in whole.headers
    assert json.loads(stream.content) == {"model": "m", "messages": HI, "max_tokens": 8, "stream": True}
    # The OpenAI dialects get the same key (given to the client, it serves every API) as a Bearer token.
    (chat,) = sent(transport, "/chat/completions")
    assert chat.headers["Authorization"] == "Bearer sk-ant-given" and "x-api-key" not in chat.headers


async def test_extra_headers_and_query_reach_a_messages_request(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = recording(monkeypatch)
    async with streamkit.AsyncClient(base_url="http://api.test/v1", transport=transport) as client:
        stream = await client.messages.create(
            model="m",
            messages=HI,
            max_tokens=8,
            stream=True,
            extra_headers={"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"},
            extra_query={"beta": "true"},
        )
        await stream.get_final_message()
    (request,) = transport.requests
    assert request.url == "http://api.test/v1/messages?beta=true"
    assert request.headers["anthropic-beta"] == "fine-grained-tool-streaming-2025-05-14"
    assert "x-api-key" not in request.headers  # no key anywhere: none sent


async def test_an_openai_key_from_the_environment_never_reaches_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "sk-openai-" + uuid.uuid4().hex
    transport = recording(monkeypatch, OPENAI_API_KEY=secret)
    await call_every_api(streamkit.AsyncClient(transport=transport))
    for request in sent(transport, "/messages"):
        assert request.url == "https://api.anthropic.com/v1/messages"
        assert secret not in secrets_in(request)
        assert "x-api-key" not in request.headers and "Authorization" not in request.headers
    (chat,) = sent(transport, "/chat/completions")
    assert chat.url == "https://api.openai.com/v1/chat/completions"
    assert chat.headers["Authorization"] == f"Bearer {secret}"
    # Not with a base URL given to the client either (a local server that serves every API).
    local = recording(monkeypatch, OPENAI_API_KEY=secret)
    await call_every_api(streamkit.AsyncClient(base_url="http://local.test/v1", transport=local))
    for request in sent(local, "/messages"):
        assert request.url == "http://local.test/v1/messages" and secret not in secrets_in(request)


async def test_an_anthropic_key_from_the_environment_never_reaches_openai(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "sk-ant-" + uuid.uuid4().hex
    transport = recording(monkeypatch, ANTHROPIC_API_KEY=secret)
    await call_every_api(streamkit.AsyncClient(transport=transport))
    for path in ("/chat/completions", "/responses"):
        (request,) = sent(transport, path)
        assert request.url == f"https://api.openai.com/v1{path}"
        assert secret not in secrets_in(request)
        assert "Authorization" not in request.headers and "x-api-key" not in request.headers
    for request in sent(transport, "/messages"):
        assert request.headers["x-api-key"] == secret
    local = recording(monkeypatch, ANTHROPIC_API_KEY=secret)
    await call_every_api(streamkit.AsyncClient(base_url="http://local.test/v1", transport=local))
    assert all(secret not in secrets_in(r) for r in local.requests if not r.url.endswith("/messages"))


async def test_each_provider_takes_its_own_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = recording(monkeypatch, OPENAI_API_KEY="sk-o", ANTHROPIC_API_KEY="sk-a")
    await call_every_api(streamkit.AsyncClient(transport=transport))
    assert {r.headers["x-api-key"] for r in sent(transport, "/messages")} == {"sk-a"}
    assert {r.headers["Authorization"] for r in transport.requests if "x-api-key" not in r.headers} == {
        "Bearer sk-o"
    }


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ANTHROPIC_BASE_URL": "http://proxy.test/anthropic"}, "http://proxy.test/anthropic/v1/messages"),
        ({"ANTHROPIC_BASE_URL": "http://proxy.test/"}, "http://proxy.test/v1/messages"),
        ({"OPENAI_BASE_URL": "http://openai.test/v1"}, "https://api.anthropic.com/v1/messages"),
        ({}, "https://api.anthropic.com/v1/messages"),
    ],
)
async def test_the_anthropic_base_url_comes_from_its_own_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    transport = recording(monkeypatch, answer, **env)
    await call_every_api(streamkit.AsyncClient(transport=transport))
    assert {r.url for r in sent(transport, "/messages")} == {expected}
    (chat,) = sent(transport, "/chat/completions")
    assert chat.url == env.get("OPENAI_BASE_URL", "https://api.openai.com/v1") + "/chat/completions"


async def test_a_base_url_given_to_the_client_serves_every_api(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = recording(
        monkeypatch, ANTHROPIC_BASE_URL="http://proxy.test", OPENAI_BASE_URL="http://openai.test/v1"
    )
    await call_every_api(streamkit.AsyncClient(base_url="http://local.test/v1/", transport=transport))
    assert [r.url for r in transport.requests] == [
        "http://local.test/v1/messages",
        "http://local.test/v1/messages",
        "http://local.test/v1/chat/completions",
        "http://local.test/v1/responses",
    ]


async def test_the_key_is_never_in_a_repr_or_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-ant-" + uuid.uuid4().hex
    echo = json.dumps(
        {
            "type": "error",
            "error": {"type": "authentication_error", "message": f"invalid x-api-key: {secret}"},
        }
    )
    transport = recording(
        monkeypatch,
        lambda request: MockResponse(401, echo.encode(), {"content-type": "application/json"}),
        ANTHROPIC_API_KEY=secret,
    )
    client = streamkit.AsyncClient(transport=transport)
    assert secret not in repr(client)
    with pytest.raises(streamkit.AuthenticationError) as caught:
        await client.messages.create(model="m", messages=HI, max_tokens=8, stream=True)
    error = caught.value
    assert error.type == "authentication_error" and error.message == "invalid x-api-key: ***"
    assert secret not in str(error) + repr(error) + str(error.body)
    assert secret not in repr(transport.requests[0])


async def test_a_key_echoed_in_an_error_event_is_redacted_from_message_and_raw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "sk-ant-" + uuid.uuid4().hex
    error_event = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": f"bad key {secret}"},
    }
    body = CANNED[: CANNED.index(b"event: content_block_stop")] + (
        b"event: error\ndata: " + json.dumps(error_event).encode() + b"\n\n"
    )
    transport = recording(monkeypatch, lambda request: MockResponse(200, body))
    async with streamkit.AsyncClient(api_key=secret, transport=transport) as client:
        stream = await client.messages.create(model="m", messages=HI, max_tokens=8, stream=True)
        events, error = await events_before(stream, streamkit.StreamAPIError)
    assert len(events) == 3 and partial_of(error).text == "Hi"
    assert error.message == "bad key ***" and error.type == "invalid_request_error"
    assert secret not in str(error) + error.raw + repr(error)


async def test_a_key_echoed_in_an_error_event_is_not_in_its_body(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-ant-" + uuid.uuid4().hex
    error_event = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": f"bad key {secret}"},
    }
    body = b"event: error\ndata: " + json.dumps(error_event).encode() + b"\n\n"
    transport = recording(monkeypatch, lambda request: MockResponse(200, body))
    async with streamkit.AsyncClient(api_key=secret, transport=transport) as client:
        stream = await client.messages.create(model="m", messages=HI, max_tokens=8, stream=True)
        with pytest.raises(streamkit.StreamAPIError) as caught:
            await stream.get_final_message()
    assert secret not in str(caught.value.body)


# Other servers' shapes, as exact bytes


def mock(*pieces: bytes | BaseException, status: int = 200) -> tuple[streamkit.AsyncClient, MockTransport]:
    transport = MockTransport(lambda request: MockResponse(status, list(pieces)))
    return streamkit.AsyncClient(base_url="http://api.test/v1", transport=transport), transport


async def test_an_overloaded_529_before_the_first_byte_is_retried() -> None:
    overloaded = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    answers = [
        MockResponse(529, overloaded.encode(), {"content-type": "application/json", "retry-after": "0"}),
        MockResponse(200, CANNED),
    ]
    transport = MockTransport(lambda request: answers.pop(0))
    async with streamkit.AsyncClient(base_url="http://api.test/v1", transport=transport) as client:
        stream = await client.messages.create(model="m", messages=HI, max_tokens=8, stream=True)
        assert (await stream.get_final_message()).text == "Hi"
    assert len(transport.requests) == 2 and stream.metrics.attempts == 2


async def test_an_error_event_mid_stream_is_never_retried() -> None:
    error = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    client, transport = mock(CANNED[: CANNED.index(b"event: content_block_stop")], error)
    async with client:
        stream = await client.messages.create(model="m", messages=HI, max_tokens=8, stream=True)
        events, caught = await events_before(stream, streamkit.StreamAPIError)
    assert caught.type == "overloaded_error" and len(transport.requests) == 1
    assert [e.type for e in events] == [*TEXT_EVENTS[:2], "content_block_delta"]
    assert partial_of(caught).text == "Hi"


@pytest.mark.parametrize(
    "error",
    [
        b"event: error\ndata: Overloaded\n\n",
        b'data: {"error": {"type": "api_error", "message": "Overloaded"}}\n\n',
    ],
    ids=["plain-text-event", "data-only-chat-style"],
)
async def test_a_proxys_error_is_a_stream_api_error(error: bytes) -> None:
    client, _ = mock(CANNED[: CANNED.index(b"event: content_block_stop")], error)
    async with client:
        stream = await client.messages.create(model="m", messages=HI, max_tokens=8, stream=True)
        events, caught = await events_before(stream, streamkit.StreamAPIError)
    assert caught.message == "Overloaded" and len(events) == 3 and partial_of(caught).text == "Hi"


async def test_a_body_without_message_stop_or_stop_reason_is_incomplete() -> None:
    client, _ = mock(CANNED[: CANNED.index(b"event: message_delta")])
    async with client:
        stream = await client.messages.create(model="m", messages=HI, max_tokens=8, stream=True)
        events, error = await events_before(stream, streamkit.IncompleteStreamError)
    assert len(events) == 4 and partial_of(error).text == "Hi" and partial_of(error).stop_reason is None


async def test_nothing_after_message_stop_is_read() -> None:
    client, _ = mock(CANNED + b"data: [DONE]\n\ndata: {not json\n\n")
    async with client:
        stream = await client.messages.create(model="m", messages=HI, max_tokens=8, stream=True)
        events = [event async for event in stream]
        assert events[-1].type == "message_stop" and stream.completed
        assert (await stream.get_final_message()).text == "Hi"


async def test_an_unknown_event_is_yielded_and_changes_nothing() -> None:
    new = b'event: message_annotation\ndata: {"type":"message_annotation","note":"x"}\n\n'
    cut = CANNED.index(b"event: content_block_stop")
    client, _ = mock(CANNED[:cut] + new + CANNED[cut:])
    async with client:
        stream = await client.messages.create(model="m", messages=HI, max_tokens=8, stream=True)
        events = [event async for event in stream]
        assert isinstance(events[3], streamkit.UnknownEvent) and events[3].type == "message_annotation"
        assert (await stream.get_final_message()).text == "Hi"
        assert len(stream.metrics.token_arrivals) == 1
