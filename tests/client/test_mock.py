"""The client above the transport, fed exact bytes by `MockTransport`: requests, framing, end of stream."""

from __future__ import annotations

import datetime
import email.utils
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamkit
from streamkit.protocols.chat import ChatApi, ChatCompletionChunk
from streamkit.transports.base import Request
from streamkit.transports.mock import MockResponse, MockTransport
from tests.client.conftest import HI
from tests.conftest import OPENAI_STREAMS

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


def sse(*chunks: dict[str, Any] | str) -> bytes:
    return b"".join(
        b"data: " + (c if isinstance(c, str) else json.dumps(c)).encode() + b"\n\n" for c in chunks
    )


def chunk(content: str | None = None, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    if content is not None:
        delta["content"] = content
    return {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def content(error: streamkit.StreamkitError) -> str | None:
    assert isinstance(error.partial, streamkit.ChatCompletion)
    return error.partial.choices[0].message.content


ROLE, HELLO, STOP = chunk(role="assistant", content=""), chunk("Hello"), chunk(finish="stop")


def mock_client(*responses: MockResponse, **kwargs: Any) -> tuple[streamkit.AsyncClient, MockTransport]:
    queue = list(responses)
    transport = MockTransport(lambda request: queue.pop(0))
    return streamkit.AsyncClient(base_url="http://api.test/v1", transport=transport, **kwargs), transport


# Requests


async def test_every_parameter_goes_into_the_body() -> None:
    client, transport = mock_client(MockResponse(200, sse(ROLE, STOP, "[DONE]")))
    params: dict[str, Any] = {
        "temperature": 0.5,
        "top_p": 0.9,
        "n": 2,
        "stop": ["x", "y"],
        "max_tokens": 10,
        "max_completion_tokens": 11,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "logit_bias": {"50256": -100},
        "logprobs": True,
        "top_logprobs": 3,
        "seed": 42,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "response_format": {"type": "json_object"},
        "stream_options": {"include_usage": True},
        "user": "u",
        "reasoning_effort": "low",
        "service_tier": "auto",
        "metadata": {"k": "v"},
        "store": False,
    }
    stream = await client.chat.completions.create(
        model="m",
        messages=HI,
        stream=True,
        extra_body={"top_k": 5, "temperature": 0.7},
        extra_query={"api-version": "2024-01-01"},
        extra_headers={"X-Trace": "t1"},
        **params,
    )
    await stream.get_final_completion()
    request = transport.requests[0]
    assert json.loads(request.content) == {
        "model": "m",
        "messages": HI,
        "stream": True,
        **params,
        "top_k": 5,
        "temperature": 0.7,  # extra_body goes over the named parameters
    }
    assert request.url == "http://api.test/v1/chat/completions?api-version=2024-01-01"
    assert request.method == "POST" and request.stream
    assert request.headers["Accept"] == "text/event-stream" and request.headers["X-Trace"] == "t1"


async def test_legacy_parameters_and_none_leaves_a_parameter_out() -> None:
    body = json.dumps({"id": "c", "choices": [{"index": 0, "text": "hi", "finish_reason": "stop"}]}).encode()
    client, transport = mock_client(MockResponse(200, body, {"content-type": "application/json"}))
    completion = await client.completions.create(
        model="m", prompt=["a", "b"], suffix="z", echo=True, best_of=2, logprobs=1, temperature=None
    )
    assert json.loads(transport.requests[0].content) == {
        "model": "m",
        "prompt": ["a", "b"],
        "stream": False,
        "suffix": "z",
        "echo": True,
        "best_of": 2,
        "logprobs": 1,
    }
    assert not transport.requests[0].stream and isinstance(completion, streamkit.Completion)


async def test_configuration_comes_from_arguments_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env.test/v1/")
    transport = MockTransport(lambda request: MockResponse(200, sse(ROLE, STOP)))
    from_env = streamkit.AsyncClient(transport=transport)
    await (await from_env.chat.completions.create(model="m", messages=HI, stream=True)).get_final_completion()
    explicit = streamkit.AsyncClient(transport=transport, api_key="sk-arg", base_url="http://arg.test/v1")
    await (await explicit.chat.completions.create(model="m", messages=HI, stream=True)).get_final_completion()
    first, second = transport.requests
    assert (
        first.url.startswith("http://env.test/v1/chat") and first.headers["Authorization"] == "Bearer sk-env"
    )
    assert (
        second.url.startswith("http://arg.test/v1/chat")
        and second.headers["Authorization"] == "Bearer sk-arg"
    )
    assert "sk-" not in repr(first) + repr(explicit)
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL")
    default = streamkit.AsyncClient(transport=transport)
    assert default.base_url == "https://api.openai.com/v1"
    await (await default.chat.completions.create(model="m", messages=HI, stream=True)).get_final_completion()
    assert "Authorization" not in transport.requests[-1].headers


def test_an_unknown_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        streamkit.AsyncClient(transport="requests")  # type: ignore[arg-type]


# Recorded streams, cut anywhere


def bytes_cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("path", OPENAI_STREAMS, ids=lambda p: p.stem)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=0), max_size=40))
async def test_recorded_streams_aggregate_exactly_however_cut(path: Path, cuts: list[int]) -> None:
    data = path.read_bytes()
    expected = json.loads(path.with_suffix(".final.json").read_text())
    response = MockResponse(200, bytes_cut(data, cuts))
    client, _ = mock_client(response)
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    chunks = [c async for c in stream]
    final = await stream.get_final_completion()
    assert final.to_dict() == expected
    assert len(chunks) == data.count(b"\n\ndata: {") + 1 - (not data.startswith(b"data: {"))
    assert response.released  # [DONE] hands the connection back


