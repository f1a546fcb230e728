"""Test your own app against the built-in server: the `streamkit_server` fixture comes with streamkit.

Run with `pytest test_my_app.py`; the fixture starts one server for the session, on a free loopback port.
"""

import asyncio

import anthropic
import openai
import pytest

import streamkit
from streamkit.server import ServerThread


async def summarize(client: streamkit.AsyncClient, text: str) -> str:
    """The code under test: it streams a summary and returns it."""
    stream = await client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": f"Summarize: {text}"}], stream=True
    )
    return "".join([piece async for piece in stream.text_deltas()])


def test_summarize(streamkit_server: ServerThread) -> None:
    async def run() -> str:
        async with streamkit.AsyncClient(base_url=streamkit_server.base_url, api_key="test") as client:
            return await summarize(client, "a long text")

    assert asyncio.run(run())  # the scripted model answers with deterministic text


def test_summarize_reports_a_dropped_connection(streamkit_server: ServerThread) -> None:
    async def run() -> None:
        async with streamkit.AsyncClient(
            base_url=streamkit_server.base_url,
            api_key="test",
            default_headers={"x-streamkit-fault": "drop=2"},  # the server drops the connection after 2 chunks
        ) as client:
            with pytest.raises(streamkit.ReadError) as caught:
                await summarize(client, "a long text")
        assert caught.value.partial is not None  # what arrived before the drop is kept

    asyncio.run(run())


def test_with_the_openai_sdk(streamkit_server: ServerThread) -> None:
    client = openai.OpenAI(base_url=streamkit_server.base_url, api_key="test")
    answer = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].finish_reason == "stop"
    response = client.responses.create(model="scripted", input="Hi")  # the Responses API
    assert response.status == "completed" and response.output_text


def test_with_the_anthropic_sdk(streamkit_server: ServerThread) -> None:
    # The anthropic SDK appends /v1/messages to its base URL: give it the server's root.
    client = anthropic.Anthropic(base_url=streamkit_server.url, api_key="test")
    with client.messages.stream(
        model="scripted", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text and stream.get_final_message().stop_reason == "end_turn"
