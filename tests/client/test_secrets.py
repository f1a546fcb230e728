"""Keys never show (reprs, error texts), and redacting them never mangles other text."""

from __future__ import annotations

import json

import pytest

import streamkit
from streamkit.bench.runner import LoadConfig
from streamkit.client import ERROR_BODY_LIMIT, RAW_PREVIEW
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


# A 1 MiB body that echoes the key all through, in 21-character pieces, so that both bounds (64 KiB and 1 KiB,
# each 16 characters past a multiple of 21) end inside a key.
ECHO = ("bad! " + KEY + " ") * ((1 << 20) // 21)


@pytest.mark.parametrize(
    ("status", "content_type", "call", "error_type", "limit"),
    [
        (400, "text/plain", "create", streamkit.BadRequestError, ERROR_BODY_LIMIT),
        (503, "application/json", "create", streamkit.InternalServerError, ERROR_BODY_LIMIT),
        (200, "application/json", "create", streamkit.ChunkDecodeError, ERROR_BODY_LIMIT),
        (200, "application/json", "models", streamkit.ChunkDecodeError, ERROR_BODY_LIMIT),
        (200, "text/html", "stream", streamkit.UnexpectedContentType, RAW_PREVIEW),
    ],
    ids=["status", "status-json", "stream-false", "models", "page"],
)
async def test_a_long_body_is_kept_only_in_part_and_redacted(
    status: int, content_type: str, call: str, error_type: type[streamkit.StreamkitError], limit: int
) -> None:
    body = ECHO.encode()
    pieces = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    transport = MockTransport(lambda request: MockResponse(status, pieces, {"content-type": content_type}))
    client = streamkit.AsyncClient(base_url="http://x/v1", api_key=KEY, transport=transport, max_retries=0)
    with pytest.raises(error_type) as caught:
        if call == "models":
            await client.models.list()
        elif call == "stream":
            await client.chat.completions.create(model="m", messages=HI, stream=True)
        else:
            await client.chat.completions.create(model="m", messages=HI)
    error = caught.value
    kept = getattr(error, "raw", None) or getattr(error, "body", None)
    assert isinstance(kept, str) and kept.startswith("bad! *** bad! *** ") and len(kept) <= limit
    # Neither the key nor its start, where a bound cut one, shows anywhere.
    shown = [error.message, str(error), repr(error.args), kept, json.dumps(getattr(error, "body", None))]
    assert not [text for text in shown if "sk-" in text]
    assert len(error.message) <= limit + 100


async def test_a_key_cut_where_reading_stopped_never_shows() -> None:
    # A body of nothing but long keys: redacted whole, what was read shrinks forty-fold, and the key cut where
    # reading stopped would come within the bound if the bound were applied after redacting.
    key = "sk-proj-" + "k" * 156
    body = (key + " ").encode() * ((1 << 20) // (len(key) + 1))
    transport = MockTransport(lambda request: MockResponse(400, body, {"content-type": "text/plain"}))
    client = streamkit.AsyncClient(base_url="http://x/v1", api_key=key, transport=transport, max_retries=0)
    with pytest.raises(streamkit.BadRequestError) as caught:
        await client.chat.completions.create(model="m", messages=HI)
    assert isinstance(caught.value.body, str) and caught.value.body.startswith("*** *** ")
    assert "sk-" not in caught.value.body and "sk-" not in caught.value.message
