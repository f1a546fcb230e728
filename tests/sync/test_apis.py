"""Every API through the sync client: the streamed text is the scripted answer, a stream's final object is
the server's whole answer to the same request (on every case of the async oracle: `n`, tools, logprobs,
usage, stop, limits), a non-streamed call is that whole answer, and the models are the server's."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import streamkit
from streamkit.protocols import APIS as CLIENT_APIS
from streamkit.protocols.base import Model
from streamkit.server import ServerConfig, ServerThread
from tests.client.conftest import comparable
from tests.client.test_oracle import CASES
from tests.sync.conftest import (
    APIS,
    FINISHED,
    MODEL,
    REQUIRED,
    SAFE,
    body_of,
    create,
    finish_of,
    planned,
    resource,
    text_of,
)

STREAM_TYPES: dict[str, type[streamkit.SyncStream[Any, Any]]] = {
    "chat": streamkit.SyncChatCompletionStream,
    "completions": streamkit.SyncCompletionStream,
    "responses": streamkit.SyncResponseStream,
    "messages": streamkit.SyncMessageStream,
}
FINAL_GETTERS = {
    "chat": "get_final_completion",
    "completions": "get_final_completion",
    "responses": "get_final_response",
    "messages": "get_final_message",
}
# A chat or legacy stream carries usage only when asked.
USAGE = {"stream_options": {"include_usage": True}}


@pytest.mark.parametrize("api", APIS)
def test_streamed_text_is_the_scripted_answer(client: streamkit.Client, api: str) -> None:
    params: dict[str, Any] = {"extra_body": {"seed": 5}}
    stream = create(client, api, stream=True, **params)
    assert type(stream) is STREAM_TYPES[api]
    with stream:
        texts = list(stream.text_deltas())
    expected = planned(api, body_of(api, seed=5))
    assert "".join(texts) == expected.text != ""
    assert len(texts) == len(expected.answers[0].tokens)  # one token an event
    assert stream.completed
    final = getattr(stream, FINAL_GETTERS[api])()
    assert text_of(final) == expected.text and finish_of(final) == FINISHED[api]
    assert type(final) is CLIENT_APIS[api].final_type
    assert len(stream.metrics.token_arrivals) == len(texts) and stream.metrics.attempts == 1
    assert text_of(stream.snapshot) == expected.text


@pytest.mark.parametrize("api", APIS)
def test_items_are_the_planned_events(client: streamkit.Client, api: str) -> None:
    """`for item in stream` yields one item per event the server planned, but a chat or legacy stream's end
    (`[DONE]`) and a Messages `ping`."""
    stream = create(client, api, stream=True)
    items = list(stream)
    plan = planned(api, body_of(api)).plan
    events = [f.data for f in plan.frames] + (
        [] if api in ("chat", "completions") else [f.data for f in plan.end]
    )
    events = [data for data in events if not (isinstance(data, dict) and data.get("type") == "ping")]
    assert len(items) == len(events) == stream.metrics.chunks
    assert list(stream) == []  # exhausted
    if api in ("responses", "messages"):
        assert [item.type for item in items] == [data["type"] for data in events]


def check_final_is_the_whole_answer(client: streamkit.Client, api: str, case: dict[str, Any]) -> None:
    """Stream a request and ask it whole: the stream's final equals the whole answer."""
    params = {**REQUIRED[api], **case, "model": MODEL, "timeout": SAFE}
    whole_params = {k: v for k, v in params.items() if k != "stream_options"}  # allowed on streams only
    whole = resource(client, api).create(**whole_params)
    stream = resource(client, api).create(**params, stream=True)
    with stream:
        items = list(stream)
    final = stream.get_final()
    usage = api in ("responses", "messages") or "stream_options" in case
    assert comparable(final, usage) == comparable(whole, usage)
    assert stream.metrics.chunks == len(items)
    assert type(final) is type(whole) is CLIENT_APIS[api].final_type


