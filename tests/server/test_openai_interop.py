"""The official `openai` SDK, as an independent client, consumes every non-fault mode of the built-in server,
and what it aggregates from a stream equals the server's own non-streamed answer to the same request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from streamkit.server import ServerThread
from streamkit.server.scripted import tokens_for

MESSAGES: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}]
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "unit": {"enum": ["c", "f"]},
                },
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]


@pytest.fixture(scope="module")
def client(streamkit_server: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=streamkit_server.base_url, api_key="test", max_retries=0) as client:
        yield client


def strip_ids(completion: Any) -> Any:
    data = completion.model_dump(exclude_none=True)
    data.pop("id")
    data.pop("created")
    for choice in data["choices"]:
        for call in choice.get("message", {}).get("tool_calls", []) or []:
            call.pop("id")
    return data


CHAT_CASES: list[dict[str, Any]] = [
    {},
    {"n": 3, "seed": 4},
    {"max_tokens": 3},
    {
        "max_completion_tokens": 5,
        "temperature": 0.2,
        "top_p": 0.9,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.1,
    },
    {"stop": [".", "the"], "seed": 2},
    {"logprobs": True, "top_logprobs": 3},
    {"tools": TOOLS},
    {"tools": TOOLS, "parallel_tool_calls": False},
    {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
    {"tools": TOOLS, "tool_choice": "none"},
    {"response_format": {"type": "json_object"}, "user": "u1"},
]


@pytest.mark.parametrize("params", CHAT_CASES, ids=lambda p: ",".join(p) or "plain")
def test_chat_stream_aggregates_to_the_non_streamed_answer(
    client: openai.OpenAI, params: dict[str, Any]
) -> None:
    whole = client.chat.completions.create(model="scripted", messages=MESSAGES, **params)
    with client.chat.completions.stream(
        model="scripted", messages=MESSAGES, stream_options={"include_usage": True}, **params
    ) as stream:
        for _ in stream:
            pass
        try:
            streamed: Any = stream.get_final_completion()
        except openai.LengthFinishReasonError as exc:  # the helper refuses "length", but keeps the result
            streamed = exc.completion
    expected, got = strip_ids(whole), strip_ids(streamed)
    for choice in got["choices"]:  # the helper adds parsed fields of its own
        choice["message"].pop("parsed", None)
        for call in choice["message"].get("tool_calls", []):
            call["function"].pop("parsed_arguments", None)
    for choice in expected["choices"]:
        for call in choice["message"].get("tool_calls", []):
            call.pop("index", None)
    for choice in got["choices"]:
        for call in choice["message"].get("tool_calls", []):
            call.pop("index", None)
    assert got == expected


def test_plain_iteration_and_the_known_text(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="scripted", messages=MESSAGES, seed=11, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "".join(tokens_for(11_000, 16))


def test_tool_calls_fit_their_schema(client: openai.OpenAI) -> None:
    import json

    whole = client.chat.completions.create(model="scripted", messages=MESSAGES, tools=TOOLS)
    calls = whole.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls if c.type == "function"] == ["get_weather", "get_time"]
    assert whole.choices[0].finish_reason == "tool_calls"
    first = calls[0]
    assert first.type == "function"
    args = json.loads(first.function.arguments)
    assert isinstance(args["city"], str) and isinstance(args["days"], int) and args["unit"] == "c"


LEGACY_CASES: list[dict[str, Any]] = [
    {},
    {"n": 2, "echo": True, "logprobs": 2},
    {"prompt": ["one", "two"], "n": 2},
    {"suffix": " The end.", "max_tokens": 4},
    {"best_of": 2, "n": 2, "stop": "."},
]


@pytest.mark.parametrize("params", LEGACY_CASES, ids=lambda p: ",".join(p) or "plain")
def test_legacy_stream_agrees_with_the_non_streamed_answer(
    client: openai.OpenAI, params: dict[str, Any]
) -> None:
    params = {"prompt": "Once upon a time", **params}
    whole = client.completions.create(model="scripted", **params)
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    tokens: dict[int, list[str]] = {}
    for chunk in client.completions.create(model="scripted", stream=True, **params):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
            if choice.logprobs and choice.logprobs.tokens:
                tokens.setdefault(choice.index, []).extend(choice.logprobs.tokens)
    assert {c.index: c.text for c in whole.choices} == texts
    assert {c.index: c.finish_reason for c in whole.choices} == finishes
    for c in whole.choices:
        if c.logprobs is not None:
            assert c.logprobs.tokens == tokens[c.index]
    if params.get("echo"):
        assert all(t.startswith("Once upon a time") for t in texts.values())


def test_errors_reach_the_sdk_with_their_fields(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="scripted", messages=MESSAGES, n=0)
    assert info.value.code == "integer_below_min_value"
    assert info.value.param == "n"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-nope", messages=MESSAGES)


def test_timing_modes(client: openai.OpenAI) -> None:
    headers = {"x-streamkit-timing": "ttft=0.05,tps=400,tokens_per_chunk=3,jitter=0.5,tokens=30"}
    stream = client.chat.completions.create(
        model="scripted", messages=MESSAGES, stream=True, seed=1, extra_headers=headers
    )
    contents = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(contents) == "".join(tokens_for(1000, 30))
    assert len(contents) == 10


# The Responses API: the official SDK consumes /v1/responses, and its finals agree with streamkit's.

RESPONSE_INPUT = "Tell me a story."
RESPONSE_TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"enum": ["c", "f"]},
            },
        },
    },
    {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}},
]
COMPLETED_CASES: list[dict[str, Any]] = [
    {},
    {"instructions": "Be brief.", "temperature": 0.2, "top_p": 0.9, "extra_body": {"seed": 3}},
    {"input": [{"role": "user", "content": "Hello there"}], "metadata": {"k": "v"}, "store": False},
    {"include": ["message.output_text.logprobs"], "top_logprobs": 2},
    {"tools": RESPONSE_TOOLS, "tool_choice": "required"},
    {"tools": RESPONSE_TOOLS, "tool_choice": {"type": "function", "name": "get_time"}},
    {"tools": RESPONSE_TOOLS, "parallel_tool_calls": False},
    {"extra_headers": {"x-streamkit-timing": "tokens=30,tokens_per_chunk=4"}},
]
INCOMPLETE: dict[str, Any] = {"max_output_tokens": 16, "extra_headers": {"x-streamkit-timing": "tokens=40"}}


def streamkit_final(server: ServerThread, params: dict[str, Any]) -> Any:
    """streamkit's `get_final_response()` for the same request."""
    import anyio

    import streamkit

    params = {"input": RESPONSE_INPUT, **params}

    async def run() -> streamkit.Response:
        async with streamkit.AsyncClient(base_url=server.base_url, api_key="test") as client:
            stream = await client.responses.create(model="scripted", stream=True, **params)
            async with stream:
                return await stream.get_final_response()

    return anyio.run(run)


