"""Many streams at once against one server, and `streamkit serve` as a user runs it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request

import aiohttp
import pytest

from streamkit import SSEDecoder
from streamkit.server import ServerThread
from streamkit.server.scripted import tokens_for


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_thousand_concurrent_streams_lose_nothing(streamkit_server: ServerThread) -> None:
    body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"x-streamkit-timing": "tokens=8,ttft=0.2,tps=100", "x-streamkit-fault": ""}

    async def one(session: aiohttp.ClientSession, seed: int) -> str:
        decoder = SSEDecoder()
        text: list[str] = []
        async with session.post(
            streamkit_server.base_url + "/chat/completions", json={**body, "seed": seed}, headers=headers
        ) as response:
            async for data in response.content.iter_any():
                for event in decoder.feed(data):
                    if event.data == "[DONE]":
                        return "".join(text)
                    delta = json.loads(event.data)["choices"][0]["delta"]
                    text.append(delta.get("content") or "")
        raise AssertionError("no [DONE]")

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        texts = await asyncio.gather(*(one(session, seed) for seed in range(1000)))
    assert texts == ["".join(tokens_for(seed * 1000, 8)) for seed in range(1000)]
    assert streamkit_server.stats.streams_open == 0


def test_serve_prints_its_url_serves_and_stops_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "streamkit.cli", "serve", "--port", "0", "--tokens", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("streamkit serve: scripted at http://127.0.0.1:")
        base_url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(base_url + "/models") as response:
            assert json.load(response)["data"][0]["id"] == "scripted"
        request = urllib.request.Request(
            base_url + "/chat/completions",
            data=json.dumps({"model": "scripted", "messages": [{"role": "user", "content": "x"}]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as response:
            assert json.load(response)["usage"]["completion_tokens"] == 3
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "Traceback" not in err


def test_serve_rejects_a_bad_fault() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "serve", "--fault", "explode"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown fault 'explode'" in result.stderr


def test_server_thread_runs_with_no_loop_of_the_caller() -> None:
    with ServerThread() as server, urllib.request.urlopen(server.base_url + "/models") as response:
        assert response.status == 200
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url
