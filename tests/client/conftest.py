"""The client suite runs once per (event loop, transport): asyncio and asyncio on uvloop, each with aiohttp
and httpx, and trio with httpx (aiohttp runs on asyncio only)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

import streamkit
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


def same_answer(
    streamed: streamkit.ChatCompletion | streamkit.Completion,
    whole: streamkit.ChatCompletion | streamkit.Completion,
    usage: bool,
) -> bool:
    """Whether two answers agree but for the ids and `created` that each response draws anew (and `usage`,
    which a whole answer always has and a stream only on request)."""
    answers = []
    for answer in (streamed.to_dict(), whole.to_dict()):
        for name in ("id", "created") if usage else ("id", "created", "usage"):
            answer.pop(name, None)
        for choice in answer["choices"]:
            for call in choice.get("message", {}).get("tool_calls", []):
                call.pop("id")
        answers.append(answer)
    return answers[0] == answers[1]


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
