"""Interop with a real server: llama.cpp serving SmolLM2-135M-Instruct (the `local` extra), through each
transport. At temperature 0 with a fixed seed, the streamed aggregate equals the non-streamed answer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import streamkit
from streamkit.server.local import MODEL_NAME, LocalModel

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
    first = await (await conversation.send("Name a colour.")).get_final_completion()
    second = await (await conversation.send("Name another one.")).get_final_completion()
    assert [m["role"] for m in conversation.messages] == ["user", "assistant", "user", "assistant"]
    assert conversation.messages[1]["content"] == first.choices[0].message.content
    assert conversation.messages[3]["content"] == second.choices[0].message.content
    stopped = await real_client.chat.completions.create(
        model=MODEL_NAME, messages=QUESTION, temperature=0.0, max_tokens=64, stop=["."]
    )
    assert "." not in (stopped.choices[0].message.content or "")
    assert stopped.choices[0].finish_reason == "stop"


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
    """`streamkit bench` against llama.cpp, as a user runs it: two streams at a time (the server queues the
    second; llama-cpp-python's default would cut the first short), the model found through /v1/models."""
    out = tmp_path / "run.json"
    command = [
        sys.executable, "-m", "streamkit.cli", "bench", "--base-url", local_model.base_url,
        "--concurrency", "2", "--num-requests", "6", "--input-len", "16", "--output-len", "12",
        "--extra-body", '{"temperature": 0}', "--output", str(out), "--plot", str(tmp_path / "run.png"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    run = json.loads(out.read_text())
    assert (run["model"], run["completed"], run["failed"]) == (MODEL_NAME, 6, 0)
    assert "Median TTFT (ms):" in result.stdout and (tmp_path / "run.png").stat().st_size > 0
    records = run["streamkit"]["records"]
    assert all(r["output_tokens"] is None for r in records)  # llama-cpp-python sends no usage...
    cut = [r for r in records if len(r["token_times"]) == 12]  # ...but a stream cut at max_tokens made 12
    assert all(r["counted_tokens"] == 12 and r["token_counts"] == [1] * 12 for r in cut)
    ttfts, e2els = run["ttfts"], [r["token_times"][-1] for r in records]
    assert all(0 < t <= e for t, e in zip(ttfts, e2els, strict=True))
    assert "estimated" in " ".join(run["streamkit"]["flags"])
