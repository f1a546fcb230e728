"""The built-in server against hostile requests and careless exposure: every bound refused in the API's own
error shape, the server's peak memory under the worst requests, what it keeps of requests, its key (the
trace, non-ASCII keys, constant time), and its warning when anyone can reach it."""

from __future__ import annotations

import hmac
import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamkit.server import ServerConfig, ServerProcess, ServerStats, ServerThread
from tests.server.raw import RawResponse, post

HI = [{"role": "user", "content": "hi"}]
# Each API's path and a valid request to it, which a test adds to.
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "scripted", "messages": HI}),
    "completions": ("/v1/completions", {"model": "scripted", "prompt": "hi", "max_tokens": 100_000}),
    "responses": ("/v1/responses", {"model": "scripted", "input": "hi"}),
    "messages": ("/v1/messages", {"model": "scripted", "messages": HI, "max_tokens": 100_000}),
}
APIS = list(REQUESTS)
ANSWER_LIMIT = 32_768  # tokens in one answer
REQUEST_LIMIT = 65_536  # tokens in all the answers to one request
HUGE_NAME = "p" * 600_000  # a tool's parameter name: its arguments are as long, copied into every choice
SCHEMA: dict[str, Any] = {"properties": {HUGE_NAME: {}}}
TOOLS = {
    "chat": {"tools": [{"type": "function", "function": {"name": "f", "parameters": SCHEMA}}]},
    "responses": {"tools": [{"type": "function", "name": "f", "parameters": SCHEMA}]},
    "messages": {"tools": [{"name": "f", "input_schema": SCHEMA}]},
}
linux_only = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the process in /proc")


def send(server: ServerThread | str, api: str, timing: str = "", **params: Any) -> RawResponse:
    """One request to `api` with `params` over its valid request, and the `x-streamkit-timing` header."""
    path, body = REQUESTS[api]
    url = server if isinstance(server, str) else server.url
    return post(url, path, {**body, **params}, {"x-streamkit-timing": timing})


def refusal(api: str, response: RawResponse, status: int = 400) -> str:
    """The message of `response`, checked to be a `status` error in `api`'s own error shape."""
    assert response.status == status, response.body[:300]
    body = response.json()
    if api == "messages":  # Anthropic's shape
        assert set(body) == {"type", "error"} and body["type"] == "error"
        assert set(body["error"]) == {"type", "message"}
        kind = "request_too_large" if status == 413 else "invalid_request_error"
        assert body["error"]["type"] == kind
    else:  # OpenAI's, on each of its APIs
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"
    message: str = body["error"]["message"]
    return message


# Tokens per answer


@pytest.mark.parametrize("api", APIS)
def test_an_answer_over_32768_tokens_is_refused(streamkit_server: ServerThread, api: str) -> None:
    message = refusal(api, send(streamkit_server, api, f"tokens={ANSWER_LIMIT + 1}"))
    assert message == f"Invalid streamkit header: tokens must be at most {ANSWER_LIMIT}"
    whole = send(streamkit_server, api, f"tokens={ANSWER_LIMIT}")
    assert whole.status == 200, whole.body[:300]


