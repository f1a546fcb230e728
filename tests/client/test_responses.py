"""`client.responses.create` through each transport: against the built-in server (its events, its final, its
metrics, its tools and every fault in the Responses form), and fed exact bytes by `MockTransport` (the
shapes of other servers)."""

from __future__ import annotations

import json
import uuid
from typing import Any, TypeVar

import pytest

import streamkit
from streamkit.protocols import responses as r
from streamkit.server import ServerThread
from streamkit.server.app import SERVER_ERROR
from streamkit.server.scripted import tokens_for
from streamkit.transports.mock import MockResponse, MockTransport
from tests.client.conftest import fault, timing

pytestmark = pytest.mark.anyio

INPUT = "Tell me a story."
# Every call gets bounds, so that no test can hang whatever the server does.
SAFE = streamkit.Timeout(connect=5.0, idle=10.0, total=30.0)
WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather forecast for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"enum": ["c", "f"]},
        },
        "required": ["city", "days", "unit"],
    },
}
CLOCK: dict[str, Any] = {
    "type": "function",
    "name": "get_time",
    "parameters": {"type": "object", "properties": {}},
}
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


async def stream_of(
    client: streamkit.AsyncClient, headers: dict[str, str] | None = None, **params: Any
) -> streamkit.ResponseStream:
    params.setdefault("timeout", SAFE)
    return await client.responses.create(
        model="scripted", input=params.pop("input", INPUT), stream=True, extra_headers=headers or {}, **params
    )


async def whole_of(
    client: streamkit.AsyncClient, headers: dict[str, str] | None = None, **params: Any
) -> streamkit.Response:
    params.setdefault("timeout", SAFE)
    whole: streamkit.Response = await client.responses.create(
        model="scripted", input=params.pop("input", INPUT), extra_headers=headers or {}, **params
    )
    return whole


def without_ids(response: streamkit.Response) -> dict[str, Any]:
    """A response as JSON, less what each response draws anew: its id, its time, its items' ids."""
    data = response.to_dict()
    data.pop("id", None)
    data.pop("created_at", None)
    for item in data["output"]:
        item.pop("id", None)
        item.pop("call_id", None)
    return data


E = TypeVar("E", bound=streamkit.StreamkitError)


async def events_before(
    stream: streamkit.ResponseStream, error: type[E]
) -> tuple[list[streamkit.ResponseEvent], E]:
    """The events a stream yields before it raises `error`, and the error."""
    events: list[streamkit.ResponseEvent] = []
    with pytest.raises(error) as caught:
        async for event in stream:
            events.append(event)  # noqa: PERF401 (the events before the error are the point)
    return events, caught.value


def partial_of(error: streamkit.StreamkitError) -> streamkit.Response:
    assert isinstance(error.partial, streamkit.Response)
    return error.partial


# A normal stream


async def test_a_text_stream_yields_typed_events_in_order(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, extra_body={"seed": 3})
    async with stream:
        events = [event async for event in stream]
    assert [event.type for event in events] == TEXT_EVENTS
    assert [getattr(event, "sequence_number", None) for event in events] == list(range(len(events)))
    kinds = [r.ResponseCreatedEvent, r.ResponseInProgressEvent, r.ResponseOutputItemAddedEvent]
    assert [type(event) for event in events[:3]] == kinds
    assert all(isinstance(event, r.ResponseTextDeltaEvent) for event in events[4:20])
    assert isinstance(events[-1], r.ResponseCompletedEvent)
    final = await stream.get_final_response()
    assert isinstance(final, streamkit.Response)
    assert final.status == "completed" and final.output_text == "".join(tokens_for(3000, 16))
    assert final.usage is not None and final.usage.output_tokens == 16
    assert final.model == "scripted" and final.id == events[0].response.id  # type: ignore[union-attr]
    assert stream.completed and stream.is_finished()


async def test_text_deltas_join_to_the_output_text(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, timing("tokens=24"), extra_body={"seed": 4})
    texts = [text async for text in stream.text_deltas()]
    final = await stream.get_final_response()
    assert len(texts) == 24 and "".join(texts) == final.output_text == "".join(tokens_for(4000, 24))


