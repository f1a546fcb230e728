"""Arrival stamps, exactly. Each read of a `MockTransport` body happens at a time the test chooses, on a clock
that stands in for `time.perf_counter` in the client and the stream: a stamp is the time of the read that
completed its item, whatever else that read brought. The expected values are the scripted times, never
computed by the code under test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import streamkit
from streamkit.transports.base import Request
from streamkit.transports.mock import MockResponse, MockTransport
from tests.client.conftest import HI

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """`perf_counter` for the client and the stream: it says what the test last set, and nothing moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("streamkit.client.perf_counter", clock)
    monkeypatch.setattr("streamkit.streams.perf_counter", clock)
    return clock


def timed(clock: Clock, reads: list[tuple[float, bytes]]) -> Iterator[bytes]:
    """A body whose pieces are each read at their time: the clock moves there as the piece is read."""
    for time, piece in reads:
        clock.now = time
        yield piece


def client_of(clock: Clock, answers: list[tuple[float, MockResponse]]) -> streamkit.AsyncClient:
    """A client whose requests get `answers` in turn, each head at its time."""

    def answer(request: Request) -> MockResponse:
        clock.now, response = answers.pop(0)
        return response

    return streamkit.AsyncClient(
        base_url="http://api.test/v1", api_key="test", transport=MockTransport(answer)
    )


def stamps(metrics: streamkit.StreamMetrics) -> dict[str, Any]:
    return {
        "call_started": metrics.call_started,
        "request_sent": metrics.request_sent,
        "headers_received": metrics.headers_received,
        "arrivals": metrics.arrivals,
        "token_arrivals": metrics.token_arrivals,
        "ttft": metrics.ttft,
        "call_ttft": metrics.call_ttft,
        "e2e": metrics.e2e,
        "itl": metrics.itl,
        "reads": metrics.reads,
    }


def data(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def typed(payload: dict[str, Any]) -> bytes:
    """A Responses or Messages event, named by its type."""
    return f"event: {payload['type']}\n".encode() + data(payload)


def chat_chunk(finish: str | None = None, **delta: str) -> bytes:
    return data(
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    )


async def test_chat_stamps(clock: Clock) -> None:
    """A retried call (503 at 10.25, the stream's head at 10.5), then reads at 11 (a role-only chunk), 12 (a
    comment), 13 (two tokens), 14 (half a token), 15.5 (its other half, and half the last chunk) and 16 (the
    rest, and [DONE])."""
    busy = MockResponse(503, b"{}", {"content-type": "application/json", "retry-after": "0"})
    last, stop = chat_chunk(content="!"), chat_chunk(finish="stop")
    reads = [
        (11.0, chat_chunk(role="assistant")),
        (12.0, b": keep-alive\n\n"),
        (13.0, chat_chunk(content="Hel") + chat_chunk(content="lo")),
        (14.0, last[:30]),
        (15.5, last[30:] + stop[:30]),
        (16.0, stop[30:] + b"data: [DONE]\n\n"),
    ]
    clock.now = 10.0
    async with client_of(clock, [(10.25, busy), (10.5, MockResponse(200, timed(clock, reads)))]) as client:
        stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
        async with stream:
            chunks = [chunk async for chunk in stream]
    assert len(chunks) == 5 and stream.metrics.attempts == 2
    assert stamps(stream.metrics) == {
        "call_started": 10.0,
        "request_sent": 10.25,
        "headers_received": 10.5,
        "arrivals": [11.0, 13.0, 13.0, 15.5, 16.0],
        "token_arrivals": [13.0, 13.0, 15.5],
        "ttft": 2.75,
        "call_ttft": 3.0,
        "e2e": 5.25,
        "itl": [0.0, 2.5],
        "reads": 6,
    }


IDS: dict[str, Any] = {"item_id": "msg_1", "output_index": 0, "content_index": 0}


async def test_responses_stamps(clock: Clock) -> None:
    """Reads at 21 (two lifecycle events), 22 (a delta), 23 (half a delta), 24 (its other half and a whole
    one) and 25 (the terminal event)."""
    message = {"type": "message", "id": "msg_1", "role": "assistant", "content": []}
    lo = typed({"type": "response.output_text.delta", **IDS, "delta": "lo"})
    reads = [
        (
            21.0,
            typed({"type": "response.created", "response": {"id": "r", "status": "in_progress"}})
            + typed({"type": "response.output_item.added", "output_index": 0, "item": message}),
        ),
        (22.0, typed({"type": "response.output_text.delta", **IDS, "delta": "Hel"})),
        (23.0, lo[:40]),
        (24.0, lo[40:] + typed({"type": "response.output_text.delta", **IDS, "delta": "!"})),
        (
            25.0,
            typed({"type": "response.completed", "response": {"id": "r", "status": "completed"}}),
        ),
    ]
    clock.now = 20.0
    async with client_of(clock, [(20.5, MockResponse(200, timed(clock, reads)))]) as client:
        stream = await client.responses.create(model="m", input="hi", stream=True)
        async with stream:
            events = [event async for event in stream]
    assert len(events) == 6 and (await stream.get_final_response()).output_text == "Hello!"
    assert stamps(stream.metrics) == {
        "call_started": 20.0,
        "request_sent": 20.0,
        "headers_received": 20.5,
        "arrivals": [21.0, 21.0, 22.0, 24.0, 24.0, 25.0],
        "token_arrivals": [22.0, 24.0, 24.0],
        "ttft": 2.0,
        "call_ttft": 2.0,
        "e2e": 4.0,
        "itl": [2.0, 0.0],
        "reads": 5,
    }


def text_delta(text: str) -> bytes:
    return typed({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})


async def test_messages_stamps(clock: Clock) -> None:
    """Reads at 31 (the message's and the block's starts), 32 (a ping), 33 (two deltas), 34 (half a delta)
    and 35 (its other half, the block's stop, the message's delta and stop)."""
    start = {
        "type": "message_start",
        "message": {"id": "msg_1", "usage": {"input_tokens": 2, "output_tokens": 1}},
    }
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}
    last = text_delta("!")
    reads = [
        (31.0, typed(start) + typed(block)),
        (32.0, typed({"type": "ping"})),
        (33.0, text_delta("Hi") + text_delta(" there")),
        (34.0, last[:40]),
        (
            35.0,
            last[40:]
            + typed({"type": "content_block_stop", "index": 0})
            + typed(end)
            + typed({"type": "message_stop"}),
        ),
    ]
    clock.now = 30.0
    async with client_of(clock, [(30.25, MockResponse(200, timed(clock, reads)))]) as client:
        stream = await client.messages.create(model="m", messages=HI, max_tokens=8, stream=True)
        async with stream:
            events = [event async for event in stream]
    assert len(events) == 8 and (await stream.get_final_message()).text == "Hi there!"
    assert stamps(stream.metrics) == {
        "call_started": 30.0,
        "request_sent": 30.0,
        "headers_received": 30.25,
        "arrivals": [31.0, 31.0, 33.0, 33.0, 35.0, 35.0, 35.0, 35.0],
        "token_arrivals": [33.0, 33.0, 35.0],
        "ttft": 3.0,
        "call_ttft": 3.0,
        "e2e": 5.0,
        "itl": [0.0, 2.0],
        "reads": 5,
    }
