"""The client waits what the server asks before it retries, through every (event loop, transport): the
built-in server answers 429 once, with the headers of each case, then serves the stream."""

from __future__ import annotations

import uuid

import anyio
import pytest

import streamkit
from streamkit.server import ServerThread
from tests.client.conftest import HI, fault

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("headers", "asked"),
    [
        ("retry_after_ms=30", 0.03),
        ("retry_after=0.02", 0.02),
        ("retry_after_ms=-1,retry_after=0.05", 0.05),  # an invalid retry-after-ms gives way to Retry-After
        ("retry_after_ms=1_0,retry_after=0.04", 0.04),
        ("retry_after=Sun Nov  6 08:49:37 1994", 0.0),  # an asctime date, in the past: no wait
    ],
)
async def test_the_client_waits_as_asked(
    client: streamkit.AsyncClient,
    streamkit_server: ServerThread,
    monkeypatch: pytest.MonkeyPatch,
    headers: str,
    asked: float,
) -> None:
    waits: list[float] = []
    sleep = anyio.sleep

    async def recorded(seconds: float) -> None:
        waits.append(seconds)
        await sleep(seconds)

    monkeypatch.setattr(anyio, "sleep", recorded)
    key = uuid.uuid4().hex
    stream = await client.chat.completions.create(
        model="scripted", messages=HI, stream=True, extra_headers=fault(f"status=429:1,{headers},key={key}")
    )
    assert (await stream.get_final_completion()).choices
    assert waits == [asked]
    assert streamkit_server.stats.attempts[key] == 2 and stream.metrics.attempts == 2
