"""`streamkit.Client.local()`: the embedded model (llama.cpp's server with SmolLM2, the `local` extra)
through the sync client, as a script uses it: a `for` loop that prints each token as it comes."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

import streamkit

pytestmark = pytest.mark.real_model

QUESTION = [{"role": "user", "content": "What is a server-sent event?"}]


@pytest.fixture(scope="module")
def local_client() -> Iterator[streamkit.Client]:
    try:
        client = streamkit.Client.local(timeout=streamkit.Timeout(connect=10, idle=60, total=120))
    except streamkit.LocalModelUnavailable as exc:
        pytest.skip(str(exc))
    with client:
        yield client


def test_a_for_loop_prints_the_local_models_tokens(
    local_client: streamkit.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = local_client.chat.completions.create(
        model=streamkit.LOCAL_MODEL, messages=QUESTION, max_tokens=32, temperature=0.0, stream=True
    )
    with stream:
        for text in stream.text_deltas():
            print(text, end="", flush=True)
    print()
    final = stream.get_final_completion()
    printed = capsys.readouterr().out
    assert printed.strip() and printed == f"{final.choices[0].message.content}\n"
    assert final.choices[0].finish_reason in ("stop", "length") and stream.completed
    assert final.model == streamkit.LOCAL_MODEL
    assert stream.metrics.ttft is not None and len(stream.metrics.token_arrivals) > 1


def test_every_api_streams_from_the_local_model(local_client: streamkit.Client) -> None:
    chat = local_client.chat.completions.create(
        model=streamkit.LOCAL_MODEL, messages=QUESTION, max_tokens=8, temperature=0.0, stream=True
    )
    legacy = local_client.completions.create(
        model=streamkit.LOCAL_MODEL,
        prompt="The capital of France is",
        max_tokens=8,
        temperature=0.0,
        stream=True,
    )
    responses = local_client.responses.create(
        model=streamkit.LOCAL_MODEL, input=QUESTION, max_output_tokens=16, temperature=0.0, stream=True
    )
    messages = local_client.messages.create(
        model=streamkit.LOCAL_MODEL, messages=QUESTION, max_tokens=8, temperature=0.0, stream=True
    )
    for stream in (chat, legacy, responses, messages):
        with stream:
            text = "".join(stream.text_deltas())
        assert text.strip() and stream.completed, type(stream).__name__
    whole = local_client.chat.completions.create(
        model=streamkit.LOCAL_MODEL, messages=QUESTION, max_tokens=8, temperature=0.0
    )
    assert whole.choices[0].message.content == chat.get_final_completion().choices[0].message.content


def test_closing_the_client_stops_the_local_model() -> None:
    try:
        client = streamkit.Client.local()
    except streamkit.LocalModelUnavailable as exc:
        pytest.skip(str(exc))
    with client:
        url = f"{client.base_url}/models"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=10)
