"""What the built-in server sends on `/v1/messages`, byte for byte: the events of a text answer, of a tool use
and of extended thinking, the stop reasons, the faults in the Messages form, its key, and validation errors in
Anthropic's shape."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from streamkit import ChunkDecodeError
from streamkit.protocols.messages import MESSAGES
from streamkit.server import ServerConfig, ServerThread
from streamkit.server.apis.messages import MESSAGES as SERVER
from streamkit.server.scripted import ARGUMENT_PIECE, RequestError, tokens_for
from tests.server.raw import RawResponse, post

BODY: dict[str, Any] = {
    "model": "scripted",
    "max_tokens": 256,
    "messages": [{"role": "user", "content": "Hello there"}],
    "stream": True,
}
FRAME = re.compile(rb"event: ([a-z_]+)\ndata: (\{.*?\})\n\n", re.S)
TEXT_EVENTS = [
    "message_start",
    "ping",
    "content_block_start",
    *["content_block_delta"] * 16,
    "content_block_stop",
    "message_delta",
    "message_stop",
]
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    },
}
CLOCK: dict[str, Any] = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def messages(
    server: ServerThread,
    fault: str | None = None,
    timing: str = "",
    headers: dict[str, str] | None = None,
    **params: Any,
) -> RawResponse:
    sent = {"x-streamkit-timing": timing, **(headers or {})}
    if fault is not None:
        sent["x-streamkit-fault"] = fault
    body = {k: v for k, v in {**BODY, **params}.items() if v is not ...}
    return post(server.url, "/v1/messages", body, sent)


def frames(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Each event as its `event:` name and its data; the body must be made of nothing else."""
    found = FRAME.findall(body)
    assert b"".join(b"event: " + name + b"\ndata: " + data + b"\n\n" for name, data in found) == body
    return [(name.decode(), json.loads(data)) for name, data in found]


def names(response: RawResponse) -> list[str]:
    return [name for name, _ in frames(response.body)]


def anthropic_error(response: RawResponse, status: int, kind: str) -> str:
    """The error's message, once the answer is checked to be Anthropic's error shape and nothing more."""
    assert response.status == status
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind
    message: str = body["error"]["message"]
    assert message
    return message


def test_a_text_answer(streamkit_server: ServerThread) -> None:
    response = messages(streamkit_server, seed=7)
    assert response.status == 200 and response.complete
    assert response.headers["content-type"] == "text/event-stream"
    events = frames(response.body)
    assert [name for name, _ in events] == TEXT_EVENTS
    assert all(name == data["type"] for name, data in events)  # `event:` names the data's type
    assert b"[DONE]" not in response.body

    message = events[0][1]["message"]
    assert message == {
        "id": message["id"],
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "scripted",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 2,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    assert message["id"].startswith("msg_")
    assert events[1][1] == {"type": "ping"}
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    tokens = tokens_for(7000, 16)
    assert [data for _, data in events[3:19]] == [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}}
        for token in tokens
    ]
    assert events[19][1] == {"type": "content_block_stop", "index": 0}
    # The usage comes in message_start and again, with the output's count, in message_delta.
    assert events[20][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 16},
    }
    assert events[21][1] == {"type": "message_stop"}


def test_tokens_per_chunk_groups_the_deltas(streamkit_server: ServerThread) -> None:
    events = frames(messages(streamkit_server, timing="tokens=10,tokens_per_chunk=4", seed=1).body)
    texts = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
    tokens = tokens_for(1000, 10)
    assert texts == ["".join(tokens[0:4]), "".join(tokens[4:8]), "".join(tokens[8:10])]
    assert events[-2][1]["usage"] == {"output_tokens": 10}


