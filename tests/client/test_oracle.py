"""The built-in server as the client's oracle: on every API and transport, a stream's final object equals the
server's whole answer to the same request (`stream: false`), which the server writes from its own plan with
no code of the client's (`streamkit.server.apis`).

So these tests can fail: a broken accumulator (a dropped delta, a lost tool-argument piece, a wrong usage
merge) makes them fail on every API, and the server answers `stream: false` with every accumulator of
streamkit made to raise.
"""

from __future__ import annotations

import ast
import collections
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from msgspec.structs import replace

import streamkit
from streamkit.protocols import APIS, base
from streamkit.protocols import chat as c
from streamkit.protocols import completions as lc
from streamkit.protocols import messages as m
from streamkit.protocols import responses as r
from streamkit.server import ServerThread
from streamkit.server.apis import SERVER_APIS
from streamkit.server.scripted import Script, Tool, answer
from tests.client.conftest import comparable, timing

pytestmark = pytest.mark.anyio

# Every call gets bounds, so that no test can hang whatever the server does.
SAFE = streamkit.Timeout(connect=5.0, idle=10.0, total=30.0)
CHAT_TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["c", "f"]}},
}
RESPONSE_TOOLS: list[dict[str, Any]] = [
    {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA},
    {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}},
]
MESSAGE_TOOLS: list[dict[str, Any]] = [
    {"name": "get_weather", "input_schema": WEATHER_SCHEMA},
    {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
]
USAGE = {"stream_options": {"include_usage": True}}  # a chat or legacy stream's usage, only when asked

# What each API's request needs, which a case may replace.
REQUIRED: dict[str, dict[str, Any]] = {
    "chat": {"messages": [{"role": "user", "content": "hi"}]},
    "completions": {"prompt": "Say hi"},
    "responses": {"input": "Tell me a story."},
    "messages": {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 256},
}
CASES: dict[str, list[dict[str, Any]]] = {
    "chat": [
        {},
        {"n": 2, "seed": 7, **USAGE},
        {"n": 3, "seed": 7},
        {"stop": ["e"], "seed": 1},
        {"stop": "the"},
        {"max_tokens": 5, **USAGE},
        {"max_completion_tokens": 4, "temperature": 0.2, "top_p": 0.9},
        {"logprobs": True, "top_logprobs": 2, **USAGE},
        {"tools": CHAT_TOOLS[:1], **USAGE},
        {"tools": CHAT_TOOLS, "tool_choice": "required", "parallel_tool_calls": True},
        {"tools": CHAT_TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
        {
            "presence_penalty": 0.5,
            "frequency_penalty": 0.5,
            "user": "u1",
            "response_format": {"type": "text"},
        },
        {"extra_headers": timing("tokens=30,tokens_per_chunk=4"), "n": 2, **USAGE},
    ],
    "completions": [
        {},
        {"prompt": ["one", "two"], "n": 2, **USAGE},
        {"echo": True, "seed": 4},
        {"suffix": "END", "max_tokens": 3},
        {"max_tokens": 5, **USAGE},
        {"logprobs": 2, "n": 2, **USAGE},
        {"logprobs": 1, "echo": True},
        {"stop": ["a"], "temperature": 0},
        {"extra_headers": timing("tokens=30,tokens_per_chunk=4"), "max_tokens": 40, **USAGE},
    ],
    "responses": [
        {},
        {"extra_body": {"seed": 9}, "instructions": "Be brief.", "temperature": 0.2, "top_p": 0.9},
        {"input": [{"role": "user", "content": "Hello there"}], "metadata": {"k": "v"}, "store": False},
        {"include": ["message.output_text.logprobs"], "top_logprobs": 2},
        {"max_output_tokens": 16, "extra_headers": timing("tokens=40")},
        {"tools": RESPONSE_TOOLS},
        {"tools": RESPONSE_TOOLS, "parallel_tool_calls": False},
        {"tools": RESPONSE_TOOLS[:1], "tool_choice": "none"},
        {"extra_headers": timing("tokens=30,tokens_per_chunk=4")},
    ],
    "messages": [
        {},
        {"extra_body": {"seed": 9}, "system": "Be brief.", "temperature": 0.2, "top_p": 0.9, "top_k": 5},
        {"system": [{"type": "text", "text": "Be brief."}], "metadata": {"user_id": "u1"}},
        {"stop_sequences": ["the", "a"], "extra_body": {"seed": 2}},
        {"max_tokens": 5, "extra_headers": timing("tokens=40")},
        {"tools": MESSAGE_TOOLS},
        {"tools": MESSAGE_TOOLS, "tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
        {"tools": MESSAGE_TOOLS[:1], "tool_choice": {"type": "none"}},
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        {"extra_headers": timing("tokens=30,tokens_per_chunk=4")},
    ],
}


def resource(client: streamkit.AsyncClient, api: str) -> Any:
    return {
        "chat": client.chat.completions,
        "completions": client.completions,
        "responses": client.responses,
        "messages": client.messages,
    }[api]


async def check_final_is_the_whole_answer(
    client: streamkit.AsyncClient, api: str, case: dict[str, Any]
) -> None:
    """Stream a request and ask it whole: the stream's final equals the whole answer."""
    params = {**REQUIRED[api], **case, "model": "scripted", "timeout": SAFE}  # never the table's own dict
    whole_params = {k: v for k, v in params.items() if k != "stream_options"}  # allowed on streams only
    whole = await resource(client, api).create(**whole_params)
    stream = await resource(client, api).create(**params, stream=True)
    items = [item async for item in stream]
    final = await stream.get_final()
    usage = api in ("responses", "messages") or "stream_options" in case
    assert comparable(final, usage) == comparable(whole, usage)
    assert stream.metrics.chunks == len(items)
    assert type(final) is type(whole) is APIS[api].final_type


@pytest.mark.parametrize(
    ("api", "params"),
    [
        pytest.param(api, case, id=f"{api}-{','.join(case) or 'plain'}")
        for api in CASES
        for case in CASES[api]
    ],
)
async def test_the_streams_final_is_the_whole_answer(
    client: streamkit.AsyncClient, api: str, params: dict[str, Any]
) -> None:
    await check_final_is_the_whole_answer(client, api, params)


# Responses: the `*.done` events and the terminal event give every value whole, so the final hides what the
# deltas built. The snapshot just before them must already hold it.


def check_responses_snapshots_hold_every_delta() -> None:
    """Fed the server's events one by one, the Responses accumulator's snapshot holds the answer's whole text
    (or arguments) just before the event that gives it whole; what is expected is the scripted answer's."""
    server = SERVER_APIS["responses"]
    for tools in ([], [Tool("get_weather", WEATHER_SCHEMA), Tool("get_time")]):
        script = Script("scripted", tools=tools, stream=True)
        answers = answer(script, 12)
        plan = server.render(script, answers, 2)
        accumulator = r.RESPONSES.accumulator()
        for frame in plan.frames:
            kind = frame.data["type"]
            if kind == "response.output_text.done":
                assert accumulator.snapshot.output_text == "".join(answers[0].tokens)
            if kind == "response.function_call_arguments.done":
                calls = [i for i in accumulator.snapshot.output if isinstance(i, r.FunctionCallItem)]
                index = frame.data["output_index"]
                assert calls[index].arguments == answers[0].calls[index].arguments
            item = r.RESPONSES.decode(msgspec.json.encode(frame.data))
            if item is not None:
                accumulator.add(item)


def test_the_responses_snapshot_holds_every_delta_before_the_whole_values() -> None:
    check_responses_snapshots_hold_every_delta()


# Broken accumulators: each is the API's own with one bug, and must make a check above fail.

Transform = Callable[[collections.Counter[str], Any], Any]


def nth(n: int, name: str, kind: Callable[[Any], bool]) -> Transform:
    """Drop the n-th item (from 1) that `kind` tells."""

    def transform(seen: collections.Counter[str], item: Any) -> Any:
        if kind(item):
            seen[name] += 1
            if seen[name] == n:
                return None
        return item

    return transform


def chat_content(item: Any) -> bool:
    return any(choice.delta.content for choice in item.choices)


def chat_arguments(item: Any) -> bool:
    return any(
        call.function and call.function.arguments for ch in item.choices for call in ch.delta.tool_calls or []
    )


def delta_of(kind: type[Any], field: str) -> Callable[[Any], bool]:
    return lambda item: (
        isinstance(item, m.ContentBlockDeltaEvent)
        and isinstance(item.delta, kind)
        and bool(getattr(item.delta, field))
    )


MUTANTS: dict[str, dict[str, Transform]] = {
    "chat": {
        "drops a content delta": nth(2, "content", chat_content),
        "loses a tool-argument piece": nth(2, "arguments", chat_arguments),
        "ignores the usage of a chunk without choices": lambda seen, item: (
            item if item.choices else replace(item, usage=None)
        ),
    },
    "completions": {
        "drops a text delta": nth(2, "text", lambda item: any(choice.text for choice in item.choices)),
        "ignores the usage of a chunk without choices": lambda seen, item: (
            item if item.choices else replace(item, usage=None)
        ),
    },
    "responses": {
        "drops a text delta": nth(2, "text", lambda item: isinstance(item, r.ResponseTextDeltaEvent)),
        "loses a tool-argument piece": nth(
            2, "arguments", lambda item: isinstance(item, r.ResponseFunctionCallArgumentsDeltaEvent)
        ),
        "ignores the terminal event's usage": lambda seen, item: (
            replace(item, response=replace(item.response, usage=None))
            if isinstance(item, r.ResponseCompletedEvent | r.ResponseIncompleteEvent)
            else item
        ),
    },
    "messages": {
        "drops a text delta": nth(2, "text", delta_of(m.TextDelta, "text")),
        "loses a tool-argument piece": nth(2, "arguments", delta_of(m.InputJSONDelta, "partial_json")),
        "ignores message_delta's usage": lambda seen, item: (
            replace(item, usage=None) if isinstance(item, m.MessageDeltaEvent) else item
        ),
    },
}


def broken(api: str, transform: Transform) -> type[Any]:
    """The API's accumulator, with `transform` applied to each item before it is merged."""
    sound = type(APIS[api].accumulator())

    class Broken(sound):  # type: ignore[valid-type,misc]
        def __init__(self) -> None:
            super().__init__()
            self.seen: collections.Counter[str] = collections.Counter()

        def add(self, item: Any) -> int:
            changed = transform(self.seen, item)
            if changed is not None:
                super().add(changed)
            return APIS[api].flags(item)  # the stream still sees every item as it came

    return Broken


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(
    ("api", "bug"), [pytest.param(api, bug, id=f"{api}-{bug}") for api in MUTANTS for bug in MUTANTS[api]]
)
async def test_a_broken_accumulator_fails_the_checks(
    streamkit_server: ServerThread, monkeypatch: pytest.MonkeyPatch, api: str, bug: str
) -> None:
    mutant = broken(api, MUTANTS[api][bug])
    monkeypatch.setattr(type(APIS[api]), "accumulator", lambda self: mutant())
    failed = []
    async with streamkit.AsyncClient(base_url=streamkit_server.base_url, api_key="sk-test") as client:
        for case in CASES[api]:
            try:
                await check_final_is_the_whole_answer(client, api, case)
            except AssertionError:
                failed.append(case)
    if api == "responses":
        try:
            check_responses_snapshots_hold_every_delta()
        except AssertionError:
            failed.append({"snapshots": True})
    assert failed, f"no check caught an accumulator that {bug}"


# The server uses no accumulator, nor anything else of the client's side of an API.

ACCUMULATORS = [
    cls
    for module in (c, lc, r, m)
    for _, cls in inspect.getmembers(module, inspect.isclass)
    if cls.__name__.endswith("Accumulator") and cls.__module__ == module.__name__
]


def refuse_accumulators(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every accumulator class of streamkit raise, wherever it is used (the server's thread included)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an accumulator was used")

    assert len(ACCUMULATORS) == 4
    for cls in ACCUMULATORS:
        for name in ("__init__", "add", "final", "is_finished"):
            monkeypatch.setattr(cls, name, refuse)
        monkeypatch.setattr(cls, "snapshot", property(refuse))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("api", list(REQUIRED))
async def test_the_server_answers_whole_with_every_accumulator_made_to_raise(
    streamkit_server: ServerThread, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {**REQUIRED[api], "model": "scripted", "seed": 3}
    refuse_accumulators(monkeypatch)
    with pytest.raises(AssertionError, match="an accumulator was used"):
        APIS[api].accumulator()
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{streamkit_server.base_url}{APIS[api].path}", json=body)
    monkeypatch.undo()
    assert answer.status_code == 200, answer.text
    whole: base.Model = APIS[api].final_from_json(answer.content)  # type: ignore[assignment]
    usage = {"stream_options": {"include_usage": True}} if api in ("chat", "completions") else {}
    async with streamkit.AsyncClient(base_url=streamkit_server.base_url) as client:
        stream = await resource(client, api).create(**body, **usage, stream=True, timeout=SAFE)
        final = await stream.get_final()
    assert comparable(final, usage=True) == comparable(whole, usage=True)


def test_no_module_of_the_server_imports_the_clients_side() -> None:
    root = Path(streamkit.__file__).parent / "server"
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not name.startswith("streamkit.protocols"), f"{path.name} imports {name}"
                assert name not in ("streamkit", "streamkit.streams", "streamkit.client"), (
                    f"{path.name}: {name}"
                )


def test_the_server_speaks_the_apis_the_client_speaks() -> None:
    assert {(a.name, a.path, a.provider) for a in SERVER_APIS.values()} == {
        (a.name, a.path, a.provider) for a in APIS.values()
    }
