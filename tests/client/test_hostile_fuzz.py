"""A valid streamed answer, mutated at random (bytes flipped, inserted, deleted, the body cut short, the
writes split, the connection closed or reset at any point): every call still ends within its limits, with a
`ChatCompletion` or a `StreamkitError`, and an error raised once the head arrived carries `.partial`.

Each run explores inputs of its own: it draws a seed, which a failure prints, and `STREAMKIT_FUZZ_SEED=<seed>`
plays that run's inputs again."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import streamkit
from tests.client.conftest import HI
from tests.hostile import (
    Close,
    HostileServer,
    Pause,
    Reset,
    Script,
    Send,
    Step,
    chunk,
    head,
    no_leaks,
    sse_event,
    wait_for,
)

pytestmark = pytest.mark.anyio

EVENTS = [
    sse_event("Hel", role="assistant"),
    b": keep-alive\n\n",
    sse_event("lo"),
    sse_event(finish="stop"),
    b"data: [DONE]\n\n",
]
SSE = "Content-Type: text/event-stream"
FRAMINGS = {
    "chunked": head("200 OK", SSE, "Transfer-Encoding: chunked") + b"".join(map(chunk, EVENTS)) + chunk(b""),
    "length": head("200 OK", SSE, f"Content-Length: {len(b''.join(EVENTS))}") + b"".join(EVENTS),
    "close": head("200 OK", SSE, "Connection: close") + b"".join(EVENTS),
}
LIMITS = streamkit.Timeout(connect=1, idle=0.2, total=3)
GUARD = 20.0
SEED = int(os.environ.get("STREAMKIT_FUZZ_SEED") or secrets.randbits(32))

KINDS = ["flip", "insert", "delete", "truncate"]
mutation = st.tuples(st.sampled_from(KINDS), st.integers(0), st.binary(min_size=1, max_size=1))


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    """A valid answer in one of three framings, mutated, split into writes, then closed, reset or kept."""
    data = bytearray(FRAMINGS[draw(st.sampled_from(sorted(FRAMINGS)))])
    for kind, at, byte in draw(st.lists(mutation, max_size=3)):
        at %= len(data) + 1
        if kind == "flip" and at < len(data):
            data[at] ^= byte[0] or 0xFF
        elif kind == "insert":
            data[at:at] = byte
        elif kind == "delete":
            del data[at : at + 1]
        elif kind == "truncate":
            del data[at:]
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=4))))
    steps: list[Step] = []
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        if end > start:
            steps += [Send(bytes(data[start:end])), Pause(0.002)]
    end_with = draw(st.sampled_from(["close", "reset", "keep"]))
    if end_with == "close":
        steps.append(Close())
    elif end_with == "reset":
        steps.append(Reset())
    return Script(steps)


@pytest.fixture(params=[("asyncio", "aiohttp"), ("asyncio", "httpx")], ids=lambda case: "-".join(case))
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Overrides conftest's: the property runs on asyncio, with each transport."""
    loop, transport = request.param
    return loop, transport


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streamkit.client.BACKOFF_START", 0.01, raising=False)


@pytest.fixture(autouse=True)
def replay(request: pytest.FixtureRequest) -> None:
    """A failure, of the property or of a check after it, prints how to play this run's inputs again."""
    request.node.add_report_section("setup", "seed", f"replay: STREAMKIT_FUZZ_SEED={SEED}")


@pytest.fixture(autouse=True)
async def nothing_left(hostile_server: HostileServer, anyio_backend_name: str) -> AsyncIterator[None]:
    async with no_leaks(hostile_server, anyio_backend_name):
        yield


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@seed(SEED)
@given(script=scripts())
async def test_any_mutation_ends_in_an_answer_or_a_streamkit_error(
    hostile_server: HostileServer, transport: str, script: Script
) -> None:
    base_url = hostile_server.add(script, uuid.uuid4().hex)
    started = False
    with anyio.fail_after(GUARD):
        async with streamkit.AsyncClient(
            base_url=base_url,
            api_key="sk-test",
            transport=transport,  # type: ignore[arg-type]
            timeout=LIMITS,
            max_retries=1,
        ) as client:
            try:
                stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
                started = True
                async with stream:
                    async for _ in stream:
                        pass
                final = await stream.get_final_completion()
            except streamkit.StreamkitError as error:
                assert not started or error.partial is not None, repr(error)
            else:
                assert isinstance(final, streamkit.ChatCompletion)
    assert await wait_for(lambda: hostile_server.open == 0), "a connection was left open"