@pytest.mark.parametrize(
    ("choice", "tools", "called"),
    [
        ({"type": "any"}, [WEATHER], ["get_weather"]),
        ({"type": "tool", "name": "get_weather"}, [CLOCK, WEATHER], ["get_weather"]),
        ({"type": "auto"}, [WEATHER, CLOCK], ["get_weather", "get_time"]),
        ({"type": "any", "disable_parallel_tool_use": True}, [WEATHER, CLOCK], ["get_weather"]),
    ],
    ids=["any", "named", "auto", "one-at-a-time"],
)
def test_tool_use(
    streamkit_server: ServerThread, choice: dict[str, Any], tools: Any, called: list[str]
) -> None:
    events = frames(messages(streamkit_server, tools=tools, tool_choice=choice).body)
    assert [name for name, _ in events[:3]] == ["message_start", "ping", "content_block_start"]
    starts = [data for name, data in events if name == "content_block_start"]
    assert [s["index"] for s in starts] == list(range(len(called)))
    output_tokens = 0
    for start in starts:
        block = start["content_block"]
        assert set(block) == {"type", "id", "name", "input"}
        assert block["type"] == "tool_use" and block["id"].startswith("toolu_") and block["input"] == {}
        fragments = [
            data["delta"]
            for name, data in events
            if name == "content_block_delta" and data["index"] == start["index"]
        ]
        assert all(f["type"] == "input_json_delta" for f in fragments)
        assert fragments[0]["partial_json"] == ""  # as Anthropic starts every tool's input
        arguments = "".join(f["partial_json"] for f in fragments)
        schema = next(t for t in tools if t["name"] == block["name"])["input_schema"]
        assert json.loads(arguments).keys() == schema["properties"].keys()
        assert all(len(f["partial_json"]) <= ARGUMENT_PIECE for f in fragments)
        output_tokens += len(fragments)  # the call itself and each piece of its input
    assert [s["content_block"]["name"] for s in starts] == called
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }
    stops = [data["index"] for name, data in events if name == "content_block_stop"]
    assert stops == list(range(len(called)))


def test_tool_choice_none_and_tools_without_a_schema_answer_with_text(streamkit_server: ServerThread) -> None:
    assert names(messages(streamkit_server, tools=[WEATHER], tool_choice={"type": "none"})) == TEXT_EVENTS
    assert names(messages(streamkit_server, tools=[{"name": "web_search"}])) == TEXT_EVENTS


def test_extended_thinking(streamkit_server: ServerThread) -> None:
    events = frames(
        messages(streamkit_server, thinking={"type": "enabled", "budget_tokens": 1024}, seed=3).body
    )
    tokens = tokens_for(3000, 16)
    thinking = [data for _, data in events if data.get("index") == 0]
    assert thinking[0]["content_block"] == {"type": "thinking", "thinking": ""}
    assert [d["delta"] for d in thinking[1:5]] == [
        {"type": "thinking_delta", "thinking": t} for t in tokens[:4]
    ]
    signature = thinking[5]["delta"]
    assert signature["type"] == "signature_delta" and signature["signature"]
    assert thinking[6] == {"type": "content_block_stop", "index": 0}
    text = [data for _, data in events if data.get("index") == 1]
    assert text[0]["content_block"] == {"type": "text", "text": ""}
    assert "".join(d["delta"]["text"] for d in text[1:-1]) == "".join(tokens)
    assert events[-2][1]["usage"] == {"output_tokens": 16 + 4}  # the thought counts as output
    disabled = messages(streamkit_server, thinking={"type": "disabled"})
    assert names(disabled) == TEXT_EVENTS


def test_max_tokens_ends_with_stop_reason_max_tokens(streamkit_server: ServerThread) -> None:
    events = frames(messages(streamkit_server, timing="tokens=40", max_tokens=5).body)
    assert [name for name, _ in events].count("content_block_delta") == 5
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
        "usage": {"output_tokens": 5},
    }


def test_stop_sequences_end_with_stop_reason_stop_sequence(streamkit_server: ServerThread) -> None:
    text = "".join(tokens_for(2000, 16))
    stop = text.split()[4]
    events = frames(messages(streamkit_server, stop_sequences=["zzz", stop], seed=2).body)
    sent = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert sent == text[: text.index(stop)] and stop not in sent
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": stop}
    assert delta["usage"]["output_tokens"] == len([n for n, _ in events if n == "content_block_delta"])
    assert events[-1][1] == {"type": "message_stop"}


