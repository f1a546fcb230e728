"""Every fault of the built-in server, on every API, through the sync client: the documented error, with
`.partial` holding exactly the text the server sent before it; retries before the response head only."""

from __future__ import annotations

import time
import types
from typing import Any

import pytest

import streamkit
import streamkit.sync
from streamkit.server import ServerThread
from streamkit.server.apis import SERVER_APIS
from streamkit.server.app import HTML_PAGE, SERVER_ERROR
from tests.sync.conftest import APIS, UNFINISHED, body_of, create, fault, finish_of, planned, text_of, unique

# The events sent before a fault: past every API's preamble (a response's four lifecycle events, a
# message's start, ping and block start), so that some text has come.
EVENTS = 6
# The error each API's `error=FORM` fault sends inside the stream (`streamkit.server.apis`): its type, code
# and message.
MESSAGE = "The server had an error while processing your request. Sorry about that!"
OPENAI_ERROR = ("server_error", "internal_error", MESSAGE)
STREAM_ERRORS: dict[tuple[str, str], tuple[str | None, str | None, str]] = {
    ("chat", "object"): OPENAI_ERROR,
    ("chat", "string"): (None, None, MESSAGE),
    ("chat", "event"): OPENAI_ERROR,
    ("completions", "object"): OPENAI_ERROR,
    ("completions", "string"): (None, None, MESSAGE),
    ("completions", "event"): OPENAI_ERROR,
    ("responses", "event"): ("error", "server_error", MESSAGE),
    ("responses", "failed"): ("response.failed", "server_error", MESSAGE),
    ("messages", "event"): ("overloaded_error", None, "Overloaded"),
}


def test_every_error_form_is_covered() -> None:
    assert set(STREAM_ERRORS) == {(api, form) for api in APIS for form in SERVER_APIS[api].error_forms}
    assert (SERVER_ERROR["type"], SERVER_ERROR["code"], SERVER_ERROR["message"]) == OPENAI_ERROR


def read_all(stream: Any) -> list[Any]:
    """The items a `for` loop took before the stream raised; re-raises what it raised."""
    items: list[Any] = []
    try:
        for item in stream:
            items.append(item)  # noqa: PERF402 (the items before the error are the point)
    except streamkit.StreamkitError as exc:
        exc.add_note(f"after {len(items)} items")
        setattr(exc, "items_before", items)  # noqa: B010
        raise
    return items


@pytest.mark.parametrize("api", APIS)
def test_drop_raises_read_error_with_what_came_before(
    client: streamkit.Client, sync_server: ServerThread, api: str
) -> None:
    requests = sync_server.stats.requests
    stream = create(client, api, stream=True, extra_headers=fault(f"drop={EVENTS}"))
    with pytest.raises(streamkit.ReadError) as caught:
        read_all(stream)
    expected = planned(api, body_of(api)).text_after(EVENTS)
    assert expected and text_of(caught.value.partial) == expected
    assert finish_of(caught.value.partial) == UNFINISHED[api] and not stream.completed
    items = caught.value.items_before  # type: ignore[attr-defined]
    assert len(items) == EVENTS - (api == "messages")  # every event that came is yielded (a ping is none)
    with pytest.raises(streamkit.ReadError) as again:  # the stream remembers
        stream.get_final()
    assert again.value is caught.value
    assert sync_server.stats.requests == requests + 1  # nothing is retried after the head


@pytest.mark.parametrize("api", APIS)
def test_truncated_body_raises_incomplete_stream_error(client: streamkit.Client, api: str) -> None:
    stream = create(client, api, stream=True, extra_headers=fault(f"truncate={EVENTS}"))
    with pytest.raises(streamkit.IncompleteStreamError) as caught:
        stream.get_final()
    partial = caught.value.partial
    assert text_of(partial) == planned(api, body_of(api)).text_after(EVENTS) != ""
    assert finish_of(partial) == UNFINISHED[api] and not stream.completed


@pytest.mark.parametrize(("api", "form"), list(STREAM_ERRORS))
def test_an_error_in_the_stream_raises_stream_api_error(
    client: streamkit.Client, api: str, form: str
) -> None:
    stream = create(client, api, stream=True, extra_headers=fault(f"error={form},error_after={EVENTS}"))
    with pytest.raises(streamkit.StreamAPIError) as caught:
        read_all(stream)
    error = caught.value
    assert (error.type, error.code, error.message) == STREAM_ERRORS[api, form]
    assert STREAM_ERRORS[api, form][2] in error.raw
    assert text_of(error.partial) == planned(api, body_of(api)).text_after(EVENTS) != ""
    assert len(error.items_before) == EVENTS - (api == "messages")  # type: ignore[attr-defined]


