"""The client suite runs once per (event loop, transport): asyncio and asyncio on uvloop, each with aiohttp
and httpx, and trio with httpx (aiohttp runs on asyncio only)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import streamkit
from streamkit.protocols.base import Model
from streamkit.server import ServerThread
from tests.hostile import HostileServer

CASES = [
    ("asyncio", "aiohttp"),
    ("uvloop", "aiohttp"),
    ("asyncio", "httpx"),
    ("uvloop", "httpx"),
    ("trio", "httpx"),
]
# anyio's own matrix: asyncio, asyncio on uvloop, trio.
BACKENDS: dict[str, str | tuple[str, dict[str, object]]] = {
    "asyncio": "asyncio",
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": "trio",
}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(params=CASES, ids=[f"{loop}-{transport}" for loop, transport in CASES])
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    loop, transport = request.param
    return loop, transport


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str | tuple[str, dict[str, object]]:
    return BACKENDS[case[0]]


@pytest.fixture
def transport(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
async def client(streamkit_server: ServerThread, transport: str) -> AsyncIterator[streamkit.AsyncClient]:
    async with streamkit.AsyncClient(
        base_url=streamkit_server.base_url,
        api_key="sk-test",
        transport=transport,  # type: ignore[arg-type]
    ) as client:
        yield client


# What each response draws anew, so that two answers to one request differ in it: ids, times, signatures.
DRAWN = frozenset({"id", "call_id", "created", "created_at", "signature"})


def comparable(answer: Model, usage: bool) -> Any:
    """An answer (of any API) as JSON, less what each response draws anew, less a tool call's `index` (a
    field of the stream's deltas, which a whole message leaves out), and less `usage` unless both have it (a
    whole chat answer always has it; a stream only on request)."""

    def strip(value: Any, within: str = "") -> Any:
        if isinstance(value, dict):
            drop = DRAWN | ({"index"} if within == "tool_calls" else set()) | (set() if usage else {"usage"})
            return {k: strip(v, k) for k, v in value.items() if k not in drop}
        if isinstance(value, list):
            return [strip(v, within) for v in value]
        return value

    return strip(answer.to_dict())


def fault(spec: str) -> dict[str, str]:
    """Request options that make the built-in server play a fault."""
    return {"x-streamkit-fault": spec}


def timing(spec: str) -> dict[str, str]:
    return {"x-streamkit-timing": spec}


@pytest.fixture(scope="session")
def hostile_server() -> Iterator[HostileServer]:
    """A raw TCP server that answers each request with a script of bytes, pauses, closes and resets
    (`tests/hostile.py`), for the whole session."""
    with HostileServer() as server:
        yield server