def test_the_non_streamed_answer_is_the_streams_aggregate(streamkit_server: ServerThread) -> None:
    events = frames(messages(streamkit_server, seed=4, tools=[WEATHER]).body)
    whole = messages(streamkit_server, stream=False, seed=4, tools=[WEATHER])
    assert whole.status == 200 and whole.headers["content-type"].startswith("application/json")
    answer = whole.json()
    assert answer["id"].startswith("msg_") and answer["id"] != events[0][1]["message"]["id"]
    assert (answer["type"], answer["role"], answer["model"]) == ("message", "assistant", "scripted")
    assert answer["stop_reason"] == "tool_use" == events[-2][1]["delta"]["stop_reason"]
    assert answer["usage"] == {**events[0][1]["message"]["usage"], **events[-2][1]["usage"]}
    (block,) = answer["content"]
    arguments = "".join(
        data["delta"]["partial_json"] for name, data in events if name == "content_block_delta"
    )
    assert block["type"] == "tool_use" and block["name"] == "get_weather"
    assert block["input"] == json.loads(arguments)
    text = messages(streamkit_server, stream=False, seed=4).json()
    assert text["content"] == [{"type": "text", "text": "".join(tokens_for(4000, 16))}]
    assert text["stop_reason"] == "end_turn"


# Faults in the Messages form


def test_error_event(streamkit_server: ServerThread) -> None:
    response = messages(streamkit_server, "error=event,error_after=5")
    assert response.complete
    events = frames(response.body)
    assert [name for name, _ in events] == [*TEXT_EVENTS[:5], "error"]
    assert events[-1][1] == OVERLOADED
    assert b"message_stop" not in response.body


def test_no_done_leaves_out_message_stop(streamkit_server: ServerThread) -> None:
    response = messages(streamkit_server, "no_done")
    assert response.complete and names(response) == TEXT_EVENTS[:-1]


def test_truncate_and_drop(streamkit_server: ServerThread) -> None:
    truncated = messages(streamkit_server, "truncate=4")
    assert truncated.complete and names(truncated) == TEXT_EVENTS[:4]
    dropped = messages(streamkit_server, "drop=6")
    assert not dropped.complete and names(dropped) == TEXT_EVENTS[:6]


def test_malformed(streamkit_server: ServerThread) -> None:
    body = messages(streamkit_server, "malformed=3").body
    assert body.endswith(
        b'data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "tru\n\n'
    )
    assert [name for name, _ in frames(body[: body.rindex(b"data: ")])] == TEXT_EVENTS[:3]


def test_ping_while_waiting(streamkit_server: ServerThread) -> None:
    response = messages(streamkit_server, "ping=0.01,stall=4:0.1")
    events = [name for name, data in frames(response.body)]
    pings = events.count("ping")
    assert pings > 1 and [n for n in events if n != "ping"] == [n for n in TEXT_EVENTS if n != "ping"]
    assert events[:2] == ["message_start", "ping"] and events[4] == "ping"


def test_crlf_framing_and_bom(streamkit_server: ServerThread) -> None:
    plain = messages(streamkit_server, seed=5).body
    framed = messages(streamkit_server, "framing=crlf,bom", seed=5).body
    assert framed.startswith(b"\xef\xbb\xbf")
    assert b"\n" not in framed.replace(b"\r\n", b"")
    unframed = framed[3:].replace(b"\r\n", b"\n")
    assert [data for _, data in frames(unframed)][1:] == [data for _, data in frames(plain)][1:]


@pytest.mark.parametrize(
    ("status", "kind", "retry_after"),
    [(529, "overloaded_error", "0"), (429, "rate_limit_error", "1"), (500, "api_error", None)],
)
def test_status_faults_in_anthropics_shape(
    streamkit_server: ServerThread, status: int, kind: str, retry_after: str | None
) -> None:
    spec = f"status={status}:1,key=test_messages_wire_{status}"
    if retry_after is not None:
        spec += f",retry_after={retry_after}"
    response = messages(streamkit_server, spec)
    anthropic_error(response, status, kind)
    assert response.headers.get("retry-after") == retry_after
    assert messages(streamkit_server, spec).status == 200  # :1, the first attempt only: the next is served