def test_serve_refuses_more_tokens_than_an_answer_may_have() -> None:
    command = [sys.executable, "-m", "streamkit.cli", "serve", "--tokens", str(ANSWER_LIMIT + 1)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and f"tokens must be at most {ANSWER_LIMIT}" in result.stderr


# Tokens per request: n x prompts x tokens, tool-call arguments, logprob alternates, echoed prompts

OVER_THE_REQUEST_LIMIT = [
    ("chat", f"tokens={ANSWER_LIMIT}", {"n": 3}),
    ("chat", "tokens=513", {"n": 128}),
    ("chat", "", {"n": 16, **TOOLS["chat"]}),
    ("chat", "tokens=3121", {"logprobs": True, "top_logprobs": 20}),  # each alternate counts as a token
    ("completions", "tokens=16", {"prompt": ["x"] * 2000, "n": 16}),  # the 530 MB
    ("completions", "tokens=16", {"prompt": "x" * 600_000, "n": 128, "echo": True}),
    ("responses", "", TOOLS["responses"]),
    ("responses", f"tokens={ANSWER_LIMIT}", {"include": ["message.output_text.logprobs"], "top_logprobs": 2}),
    ("messages", "", TOOLS["messages"]),
]


@pytest.mark.parametrize(("api", "timing", "params"), OVER_THE_REQUEST_LIMIT)
def test_a_request_over_65536_tokens_in_all_is_refused(
    streamkit_server: ServerThread, api: str, timing: str, params: dict[str, Any]
) -> None:
    message = refusal(api, send(streamkit_server, api, timing, **params))
    assert message.startswith("Too many tokens for one request") and str(REQUEST_LIMIT) in message


def test_a_request_of_65536_tokens_in_all_is_answered(streamkit_server: ServerThread) -> None:
    response = send(streamkit_server, "chat", "tokens=512", n=128)
    assert response.status == 200
    assert response.json()["usage"]["completion_tokens"] == REQUEST_LIMIT


# The request body


@pytest.mark.parametrize("api", APIS)
def test_a_body_over_1_mib_is_a_413_in_the_apis_shape(streamkit_server: ServerThread, api: str) -> None:
    path, body = REQUESTS[api]
    payload = json.dumps({**body, "metadata": {"pad": ""}}).encode()
    payload = payload.replace(b'"pad": ""', b'"pad": "' + b"x" * (1024 * 1024 + 1 - len(payload)) + b'"')
    message = refusal(api, post(streamkit_server.url, path, payload), 413)
    assert message == "The request body is larger than 1048576 bytes."


def test_json_nested_deeper_than_the_parser_goes_is_a_400(streamkit_server: ServerThread) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    payload = b'{"model": "scripted", "messages": [{"role": "user", "content": ' + deep + b"}]}"
    message = refusal("chat", post(streamkit_server.url, "/v1/chat/completions", payload))
    assert message.startswith("We could not parse the JSON body of your request.")
    # As deep as the parser goes, the content is counted without recursion: an answer, not a 500.
    deep = b"[" * 900 + b'"a b"' + b"]" * 900
    payload = b'{"model": "scripted", "messages": [{"role": "user", "content": ' + deep + b"}]}"
    response = post(streamkit_server.url, "/v1/chat/completions", payload)
    assert response.status == 200 and response.json()["usage"]["prompt_tokens"] == 2


# What the server keeps


def test_only_the_bodies_of_valid_requests_are_kept() -> None:
    with ServerThread() as server:
        assert send(server, "chat", seed=1).status == 200
        assert refusal("chat", send(server, "chat", seed=2, n=0))  # refused by the API's checks
        assert refusal("chat", send(server, "chat", "tokens=40000", seed=3))  # by a bound
        assert refusal("messages", send(server, "messages", seed=4, max_tokens=None))
        assert send(server, "messages", seed=5).status == 200
        assert [body["seed"] for body in server.stats.bodies] == [1, 5]


def test_the_bodies_kept_are_the_last_100_in_at_most_4_mib() -> None:
    with ServerThread() as server:
        for seed in range(150):
            assert send(server, "chat", seed=seed).status == 200
        assert [body["seed"] for body in server.stats.bodies] == list(range(50, 150))
        big = "x " * 250_000  # 500 KB of JSON a body
        for seed in range(12):
            assert send(server, "chat", seed=seed, messages=[{"role": "user", "content": big}]).status == 200
        kept = server.stats.bodies
        assert kept[-1]["seed"] == 11 and len(kept) < 12
        assert sum(len(json.dumps(body)) for body in kept) <= 4 * 1024 * 1024


def test_attempts_are_counted_for_the_last_1024_keys() -> None:
    stats = ServerStats()
    for i in range(3000):
        stats.count_attempt(f"key-{i}")
        if i % 100 == 0:
            assert stats.count_attempt("in use") == i // 100 + 1  # used all along: never forgotten
    assert len(stats.attempts) == 1024
    assert stats.attempts["key-2999"] == 1 and stats.attempts["key-0"] == 0


def test_peers_kept_are_bounded() -> None:
    stats = ServerStats()
    for port in range(3000):
        stats.add_peer(("127.0.0.1", port))
    stats.add_peer(("127.0.0.1", 2999))
    assert len(stats.peers) == 1024 and ("127.0.0.1", 2999) in stats.peers


def test_attempts_still_count_each_fault_key(streamkit_server: ServerThread) -> None:
    path, body = REQUESTS["chat"]
    fault = {"x-streamkit-fault": "status=503:2,key=bounds-attempts"}
    statuses = [post(streamkit_server.url, path, body, fault).status for _ in range(3)]
    assert statuses == [503, 503, 200] and streamkit_server.stats.attempts["bounds-attempts"] == 3


# The worst requests, and the server's peak memory

# The server's resident memory at its peak, in bytes, after every hostile request below: it takes about 40 MiB
# once started; each request holds 64 MiB at most. Without the bounds, it took gigabytes.
PEAK_BOUND = 300 * 1024 * 1024
HOSTILE: list[tuple[str, str, dict[str, Any]]] = [
    ("chat", "tokens=1000000", {"n": 8}),  # the 5.5-7.9 GB
    ("chat", f"tokens={ANSWER_LIMIT}", {"n": 8}),
    ("completions", "tokens=16", {"prompt": ["x"] * 2000, "n": 16}),  # the 530 MB
    ("completions", "tokens=16", {"prompt": "x" * 900_000, "n": 128, "echo": True}),
    ("chat", "", {"n": 128, **TOOLS["chat"]}),
    ("responses", "", TOOLS["responses"]),
    ("messages", "", TOOLS["messages"]),
]
# Valid bodies of a little under 1 MiB of small JSON values, which parse to ~12 MB each: the server kept the
# last 100 parsed (2.4 GiB); 40 of them took far over PEAK_BOUND.
PARSED_LARGE = [{"role": "user"}] * 55_000


def peak_memory(pid: int) -> int:
    """The peak resident memory of process `pid`, in bytes (Linux's VmHWM)."""
    found = re.search(r"^VmHWM:\s+(\d+) kB$", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    assert found is not None
    return int(found[1]) * 1024


@linux_only
def test_the_worst_requests_leave_the_server_under_300_mib() -> None:
    server = ServerProcess()
    with server as base_url:
        url = base_url.removesuffix("/v1")
        for api, timing, params in HOSTILE:
            assert refusal(api, send(url, api, timing, **params))
        for seed in range(40):
            assert send(url, "chat", seed=seed, messages=PARSED_LARGE).status == 200
        peak = peak_memory(server.pid)
    assert peak < PEAK_BOUND, f"{peak / 2**20:.0f} MiB"


# The key


def get(server: ServerThread, path: str, headers: dict[str, str] | None = None) -> RawResponse:
    return post(server.url, path, b"", headers, method="GET")


def test_the_trace_requires_the_key() -> None:
    with ServerThread(ServerConfig(api_key="sk-trace", trace=True)) as server:
        streamed = post(
            server.url, "/v1/chat/completions", {**REQUESTS["chat"][1], "stream": True},
            {"Authorization": "Bearer sk-trace"},
        )  # fmt: skip
        assert streamed.status == 200
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"x-api-key": "sk-wrong"}):
            for path in ("/streamkit/trace", "/streamkit/trace?clear=1"):
                response = get(server, path, headers)
                assert response.status == 401 and response.json()["error"]["code"] == "invalid_api_key"
        for headers in ({"Authorization": "Bearer sk-trace"}, {"x-api-key": "sk-trace"}):
            response = get(server, "/streamkit/trace", headers)
            assert response.status == 200 and len(response.json()) == 1  # not cleared by the refused ones


