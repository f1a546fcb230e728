"""Streaming chat and legacy completions through each transport: text deltas, usage and metrics, concurrency.
That every parameter mode streams the whole answer is `test_oracle.py`'s."""

from __future__ import annotations

import pytest

import streamkit
from tests.client.conftest import HI

pytestmark = pytest.mark.anyio


async def test_text_deltas_give_choice_zero_as_it_arrives(client: streamkit.AsyncClient) -> None:
    stream = await client.chat.completions.create(model="scripted", messages=HI, stream=True, n=2, seed=3)
    texts = [text async for text in stream.text_deltas()]
    final = await stream.get_final_completion()
    assert len(texts) > 3
    assert "".join(texts) == final.choices[0].message.content
    assert final.choices[1].message.content != final.choices[0].message.content


async def test_usage_and_metrics(client: streamkit.AsyncClient) -> None:
    stream = await client.chat.completions.create(
        model="scripted",
        messages=HI,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-streamkit-timing": "ttft=0.05,itl=0.01,tokens=6"},
    )
    async with stream:
        final = await stream.get_final_completion()
    metrics = stream.metrics
    assert final.usage is not None and metrics.completion_tokens == final.usage.completion_tokens == 6
    # role-only chunk, six token chunks, finish chunk, usage chunk
    assert metrics.chunks == 9 and len(metrics.token_arrivals) == 6 and len(metrics.itl) == 5
    # True by construction, however busy the machine: the server sleeps 50 ms, then 10 ms before each of the
    # five tokens after the first, and a stamp is never taken before the bytes arrive.
    assert metrics.ttft is not None and metrics.ttft >= 0.05
    assert metrics.e2e is not None and metrics.e2e >= 0.05 + 5 * 0.01
    assert sum(metrics.itl) == pytest.approx(metrics.e2e - metrics.ttft)
    assert metrics.request_sent <= metrics.headers_received <= metrics.arrivals[0]
    assert metrics.arrivals == sorted(metrics.arrivals)


async def test_legacy_best_of_is_not_streamed(client: streamkit.AsyncClient) -> None:
    whole = await client.completions.create(model="scripted", prompt="hi", best_of=3, n=2)
    assert len(whole.choices) == 2
    with pytest.raises(streamkit.BadRequestError) as caught:
        await client.completions.create(model="scripted", prompt="hi", best_of=3, stream=True)
    assert caught.value.param == "best_of"


async def test_legacy_text_deltas(client: streamkit.AsyncClient) -> None:
    stream = await client.completions.create(model="scripted", prompt="hi", stream=True)
    text = "".join([t async for t in stream.text_deltas()])
    assert text == (await stream.get_final_completion()).choices[0].text != ""


async def test_extra_body_and_query_reach_the_server(client: streamkit.AsyncClient) -> None:
    # The server validates what it gets: an invalid value sent through extra_body comes back as its error.
    with pytest.raises(streamkit.BadRequestError) as caught:
        await client.chat.completions.create(
            model="scripted", messages=HI, extra_body={"temperature": 9}, extra_query={"api-version": "1"}
        )
    assert caught.value.param == "temperature" and caught.value.status_code == 400


async def test_many_concurrent_streams_share_one_client(client: streamkit.AsyncClient) -> None:
    import anyio

    finals: list[str] = []

    async def one(seed: int) -> None:
        stream = await client.chat.completions.create(
            model="scripted",
            messages=HI,
            stream=True,
            seed=seed,
            extra_headers={"x-streamkit-timing": "itl=0.01"},
        )
        final = await stream.get_final_completion()
        finals.append(final.choices[0].message.content or "")

    async with anyio.create_task_group() as group:
        for seed in range(150):  # past aiohttp's default cap of 100 connections
            group.start_soon(one, seed)
    assert len(finals) == 150 and len(set(finals)) > 100