@pytest.mark.parametrize(
    ("api", "case"),
    [
        pytest.param(api, case, id=f"{api}-{','.join(case) or 'plain'}")
        for api in CASES
        for case in CASES[api]
    ],
)
def test_the_streams_final_is_the_whole_answer(
    client: streamkit.Client, api: str, case: dict[str, Any]
) -> None:
    check_final_is_the_whole_answer(client, api, case)


@pytest.mark.parametrize(
    ("api", "params"),
    [
        ("chat", {"n": 2, "seed": 4}),
        ("chat", {"logprobs": True, "top_logprobs": 2}),
        ("completions", {"prompt": ["one", "two"], "n": 2}),
        ("completions", {"logprobs": 1}),
        ("responses", {}),
        ("messages", {}),
    ],
)
def test_a_whole_answer_is_the_servers(
    client: streamkit.Client, sync_server: ServerThread, api: str, params: dict[str, Any]
) -> None:
    """A non-streamed call returns the server's `stream: false` answer, as a plain HTTP client gets it."""
    body = {**REQUIRED[api], **params, "model": MODEL}
    whole = create(client, api, **params)
    assert type(whole) is CLIENT_APIS[api].final_type
    raw = httpx.post(f"{sync_server.base_url}{CLIENT_APIS[api].path}", json=body, timeout=10).content
    served: Model = CLIENT_APIS[api].final_from_json(raw)  # type: ignore[assignment]
    assert comparable(whole, True) == comparable(served, True)
    assert text_of(whole) == planned(api, {**body, "stream": False}).text


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_n_choices_each_carry_their_own_scripted_answer(client: streamkit.Client, api: str) -> None:
    stream = create(client, api, stream=True, n=2, seed=6, **USAGE)
    final = stream.get_final()
    expected = planned(api, body_of(api, n=2, seed=6, **USAGE))
    texts = [c.message.content if api == "chat" else c.text for c in final.choices]
    assert texts == ["".join(a.tokens) for a in expected.answers] and texts[0] != texts[1]
    assert [c.finish_reason for c in final.choices] == ["stop", "stop"]
    assert stream.metrics.completion_tokens == expected.plan.output_tokens


@pytest.mark.parametrize("api", APIS)
def test_usage_is_the_servers_count(client: streamkit.Client, api: str) -> None:
    params: dict[str, Any] = USAGE if api in ("chat", "completions") else {}
    stream = create(client, api, stream=True, **params)
    final = stream.get_final()
    output_tokens = planned(api, body_of(api, **params)).plan.output_tokens
    assert stream.metrics.completion_tokens == output_tokens
    assert final.usage is not None and stream.metrics.prompt_tokens is not None


def test_tool_calls_stream_whole(client: streamkit.Client) -> None:
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]
    stream = client.chat.completions.create(
        model=MODEL, messages=REQUIRED["chat"]["messages"], tools=tools, tool_choice="required", stream=True
    )
    final = stream.get_final_completion()
    expected = planned("chat", body_of("chat", tools=tools, tool_choice="required")).answers[0]
    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls if c.function] == [
        (call.name, call.arguments) for call in expected.calls
    ]
    assert final.choices[0].finish_reason == "tool_calls"


def test_client_stream_takes_any_api_by_name(client: streamkit.Client) -> None:
    for api in APIS:
        body = {**REQUIRED[api], "model": MODEL}
        stream = client.stream(api, body)
        assert type(stream) is STREAM_TYPES[api]
        assert text_of(stream.get_final()) == planned(api, {**body, "stream": True}).text
    stream = client.stream(CLIENT_APIS["chat"], {**REQUIRED["chat"], "model": MODEL})
    assert type(stream) is streamkit.SyncChatCompletionStream


def test_models_list(client: streamkit.Client) -> None:
    served = ServerConfig().model  # the name the server lists
    assert [m.id for m in client.models.list()] == [served]
    assert [m.id for m in client.models.list(provider="anthropic")] == [served]