async def test_ttft_is_taken_at_the_first_text_delta(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, timing("ttft=0.02,itl=0.002,tokens=6"))
    events = [event async for event in stream]
    metrics = stream.metrics
    deltas = [i for i, event in enumerate(events) if isinstance(event, r.ResponseTextDeltaEvent)]
    assert len(deltas) == 6 and len(metrics.token_arrivals) == len(deltas)
    assert metrics.token_arrivals == [metrics.arrivals[i] for i in deltas]
    assert metrics.first_token == metrics.arrivals[deltas[0]] >= metrics.arrivals[0]
    assert metrics.ttft == metrics.token_arrivals[0] - metrics.request_sent
    # True however busy the machine: the server sleeps 20 ms before the first delta, and a stamp is never
    # taken before the bytes arrive.
    assert metrics.ttft >= 0.02
    assert len(metrics.itl) == 5 and metrics.completion_tokens == 6
    assert metrics.arrivals == sorted(metrics.arrivals) and metrics.chunks == len(events)


async def test_max_output_tokens_gives_an_incomplete_response(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, timing("tokens=40"), max_output_tokens=16, extra_body={"seed": 2})
    events = [event async for event in stream]
    final = await stream.get_final_response()
    assert events[-1].type == "response.incomplete" and stream.completed
    assert final.status == "incomplete"
    assert final.incomplete_details is not None and final.incomplete_details.reason == "max_output_tokens"
    assert final.output_text == "".join(tokens_for(2000, 16))
    assert final.usage is not None and final.usage.output_tokens == 16
    assert final.max_output_tokens == 16


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "name": "get_weather"}], ids=["required", "named"]
)
async def test_a_forced_function_tool(client: streamkit.AsyncClient, choice: Any) -> None:
    tools = [WEATHER] if choice == "required" else [CLOCK, WEATHER]
    stream = await stream_of(client, tools=tools, tool_choice=choice)
    events = [event async for event in stream]
    final = await stream.get_final_response()
    assert final.status == "completed" and final.output_text == ""
    (call,) = final.output
    assert isinstance(call, r.FunctionCallItem)
    assert call.name == "get_weather" and call.status == "completed" and call.call_id
    arguments = json.loads(call.arguments)
    assert set(arguments) == set(WEATHER["parameters"]["required"])
    assert isinstance(arguments["city"], str) and isinstance(arguments["days"], int)
    assert arguments["unit"] in ("c", "f")
    deltas = [e.delta for e in events if isinstance(e, r.ResponseFunctionCallArgumentsDeltaEvent)]
    assert len(deltas) > 1 and "".join(deltas) == call.arguments
    # The call's announcement names it (a token, as chat's first tool-call chunk), then argument deltas.
    assert len(stream.metrics.token_arrivals) == 1 + len(deltas)


# Requests

OPTIONS = {"extra_body", "extra_headers", "extra_query", "timeout"}
ALL_PARAMS: dict[str, Any] = {
    "instructions": "Be brief.",
    "tools": [WEATHER],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "max_output_tokens": 64,
    "max_tool_calls": 3,
    "temperature": 0.5,
    "top_p": 0.9,
    "top_logprobs": 2,
    "reasoning": {"effort": "low", "summary": "auto"},
    "text": {"format": {"type": "text"}, "verbosity": "low"},
    "include": ["message.output_text.logprobs"],
    "previous_response_id": "resp_previous",
    "conversation": "conv_1",
    "prompt": {"id": "pmpt_1", "variables": {"city": "Paris"}},
    "prompt_cache_key": "cache-key",
    "safety_identifier": "user-hash",
    "store": False,
    "background": False,
    "metadata": {"purpose": "test"},
    "truncation": "auto",
    "service_tier": "auto",
    "stream_options": {"include_obfuscation": False},
}


def test_all_params_name_every_parameter() -> None:
    assert set(ALL_PARAMS) | {"user"} == set(streamkit.ResponseParams.__optional_keys__) - OPTIONS