# End of stream and errors


async def test_content_types() -> None:
    for content_type in (None, "text/event-stream", "text/event-stream; charset=utf-8", "Text/Event-Stream"):
        headers = {} if content_type is None else {"content-type": content_type}
        client, _ = mock_client(MockResponse(200, sse(ROLE, HELLO, STOP), headers))
        stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
        assert (await stream.get_final_completion()).choices[0].message.content == "Hello"
    for content_type in ("application/json", "text/event-streams", "text/plain"):
        client, _ = mock_client(MockResponse(200, b'{"choices": []}', {"content-type": content_type}))
        with pytest.raises(streamkit.UnexpectedContentType) as caught:
            await client.chat.completions.create(model="m", messages=HI, stream=True)
        assert caught.value.raw == '{"choices": []}' and caught.value.content_type == content_type


async def test_done_ends_the_stream_and_nothing_after_it_is_decoded() -> None:
    # What follows [DONE] is only drained, briefly, to free the connection: never decoded, and a connection
    # that breaks there costs nothing.
    broken = streamkit.ReadError("reset after [DONE]")
    response = MockResponse(200, [sse(ROLE, HELLO, STOP, "[DONE]") + b"data: garbage\n\n", broken])
    client, _ = mock_client(response)
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    assert len([c async for c in stream]) == 3 and response.released and stream.completed


async def test_other_event_types_are_skipped_and_error_events_raise() -> None:
    body = (
        sse(ROLE) + b"event: ping\ndata: {}\n\n" + sse(HELLO) + b'event: error\ndata: {"message": "boom"}\n\n'
    )
    response = MockResponse(200, [body])
    client, _ = mock_client(response)
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    got: list[streamkit.ChatCompletionChunk] = []
    with pytest.raises(streamkit.StreamAPIError) as caught:
        async for c in stream:
            got.append(c)  # noqa: PERF401
    assert len(got) == 2  # decoded in the same read as the error, and still yielded first
    assert caught.value.message == "boom" and caught.value.partial is not None
    assert content(caught.value) == "Hello"
    assert response.closed and not response.released