def essence(response: Any) -> dict[str, Any]:
    """What two clients' finals of one request must agree on (ids and times are drawn anew each time)."""
    data = response.to_dict() if hasattr(response, "to_dict") else response.model_dump(exclude_none=True)
    return {
        "text": response.output_text,
        "status": data["status"],
        "incomplete_details": data.get("incomplete_details"),
        "usage": data["usage"],
        "model": data["model"],
        "calls": [(i["name"], i["arguments"]) for i in data["output"] if i["type"] == "function_call"],
        "parts": [
            {k: v for k, v in part.items() if k != "parsed"}
            for item in data["output"]
            if item["type"] == "message"
            for part in item["content"]
        ],
    }


@pytest.mark.parametrize("params", COMPLETED_CASES, ids=lambda p: ",".join(p) or "plain")
def test_responses_stream_helper_agrees_with_streamkit(
    client: openai.OpenAI, streamkit_server: ServerThread, params: dict[str, Any]
) -> None:
    import json

    ours = streamkit_final(streamkit_server, params)
    kwargs = {"input": RESPONSE_INPUT, **params}
    with client.responses.stream(model="scripted", **kwargs) as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        theirs = stream.get_final_response()
    assert essence(theirs) == essence(ours)
    assert "".join(texts) == theirs.output_text == ours.output_text
    assert theirs.status == "completed"
    if "tools" in params and params.get("tool_choice") != "none":
        assert essence(ours)["calls"] and all(json.loads(a) is not None for _, a in essence(ours)["calls"])


@pytest.mark.parametrize("params", [*COMPLETED_CASES, INCOMPLETE], ids=lambda p: ",".join(p) or "plain")
def test_responses_create_streamed_and_not_agrees_with_streamkit(
    client: openai.OpenAI, streamkit_server: ServerThread, params: dict[str, Any]
) -> None:
    ours = streamkit_final(streamkit_server, params)
    kwargs = {"input": RESPONSE_INPUT, **params}
    events = list(client.responses.create(model="scripted", stream=True, **kwargs))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    terminal = events[-1]
    assert terminal.type in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    whole = client.responses.create(model="scripted", **kwargs)
    for theirs in (terminal.response, whole):
        assert essence(theirs) == essence(ours)
    assert text == ours.output_text
    if params is INCOMPLETE:
        assert ours.status == whole.status == "incomplete"
        assert whole.incomplete_details is not None and whole.incomplete_details.reason == "max_output_tokens"


def test_responses_errors_reach_the_sdk_with_their_fields(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="scripted", input=RESPONSE_INPUT, max_output_tokens=8)
    assert (info.value.code, info.value.param) == ("integer_below_min_value", "max_output_tokens")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-nope", input=RESPONSE_INPUT)
