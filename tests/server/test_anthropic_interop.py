"""The official `anthropic` SDK, as an independent client, streams and creates against the built-in server's
`/v1/messages`, and its final agrees with streamkit's: text, stop reason and sequence, usage, tool input.
Fed the very same bytes (the server's, llama.cpp's recorded stream, the hand-written shapes of other servers),
the two agree on everything, ids included. Where they part is on what goes wrong: a mid-stream error and a
stream cut short."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import anyio
import pytest

import streamkit
from streamkit.server import ServerThread
from streamkit.server.scripted import tokens_for
from tests.server.raw import post
from tests.test_messages import STREAMS

MESSAGES: Any = [{"role": "user", "content": "Tell me a story."}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather forecast for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"enum": ["c", "f"]},
        },
    },
}
CLOCK: Any = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


@pytest.fixture(scope="module")
def client(streamkit_server: ServerThread) -> Iterator[anthropic.Anthropic]:
    # The SDK appends /v1/messages to its base URL: the server's root.
    with anthropic.Anthropic(base_url=streamkit_server.url, api_key="test", max_retries=0) as client:
        yield client


def streamkit_final(server: ServerThread, params: dict[str, Any]) -> streamkit.Message:
    """streamkit's `get_final_message()` for the same request."""
    params = {"messages": MESSAGES, "max_tokens": 256, **params}

    async def run() -> streamkit.Message:
        async with streamkit.AsyncClient(base_url=server.base_url, api_key="test") as client:
            stream = await client.messages.create(model="scripted", stream=True, **params)
            async with stream:
                return await stream.get_final_message()

    return anyio.run(run)


def dump(message: Any) -> dict[str, Any]:
    if isinstance(message, streamkit.Message):
        return message.to_dict()
    data: dict[str, Any] = message.model_dump(exclude_none=True)
    return data


USAGE = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def essence(message: Any, signatures: bool = True) -> dict[str, Any]:
    """What two clients' finals of one message must agree on. Two requests draw new ids and signatures, so
    `signatures=False` compares only that a thinking block has one."""
    data = dump(message)
    blocks: list[tuple[Any, ...]] = []
    for block in data["content"]:
        kind = block["type"]
        if kind == "text":
            blocks.append((kind, block["text"], block.get("citations") or None))
        elif kind in ("tool_use", "server_tool_use"):
            blocks.append((kind, block["name"], block["input"]))
        elif kind == "thinking":
            signature = block.get("signature")
            blocks.append((kind, block["thinking"], signature if signatures else bool(signature)))
        else:
            blocks.append((kind,))
    usage = data.get("usage") or {}
    server_tools = (usage.get("server_tool_use") or {}).get("web_search_requests")
    return {
        "blocks": blocks,
        "stop_reason": data.get("stop_reason"),
        "stop_sequence": data.get("stop_sequence"),
        "usage": {name: usage.get(name) for name in USAGE},
        "server_tool_use": server_tools,
        "model": data.get("model"),
        "role": data.get("role"),
    }


def sdk_params(params: dict[str, Any]) -> dict[str, Any]:
    """The same request for the SDK, which names fewer sampling parameters than the API takes: the rest go
    in `extra_body`."""
    named = {"system", "stop_sequences", "tools", "tool_choice", "thinking", "metadata", "max_tokens"}
    kwargs = {k: v for k, v in params.items() if k in named or k in ("extra_body", "extra_headers")}
    extra = {k: v for k, v in params.items() if k not in kwargs}
    if extra:
        kwargs["extra_body"] = {**kwargs.get("extra_body", {}), **extra}
    return {"messages": MESSAGES, "max_tokens": 256, **kwargs}


CASES: list[dict[str, Any]] = [
    {},
    {"extra_body": {"seed": 3}, "system": "Be brief.", "temperature": 0.2, "top_p": 0.9, "top_k": 5},
    {"metadata": {"user_id": "u1"}, "system": [{"type": "text", "text": "Be brief."}]},
    {"stop_sequences": ["the", "a"], "extra_body": {"seed": 2}},
    {"max_tokens": 5, "extra_headers": {"x-streamkit-timing": "tokens=40"}},
    {"tools": [WEATHER], "tool_choice": {"type": "any"}},
    {"tools": [CLOCK, WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}},
    {"tools": [WEATHER, CLOCK]},
    {"tools": [WEATHER], "tool_choice": {"type": "none"}},
    {"thinking": {"type": "enabled", "budget_tokens": 1024}},
    {"extra_headers": {"x-streamkit-timing": "tokens=30,tokens_per_chunk=4"}},
]