async def test_an_event_of_another_type_is_skipped_in_a_read_of_chunks() -> None:
    # Chunk-shaped data under `event: other` is no chunk, even where a read holds only plain events.
    other = b"event: other\ndata: " + json.dumps(chunk("Nope")).encode() + b"\n\n"
    body = sse(ROLE) + other + sse(HELLO, STOP)
    client, _ = mock_client(MockResponse(200, [body + b"data: [DONE]\n\n"]))
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    assert (await stream.get_final_completion()).choices[0].message.content == "Hello"


async def test_one_event_of_two_chunks_joined_by_a_comma_is_no_chunk_in_a_read_of_chunks() -> None:
    # Joined into one array with the others, `{...},{...}` would read as two chunks; alone it is no JSON.
    two = json.dumps(chunk("Hel")) + "," + json.dumps(chunk("lo"))
    body = sse(ROLE) + b"data: " + two.encode() + b"\n\n" + sse(STOP)
    client, _ = mock_client(MockResponse(200, [body, b"data: [DONE]\n\n"]))
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    with pytest.raises(streamkit.ChunkDecodeError) as caught:
        await stream.get_final_completion()
    assert caught.value.raw == two and caught.value.partial is not None and content(caught.value) == ""


async def test_a_read_of_chunks_that_ends_the_stream_is_decoded_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `[DONE]` closing a read of chunks, as the last read of a fast stream brings it: one array all the same.
    arrays: list[bytes] = []
    decode_many = ChatApi.decode_many

    def spy(api: ChatApi, array: bytes) -> list[ChatCompletionChunk] | None:
        arrays.append(array)
        return decode_many(api, array)

    monkeypatch.setattr(ChatApi, "decode_many", spy)
    client, _ = mock_client(MockResponse(200, [sse(ROLE, HELLO, STOP) + b"data: [DONE]\n\n"]))
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    assert (await stream.get_final_completion()).choices[0].message.content == "Hello"
    assert arrays == [b"[" + b",".join(json.dumps(c).encode() for c in (ROLE, HELLO, STOP)) + b"]"]


async def test_error_data_without_event_type() -> None:
    error = {"error": {"message": "overloaded", "type": "server_error", "code": 503, "param": None}}
    client, _ = mock_client(MockResponse(200, sse(ROLE, HELLO, error)))
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    with pytest.raises(streamkit.StreamAPIError) as caught:
        await stream.get_final_completion()
    assert (caught.value.message, caught.value.type, caught.value.code) == (
        "overloaded",
        "server_error",
        "503",
    )
    assert json.loads(caught.value.raw) == error


async def test_end_without_done() -> None:
    client, _ = mock_client(MockResponse(200, sse(ROLE, HELLO, STOP)), MockResponse(200, sse(ROLE, HELLO)))
    finished = await client.chat.completions.create(model="m", messages=HI, stream=True)
    assert (await finished.get_final_completion()).choices[0].finish_reason == "stop"
    unfinished = await client.chat.completions.create(model="m", messages=HI, stream=True)
    with pytest.raises(streamkit.IncompleteStreamError) as caught:
        await unfinished.get_final_completion()
    assert caught.value.partial is not None and content(caught.value) == "Hello"


async def test_a_stream_without_choices_is_incomplete() -> None:
    usage_only = {"id": "c", "choices": [], "usage": {"completion_tokens": 0}}
    client, _ = mock_client(MockResponse(200, b""), MockResponse(200, sse(usage_only)))
    for _ in range(2):
        stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
        with pytest.raises(streamkit.IncompleteStreamError):
            await stream.get_final_completion()


async def test_a_broken_read_keeps_the_partial() -> None:
    response = MockResponse(200, [sse(ROLE, HELLO), streamkit.ReadError("reset")])
    client, _ = mock_client(response)
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    with pytest.raises(streamkit.ReadError) as caught:
        await stream.get_final_completion()
    assert caught.value.partial is not None and content(caught.value) == "Hello"
    assert response.closed