@pytest.mark.parametrize("given", ["Bearer sk-cl\u00e9", "Bearer sk-caf\u00e9\u4e2d", "Bearer \u00e9", ""])
def test_a_key_in_any_characters_is_refused_or_accepted_never_an_error(given: str) -> None:
    with ServerThread(ServerConfig(api_key="sk-cl\u00e9")) as server:
        path, body = REQUESTS["chat"]
        response = post(server.url, path, body, {"Authorization": given} if given else {})
        assert response.status == (200 if given == "Bearer sk-cl\u00e9" else 401)


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[object, object]] = []
    compare: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def recorded(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recorded)
    with ServerThread(ServerConfig(api_key="sk-right")) as server:
        path, body = REQUESTS["chat"]
        assert post(server.url, path, body, {"Authorization": "Bearer sk-wrong"}).status == 401
        assert post(server.url, path, body, {"Authorization": "Bearer sk-right"}).status == 200
    assert compared == [(b"Bearer sk-wrong", b"Bearer sk-right"), (b"Bearer sk-right", b"Bearer sk-right")]


# Who can reach it

WARNING = "anyone who can reach the port can use the server"


def serve_stderr(*options: str) -> str:
    """What `streamkit serve` with `options` writes on stderr from its start to its stop (SIGTERM)."""
    command = [sys.executable, "-m", "streamkit.cli", "serve", "--port", "0", *options]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            assert " at http://" in process.stdout.readline()
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
        finally:
            process.kill()
    assert process.returncode == 0, err
    return err


def test_serve_on_every_interface_with_no_key_warns() -> None:
    err = serve_stderr("--host", "0.0.0.0")
    warning, *_ = err.splitlines()
    assert warning == f"streamkit serve: warning: listening on 0.0.0.0 with no --api-key: {WARNING}"


@pytest.mark.parametrize(
    "options", [("--host", "0.0.0.0", "--api-key", "sk-k"), ("--host", "127.0.0.1"), ("--host", "localhost")]
)
def test_serve_with_a_key_or_on_loopback_does_not_warn(options: tuple[str, ...]) -> None:
    assert WARNING not in serve_stderr(*options)
