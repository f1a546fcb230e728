"""What the built-in server sends, byte for byte: normal streams, every fault, validation and auth."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from streamkit import SSEDecoder
from streamkit.server import ServerConfig, ServerThread
from streamkit.server.app import SERVER_ERROR
from streamkit.server.scripted import tokens_for
from tests.server.raw import RawResponse, post

CHAT = {"model": "scripted", "messages": [{"role": "user", "content": "Hello there"}], "stream": True}
TOOL = [{"type": "function", "function": {"name": "f"}}]
EVENT = re.compile(rb"data: (.*?)\n\n", re.S)


def chat(server: ServerThread, fault: str | None = None, timing: str = "", **params: Any) -> RawResponse:
    headers = {"x-streamkit-fault": fault} if fault is not None else {}
    headers["x-streamkit-timing"] = timing
    return post(server.url, "/v1/chat/completions", {**CHAT, **params}, headers)


def datas(body: bytes) -> list[bytes]:
    return EVENT.findall(body)


def test_plain_stream_shape(streamkit_server: ServerThread) -> None:
    response = chat(streamkit_server, seed=7)
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.complete
    events = datas(response.body)
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "".join(tokens_for(7000, 16))
    for c in chunks:
        assert c["object"] == "chat.completion.chunk"
        assert c["id"].startswith("chatcmpl-") and c["id"] == chunks[0]["id"]
        assert c["system_fingerprint"] == "fp_streamkit"
        assert isinstance(c["created"], int)
    assert response.body == b"".join(b"data: " + e + b"\n\n" for e in events)


def test_drop_cuts_the_connection_after_k_chunks(streamkit_server: ServerThread) -> None:
    response = chat(streamkit_server, "drop=3")
    assert not response.complete
    assert len(datas(response.body)) == 3


def test_truncate_ends_cleanly_without_finish_or_done(streamkit_server: ServerThread) -> None:
    response = chat(streamkit_server, "truncate=2")
    assert response.complete
    events = datas(response.body)
    assert len(events) == 2
    assert all(json.loads(e)["choices"][0]["finish_reason"] is None for e in events)


def test_no_done_sends_everything_but_done(streamkit_server: ServerThread) -> None:
    response = chat(streamkit_server, "no_done")
    events = datas(response.body)
    assert response.complete
    assert b"[DONE]" not in response.body
    assert json.loads(events[-1])["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("object", b"data: " + json.dumps({"error": SERVER_ERROR}, separators=(",", ":")).encode() + b"\n\n"),
        (
            "string",
            b"data: "
            + json.dumps({"error": SERVER_ERROR["message"]}, separators=(",", ":")).encode()
            + b"\n\n",
        ),
        (
            "event",
            b"event: error\ndata: "
            + json.dumps({"error": SERVER_ERROR}, separators=(",", ":")).encode()
            + b"\n\n",
        ),
    ],
)
def test_error_in_each_form_then_the_end(streamkit_server: ServerThread, form: str, expected: bytes) -> None:
    response = chat(streamkit_server, f"error={form},error_after=2")
    assert response.complete
    body = response.body
    assert body.endswith(expected)
    assert len(datas(body[: -len(expected)])) == 2


def test_malformed_json(streamkit_server: ServerThread) -> None:
    response = chat(streamkit_server, "malformed=1")
    assert response.body.endswith(
        b'data: {"id": "chatcmpl-broken", "choices": [{"delta": {"content": "tru\n\n'
    )
    assert len(datas(response.body)) == 2
    assert b"[DONE]" not in response.body


@pytest.mark.parametrize(
    ("count", "key"), [("status=429:2", "colon"), ("status=429,fail_times=2", "fail_times")]
)
def test_status_with_a_count_fails_k_times_then_serves(
    streamkit_server: ServerThread, count: str, key: str
) -> None:
    fault = f"{count},retry_after=2,retry_after_ms=1500,key=test_status_{key}"
    for _ in range(2):
        response = chat(streamkit_server, fault)
        assert response.status == 429
        assert response.headers["retry-after"] == "2"
        assert response.headers["retry-after-ms"] == "1500"
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert chat(streamkit_server, fault).status == 200
    assert streamkit_server.stats.attempts[f"test_status_{key}"] == 3


def test_status_without_a_count_fails_every_attempt(streamkit_server: ServerThread) -> None:
    fault = "status=500,key=test_status_every"
    assert [chat(streamkit_server, fault).status for _ in range(5)] == [500] * 5
    assert streamkit_server.stats.attempts["test_status_every"] == 5


@pytest.mark.parametrize(
    ("status", "message"), [(400, "Bad Request"), (404, "Not Found"), (418, "I'm a Teapot")]
)
def test_client_error_faults_say_their_status(
    streamkit_server: ServerThread, status: int, message: str
) -> None:
    response = chat(streamkit_server, f"status={status},key=test_client_errors_{status}")
    assert response.status == status
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(message) and "Rate limit" not in error["message"]


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors(streamkit_server: ServerThread, status: int) -> None:
    response = chat(streamkit_server, f"status={status},key=test_server_errors_{status}")
    assert response.status == status
    assert response.json() == {"error": SERVER_ERROR}


def test_html_page_with_200(streamkit_server: ServerThread) -> None:
    response = chat(streamkit_server, "html")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.body.startswith(b"<!DOCTYPE html>")


@pytest.mark.parametrize(("framing", "end"), [("crlf", b"\r\n"), ("cr", b"\r"), ("lf", b"\n")])
def test_framing(streamkit_server: ServerThread, framing: str, end: bytes) -> None:
    body = chat(streamkit_server, f"framing={framing}").body
    normal = body.replace(end, b"\n")
    assert normal.count(b"\n\n") == len(datas(normal)) == 19  # role, 16 tokens, finish, [DONE]
    if end != b"\n":
        assert body.replace(end, b"").count(b"\n") == 0
    assert [e.data for e in SSEDecoder().feed(body)] == [e.data for e in SSEDecoder().feed(normal)]


def test_bom(streamkit_server: ServerThread) -> None:
    body = chat(streamkit_server, "bom").body
    assert body.startswith(b"\xef\xbb\xbfdata: {")
    assert body.count(b"\xef\xbb\xbf") == 1


def test_keepalive_comments_while_waiting(streamkit_server: ServerThread) -> None:
    response = post(
        streamkit_server.url,
        "/v1/chat/completions",
        {**CHAT, "max_tokens": 2},
        {"x-streamkit-fault": "keepalive=0.05", "x-streamkit-timing": "ttft=0.3"},
    )
    assert response.body.count(b": keep-alive\n\n") >= 4
    assert response.seconds >= 0.3
    assert response.body.index(b": keep-alive") > response.body.index(b'"role"')


def test_ping_events_while_stalled(streamkit_server: ServerThread) -> None:
    body = chat(streamkit_server, "ping=0.05,stall=2:0.3").body
    first_ping = body.index(b"event: ping\ndata: {}\n\n")
    assert len(datas(body[:first_ping])) == 2
    assert body.count(b"event: ping\ndata: {}\n\n") >= 4


def test_stall_head(streamkit_server: ServerThread) -> None:
    assert chat(streamkit_server, "stall_head=0.3").seconds >= 0.3


def test_split_writes_land_inside_utf8(streamkit_server: ServerThread) -> None:
    # 100 tokens hold non-ASCII words (café, über, ...); writes of 1 byte cut every one of them.
    response = chat(streamkit_server, "split=1", "tokens=100", seed=3)
    assert all(len(piece) == 1 for piece in response.pieces)
    assert any(_cuts_a_character(piece) for piece in response.pieces)
    seven = chat(streamkit_server, "split=7", "tokens=100", seed=3)
    assert all(len(piece) <= 7 for piece in seven.pieces)
    whole = chat(streamkit_server, "", "tokens=100", seed=3).body
    assert len(response.body) == len(whole)
    assert [json.loads(e)["choices"][0]["delta"] for e in datas(response.body)[:-1]] == [
        json.loads(e)["choices"][0]["delta"] for e in datas(whole)[:-1]
    ]


def _cuts_a_character(piece: bytes) -> bool:
    try:
        piece.decode()
    except UnicodeDecodeError:
        return True
    return False


def test_n_choices_are_interleaved_and_usage_comes_last(streamkit_server: ServerThread) -> None:
    response = chat(streamkit_server, n=3, max_tokens=4, stream_options={"include_usage": True})
    chunks = [json.loads(e) for e in datas(response.body)[:-1]]
    assert [c["choices"][0]["index"] for c in chunks[:6]] == [0, 1, 2, 0, 1, 2]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 12, "total_tokens": 14}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    assert finishes == ["length"] * 3


def test_stop_is_never_emitted(streamkit_server: ServerThread) -> None:
    full = "".join(tokens_for(5000, 16))
    stop = full[10:14]
    response = chat(streamkit_server, seed=5, stop=[stop, "zzz"])
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in datas(response.body)[:-1])
    assert text == full[: full.index(stop)]


# Validation and auth


@pytest.mark.parametrize(
    ("params", "status", "param", "code"),
    [
        ({"messages": None}, 400, "messages", "missing_required_parameter"),
        ({"messages": []}, 400, "messages", "empty_array"),
        ({"messages": "hi"}, 400, "messages", "invalid_type"),
        ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role", "invalid_value"),
        ({"n": "2"}, 400, "n", "invalid_type"),
        ({"n": 0}, 400, "n", "integer_below_min_value"),
        ({"temperature": 3}, 400, "temperature", "decimal_above_max_value"),
        ({"top_p": True}, 400, "top_p", "invalid_type"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "invalid_value"),
        ({"top_logprobs": 2}, 400, "top_logprobs", "invalid_value"),
        ({"tool_choice": "sometimes", "tools": TOOL}, 400, "tool_choice", "invalid_value"),
        ({"stream": False, "stream_options": {}}, 400, "stream_options", "invalid_value"),
        ({"model": "gpt-9"}, 404, None, "model_not_found"),
    ],
)  # fmt: skip
def test_bad_requests_get_openai_errors(
    streamkit_server: ServerThread, params: dict[str, Any], status: int, param: str | None, code: str
) -> None:
    body = {k: v for k, v in {**CHAT, **params}.items() if v is not None}
    response = post(streamkit_server.url, "/v1/chat/completions", body)
    assert response.status == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_malformed_json_body(streamkit_server: ServerThread) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", streamkit_server.server.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n")
        sock.sendall(b"Connection: close\r\n\r\n{nope")
        data = b"".join(iter(lambda: sock.recv(65536), b""))
    assert data.startswith(b"HTTP/1.1 400")
    assert b"could not parse the JSON body" in data


@pytest.mark.parametrize(
    ("params", "code"),
    [({"prompt": None}, "missing_required_parameter"), ({"best_of": 1, "n": 2}, "invalid_value"),
     ({"logprobs": 9}, "integer_above_max_value"), ({"echo": "yes"}, "invalid_type")],
)  # fmt: skip
def test_bad_legacy_requests(streamkit_server: ServerThread, params: dict[str, Any], code: str) -> None:
    body = {k: v for k, v in {"model": "scripted", "prompt": "x", **params}.items() if v is not None}
    response = post(streamkit_server.url, "/v1/completions", body)
    assert response.status == 400
    assert response.json()["error"]["code"] == code


def test_bad_fault_header_is_a_400(streamkit_server: ServerThread) -> None:
    response = chat(streamkit_server, "explode=1")
    assert response.status == 400
    assert "unknown fault" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fault", "why"),
    [("status=500:", "status count needs a value"), ("status=500:x", "status count='x' is not a valid int"),
     ("status=:1", "status needs a value"), ("status=500:-1", "status count must not be negative"),
     ("status=200:1", "status must be a 4xx or 5xx code")],
)  # fmt: skip
def test_a_bad_status_count_is_a_400(streamkit_server: ServerThread, fault: str, why: str) -> None:
    response = chat(streamkit_server, fault)
    assert response.status == 400
    assert response.json()["error"]["message"] == f"Invalid streamkit header: {why}"


def test_api_key_is_required_when_set() -> None:
    with ServerThread(ServerConfig(api_key="sk-secret")) as server:
        denied = post(server.url, "/v1/chat/completions", CHAT)
        assert denied.status == 401
        assert denied.json()["error"]["code"] == "invalid_api_key"
        assert b"sk-secret" not in denied.body
        wrong = post(server.url, "/v1/chat/completions", CHAT, {"Authorization": "Bearer nope"})
        assert wrong.status == 401
        ok = post(server.url, "/v1/chat/completions", CHAT, {"Authorization": "Bearer sk-secret"})
        assert ok.status == 200
        assert "sk-secret" not in repr(server.config)


def models(server: ServerThread) -> list[str]:
    import urllib.request

    with urllib.request.urlopen(server.base_url + "/models") as response:
        return [model["id"] for model in json.load(response)["data"]]


def test_models(streamkit_server: ServerThread) -> None:
    assert models(streamkit_server) == ["scripted"]
    with ServerThread(ServerConfig(model="gpt-4o-mini")) as server:
        assert models(server) == ["gpt-4o-mini"]


# Each API's path, a request for the model `m`, and the answer's `model` field in its whole answer.
ANY_MODEL: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    "completions": ("/v1/completions", {"prompt": "hi"}),
    "responses": ("/v1/responses", {"input": "hi"}),
    "messages": ("/v1/messages", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}),
}


@pytest.mark.parametrize("api", ANY_MODEL)
def test_any_model_answers_every_name_under_the_name_asked(api: str) -> None:
    path, body = ANY_MODEL[api]
    with ServerThread(ServerConfig(any_model=True)) as server:
        for name in ("gpt-4o-mini", "claude-haiku-4-5", "scripted"):
            whole = post(server.url, path, {"model": name, **body})
            assert whole.status == 200 and whole.json()["model"] == name
            stream = post(server.url, path, {"model": name, **body, "stream": True})
            assert stream.status == 200 and f'"model":"{name}"'.encode() in stream.body
        assert models(server) == ["scripted"]
        missing = post(server.url, path, body)  # a name is still required
        assert missing.status == 400


def test_server_wide_faults() -> None:
    with ServerThread(ServerConfig(faults=__import__("streamkit").server.Faults.parse("no_done"))) as server:
        assert b"[DONE]" not in chat(server).body
        assert b"[DONE]" in chat(server, "").body  # a request's own (empty) fault header replaces them


def test_events_per_write_sends_events_together_until_a_wait(streamkit_server: ServerThread) -> None:
    # 40 tokens: role, 40 token chunks, finish, [DONE] = 43 events, in writes of up to 16.
    burst = chat(streamkit_server, "", "tokens=40,events_per_write=16", seed=2)
    assert [piece.count(b"\n\n") for piece in burst.pieces] == [16, 16, 11]
    plain = chat(streamkit_server, "", "tokens=40", seed=2)
    assert [json.loads(e)["choices"] for e in datas(burst.body)[:-1]] == [
        json.loads(e)["choices"] for e in datas(plain.body)[:-1]
    ]
    # A wait between tokens flushes what is held, so timing is kept.
    paced = chat(streamkit_server, "", "tokens=4,itl=0.01,events_per_write=16", seed=2)
    assert len(paced.pieces) >= 4