@pytest.mark.parametrize("params", CASES, ids=lambda p: ",".join(p) or "plain")
def test_the_stream_helper_agrees_with_streamkit(
    client: anthropic.Anthropic, streamkit_server: ServerThread, params: dict[str, Any]
) -> None:
    ours = streamkit_final(streamkit_server, params)
    with client.messages.stream(model="scripted", **sdk_params(params)) as stream:
        texts = list(stream.text_stream)
        theirs = stream.get_final_message()
    assert essence(theirs, signatures=False) == essence(ours, signatures=False)
    assert "".join(texts) == ours.text
    assert theirs.stop_reason is not None and theirs.usage.output_tokens > 0
    if params.get("tool_choice", {}).get("type") in ("any", "tool"):
        (block,) = theirs.content
        assert block.type == "tool_use" and isinstance(block.input, dict) and block.input


@pytest.mark.parametrize("params", CASES, ids=lambda p: ",".join(p) or "plain")
def test_create_streamed_and_not_agrees_with_streamkit(
    client: anthropic.Anthropic, streamkit_server: ServerThread, params: dict[str, Any]
) -> None:
    ours = streamkit_final(streamkit_server, params)
    events = list(client.messages.create(model="scripted", stream=True, **sdk_params(params)))
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    assert not any(e.type == "ping" for e in events)  # the SDK skips them, as streamkit does
    text = "".join(
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == ours.text
    delta = events[-2]
    assert delta.type == "message_delta"
    assert (delta.delta.stop_reason, delta.delta.stop_sequence) == (ours.stop_reason, ours.stop_sequence)
    whole = client.messages.create(model="scripted", **sdk_params(params))
    assert essence(whole, signatures=False) == essence(ours, signatures=False)


def test_stop_reasons_reach_the_sdk(client: anthropic.Anthropic, streamkit_server: ServerThread) -> None:
    text = "".join(tokens_for(2000, 16))
    stop = text.split()[3]
    whole = client.messages.create(
        model="scripted", messages=MESSAGES, max_tokens=256, stop_sequences=[stop], extra_body={"seed": 2}
    )
    assert (whole.stop_reason, whole.stop_sequence) == ("stop_sequence", stop)
    assert whole.content[0].type == "text" and whole.content[0].text == text[: text.index(stop)]
    limited = client.messages.create(
        model="scripted",
        messages=MESSAGES,
        max_tokens=3,
        extra_body={"seed": 2},
        extra_headers={"x-streamkit-timing": "tokens=40"},
    )
    assert (limited.stop_reason, limited.usage.output_tokens) == ("max_tokens", 3)


# The same bytes, both clients


class Replay(http.server.BaseHTTPRequestHandler):
    """Answers every POST with `body`, as an event stream."""

    body = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def replay() -> Iterator[tuple[str, type[Replay]]]:
    """A loopback server that sends the bytes a test puts in `Replay.body`, to either client."""
    handler = type("ReplayOnce", (Replay,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def both_finals(replay: tuple[str, type[Replay]], body: bytes) -> tuple[Any, streamkit.Message]:
    """What the SDK's stream helper and streamkit make of exactly these bytes."""
    url, handler = replay
    handler.body = body
    with (
        anthropic.Anthropic(base_url=url, api_key="test", max_retries=0) as sdk,
        sdk.messages.stream(model="m", messages=MESSAGES, max_tokens=256) as stream,
    ):
        theirs = stream.get_final_message()

    async def run() -> streamkit.Message:
        async with streamkit.AsyncClient(base_url=url + "/v1", api_key="test") as client:
            stream = await client.messages.create(model="m", messages=MESSAGES, max_tokens=256, stream=True)
            return await stream.get_final_message()

    return theirs, anyio.run(run)


SERVER_CASES: list[dict[str, Any]] = [
    {"seed": 1},
    {"tools": [WEATHER, CLOCK]},
    {"thinking": {"type": "enabled", "budget_tokens": 1024}, "stop_sequences": ["the"]},
    {"max_tokens": 4},
]


@pytest.mark.parametrize(
    "name", sorted(set(STREAMS) - {"anthropic_data_only"})
)  # the SDK skips every frame without an `event:` line
def test_the_same_bytes_give_the_same_final(replay: tuple[str, type[Replay]], name: str) -> None:
    theirs, ours = both_finals(replay, STREAMS[name])
    assert essence(theirs) == essence(ours)
    assert theirs.id == ours.id


@pytest.mark.parametrize("params", SERVER_CASES, ids=lambda p: ",".join(p))
def test_the_same_server_stream_gives_the_same_final(
    replay: tuple[str, type[Replay]], streamkit_server: ServerThread, params: dict[str, Any]
) -> None:
    request = {**sdk_params(params), "model": "scripted", "stream": True}
    theirs, ours = both_finals(replay, post(streamkit_server.url, "/v1/messages", request).body)
    assert essence(theirs) == essence(ours)
    assert theirs.id == ours.id and ours.id is not None and ours.id.startswith("msg_")


# Where they part: what goes wrong


def test_a_mid_stream_error_event_reaches_the_sdk_as_a_status_error_of_200(
    client: anthropic.Anthropic, streamkit_server: ServerThread
) -> None:
    fault = {"x-streamkit-fault": "error=event,error_after=6"}
    texts: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(
            model="scripted", messages=MESSAGES, max_tokens=256, extra_headers=fault
        ) as stream,
    ):
        for text in stream.text_stream:
            texts.append(text)  # noqa: PERF402 (the texts before the error are the point)
    error = caught.value
    # The SDK's error: a bare APIStatusError with the stream's own status, 200, not an overload error class.
    assert type(error) is anthropic.APIStatusError and error.status_code == 200
    assert not isinstance(error, anthropic.InternalServerError)
    assert error.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert len(texts) == 3
    # streamkit's: a StreamAPIError with the error's type, and the message so far.

    async def run() -> streamkit.StreamAPIError:
        async with streamkit.AsyncClient(base_url=streamkit_server.base_url) as ours:
            stream = await ours.messages.create(
                model="scripted", messages=MESSAGES, max_tokens=256, stream=True, extra_headers=fault
            )
            with pytest.raises(streamkit.StreamAPIError) as raised:
                await stream.get_final_message()
            return raised.value

    ours = anyio.run(run)
    assert (ours.type, ours.message) == ("overloaded_error", "Overloaded")
    assert isinstance(ours.partial, streamkit.Message) and ours.partial.text == "".join(texts)


def test_a_stream_cut_before_its_stop_reason(
    client: anthropic.Anthropic, streamkit_server: ServerThread
) -> None:
    """The SDK's `get_final_message()` returns what came, stop_reason None, never checking that message_stop
    came; streamkit raises `IncompleteStreamError` with the same message as its `.partial`."""
    fault = {"x-streamkit-fault": "truncate=8"}
    with client.messages.stream(
        model="scripted", messages=MESSAGES, max_tokens=256, extra_headers=fault
    ) as stream:
        theirs = stream.get_final_message()
    assert theirs.stop_reason is None and theirs.content

    async def run() -> streamkit.IncompleteStreamError:
        async with streamkit.AsyncClient(base_url=streamkit_server.base_url) as ours:
            stream = await ours.messages.create(
                model="scripted", messages=MESSAGES, max_tokens=256, stream=True, extra_headers=fault
            )
            with pytest.raises(streamkit.IncompleteStreamError) as raised:
                await stream.get_final_message()
            return raised.value

    error = anyio.run(run)
    assert isinstance(error.partial, streamkit.Message) and error.partial.stop_reason is None
    assert error.partial.text == "".join(b.text for b in theirs.content if b.type == "text")


def test_errors_reach_the_sdk_with_their_types(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="scripted", messages=MESSAGES, max_tokens=0)
    assert bad.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": bad.value.body["error"]["message"]},  # type: ignore[index]
    }
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-nope", messages=MESSAGES, max_tokens=8)
    overloaded = {"x-streamkit-fault": "status=529:1,key=test_anthropic_interop_529"}
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="scripted", messages=MESSAGES, max_tokens=8, extra_headers=overloaded)
    assert caught.value.status_code == 529
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