@pytest.mark.parametrize("form", ["object", "string", "failed"])
def test_an_error_form_of_other_apis_is_a_400_that_names_the_allowed_one(
    streamkit_server: ServerThread, form: str
) -> None:
    message = anthropic_error(messages(streamkit_server, f"error={form}"), 400, "invalid_request_error")
    assert "error must be one of event" in message


def test_a_bad_fault_header_is_a_400_in_anthropics_shape(streamkit_server: ServerThread) -> None:
    message = anthropic_error(messages(streamkit_server, "explode=1"), 400, "invalid_request_error")
    assert "unknown fault" in message


# The key


def test_the_key_is_taken_from_x_api_key() -> None:
    with ServerThread(ServerConfig(api_key="sk-secret")) as server:
        denied = messages(server)
        anthropic_error(denied, 401, "authentication_error")
        assert b"sk-secret" not in denied.body
        anthropic_error(messages(server, headers={"x-api-key": "nope"}), 401, "authentication_error")
        # x-api-key is the Messages API's own header: it counts even beside a right Bearer token.
        both = messages(server, headers={"x-api-key": "nope", "Authorization": "Bearer sk-secret"})
        anthropic_error(both, 401, "authentication_error")
        ok = messages(server, headers={"x-api-key": "sk-secret", "anthropic-version": "2023-06-01"})
        assert ok.status == 200 and names(ok) == TEXT_EVENTS
        assert messages(server, headers={"Authorization": "Bearer sk-secret"}).status == 200
        # The OpenAI dialects do not take x-api-key.
        chat = post(
            server.url,
            "/v1/chat/completions",
            {"model": "scripted", "messages": BODY["messages"]},
            {"x-api-key": "sk-secret"},
        )
        assert chat.status == 401


# Validation


@pytest.mark.parametrize(
    ("params", "names_it"),
    [
        ({"max_tokens": ...}, "max_tokens"),
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "16"}, "max_tokens"),
        ({"messages": ...}, "messages"),
        ({"messages": None}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "system", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "a"}, {"content": "b"}]}, "messages.1.role"),
        ({"messages": ["hi"]}, "messages.0.role"),
        ({"tool_choice": {"type": "required"}}, "tool_choice"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tools": [{"input_schema": {}}]}, "tools.0.name"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type"),
        ({"temperature": 1.5}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"system": 5}, "system"),
        ({"stream": "yes"}, "stream"),
        ({"model": ...}, "model"),
    ],
)  # fmt: skip
def test_bad_requests_get_anthropic_errors(
    streamkit_server: ServerThread, params: dict[str, Any], names_it: str
) -> None:
    message = anthropic_error(messages(streamkit_server, **params), 400, "invalid_request_error")
    assert names_it in message


def test_an_unknown_model_is_not_found(streamkit_server: ServerThread) -> None:
    message = anthropic_error(messages(streamkit_server, model="claude-9"), 404, "not_found_error")
    assert "claude-9" in message


def test_a_body_that_is_not_json_is_a_400(streamkit_server: ServerThread) -> None:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(streamkit_server.url)
    payload = b"{not json"
    head = (
        f"POST /v1/messages HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head + payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    assert status_line.split()[1] == b"400"
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


# Error shapes


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_bodies_have_anthropics_shape(status: int, kind: str) -> None:
    body = SERVER.error_body(RequestError(status, "Something"))
    assert body == {"type": "error", "error": {"type": kind, "message": "Something"}}
    fault = SERVER.error_body(SERVER.fault_error(status))
    assert fault["error"]["type"] == kind and fault["error"]["message"]


def test_fault_errors_say_what_anthropic_says() -> None:
    assert SERVER.fault_error(529).message == "Overloaded"
    assert SERVER.fault_error(429).status == 429
    assert SERVER.error_forms == ("event",)
    with pytest.raises(ChunkDecodeError):
        MESSAGES.decode(SERVER.malformed)
