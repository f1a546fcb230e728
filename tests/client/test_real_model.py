"""Interop with a real server: llama.cpp's own server (the `xllamacpp` wheel) serving SmolLM2-135M-Instruct
(the `local` extra), through each transport. At temperature 0 with a fixed seed, the streamed aggregate equals
the non-streamed answer; four streams at once are decoded together; all four APIs stream."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import streamkit
from streamkit.server.local import MODEL_NAME, LocalModel, smollm2_path
from streamkit.sse import ServerSentEvent, SSEDecoder
from tests.server.test_load_and_cli import local_servers_of

pytestmark = [pytest.mark.anyio, pytest.mark.real_model]

QUESTION = [
    {"role": "user", "content": "Explain the difference between symmetric and asymmetric encryption."}
]


@pytest.fixture(scope="module")
def local_model() -> Iterator[LocalModel]:
    with LocalModel() as model:
        yield model


@pytest.fixture
async def real_client(local_model: LocalModel, transport: str) -> AsyncIterator[streamkit.AsyncClient]:
    base_url = local_model.base_url
    async with streamkit.AsyncClient(base_url=base_url, transport=transport) as client:  # type: ignore[arg-type]
        yield client


async def test_chat_stream_equals_the_whole_answer(real_client: streamkit.AsyncClient) -> None:
    params = streamkit.ChatParams(temperature=0.0, seed=42, max_tokens=48)
    whole = await real_client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, **params)
    stream = await real_client.chat.completions.create(
        model=MODEL_NAME, messages=QUESTION, stream=True, **params
    )
    async with stream:
        texts = [text async for text in stream.text_deltas()]
    final = await stream.get_final_completion()
    answer = whole.choices[0].message
    assert answer.content and len(texts) > 5
    assert final.choices[0].message.content == answer.content == "".join(texts)
    assert final.choices[0].finish_reason == whole.choices[0].finish_reason == "length"
    assert final.choices[0].message.role == "assistant"
    metrics = stream.metrics
    assert metrics.ttft is not None and metrics.e2e is not None and 0 < metrics.ttft <= metrics.e2e
    assert len(metrics.token_arrivals) == len(texts)


async def test_legacy_stream_equals_the_whole_answer(real_client: streamkit.AsyncClient) -> None:
    params = streamkit.CompletionParams(temperature=0.0, seed=7, max_tokens=24)
    whole = await real_client.completions.create(
        model=MODEL_NAME, prompt="The capital of France is", **params
    )
    stream = await real_client.completions.create(
        model=MODEL_NAME, prompt="The capital of France is", stream=True, **params
    )
    final = await stream.get_final_completion()
    assert final.choices[0].text == whole.choices[0].text != ""
    assert final.choices[0].finish_reason == whole.choices[0].finish_reason


async def test_stop_and_a_conversation(real_client: streamkit.AsyncClient) -> None:
    conversation = streamkit.Conversation(real_client, model=MODEL_NAME, temperature=0.0, max_tokens=16)
    first = await (await conversation.send("Name a colour.")).get_final()
    second = await (await conversation.send("Name another one.")).get_final()
    assert [m["role"] for m in conversation.messages] == ["user", "assistant", "user", "assistant"]
    assert conversation.messages[1]["content"] == first.choices[0].message.content
    assert conversation.messages[3]["content"] == second.choices[0].message.content
    stopped = await real_client.chat.completions.create(
        model=MODEL_NAME, messages=QUESTION, temperature=0.0, max_tokens=64, stop=["."]
    )
    assert "." not in (stopped.choices[0].message.content or "")
    assert stopped.choices[0].finish_reason == "stop"


async def test_a_connection_llama_cpp_closed_is_replaced_not_retried(
    local_model: LocalModel, transport: str
) -> None:
    # llama.cpp's server answers `Keep-Alive: timeout=5` and closes the connection right after each stream:
    # the next request may find it in the pool, closed. With no retries allowed, every request still succeeds.
    async with streamkit.AsyncClient(
        base_url=local_model.base_url,
        transport=transport,  # type: ignore[arg-type]
        max_retries=0,
    ) as client:
        for _ in range(4):
            stream = await client.chat.completions.create(
                model=MODEL_NAME, messages=QUESTION, max_tokens=4, temperature=0.0, stream=True
            )
            final = await stream.get_final_completion()
            metrics = stream.metrics
            assert final.choices[0].message.content and metrics.attempts >= 1
            assert metrics.call_ttft is not None and metrics.ttft is not None
            assert metrics.call_ttft >= metrics.ttft


async def test_responses_stream_equals_the_whole_response(real_client: streamkit.AsyncClient) -> None:
    params = streamkit.ResponseParams(temperature=0.0, max_output_tokens=32)
    whole = await real_client.responses.create(model=MODEL_NAME, input=QUESTION, **params)
    stream = await real_client.responses.create(model=MODEL_NAME, input=QUESTION, stream=True, **params)
    async with stream:
        texts = [text async for text in stream.text_deltas()]
    final = await stream.get_final_response()
    # llama.cpp says "completed" where OpenAI would say "incomplete" at max_output_tokens.
    assert final.status == whole.status and final.status in ("completed", "incomplete")
    assert final.output_text == whole.output_text == "".join(texts) != ""
    assert (
        final.usage is not None
        and final.usage.output_tokens == len(texts) == stream.metrics.completion_tokens
    )
    assert stream.metrics.ttft is not None and len(stream.metrics.token_arrivals) == len(texts)


async def test_messages_stream_equals_the_whole_message(real_client: streamkit.AsyncClient) -> None:
    params = streamkit.MessageParams(temperature=0.0, system="Answer briefly.")
    whole = await real_client.messages.create(model=MODEL_NAME, messages=QUESTION, max_tokens=32, **params)
    stream = await real_client.messages.create(
        model=MODEL_NAME, messages=QUESTION, max_tokens=32, stream=True, **params
    )
    async with stream:
        texts = [text async for text in stream.text_deltas()]
    final = await stream.get_final_message()
    assert final.text == whole.text == "".join(texts) != ""
    assert final.stop_reason == whole.stop_reason == "max_tokens"
    assert final.usage is not None and final.usage.output_tokens == len(texts)
    assert stream.metrics.ttft is not None and len(stream.metrics.token_arrivals) == len(texts)


async def test_conversations_on_responses_and_messages(real_client: streamkit.AsyncClient) -> None:
    for api in ("responses", "messages"):
        conversation = streamkit.Conversation(
            real_client, model=MODEL_NAME, api=api, system="Answer briefly.", max_tokens=12, temperature=0.0
        )
        first = await (await conversation.send("Name a colour.")).get_final()
        await (await conversation.send("Name another one.")).get_final()
        assert [m["role"] for m in conversation.messages if "role" in m] == ["user", "assistant"] * 2, api
        assert first is not None


def test_chat_streams_from_the_embedded_local_model_by_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    question = "Explain the difference between symmetric and asymmetric encryption."
    command = [sys.executable, "-m", "streamkit.cli", "chat", "--max-tokens", "24", "--stats", question]
    result = subprocess.run(command, capture_output=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.decode().split()) >= 5
    assert "finish_reason length" in result.stderr.decode()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_runs_the_local_model_and_stops_it(stop: signal.Signals) -> None:
    command = [sys.executable, "-m", "streamkit.cli", "serve", "--model", "smollm2", "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as server:
        assert server.stdout is not None
        line = server.stdout.readline()
        base_url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(f"{base_url}/models", timeout=10) as response:
            assert json.load(response)["data"][0]["id"] == MODEL_NAME
        server.send_signal(stop)
        assert server.wait(20) == 0
    with pytest.raises(urllib.error.URLError):  # llama.cpp's server went with it
        urllib.request.urlopen(f"{base_url}/models", timeout=10)


def test_bench_measures_the_local_model(local_model: LocalModel, tmp_path: Path) -> None:
    """`streamkit bench` against llama.cpp, as a user runs it: two streams at a time (decoded together in two
    of the server's slots), the model found through /v1/models."""
    out = tmp_path / "run.json"
    command = [
        sys.executable, "-m", "streamkit.cli", "bench", "--base-url", local_model.base_url,
        "--concurrency", "2", "--num-requests", "6", "--input-len", "16", "--output-len", "12",
        "--extra-body", '{"temperature": 0}', "--output", str(out), "--plot", str(tmp_path / "run.png"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    run = json.loads(out.read_text())
    assert (run["model"], run["completed"], run["failed"]) == (MODEL_NAME, 6, 0), run["errors"]
    assert "Median TTFT (ms):" in result.stdout and (tmp_path / "run.png").stat().st_size > 0
    records = run["streamkit"]["records"]
    # The bench asks for usage (stream_options.include_usage) and llama.cpp's server sends it: N is the
    # server's count, never an estimate...
    assert all(r["output_tokens"] is not None and r["output_tokens"] <= 12 for r in records)
    assert not any("estimated" in flag for flag in run["streamkit"]["flags"])
    cut = [r for r in records if len(r["token_times"]) == 12]  # ...and one token per event
    assert cut and all(r["output_tokens"] == 12 and r["token_counts"] == [1] * 12 for r in cut)
    ttfts, e2els = run["ttfts"], [r["token_times"][-1] for r in records]
    assert all(0 < t <= e for t, e in zip(ttfts, e2els, strict=True))


async def _metrics_of_one(client: streamkit.AsyncClient, seed: int) -> tuple[streamkit.StreamMetrics, float]:
    """One 48-token stream, read to its end: its metrics, and when it ended."""
    stream = await client.chat.completions.create(
        model=MODEL_NAME, messages=QUESTION, stream=True, temperature=0.0, seed=seed, max_tokens=48
    )
    async with stream:
        async for _ in stream:
            pass
    final = await stream.get_final_completion()
    assert final.choices[0].finish_reason == "length" and len(stream.metrics.token_arrivals) > 24
    return stream.metrics, time.perf_counter()


async def test_four_streams_progress_together(real_client: streamkit.AsyncClient) -> None:
    """The server decodes four requests at once (continuous batching over four slots): four concurrent
    streams are all under way at the same time, their tokens interleave, and they end sooner than the same
    four streams one after another."""
    together: dict[int, streamkit.StreamMetrics] = {}

    async def one(seed: int) -> None:
        together[seed], _ = await _metrics_of_one(real_client, seed)

    rounds = []
    for _ in range(3):  # the time of each round is at the mercy of a busy machine; one in three must show it
        alone = []
        for seed in range(4):
            started = time.perf_counter()
            _, ended = await _metrics_of_one(real_client, seed)
            alone.append(ended - started)
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for seed in range(4):
                group.start_soon(one, seed)
        rounds.append((time.perf_counter() - started, sum(alone)))
        streams = list(together.values())
        # Every stream had its first token before any stream had its last: none waited for another to end.
        assert max(m.token_arrivals[0] for m in streams) < min(m.token_arrivals[-1] for m in streams)
        # In the order of arrival, the stream a token belongs to changes far more often than the three times
        # that four streams one after another would give.
        arrivals = sorted((t, seed) for seed, m in together.items() for t in m.token_arrivals)
        assert sum(a[1] != b[1] for a, b in itertools.pairwise(arrivals)) > 4 * 3
        # One after another, the four would take the sum of their times alone. Batching four sequences costs
        # less than four steps, though on two cores not by much, hence the rounds.
        if rounds[-1][0] < rounds[-1][1]:
            return
    raise AssertionError(f"four streams together took no less than one after another: {rounds}")


async def test_chat_and_legacy_completions_stream_from_smollm2(real_client: streamkit.AsyncClient) -> None:
    with urllib.request.urlopen(f"{real_client.base_url}/models", timeout=10) as response:
        assert [model["id"] for model in json.load(response)["data"]] == [MODEL_NAME]
    chat = await real_client.chat.completions.create(
        model=MODEL_NAME, messages=QUESTION, stream=True, temperature=0.0, max_tokens=16
    )
    async with chat:
        texts = [text async for text in chat.text_deltas()]
    legacy = await real_client.completions.create(
        model=MODEL_NAME, prompt="The capital of France is", stream=True, temperature=0.0, max_tokens=16
    )
    async with legacy:
        pieces = [text async for text in legacy.text_deltas()]
    for final, text in ((await chat.get_final_completion(), "".join(texts)),
                        (await legacy.get_final_completion(), "".join(pieces))):  # fmt: skip
        assert final.model == MODEL_NAME and text.strip()


async def _raw_events(url: str, body: dict[str, Any]) -> list[tuple[ServerSentEvent, dict[str, Any]]]:
    """The events of one streamed POST, decoded by streamkit's SSE decoder from the raw bytes, each with its
    data parsed as JSON."""
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    async with httpx.AsyncClient(timeout=60) as client, client.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for data in response.aiter_bytes():
            events += decoder.feed(data)
    events += decoder.close()
    return [(event, json.loads(event.data)) for event in events]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_responses_and_messages_stream_from_smollm2(local_model: LocalModel) -> None:
    """/v1/responses and /v1/messages, streamed, as raw SSE (their clients come later)."""
    question = QUESTION[0]["content"]
    responses = await _raw_events(
        f"{local_model.base_url}/responses",
        {"model": MODEL_NAME, "input": question, "stream": True, "temperature": 0, "max_output_tokens": 16},
    )
    types = [data["type"] for _, data in responses]
    assert all(event.event == data["type"] for event, data in responses)
    assert types[0] == "response.created" and types[-1] == "response.completed", types
    text = "".join(data["delta"] for _, data in responses if data["type"] == "response.output_text.delta")
    done = next(data["text"] for _, data in responses if data["type"] == "response.output_text.done")
    completed = responses[-1][1]["response"]
    assert text.strip() and text == done == completed["output"][0]["content"][0]["text"]
    assert completed["model"] == MODEL_NAME and completed["status"] == "completed"

    messages = await _raw_events(
        f"{local_model.base_url}/messages",
        {"model": MODEL_NAME, "messages": QUESTION, "stream": True, "temperature": 0, "max_tokens": 16},
    )
    types = [data["type"] for _, data in messages]
    assert all(event.event == data["type"] for event, data in messages)
    assert types[0] == "message_start" and types[-1] == "message_stop", types
    assert types.index("content_block_start") < types.index("content_block_delta")
    assert messages[0][1]["message"]["model"] == MODEL_NAME
    text = "".join(data["delta"]["text"] for _, data in messages if data["type"] == "content_block_delta")
    stop = next(data["delta"]["stop_reason"] for _, data in messages if data["type"] == "message_delta")
    assert text.strip() and stop == "max_tokens"


async def test_a_prompt_longer_than_the_context_is_a_bad_request(
    real_client: streamkit.AsyncClient, local_model: LocalModel
) -> None:
    """llama.cpp refuses a prompt that does not fit a slot before the stream starts: a 400, typed, with the
    server's whole error body kept."""
    long = "word " * (local_model.n_ctx + 500)
    errors: list[streamkit.APIError] = []
    for streamed in (True, False):
        with pytest.raises((streamkit.BadRequestError, streamkit.StreamAPIError)) as chat:
            answer = await real_client.chat.completions.create(
                model=MODEL_NAME, messages=[{"role": "user", "content": long}], stream=streamed, max_tokens=8
            )
            if isinstance(answer, streamkit.ChatCompletionStream):
                await answer.get_final_completion()
        with pytest.raises((streamkit.BadRequestError, streamkit.StreamAPIError)) as legacy:
            completion = await real_client.completions.create(
                model=MODEL_NAME, prompt=long, stream=streamed, max_tokens=8
            )
            if isinstance(completion, streamkit.CompletionStream):
                await completion.get_final_completion()
        errors += [chat.value, legacy.value]
    for error in errors:
        assert "exceeds the available context size" in error.message
        assert error.type == "exceed_context_size_error"
        if isinstance(error, streamkit.BadRequestError):
            assert error.status_code == 400
            assert isinstance(error.body, dict) and error.body["error"]["n_prompt_tokens"] > local_model.n_ctx


def test_the_server_goes_when_its_parent_is_killed() -> None:
    """However the parent dies, here by SIGKILL, which no handler sees, the child goes with it."""
    parent = (
        "from streamkit.server.local import LocalModel; import time; "
        "model = LocalModel().start(); print(model.base_url, flush=True); time.sleep(120)"
    )
    with subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        with urllib.request.urlopen(f"{base_url}/models", timeout=10):
            pass
        process.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base_url}/models", timeout=1).close()
        except (urllib.error.URLError, ConnectionError):
            return
        time.sleep(0.1)
    raise AssertionError(f"llama.cpp's server still answers at {base_url}")


def test_a_model_that_does_not_load_is_one_line(tmp_path: Path) -> None:
    """A broken GGUF: `streamkit chat` says why in one line, and exits 1."""
    broken = tmp_path / "broken.gguf"
    with smollm2_path().open("rb") as gguf:
        broken.write_bytes(gguf.read(1 << 20))
    chat = (
        "import sys, pathlib, streamkit.server.local as local; "
        f"local.smollm2_path = lambda: pathlib.Path({str(broken)!r}); "
        "from streamkit.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    result = subprocess.run(
        [sys.executable, "-c", chat, "chat", "Hello"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("streamkit chat: error: the local model failed to start: gguf")
    assert result.stderr.count("\n") == 1, result.stderr


SERVE_KEY = "sk-serve-local"


def _status(url: str, path: str, headers: dict[str, str], body: dict[str, Any] | None = None) -> int:
    """The status of one request (a POST of `body` as JSON, else a GET) to llama.cpp's server."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return error.code


def test_serve_with_a_key_requires_it_on_every_path_of_the_local_model() -> None:
    """`streamkit serve --model smollm2 --api-key K`: llama.cpp's server refuses every request without K
    (but its health check, by its own design), on every API, as a Bearer token or as x-api-key; its child
    has K on no command line, and none of the parent's provider keys."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-parent-openai", "ANTHROPIC_API_KEY": "sk-parent-anthropic"}
    command = [sys.executable, "-m", "streamkit.cli", "serve", "--model", MODEL_NAME, "--port", "0",
               "--api-key", SERVE_KEY]  # fmt: skip
    chat = {"model": MODEL_NAME, "messages": QUESTION, "max_tokens": 2}
    legacy = {"model": MODEL_NAME, "prompt": "The capital of France is", "max_tokens": 2}
    responses = {"model": MODEL_NAME, "input": "Hello", "max_output_tokens": 16}
    bearer, wrong = {"Authorization": f"Bearer {SERVE_KEY}"}, {"Authorization": "Bearer sk-wrong"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as server:
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split(" at ")[1].split()[0].removesuffix("/v1")
            for path in ("/v1/models", "/slots", "/props"):
                assert _status(url, path, {}) == _status(url, path, wrong) == 401, path
                assert _status(url, path, bearer) == 200, path
            for path, body in (("/v1/chat/completions", chat), ("/v1/completions", legacy),
                               ("/v1/responses", responses), ("/v1/messages", chat)):  # fmt: skip
                assert _status(url, path, {}, body) == _status(url, path, wrong, body) == 401, path
                assert _status(url, path, {"x-api-key": "sk-wrong"}, body) == 401, path
                assert _status(url, path, bearer, body) == 200, path
                assert _status(url, path, {"x-api-key": SERVE_KEY}, body) == 200, path
            assert _status(url, "/health", {}) == 200  # llama.cpp leaves its health check open
            if Path("/proc/self/environ").exists():
                [pid] = local_servers_of(server.pid)
                child = Path(f"/proc/{pid}")
                assert SERVE_KEY.encode() not in (child / "cmdline").read_bytes()
                environ = (child / "environ").read_bytes()
                assert b"sk-parent-openai" not in environ and b"sk-parent-anthropic" not in environ
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(20)


@pytest.fixture(scope="module")
def keyed_model() -> Iterator[LocalModel]:
    with LocalModel(api_key=SERVE_KEY) as model:
        yield model


async def test_the_client_with_the_key_streams_from_the_keyed_local_model(
    keyed_model: LocalModel, transport: str
) -> None:
    async with streamkit.AsyncClient(
        base_url=keyed_model.base_url,
        api_key=SERVE_KEY,
        transport=transport,  # type: ignore[arg-type]
    ) as client:
        stream = await client.messages.create(model=MODEL_NAME, messages=QUESTION, max_tokens=4, stream=True)
        assert (await stream.get_final_message()).text  # its key as x-api-key
        chat = await client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, max_tokens=4)
        assert chat.choices[0].message.content  # as a Bearer token
    async with streamkit.AsyncClient(
        base_url=keyed_model.base_url,
        api_key="sk-wrong",
        transport=transport,  # type: ignore[arg-type]
    ) as client:
        with pytest.raises(streamkit.AuthenticationError):
            await client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, max_tokens=4)
        with pytest.raises(streamkit.AuthenticationError):
            await client.messages.create(model=MODEL_NAME, messages=QUESTION, max_tokens=4)