async def test_every_parameter_reaches_the_server(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    user = uuid.uuid4().hex
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]
    stream = await stream_of(
        client, input=items, user=user, extra_body={"seed": 5}, extra_query={"api-version": "1"}, **ALL_PARAMS
    )
    await stream.get_final_response()
    (body,) = [b for b in streamkit_server.stats.bodies if b.get("user") == user]
    assert body == {
        "model": "scripted",
        "input": items,
        "stream": True,
        **ALL_PARAMS,
        "user": user,
        "seed": 5,
    }


async def test_none_leaves_a_parameter_out(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    user = uuid.uuid4().hex
    await whole_of(client, user=user, instructions=None, temperature=None, tools=None)
    (body,) = [b for b in streamkit_server.stats.bodies if b.get("user") == user]
    assert body == {"model": "scripted", "input": INPUT, "stream": False, "user": user}


async def test_validation_errors_come_as_bad_request_errors(client: streamkit.AsyncClient) -> None:
    with pytest.raises(streamkit.BadRequestError) as caught:
        await stream_of(client, max_output_tokens=8)
    error = caught.value
    assert (error.status_code, error.param, error.code) == (
        400,
        "max_output_tokens",
        "integer_below_min_value",
    )
    with pytest.raises(streamkit.NotFoundError):
        await client.responses.create(model="nope", input=INPUT, stream=True, timeout=SAFE)


# Faults, in the Responses form


async def test_an_error_event_raises_after_the_events_before_it(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, fault("error=event,error_after=6"))
    events, error = await events_before(stream, streamkit.StreamAPIError)
    assert [e.type for e in events] == TEXT_EVENTS[:6]
    assert (error.message, error.code, error.type) == (SERVER_ERROR["message"], "server_error", "error")
    assert str(SERVER_ERROR["message"]) in error.raw
    partial = partial_of(error)
    assert partial.status == "in_progress"
    assert partial.output_text == "".join(e.delta for e in events if isinstance(e, r.ResponseTextDeltaEvent))
    assert partial.error is not None and partial.error.code == "server_error"
    with pytest.raises(streamkit.StreamAPIError) as again:
        await stream.get_final_response()
    assert again.value is error
    assert not stream.completed


async def test_response_failed_raises_with_a_failed_partial(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, fault("error=failed,error_after=7"))
    events, error = await events_before(stream, streamkit.StreamAPIError)
    assert len(events) == 7
    assert (error.message, error.code) == (SERVER_ERROR["message"], "server_error")
    partial = partial_of(error)
    assert partial.status == "failed"
    assert partial.error is not None and partial.error.message == SERVER_ERROR["message"]
    with pytest.raises(streamkit.StreamAPIError) as again:
        await stream.get_final_response()
    assert again.value is error


async def test_a_stream_without_its_terminal_event_is_incomplete(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, fault("no_done"), extra_body={"seed": 6})
    events, error = await events_before(stream, streamkit.IncompleteStreamError)
    assert [e.type for e in events] == TEXT_EVENTS[:-1]
    partial = partial_of(error)
    assert partial.status == "in_progress" and partial.output_text == "".join(tokens_for(6000, 16))
    with pytest.raises(streamkit.IncompleteStreamError) as again:
        await stream.get_final_response()
    assert again.value is error


@pytest.mark.parametrize("k", [0, 2, 9])
async def test_a_truncated_body_is_incomplete(client: streamkit.AsyncClient, k: int) -> None:
    stream = await stream_of(client, fault(f"truncate={k}"))
    events, error = await events_before(stream, streamkit.IncompleteStreamError)
    assert [e.type for e in events] == TEXT_EVENTS[:k]
    partial = partial_of(error)
    assert partial.output_text == "".join(e.delta for e in events if isinstance(e, r.ResponseTextDeltaEvent))
    assert partial.status == ("in_progress" if k else None)
    with pytest.raises(streamkit.IncompleteStreamError) as again:
        await stream.get_final_response()
    assert again.value is error


async def test_a_dropped_connection_raises_read_error(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, fault("drop=8"))
    events, error = await events_before(stream, streamkit.ReadError)
    assert len(events) == 8
    assert partial_of(error).output_text == "".join(
        e.delta for e in events if isinstance(e, r.ResponseTextDeltaEvent)
    )
    with pytest.raises(streamkit.ReadError) as again:
        await stream.get_final_response()
    assert again.value is error


async def test_malformed_data_raises_chunk_decode_error(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, fault("malformed=5"))
    events, error = await events_before(stream, streamkit.ChunkDecodeError)
    assert len(events) == 5 and isinstance(error, ValueError)
    assert error.raw.startswith('{"type": "response.output_text.delta", "delta": "tru')
    assert partial_of(error).output_text == events[4].delta  # type: ignore[union-attr]
    with pytest.raises(streamkit.ChunkDecodeError) as again:
        await stream.get_final_response()
    assert again.value is error


async def test_a_rate_limit_is_retried_then_served(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    key = uuid.uuid4().hex
    stream = await stream_of(client, fault(f"status=429:1,retry_after=0,key={key}"))
    assert (await stream.get_final_response()).status == "completed"
    assert streamkit_server.stats.attempts[key] == 2 and stream.metrics.attempts == 2


async def test_a_server_error_is_retried_then_served(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    key = uuid.uuid4().hex
    whole = await whole_of(client, fault(f"status=500,fail_times=1,key={key}-whole"))
    assert whole.status == "completed" and streamkit_server.stats.attempts[f"{key}-whole"] == 2
    stream = await stream_of(client, fault(f"status=500,fail_times=1,key={key}"))
    assert (await stream.get_final_response()).status == "completed"
    assert streamkit_server.stats.attempts[key] == 2


async def test_status_errors_have_openai_fields(client: streamkit.AsyncClient) -> None:
    key = uuid.uuid4().hex
    with pytest.raises(streamkit.InternalServerError) as caught:
        await stream_of(client, fault(f"status=503,retry_after=0,fail_times=9,key={key}"))
    error = caught.value
    assert (error.status_code, error.message, error.code) == (503, SERVER_ERROR["message"], "internal_error")
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
    assert [e.type for e in events] == TEXT_EVENTS[:3]
    assert isinstance(error, TimeoutError)
    partial = partial_of(error)
    assert partial.status == "in_progress" and partial.output_text == ""
    with pytest.raises(streamkit.FirstTokenTimeout) as again:
        await stream.get_final_response()
    assert again.value is error


async def test_a_stall_mid_stream_raises_idle_timeout(client: streamkit.AsyncClient) -> None:
    stream = await stream_of(client, fault("stall=7:2"), timeout=streamkit.Timeout(idle=0.3, total=30))
    events, error = await events_before(stream, streamkit.IdleTimeout)
    assert len(events) == 7 and isinstance(error, TimeoutError)
    assert partial_of(error).output_text == "".join(
        e.delta for e in events if isinstance(e, r.ResponseTextDeltaEvent)
    )
    with pytest.raises(streamkit.IdleTimeout) as again:
        await stream.get_final_response()
    assert again.value is error


@pytest.mark.parametrize("spec", ["framing=crlf", "framing=cr", "bom", "split=3", "ping=0.005,stall=4:0.05"])
async def test_framing_faults_give_the_same_final(client: streamkit.AsyncClient, spec: str) -> None:
    whole = await whole_of(client, extra_body={"seed": 8})
    stream = await stream_of(client, fault(spec), extra_body={"seed": 8})
    assert without_ids(await stream.get_final_response()) == without_ids(whole)


# Other servers' shapes, as exact bytes


def sse(*events: dict[str, Any], event_lines: bool = True) -> bytes:
    body = b""
    for data in events:
        head = f"event: {data.get('type', 'message')}\n".encode() if event_lines else b""
        body += head + b"data: " + json.dumps(data).encode() + b"\n\n"
    return body


MESSAGE: dict[str, Any] = {"type": "message", "id": "msg_1", "role": "assistant", "content": []}
IDS: dict[str, Any] = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
HEAD: list[dict[str, Any]] = [
    {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
    {"type": "response.output_item.added", "output_index": 0, "item": MESSAGE},
    {"type": "response.output_text.delta", **IDS, "delta": "Hel"},
    {"type": "response.output_text.delta", **IDS, "delta": "lo"},
]
COMPLETED: dict[str, Any] = {
    "type": "response.completed",
    "response": {"id": "resp_1", "status": "completed"},
}


def mock(*pieces: bytes) -> streamkit.AsyncClient:
    return streamkit.AsyncClient(
        base_url="http://api.test/v1",
        transport=MockTransport(lambda request: MockResponse(200, list(pieces))),
    )


async def test_nothing_after_the_terminal_event_is_read() -> None:
    trailer = b"data: [DONE]\n\ndata: {not json\n\n"
    async with mock(sse(*HEAD, COMPLETED, event_lines=False) + trailer) as client:
        stream = await client.responses.create(model="m", input="hi", stream=True)
        events = [event async for event in stream]
        assert events[-1].type == "response.completed" and stream.completed
        assert (await stream.get_final_response()).output_text == "Hello"


async def test_done_before_the_terminal_event_is_incomplete() -> None:
    async with mock(sse(*HEAD, event_lines=False) + b"data: [DONE]\n\n") as client:
        stream = await client.responses.create(model="m", input="hi", stream=True)
        events, error = await events_before(stream, streamkit.IncompleteStreamError)
        assert len(events) == 4 and partial_of(error).output_text == "Hello"


NESTED = {
    "type": "too_many_requests",
    "code": "too_many_requests",
    "message": "Too Many Requests",
    "param": None,
}


@pytest.mark.parametrize(
    "error",
    [
        {"type": "error", "sequence_number": 4, "error": NESTED},  # OpenAI's live API
        {"error": NESTED},  # a proxy's chat-style error
    ],
    ids=["nested", "bare"],
)
async def test_an_error_nested_under_error_keeps_its_fields(error: dict[str, Any]) -> None:
    async with mock(sse(*HEAD, error)) as client:
        stream = await client.responses.create(model="m", input="hi", stream=True)
        events, caught = await events_before(stream, streamkit.StreamAPIError)
        assert len(events) == 4
        assert (caught.message, caught.code, caught.type) == (
            "Too Many Requests",
            "too_many_requests",
            "too_many_requests",
        )
        assert partial_of(caught).output_text == "Hello"


async def test_an_unknown_event_is_yielded_and_changes_nothing() -> None:
    new = {"type": "response.shell_call_command.delta", "item_id": "sh_1", "delta": "ls"}
    async with mock(sse(*HEAD[:3], new, *HEAD[3:], COMPLETED)) as client:
        stream = await client.responses.create(model="m", input="hi", stream=True)
        events = [event async for event in stream]
        assert isinstance(events[3], streamkit.UnknownEvent) and events[3].type == new["type"]
        assert (await stream.get_final_response()).output_text == "Hello"
        assert len(stream.metrics.token_arrivals) == 2


@pytest.mark.parametrize("reads", ["one", "each event"])
async def test_an_error_event_decoded_with_others_keeps_its_raw_data(reads: str) -> None:
    # A read of plain events is decoded at once, a read of one event on its own path; an error among them,
    # its type written with an escape so that no quick look at the bytes finds it, still raises with the
    # event as it came.
    error = b'event: error\ndata: {"type": "\\u0065rror", "code": "x", "message": "boom", "param": null}\n\n'
    body = sse(*HEAD) + error
    pieces = [body] if reads == "one" else [event + b"\n\n" for event in body.split(b"\n\n")[:-1]]
    async with mock(*pieces) as client:
        stream = await client.responses.create(model="m", input="hi", stream=True)
        events, caught = await events_before(stream, streamkit.StreamAPIError)
        assert len(events) == 4 and (caught.message, caught.code) == ("boom", "x")
        assert caught.raw == error[19:-2].decode() and partial_of(caught).output_text == "Hello"
