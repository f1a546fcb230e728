"""A background Responses stream survives a broken connection: it resumes by itself from the last event it
delivered (`GET /v1/responses/{id}?stream=true&starting_after=N`), and its caller sees every event once, in
order. `responses.retrieve` and `responses.cancel`. Every other stream fails fast on a cut, as before.

What a test expects comes from the built-in server: its whole answer to the same request (`stream: false`),
and the events it stored, read over raw HTTP (`stored_events`), never from the client's own reading."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

import streamkit
from streamkit.server import ServerThread
from tests.client.conftest import comparable, fault
from tests.client.webapp import serving

pytestmark = pytest.mark.anyio

MODEL = "scripted"
INPUT = "Tell me a story."
SAFE = streamkit.Timeout(connect=5.0, idle=10.0, total=60.0)


def stored_events(server: ServerThread, response_id: str) -> list[dict[str, Any]]:
    """The events the server stored for a finished background response, read over raw HTTP and parsed
    here: the truth a resumed stream is held to."""
    request = urllib.request.Request(
        f"{server.base_url}/responses/{response_id}?stream=true",
        headers={"Authorization": "Bearer sk-test"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = answer.read().decode()
    return [
        json.loads(line[len("data: ") :])
        for block in body.split("\n\n")
        for line in block.splitlines()
        if line.startswith("data: ")
    ]


def partial_of(error: streamkit.StreamkitError) -> Any:
    """What a failed stream had received (a `Response`)."""
    return error.partial


async def whole(client: streamkit.AsyncClient) -> Any:
    """The server's whole answer to the same request, as a background stream of it must aggregate to (which
    says that it ran in the background)."""
    answer: dict[str, Any] = comparable(await client.responses.create(model=MODEL, input=INPUT), usage=True)
    return {**answer, "background": True}


# Before the first token, twice, inside a token's event, and twice with the second cut inside an event
@pytest.mark.parametrize(("cut", "breaks"), [("3", 1), ("6:4", 2), ("8.5", 1), ("7:5.5", 2)])
async def test_a_cut_background_stream_resumes_with_nothing_lost_or_repeated(
    client: streamkit.AsyncClient, streamkit_server: ServerThread, cut: str, breaks: int
) -> None:
    stream = await client.responses.create(
        model=MODEL, input=INPUT, stream=True, background=True, timeout=SAFE,
        extra_headers=fault(f"cut={cut}"),
    )  # fmt: skip
    async with stream:
        seen: list[Any] = [event async for event in stream]
    final: Any = await stream.get_final_response()
    truth = stored_events(streamkit_server, final.id)
    assert [event.sequence_number for event in seen] == [e["sequence_number"] for e in truth]
    assert [event.type for event in seen] == [e["type"] for e in truth]
    assert seen[-1].type == "response.completed" and stream.completed
    assert comparable(final, usage=True) == await whole(client)
    metrics = stream.metrics
    assert metrics.resumes == breaks and len(metrics.outages) == breaks
    # TTFT stays the first token's since the request that created the stream; no gap between tokens spans
    # an outage
    assert metrics.request_sent < metrics.outages[0][0]
    assert metrics.ttft == metrics.token_arrivals[0] - metrics.request_sent
    assert len(metrics.itl) == len(metrics.token_arrivals) - 1 - sum(
        any(a <= start < b for start, _ in metrics.outages)
        for a, b in zip(metrics.token_arrivals, metrics.token_arrivals[1:], strict=False)
    )


def retrying(server: ServerThread, transport: str, max_retries: int) -> streamkit.AsyncClient:
    kind: Any = transport
    return streamkit.AsyncClient(
        base_url=server.base_url, api_key="sk-test", transport=kind, max_retries=max_retries
    )


@contextlib.asynccontextmanager
async def fronted(app: web.Application, transport: str) -> AsyncIterator[streamkit.AsyncClient]:
    """A client of `app`, served in front of the built-in server (`front`)."""
    kind: Any = transport
    with serving(("127.0.0.1", app)) as (port,):
        async with streamkit.AsyncClient(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", transport=kind
        ) as client:
            yield client


async def take(stream: streamkit.ResponseStream, n: int) -> list[Any]:
    """The next `n` events of `stream`."""
    return [await anext(stream) for _ in range(n)]


async def test_a_stream_past_its_retries_fails_with_everything_received(
    streamkit_server: ServerThread, transport: str
) -> None:
    seen: list[Any] = []
    async with retrying(streamkit_server, transport, 0) as client:
        stream = await client.responses.create(
            model=MODEL, input=INPUT, stream=True, background=True, timeout=SAFE,
            extra_headers=fault("cut=4"),
        )  # fmt: skip
        with pytest.raises(streamkit.ReadError) as caught:
            async with stream:
                async for event in stream:
                    seen.append(event)  # noqa: PERF401 (what came before the error)
    assert [event.sequence_number for event in seen] == [0, 1, 2, 3]
    assert caught.value.partial is not None and partial_of(caught.value).id == seen[0].response.id
    assert stream.metrics.resumes == 0


async def test_each_break_takes_a_retry_of_the_budget(streamkit_server: ServerThread, transport: str) -> None:
    async with retrying(streamkit_server, transport, 1) as client:
        stream = await client.responses.create(
            model=MODEL, input=INPUT, stream=True, background=True, timeout=SAFE,
            extra_headers=fault("cut=3:2"),
        )  # fmt: skip
        with pytest.raises(streamkit.ReadError) as caught:
            await stream.get_final_response()
    assert stream.metrics.resumes == 1  # the first break resumed, the second found no retry left
    assert caught.value.partial is not None and partial_of(caught.value).status == "in_progress"


@pytest.mark.parametrize("api", ["chat", "completions", "responses", "messages"])
async def test_every_other_stream_fails_fast_on_a_cut(client: streamkit.AsyncClient, api: str) -> None:
    bodies: dict[str, dict[str, Any]] = {
        "chat": {"messages": [{"role": "user", "content": "hi"}]},
        "completions": {"prompt": "hi"},
        "responses": {"input": INPUT},  # not background: nothing to resume from
        "messages": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64},
    }
    stream = await client.stream(
        api, {"model": MODEL, **bodies[api]}, extra_headers=fault("cut=3"), timeout=SAFE
    )
    with pytest.raises(streamkit.ReadError) as caught:
        await stream.get_final()
    assert caught.value.partial is not None and stream.metrics.resumes == 0


async def test_a_plain_responses_stream_fails_fast_on_a_cut(client: streamkit.AsyncClient) -> None:
    stream = await client.responses.create(
        model=MODEL, input=INPUT, stream=True, timeout=SAFE, extra_headers=fault("cut=3")
    )
    with pytest.raises(streamkit.ReadError):
        await stream.get_final_response()
    assert stream.metrics.resumes == 0


async def test_the_retries_before_the_first_byte_count_in_the_budget(
    streamkit_server: ServerThread, transport: str
) -> None:
    # One retry: the first attempt's 500 takes it, so the cut that follows finds none left
    spec = f"status=500:1,key=budget-{transport}-{id(object())},cut=4"
    async with retrying(streamkit_server, transport, 1) as client:
        stream = await client.responses.create(
            model=MODEL, input=INPUT, stream=True, background=True, timeout=SAFE, extra_headers=fault(spec)
        )
        assert stream.metrics.attempts == 2
        with pytest.raises(streamkit.ReadError):
            await stream.get_final_response()
    assert stream.metrics.resumes == 0


async def test_client_stream_resumes_a_background_body_too(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    body = {"model": MODEL, "input": INPUT, "background": True}
    stream = await client.stream("responses", body, extra_headers=fault("cut=5"), timeout=SAFE)
    final: Any = await stream.get_final()
    assert stream.metrics.resumes == 1 and final.status == "completed"
    assert stream.metrics.chunks == len(stored_events(streamkit_server, final.id))


async def test_retrieve_and_cancel(client: streamkit.AsyncClient, streamkit_server: ServerThread) -> None:
    stream = await client.responses.create(
        model=MODEL, input=INPUT, stream=True, background=True, timeout=SAFE,
        extra_headers={"x-streamkit-timing": "itl=0.05,tokens=200"},
    )  # fmt: skip
    async with stream:
        first = await take(stream, 3)
    response_id: Any = first[0].response.id
    # The stored response, as it stands, and its events after the second, read again
    now = await client.responses.retrieve(response_id)
    assert now.id == response_id and now.status == "in_progress"
    again = await client.responses.retrieve(response_id, stream=True, starting_after=1, timeout=SAFE)
    async with again:
        more = await take(again, 3)
    assert [event.sequence_number for event in more] == [2, 3, 4]
    assert more[0].type == first[2].type
    cancelled = await client.responses.cancel(response_id)
    assert cancelled.id == response_id and cancelled.status == "cancelled"
    assert (await client.responses.retrieve(response_id)).status == "cancelled"
    with pytest.raises(streamkit.NotFoundError):
        await client.responses.retrieve("resp_unknown")
    with pytest.raises(streamkit.NotFoundError):
        await client.responses.cancel("resp_unknown")


async def test_retrieve_streams_a_finished_response_whole(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    first = await client.responses.create(
        model=MODEL, input=INPUT, stream=True, background=True, timeout=SAFE
    )
    final: Any = await first.get_final_response()
    again = await client.responses.retrieve(final.id, stream=True, timeout=SAFE)
    replayed = await again.get_final_response()
    assert comparable(replayed, usage=True) == comparable(final, usage=True)
    assert len(again.metrics.arrivals) == len(stored_events(streamkit_server, final.id))


def front(
    server: ServerThread, cut_after: int, resume_status: int, shift: int = 0, novel: tuple[int, ...] = ()
) -> web.Application:
    """A server in front of the built-in one: its POST streams the built-in server's first `cut_after`
    events, as they came, and then breaks the connection; every GET (a resume) gets `resume_status` and
    OpenAI's error body, or for 200, the built-in server's stored events after `starting_after + shift`
    (a negative shift repeats events, a positive one skips some), those numbered in `novel` as an event type
    that streamkit does not know."""

    async def create(request: web.Request) -> web.StreamResponse:
        upstream = urllib.request.Request(
            f"{server.base_url}/responses",
            data=await request.read(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer sk-test"},
        )
        with urllib.request.urlopen(upstream, timeout=30) as answer:
            blocks = answer.read().split(b"\n\n")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"\n\n".join(blocks[:cut_after]) + b"\n\n")
        assert request.transport is not None
        request.transport.abort()
        return response

    async def resume(request: web.Request) -> web.StreamResponse:
        if resume_status == 200:
            after = int(request.query["starting_after"]) + shift
            events = stored_events(server, request.match_info["id"])
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for event in events[after + 1 :]:
                if event["sequence_number"] in novel:
                    event = {**event, "type": "response.novel_event"}
                await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            await response.write_eof()
            return response
        error = {"message": "Response with id 'x' not found.", "type": "invalid_request_error", "param": None}
        return web.json_response({"error": {**error, "code": None}}, status=resume_status)

    app = web.Application()
    app.router.add_post("/v1/responses", create)
    app.router.add_get("/v1/responses/{id}", resume)
    return app


@pytest.mark.parametrize(
    ("status", "error"), [(404, streamkit.NotFoundError), (400, streamkit.BadRequestError)]
)
async def test_a_resume_the_server_refuses_raises_with_everything_received(
    streamkit_server: ServerThread, transport: str, status: int, error: type[streamkit.APIStatusError]
) -> None:
    async with fronted(front(streamkit_server, 3, status), transport) as client:
        stream = await client.responses.create(
            model=MODEL, input=INPUT, stream=True, background=True, timeout=SAFE
        )
        seen: list[Any] = []
        with pytest.raises(error) as caught:
            async for event in stream:
                seen.append(event)  # noqa: PERF401 (what came before the error)
    assert [event.sequence_number for event in seen] == [0, 1, 2]
    assert caught.value.partial is not None and partial_of(caught.value).id == seen[0].response.id


async def test_events_a_resume_repeats_are_dropped(streamkit_server: ServerThread, transport: str) -> None:
    async with fronted(front(streamkit_server, 6, 200, shift=-3), transport) as client:
        stream = await client.responses.create(
            model=MODEL, input=INPUT, stream=True, background=True, timeout=SAFE
        )
        seen: list[Any] = [event async for event in stream]
        final: Any = stream.snapshot
    truth = stored_events(streamkit_server, final.id)
    assert [event.sequence_number for event in seen] == [e["sequence_number"] for e in truth]
    assert stream.completed and stream.metrics.resumes == 1


async def test_events_of_unknown_types_are_numbered_too(
    streamkit_server: ServerThread, transport: str
) -> None:
    """A repeated event of a type this version does not know is dropped as any other; a new one counts."""
    async with fronted(front(streamkit_server, 6, 200, shift=-3, novel=(4, 7)), transport) as client:
        stream = await client.responses.create(
            model=MODEL, input=INPUT, stream=True, background=True, timeout=SAFE
        )
        seen: list[Any] = [event async for event in stream]
    assert [event.type for event in seen][:9] == [
        *(e["type"] for e in stored_events(streamkit_server, seen[0].response.id)[:7]),
        "response.novel_event",
        stored_events(streamkit_server, seen[0].response.id)[8]["type"],
    ]
    assert stream.completed and stream.metrics.resumes == 1


async def test_a_gap_in_the_sequence_is_an_error(streamkit_server: ServerThread, transport: str) -> None:
    async with fronted(front(streamkit_server, 6, 200, shift=2), transport) as client:
        stream = await client.responses.create(
            model=MODEL, input=INPUT, stream=True, background=True, timeout=SAFE
        )
        seen: list[Any] = []
        with pytest.raises(streamkit.ProtocolError, match="events 6 to 7 are missing"):
            async for event in stream:
                seen.append(event)  # noqa: PERF401 (what came before the error)
    assert [event.sequence_number for event in seen] == [0, 1, 2, 3, 4, 5]