@pytest.mark.parametrize("api", APIS)
def test_malformed_data_raises_chunk_decode_error(client: streamkit.Client, api: str) -> None:
    stream = create(client, api, stream=True, extra_headers=fault(f"malformed={EVENTS}"))
    with pytest.raises(streamkit.ChunkDecodeError) as caught, stream:
        read_all(stream)
    assert caught.value.raw == SERVER_APIS[api].malformed.decode()
    assert isinstance(caught.value, ValueError)
    assert text_of(caught.value.partial) == planned(api, body_of(api)).text_after(EVENTS) != ""


@pytest.mark.parametrize("api", APIS)
def test_an_html_page_raises_unexpected_content_type(client: streamkit.Client, api: str) -> None:
    with pytest.raises(streamkit.UnexpectedContentType) as caught:
        create(client, api, stream=True, extra_headers=fault("html"))
    assert caught.value.content_type.startswith("text/html")
    assert caught.value.raw == HTML_PAGE.decode() and caught.value.partial is None


# Retries, before the response head only


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the sync client sleeps between tries (they are slept, as asked)."""
    waits: list[float] = []
    real = time.sleep

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        real(seconds)

    monkeypatch.setattr(streamkit.sync, "time", types.SimpleNamespace(sleep=sleep))
    return waits


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(("headers", "asked"), [("retry_after=0.05", 0.05), ("retry_after_ms=30", 0.03)])
def test_a_429_is_retried_after_what_the_server_asks(
    client: streamkit.Client,
    sync_server: ServerThread,
    sleeps: list[float],
    api: str,
    headers: str,
    asked: float,
) -> None:
    extra_headers, key = unique(f"status=429:1,{headers}")
    stream = create(client, api, stream=True, extra_headers=extra_headers)
    assert text_of(stream.get_final()) == planned(api, body_of(api)).text
    assert stream.metrics.attempts == 2 and sync_server.stats.attempts[key] == 2
    assert sleeps == [asked]


@pytest.mark.parametrize("api", APIS)
def test_a_whole_answer_is_retried_too(client: streamkit.Client, sync_server: ServerThread, api: str) -> None:
    extra_headers, key = unique("status=503:1,retry_after=0")
    assert text_of(create(client, api, extra_headers=extra_headers)) != ""
    assert sync_server.stats.attempts[key] == 2


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_429_beyond_max_retries_raises_rate_limit_error(
    sync_server: ServerThread, api: str, stream: bool
) -> None:
    extra_headers, key = unique("status=429,retry_after=0")
    with (
        streamkit.Client(base_url=sync_server.base_url, api_key="sk-test", max_retries=1) as client,
        pytest.raises(streamkit.RateLimitError) as caught,
    ):
        create(client, api, stream=stream, extra_headers=extra_headers)
    assert caught.value.status_code == 429 and caught.value.partial is None
    assert sync_server.stats.attempts[key] == 2  # the try and its one retry


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_400_is_not_retried(
    client: streamkit.Client, sync_server: ServerThread, api: str, stream: bool
) -> None:
    extra_headers, key = unique("status=400")
    with pytest.raises(streamkit.BadRequestError) as caught:
        create(client, api, stream=stream, extra_headers=extra_headers)
    assert caught.value.status_code == 400
    assert sync_server.stats.attempts[key] == 1


def test_server_errors_raise_after_max_retries(client: streamkit.Client, sync_server: ServerThread) -> None:
    extra_headers, key = unique("status=500,retry_after=0")
    with pytest.raises(streamkit.InternalServerError) as caught:
        create(client, "chat", stream=True, extra_headers=extra_headers)
    error = caught.value
    assert sync_server.stats.attempts[key] == 3  # max_retries=2
    assert (error.status_code, error.type, error.code, error.message) == (500, *OPENAI_ERROR)


def test_a_long_retry_after_is_not_slept(
    client: streamkit.Client, sync_server: ServerThread, sleeps: list[float]
) -> None:
    extra_headers, key = unique("status=429,retry_after=120")
    with pytest.raises(streamkit.RateLimitError) as caught:
        create(client, "chat", stream=True, extra_headers=extra_headers)
    assert caught.value.headers["retry-after"] == "120"
    assert sync_server.stats.attempts[key] == 1 and sleeps == []


def test_a_request_the_server_refuses_carries_its_fields(client: streamkit.Client) -> None:
    with pytest.raises(streamkit.BadRequestError) as caught:
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True, top_logprobs=3
        )
    error = caught.value
    assert (error.type, error.param, error.code) == ("invalid_request_error", "top_logprobs", "invalid_value")
