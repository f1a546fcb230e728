"""The Responses API's background mode on the built-in server: `background: true`, the events kept and
streamed again with `GET /v1/responses/{id}?stream=true&starting_after=N`, the Response object of `GET
/v1/responses/{id}`, `POST /v1/responses/{id}/cancel`, and the `cut` fault that breaks the connections that
stream a response, one after another.

Everything here is read over plain HTTP and its SSE is parsed by hand (blocks split on blank lines, the
`event:` and `data:` lines read): the server is the client's oracle, so its tests use nothing of the client.
Nothing measures speed: where the producer must run on alone, a test waits for what it produces, with a
bound that only a hung server reaches.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamkit.server import Faults, ServerConfig, ServerThread, Timing
from streamkit.server.background import BackgroundStore, StoredResponse
from streamkit.server.scripted import Frame, tokens_for
from tests.server.raw import RawResponse, post

BODY: dict[str, Any] = {"model": "scripted", "input": "Hello there", "stream": True, "seed": 3}
TEXT = "".join(tokens_for(3000, 16))  # the scripted model's answer to BODY
EVENTS = 24  # response.created ... response.completed, with 16 deltas
WAIT = 30.0  # the longest a step may take before the test fails: a liveness bound, not a timing

Event = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread() as server:
        yield server


def create(server: ServerThread, fault: str = "", timing: str = "", **params: Any) -> RawResponse:
    """`POST /v1/responses` with BODY and `params` (a value of `...` leaves the field out)."""
    body = {k: v for k, v in {**BODY, "background": True, **params}.items() if v is not ...}
    headers = {"x-streamkit-fault": fault, "x-streamkit-timing": timing}
    return post(server.url, "/v1/responses", body, {k: v for k, v in headers.items() if v})


def get(server: ServerThread, path: str, headers: dict[str, str] | None = None) -> RawResponse:
    return post(server.url, path, b"", headers, method="GET")


def resume(server: ServerThread, id: str, after: int | None = None, fault: str = "") -> RawResponse:
    """`GET /v1/responses/{id}?stream=true`, from after sequence number `after` (None: from the start)."""
    query = "stream=true" + (f"&starting_after={after}" if after is not None else "")
    return get(server, f"/v1/responses/{id}?{query}", {"x-streamkit-fault": fault} if fault else None)


def cancel(server: ServerThread, id: str, headers: dict[str, str] | None = None) -> RawResponse:
    return post(server.url, f"/v1/responses/{id}/cancel", b"", headers)


def parse(body: bytes) -> tuple[list[Event], bytes]:
    """The whole events of an SSE body, as each one's `event:` name and its data, and the bytes after the
    last whole one (a partial event). Every block must be one `event:` line and one `data:` line."""
    *blocks, rest = body.split(b"\n\n")
    events = []
    for block in blocks:
        lines = block.split(b"\n")
        assert [line.split(b": ", 1)[0] for line in lines] == [b"event", b"data"], block
        name, data = lines[0].split(b": ", 1)[1].decode(), json.loads(lines[1].split(b": ", 1)[1])
        assert data["type"] == name
        events.append((name, data))
    return events, rest


def events_of(response: RawResponse) -> list[Event]:
    """The events of a stream that must hold whole events only."""
    assert response.status == 200 and response.headers["content-type"] == "text/event-stream"
    events, rest = parse(response.body)
    assert rest == b""
    return events


def numbers(events: list[Event]) -> list[int]:
    return [data["sequence_number"] for _, data in events]


def id_of(events: list[Event]) -> str:
    response_id: str = events[0][1]["response"]["id"]
    return response_id


def normal(value: Any) -> Any:
    """`value` without what differs between two answers to the same request: ids, timestamps, and the
    `background` that each Response object echoes."""
    if isinstance(value, dict):
        return {
            k: "*" if k in ("id", "item_id", "created_at") else normal(v)
            for k, v in value.items()
            if k != "background"
        }
    if isinstance(value, (list, tuple)):
        return [normal(v) for v in value]
    return value


def until_status(server: ServerThread, id: str, status: str) -> dict[str, Any]:
    """Poll `GET /v1/responses/{id}` until its status is `status`; its Response object."""
    deadline = time.monotonic() + WAIT
    while True:
        response = get(server, f"/v1/responses/{id}")
        assert response.status == 200
        answer: dict[str, Any] = response.json()
        if answer["status"] == status or time.monotonic() > deadline:
            assert answer["status"] == status
            return answer
        time.sleep(0.01)


def text_of(answer: dict[str, Any]) -> str:
    (message,) = answer["output"]
    return "".join(part["text"] for part in message["content"])


# The stream, whole and resumed


def test_a_background_stream_read_whole_is_the_plain_stream(server: ServerThread) -> None:
    events = events_of(create(server))
    assert numbers(events) == list(range(EVENTS))
    assert events[-1][0] == "response.completed" and events[0][0] == "response.created"
    final = events[-1][1]["response"]
    assert final["background"] is True and final["status"] == "completed" and text_of(final) == TEXT
    plain = events_of(create(server, background=...))
    assert plain[-1][1]["response"]["background"] is False
    assert normal(events) == normal(plain)  # the same events, ids and timestamps apart

    # Kept: the whole stream again, byte for byte the same events, and the Response object it ended with.
    again = resume(server, id_of(events))
    assert again.complete and events_of(again) == events
    answer = get(server, f"/v1/responses/{id_of(events)}").json()
    assert answer == final


def test_a_cut_stream_resumes_after_the_last_event_seen(server: ServerThread) -> None:
    cut = create(server, "cut=3")
    assert not cut.complete  # aborted, not ended
    first = events_of(cut)
    assert numbers(first) == [0, 1, 2]
    rest = resume(server, id_of(first), after=2)
    assert rest.complete
    assert numbers(events_of(rest)) == list(range(3, EVENTS))
    whole = first + events_of(rest)
    assert whole == events_of(resume(server, id_of(first)))
    assert normal(whole) == normal(events_of(create(server, background=...)))


def test_each_connection_is_cut_at_its_own_count(server: ServerThread) -> None:
    posted = create(server, "cut=3:4")
    first = events_of(posted)
    assert not posted.complete and numbers(first) == [0, 1, 2]
    id = id_of(first)
    second = resume(server, id, after=2)
    assert not second.complete and numbers(events_of(second)) == [3, 4, 5, 6]  # 4 of its own, not 4 in all
    third = resume(server, id, after=6)  # past the list: not cut
    assert third.complete and numbers(events_of(third)) == list(range(7, EVENTS))
    fourth = resume(server, id, after=6)
    assert fourth.complete and events_of(fourth) == events_of(third)


def test_a_cut_inside_an_event(server: ServerThread) -> None:
    posted = create(server, "cut=3.5")
    assert not posted.complete
    first, partial = parse(posted.body)
    assert numbers(first) == [0, 1, 2]
    assert partial and b"\n\n" not in partial  # part of the 4th event, not all of it
    rest = resume(server, id_of(first), after=2)
    fourth = rest.body[: rest.body.index(b"\n\n") + 2]
    assert fourth.startswith(partial) and len(partial) < len(fourth)
    assert abs(len(partial) - len(fourth) / 2) <= 1  # half of its bytes
    assert numbers(events_of(rest)) == list(range(3, EVENTS))


def test_a_cut_on_a_plain_stream(server: ServerThread) -> None:
    """Without `background`, a stream is its one connection: the first entry cuts it, and nothing is kept
    to resume."""
    cut = create(server, "cut=5:1", background=...)
    assert not cut.complete and numbers(events_of(cut)) == [0, 1, 2, 3, 4]
    half = create(server, "cut=23.5", background=...)
    events, partial = parse(half.body)
    assert not half.complete and len(events) == 23 and b"response.completed" in partial
    after_all = create(server, f"cut={EVENTS}", background=...)
    assert not after_all.complete and numbers(events_of(after_all)) == list(range(EVENTS))
    past = create(server, f"cut={EVENTS + 1}", background=...)
    assert past.complete and len(events_of(past)) == EVENTS
    assert resume(server, id_of(events_of(cut))).status == 404


def test_a_gets_own_faults_play_on_its_connection(server: ServerThread) -> None:
    id = id_of(events_of(create(server, "cut=1")))
    dropped = resume(server, id, after=0, fault="drop=2")
    assert not dropped.complete and numbers(events_of(dropped)) == [1, 2]
    crlf = resume(server, id, after=20, fault="framing=crlf,no_done")
    assert crlf.complete and crlf.body.count(b"\r\n\r\n") == 2 and b"response.completed" not in crlf.body
    # The production's faults, as a resuming client repeats the creating request's header, are left out
    for fault in ("cut=1", "stall=1:1", "error=event"):
        whole = resume(server, id, fault=fault)
        assert whole.complete and numbers(events_of(whole)) == list(range(EVENTS))


def test_starting_after_the_last_event_is_an_empty_stream(server: ServerThread) -> None:
    id = id_of(events_of(create(server)))
    for after in (EVENTS - 1, EVENTS + 100):
        empty = resume(server, id, after=after)
        assert empty.complete and empty.status == 200 and empty.body == b""
    assert numbers(events_of(resume(server, id, after=-5))) == list(range(EVENTS))
    response = get(server, f"/v1/responses/{id}?stream=true&starting_after=two")
    assert response.status == 400 and response.json()["error"]["param"] == "starting_after"


# The producer


def test_the_producer_runs_on_with_nobody_connected(server: ServerThread) -> None:
    cut = create(server, "cut=3", "itl=0.2")  # 15 token gaps: 3 seconds of producing after the cut
    id = id_of(events_of(cut))
    answer = get(server, f"/v1/responses/{id}").json()
    assert answer["status"] == "in_progress" and answer["output"] == [] and answer["usage"] is None
    final = until_status(server, id, "completed")
    assert text_of(final) == TEXT and final["usage"]["output_tokens"] == 16
    # Produced meanwhile: every event is there for the next reader.
    rest = resume(server, id, after=2)
    assert rest.complete and numbers(events_of(rest)) == list(range(3, EVENTS))
    assert events_of(rest)[-1][1]["response"] == final


def test_a_background_request_without_stream_answers_at_once(server: ServerThread) -> None:
    created = create(server, "", "itl=0.02", stream=False)
    assert created.status == 200 and created.headers["content-type"].startswith("application/json")
    answer = created.json()
    assert answer["object"] == "response" and answer["background"] is True
    assert answer["status"] in ("queued", "in_progress") and answer["output"] == []
    final = until_status(server, answer["id"], "completed")
    assert text_of(final) == TEXT
    # OpenAI's guide: only a response created with stream=true can be streamed again.
    assert resume(server, answer["id"]).status == 404


def test_an_error_fault_fails_the_response_for_every_reader(server: ServerThread) -> None:
    events = events_of(create(server, "error=failed,error_after=5"))
    assert numbers(events) == list(range(6)) and events[-1][0] == "response.failed"
    id = id_of(events)
    assert events_of(resume(server, id)) == events
    answer = get(server, f"/v1/responses/{id}").json()
    assert answer["status"] == "failed" and answer["error"]["code"] == "server_error"


# Cancel


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cancel_stops_the_response_and_ends_its_streams() -> None:
    with ServerThread() as server:  # its own, so that its series count this response alone
        first = events_of(await asyncio.to_thread(create, server, "cut=5", "itl=0.5"))
        id = id_of(first)
        url = f"{server.url}/v1/responses/{id}"
        stream = f"{url}?stream=true&starting_after=4"
        async with aiohttp.ClientSession() as session, session.get(stream) as reading:
            assert reading.status == 200
            seen = await asyncio.wait_for(reading.content.readuntil(b"\n\n"), WAIT)  # a live reader
            async with session.post(f"{url}/cancel") as cancelled:
                assert cancelled.status == 200
                answer = await cancelled.json()
            # The producer has stopped, and given its slot back, by the time the cancel answers.
            after = await asyncio.to_thread(samples, server)
            rest = await asyncio.wait_for(reading.content.read(), WAIT)  # the stream ends
        assert answer["id"] == id and answer["status"] == "cancelled"
        assert after[("streamkit_requests_running", "responses")] == 0
        assert after[("streamkit_requests_total", "responses")] == 1
        assert after[("streamkit_output_tokens_total", "responses")] < 16
        events, partial = parse(seen + rest)
        assert partial == b"" and numbers(events) == list(range(5, 5 + len(events)))
        assert all(name not in ("response.completed", "response.failed") for name, _ in events)
        assert len(events) < EVENTS - 5  # stopped before its end

        assert get(server, f"/v1/responses/{id}").json() == answer
        assert cancel(server, id).json() == answer  # again: as it is
        late = resume(server, id, after=4)
        assert late.complete and numbers(events_of(late)) == numbers(events)  # what was kept, then the end


def test_cancelling_an_ended_response_returns_it_as_it_is(server: ServerThread) -> None:
    events = events_of(create(server))
    again = cancel(server, id_of(events))
    assert again.status == 200 and again.json() == events[-1][1]["response"]
    assert again.json()["status"] == "completed"


def test_unknown_ids_are_404_in_openais_shape(server: ServerThread) -> None:
    expected = {
        "error": {
            "message": "Response with id 'resp_nope' not found.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    for response in (
        get(server, "/v1/responses/resp_nope"),
        resume(server, "resp_nope"),
        cancel(server, "resp_nope"),
    ):
        assert response.status == 404 and response.json() == expected


def test_a_response_not_in_the_background(server: ServerThread) -> None:
    """Kept for a GET once written whole (OpenAI's `store` defaults to true), but never streamed again
    and never cancelled; with `store: false`, not kept."""
    whole = create(server, background=..., stream=False).json()
    assert get(server, f"/v1/responses/{whole['id']}").json() == whole
    assert resume(server, whole["id"]).status == 404
    refused = cancel(server, whole["id"])
    assert refused.status == 400
    assert refused.json()["error"]["message"] == "Cannot cancel a synchronous response."
    streamed = events_of(create(server, background=...))
    assert get(server, f"/v1/responses/{id_of(streamed)}").json() == streamed[-1][1]["response"]
    dropped = events_of(create(server, "drop=5", background=...))  # cut short: not kept
    assert get(server, f"/v1/responses/{id_of(dropped)}").status == 404
    stateless = create(server, background=..., stream=False, store=False).json()
    assert get(server, f"/v1/responses/{stateless['id']}").status == 404


def test_background_needs_store(server: ServerThread) -> None:
    refused = create(server, store=False)
    assert refused.status == 400
    error = refused.json()["error"]
    assert (error["param"], error["type"]) == ("store", "invalid_request_error")
    assert create(server, background="yes").status == 400


def test_the_key_is_needed_on_get_and_cancel() -> None:
    key = {"Authorization": "Bearer sk-background"}
    with ServerThread(ServerConfig(api_key="sk-background")) as server:
        created = post(server.url, "/v1/responses", {**BODY, "background": True, "stream": False}, key)
        id = created.json()["id"]
        for response in (get(server, f"/v1/responses/{id}"), resume(server, id), cancel(server, id)):
            assert response.status == 401 and response.json()["error"]["code"] == "invalid_api_key"
        assert get(server, f"/v1/responses/{id}", {"Authorization": "Bearer sk-wrong"}).status == 401
        assert get(server, f"/v1/responses/{id}", key).status == 200
        assert cancel(server, id, key).status == 200


# Slots and metrics


def samples(server: ServerThread) -> dict[tuple[str, str], float]:
    text = get(server, "/metrics").body.decode()
    return {
        (sample.name, sample.labels.get("api", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def until_metric(server: ServerThread, name: str, value: float) -> None:
    deadline = time.monotonic() + WAIT
    while samples(server)[(name, "responses")] != value:
        assert time.monotonic() < deadline, name
        time.sleep(0.005)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_producer_holds_the_slot_and_its_readers_do_not() -> None:
    with ServerThread(ServerConfig(timing=Timing.parse("slots=1,itl=0.1"))) as server:
        first = events_of(await asyncio.to_thread(create, server, "cut=4"))  # nobody reads it now
        id = id_of(first)
        assert samples(server)[("streamkit_requests_running", "responses")] == 1
        url = f"{server.url}/v1/responses/{id}?stream=true&starting_after=3"
        # A reader of it needs no slot: it reads while the producer holds the only one.
        async with aiohttp.ClientSession() as session, session.get(url) as reading:
            await asyncio.wait_for(reading.content.readuntil(b"\n\n"), WAIT)
            now = samples(server)
            assert now[("streamkit_requests_running", "responses")] == 1
            assert now[("streamkit_requests_waiting", "responses")] == 0
            # Another request waits for the slot until the producer has ended.
            other = asyncio.ensure_future(asyncio.to_thread(create, server, "", "", background=...))
            await asyncio.to_thread(until_metric, server, "streamkit_requests_waiting", 1)
            rest = await asyncio.wait_for(reading.content.read(), WAIT)
        assert len(parse(rest)[0]) == EVENTS - 5
        assert events_of(await asyncio.wait_for(other, WAIT))[-1][0] == "response.completed"
        after = samples(server)
    assert after[("streamkit_requests_running", "responses")] == 0
    assert after[("streamkit_requests_total", "responses")] == 2  # the producer and the other: no reader
    assert after[("streamkit_output_tokens_total", "responses")] == 2 * 16


def test_the_trace_stamps_each_token_as_it_is_produced() -> None:
    with ServerThread(ServerConfig(trace=True)) as server:
        events = events_of(create(server, "cut=6", "itl=0.01"))
        until_status(server, id_of(events), "completed")
        traces, received = server.stats.traces, server.stats.received
        assert traces is not None and received is not None
        times = traces[id_of(events)]
        assert len(times) == 16 and times == sorted(times) and received[id_of(events)] <= times[0]


def test_stopping_the_server_stops_its_producers() -> None:
    server = ServerThread().start()
    try:
        id = create(server, "", "itl=60", stream=False).json()["id"]
        until_status(server, id, "in_progress")
    finally:
        started = time.monotonic()
        server.stop()
    assert time.monotonic() - started < WAIT


# The fault's syntax and the store's limits


def test_the_cut_syntax() -> None:
    assert Faults.parse("cut=3").cut == (3.0,)
    assert Faults.parse("cut=3:4.5:0").cut == (3.0, 4.5, 0.0)
    assert Faults().cut == ()
    for bad in ("cut", "cut=", "cut=3:", "cut=-1", "cut=x", "cut=nan", "cut=inf"):
        with pytest.raises(ValueError, match="cut"):
            Faults.parse(bad)


def test_the_store_forgets_the_oldest_and_the_ended_after_their_time() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    def kept(id: str, background: bool = True, cost: int = 1) -> StoredResponse:
        if background:
            return StoredResponse(id, {"id": id}, background=True, cost=cost, clock=clock)
        return StoredResponse.whole(id, {"id": id, "status": "completed"}, cost, clock)

    store = BackgroundStore(keep_seconds=10, kept=3, kept_tokens=100, clock=clock)
    for id in ("a", "b", "c", "d"):
        store.add(kept(id))
    assert store.get("a") is None and all(store.get(id) for id in "bcd")  # at most 3
    ended = store.get("b")
    assert ended is not None
    completed = {"type": "response.completed", "response": {"status": "completed"}}
    ended.add(Frame(completed, "response.completed"))
    assert ended.status == "completed"
    now[0] = 11
    assert store.get("b") is None  # ended more than 10 seconds ago
    assert store.get("c") is not None  # still in progress: never too old
    for id in ("x", "y", "z", "w"):  # the other kind is kept apart
        store.add(kept(id, background=False))
    assert store.get("c") is not None and store.get("x") is None
    running = store.get("c")
    assert running is not None and not running.ended
    heavy = kept("heavy", cost=100)  # over the tokens: the oldest go, however few the responses
    store.add(heavy)
    assert store.get("c") is None and store.get("d") is None and store.get("heavy") is heavy
    assert running.status == "cancelled" and running.ended  # forgotten in progress: stopped