async def test_the_size_bound_raises_sse_protocol_error() -> None:
    client, _ = mock_client(MockResponse(200, [b"data: " + b"x" * (17 * 1024 * 1024)]))
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    with pytest.raises(streamkit.SSEProtocolError):
        await stream.get_final_completion()


# Metrics


async def test_metrics_count_tokens_not_chunks() -> None:
    reasoning = chunk(reasoning_content="Hmm")
    usage = {
        "id": "c1",
        "choices": [],
        "usage": {"prompt_tokens": 1, "completion_tokens": 7, "total_tokens": 8},
    }
    tool = chunk(tool_calls=[{"index": 0, "id": "t", "function": {"name": "f", "arguments": ""}}])
    reads = [sse(ROLE), sse(chunk("")), sse(reasoning, HELLO), sse(tool), sse(STOP, usage, "[DONE]")]
    client, _ = mock_client(MockResponse(200, reads))
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    await stream.get_final_completion()
    m = stream.metrics
    assert (m.chunks, len(m.token_arrivals), m.reads, m.completion_tokens) == (7, 3, 5, 7)
    assert m.arrivals[2] == m.arrivals[3] == m.token_arrivals[0]  # one read, one stamp: reasoning counts
    assert m.first_token == m.arrivals[2] and m.last_token == m.arrivals[4]
    assert m.ttft == m.arrivals[2] - m.request_sent and m.e2e == m.arrivals[4] - m.request_sent
    assert m.itl == [0.0, m.arrivals[4] - m.arrivals[3]]
    assert "ttft=" in repr(m)


async def test_legacy_metrics_and_text() -> None:
    legacy = [
        {"id": "c", "choices": [{"index": 0, "text": "", "finish_reason": None}]},
        {"id": "c", "choices": [{"index": 0, "text": "Hi", "finish_reason": None}]},
        {"id": "c", "choices": [{"index": 0, "text": "!", "finish_reason": "length"}]},
    ]
    client, _ = mock_client(MockResponse(200, [sse(c) for c in legacy]))
    stream = await client.completions.create(model="m", prompt="p", stream=True)
    assert [t async for t in stream.text_deltas()] == ["Hi", "!"]
    assert stream.metrics.chunks == 3 and len(stream.metrics.token_arrivals) == 2


# Status errors and retries


async def test_status_errors_redact_the_key_and_keep_the_body() -> None:
    secret = "sk-abcdef123456"
    body = json.dumps(
        {"error": {"message": f"Incorrect API key provided: {secret}", "code": "invalid_api_key"}}
    )
    client, _ = mock_client(
        MockResponse(401, body.encode(), {"content-type": "application/json"}), api_key=secret
    )
    with pytest.raises(streamkit.AuthenticationError) as caught:
        await client.chat.completions.create(model="m", messages=HI, stream=True)
    assert caught.value.message == "Incorrect API key provided: ***" and secret not in str(caught.value.body)


