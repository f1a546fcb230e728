"""Keys never show (reprs, error texts), and redacting them never mangles other text."""

from __future__ import annotations

import json

import pytest

import streamkit
from streamkit.bench.runner import LoadConfig
from streamkit.server import ServerConfig
from streamkit.transports.base import Request
from streamkit.transports.mock import MockResponse, MockTransport
from tests.client.conftest import HI

pytestmark = pytest.mark.anyio

KEY = "sk-abcdef123456"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_no_repr_shows_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    config = LoadConfig(base_url="http://x/v1", model="m", api_key=KEY, concurrency=3)
    assert KEY not in repr(config) and KEY not in str(config)
    assert "concurrency=3" in repr(config) and config.api_key == KEY
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY + "-ant")
    client = streamkit.AsyncClient(api_key=KEY)
    shown = [repr(client), *map(repr, client._providers.values()), repr(ServerConfig(api_key=KEY))]
    shown.append(repr(Request("POST", "http://x/v1", {"Authorization": f"Bearer {KEY}"})))
    assert not [text for text in shown if KEY in text]


def redacted(text: str, key: str) -> str:
    """The text as a client with this key shows it in an error."""
    return streamkit.AsyncClient(api_key=key, base_url="http://x")._redact(text)


@pytest.mark.parametrize(
    ("key", "text"),
    [
        # A key too short to be a secret: nothing is replaced, wherever it stands.
        ("x", "The model `nonexistent` does not exist"),
        ("x", "x"),
        ("test", "a test of the test key test"),
        ("sk-1234", "key sk-1234 is wrong"),  # 7 characters: under the bound
        # A long key inside a longer token is some other word.
        (KEY, f"x{KEY}"),
        (KEY, f"{KEY}7"),
        (KEY, f"{KEY}_2"),
        (KEY, f"{KEY}-2"),
        (KEY, f"v1.{KEY}.b"),
        (KEY, f"v1.{KEY}"),
        (KEY, f"{KEY}..v2"),
        (KEY, f"{KEY}{KEY}"),
    ],
)
def test_redaction_leaves_other_text_alone(key: str, text: str) -> None:
    assert redacted(text, key) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (KEY, "***"),
        (f"Incorrect API key provided: {KEY}", "Incorrect API key provided: ***"),
        (
            f"Incorrect API key provided: {KEY}. Find yours at ...",
            "Incorrect API key provided: ***. Find yours at ...",
        ),
        (f"key {KEY}...", "key ***..."),
        (f'{{"key": "{KEY}"}}', '{"key": "***"}'),
        (f"Bearer {KEY}\n{KEY}", "Bearer ***\n***"),
        (f"url?key={KEY}&a=b", "url?key=***&a=b"),
        (f"({KEY}), [{KEY}]", "(***), [***]"),
    ],
)
def test_a_key_that_stands_alone_is_redacted(text: str, expected: str) -> None:
    assert redacted(text, KEY) == expected


def test_eight_characters_are_a_secret() -> None:
    assert redacted("key abcdefgh is wrong", "abcdefgh") == "key *** is wrong"
    assert redacted("key abcdefg is wrong", "abcdefg") == "key abcdefg is wrong"


def test_every_key_of_the_client_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-1234")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-openai-1234-ant")  # one key inside the other, as a token
    client = streamkit.AsyncClient(base_url="http://x")
    text = "sk-openai-1234 and sk-openai-1234-ant"
    assert client._redact(text) == "*** and ***"


def mock(body: bytes, status: int = 200, api_key: str = KEY) -> streamkit.AsyncClient:
    headers = {"content-type": "application/json" if status >= 300 else "text/event-stream"}
    transport = MockTransport(lambda request: MockResponse(status, body, headers))
    return streamkit.AsyncClient(base_url="http://x/v1", api_key=api_key, transport=transport, max_retries=0)


async def test_a_short_key_leaves_an_error_as_the_server_wrote_it() -> None:
    message = "The model `nonexistent` does not exist"
    client = mock(json.dumps({"error": {"message": message}}).encode(), 404, api_key="x")
    with pytest.raises(streamkit.NotFoundError) as caught:
        await client.chat.completions.create(model="nonexistent", messages=HI)
    assert caught.value.message == message and caught.value.body == {"error": {"message": message}}


@pytest.mark.parametrize(
    ("api_key", "shown"),
    [(KEY, "bad key ***. The model `nonexistent` does not exist"), ("x", None)],
    ids=["echoed", "short"],
)
async def test_an_error_inside_a_stream(api_key: str, shown: str | None) -> None:
    message = f"bad key {api_key}. The model `nonexistent` does not exist"
    event = json.dumps({"error": {"message": message, "type": "invalid_request_error"}})
    client = mock(f"data: {event}\n\n".encode(), api_key=api_key)
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    with pytest.raises(streamkit.StreamAPIError) as caught:
        await stream.get_final_completion()
    error = caught.value
    expected = message if shown is None else shown
    assert error.message == expected and error.body == {
        "error": {"message": expected, "type": "invalid_request_error"}
    }
    assert (api_key in error.raw) is (shown is None)