async def test_a_status_without_json_body() -> None:
    client, _ = mock_client(MockResponse(404, b"Not Found", {"content-type": "text/plain"}))
    with pytest.raises(streamkit.NotFoundError) as caught:
        await client.chat.completions.create(model="m", messages=HI)
    assert caught.value.message == "HTTP 404: Not Found" and caught.value.body == "Not Found"


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "0.5"}, 0.0005),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),  # the ms form wins
        ({"Retry-After": "2"}, 2.0),
        ({"Retry-After": " 7 "}, 7.0),  # whitespace around a field value is no part of it
        ({"Retry-After": "0.5"}, 0.5),  # a fraction, which servers send, is taken
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "1" + "0" * 400}, math.inf),  # a valid number too large for a float: wait forever
        # An invalid ms form gives way to Retry-After.
        *(
            ({"retry-after-ms": ms, "Retry-After": "3"}, 3.0)
            for ms in ["nan", "-1", "-0", "inf", "-inf", "1e3", "1_0", "+5", "garbage", "", ".5", "5."]
        ),
        # What float() reads but HTTP does not: a sign, an exponent, a `_`, nan, inf, digits of other
        # scripts.
        *(
            ({"Retry-After": value}, None)
            for value in ["-5", "+5", "1_0", "1e3", "1e400", "nan", "inf", "-inf", "\u0661\u0662", "0x10"]
        ),
        ({"retry-after-ms": "1_0"}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "Mon, 01 Jan 0001 00:00:00 GMT"}, 0.0),  # a date in the past: no wait
        ({"Retry-After": "Sun, 00 Nov 1994 08:49:37 GMT"}, None),  # no such day
        ({"Retry-After": "Sun, 31 Nov 1994 08:49:37 GMT"}, None),
        ({"Retry-After": "Sun, 06 Nov 1994 24:00:00 GMT"}, None),
        ({"Retry-After": "Sun, 06 Nov 1994 08:49:37 +0000"}, None),  # an HTTP-date is in GMT, so says
        ({"Retry-After": "sun, 06 nov 1994 08:49:37 gmt"}, None),  # and is case-sensitive
        ({}, None),
    ],
)
def test_retry_after_is_read_exactly(headers: dict[str, str], wait: float | None) -> None:
    from streamkit.client import _retry_after

    lower = {k.lower(): v for k, v in headers.items()}
    assert _retry_after(lower) == wait


# RFC 9110 §5.6.7's example, in its three forms, and the instant it names, worked out by hand: 1994-11-06 is
# 9075 days after 1970-01-01 (24 years of 365 days, 6 leap days, then 309 days into 1994).
HTTP_DATES = [
    "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
    "Sunday, 06-Nov-94 08:49:37 GMT",  # rfc850-date
    "Sun Nov  6 08:49:37 1994",  # asctime-date
]
EXAMPLE = 9075 * 86400 + 8 * 3600 + 49 * 60 + 37


@pytest.mark.parametrize("date", HTTP_DATES)
@pytest.mark.parametrize("ahead", [0, 1, 59, 3600])
def test_retry_after_as_a_date_in_each_form(date: str, ahead: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamkit.client import _retry_after

    # Where local time is not UTC, a date read as local time would be hours off.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert _retry_after({"retry-after": date}, now=EXAMPLE - ahead) == ahead
        assert _retry_after({"retry-after": date}, now=EXAMPLE + 30) == 0.0  # past: no wait
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("date", "now", "year"),
    [
        # Two digits of year: this century, unless that is more than 50 years ahead (RFC 9110 §5.6.7).
        ("Thursday, 01-Jan-70 00:00:00 GMT", (2025, 6, 1), 2070),
        ("Monday, 01-Jan-80 00:00:00 GMT", (2025, 6, 1), 1980),
        ("Friday, 01-Jan-99 00:00:00 GMT", (2025, 6, 1), 1999),
        ("Saturday, 01-Jan-00 00:00:00 GMT", (2025, 6, 1), 2000),
        ("Monday, 01-Jan-01 00:00:00 GMT", (1999, 6, 1), 2001),
        ("Monday, 29-Feb-00 00:00:00 GMT", (2075, 6, 1), None),  # 2100 is no leap year: no such day
    ],
)
def test_a_two_digit_year(date: str, now: tuple[int, int, int], year: int | None) -> None:
    from streamkit.client import _retry_after

    start = datetime.datetime(*now, tzinfo=datetime.UTC)
    wait = _retry_after({"retry-after": date}, now=start.timestamp())
    if year is None:
        assert wait is None
    else:
        expected = (datetime.datetime(year, 1, 1, tzinfo=datetime.UTC) - start).total_seconds()
        assert wait == max(expected, 0.0)


def test_retry_after_as_a_date_from_now() -> None:
    from streamkit.client import _retry_after

    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    wait = _retry_after({"retry-after": in_a_minute})
    assert wait is not None and 58 <= wait <= 60


@pytest.mark.parametrize(
    ("headers", "slept"),
    [
        ({"retry-after-ms": "5"}, 0.005),
        ({"Retry-After": "0.01"}, 0.01),
        ({"retry-after-ms": "-1", "Retry-After": "0.02"}, 0.02),  # an invalid ms form gives way
        ({"retry-after-ms": "1_0", "Retry-After": "0.03"}, 0.03),
        ({"Retry-After": "Sunday, 06-Nov-94 08:49:37 GMT"}, 0.0),  # a date in the past: no wait
        ({"Retry-After": "Sun Nov  6 08:49:37 1994"}, 0.0),
        ({"Retry-After": "nan"}, None),  # unreadable: ordinary backoff, within its first step
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "1_0"}, None),
    ],
)
async def test_the_client_sleeps_what_the_server_asked(
    headers: dict[str, str], slept: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio

    waits: list[float] = []
    real_sleep = anyio.sleep

    async def recorded(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(anyio, "sleep", recorded)
    busy = MockResponse(
        429, b'{"error": {"message": "slow down"}}', {"content-type": "application/json", **headers}
    )
    client, transport = mock_client(busy, MockResponse(200, sse(ROLE, STOP)))
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    assert (await stream.get_final_completion()).choices and len(transport.requests) == 2
    assert busy.closed
    if slept is None:
        assert len(waits) == 1 and 0 <= waits[0] <= streamkit.client.BACKOFF_START
    else:
        assert waits == [slept]


async def test_a_connection_broken_after_done_costs_the_connection_not_the_stream() -> None:
    response = MockResponse(200, [sse(ROLE, HELLO, STOP, "[DONE]"), streamkit.ReadError("reset by peer")])
    client, _ = mock_client(response)
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    final = await stream.get_final_completion()
    assert final.choices[0].message.content == "Hello" and stream.completed
    assert response.released and response.closed


async def test_max_retries_zero() -> None:
    client, transport = mock_client(MockResponse(503, b"{}"), max_retries=0)
    with pytest.raises(streamkit.InternalServerError):
        await client.chat.completions.create(model="m", messages=HI, stream=True)
    assert len(transport.requests) == 1


async def test_a_whole_answer_that_is_not_json() -> None:
    client, _ = mock_client(MockResponse(200, b"<html>", {"content-type": "text/html"}))
    with pytest.raises(streamkit.ChunkDecodeError) as caught:
        await client.chat.completions.create(model="m", messages=HI)
    assert caught.value.raw == "<html>"


def test_request_repr_hides_headers() -> None:
    request = Request("POST", "http://x/v1", {"Authorization": "Bearer sk-1"})
    assert "sk-1" not in repr(request)


async def test_bytes_that_are_not_utf8_become_replacement_characters() -> None:
    bad = json.dumps(chunk("caf\u00e9")).encode().replace(b"\\u00e9", b"\xff")
    client, _ = mock_client(MockResponse(200, [sse(ROLE), b"data: " + bad + b"\n\n", sse(STOP, "[DONE]")]))
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    assert (await stream.get_final_completion()).choices[0].message.content == "caf\ufffd"


async def test_legacy_logprobs_in_chats_shape_are_kept() -> None:
    """llama.cpp's server answers `/v1/completions` with chat's logprobs (`content`, one entry per token):
    kept as they came, in order, and counted as tokens."""

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": []}

    def chunk(text: str, logprob: float, finish: str | None = None) -> dict[str, Any]:
        choice = {
            "index": 0,
            "text": text,
            "logprobs": {"content": [entry(text, logprob)]},
            "finish_reason": finish,
        }
        return {"id": "c", "object": "text_completion", "created": 0, "model": "m", "choices": [choice]}

    client, _ = mock_client(MockResponse(200, sse(chunk("One", -0.5), chunk(" two", -1.25, "stop"))))
    stream = await client.completions.create(model="m", prompt="count", logprobs=2, stream=True)
    final = await stream.get_final_completion()
    logprobs = final.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [(e.token, e.logprob) for e in logprobs.content] == [("One", -0.5), (" two", -1.25)]
    assert stream.metrics.token_counts == [1, 1]
