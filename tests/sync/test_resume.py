"""`streamkit.Client`: a background Responses stream cut mid-answer resumes by itself, as the async client's
does (tests/client/test_resume.py); `responses.retrieve` and `responses.cancel`. The truth is the server's:
its whole answer and the events it stored, read over raw HTTP."""

from __future__ import annotations

from typing import Any

import pytest

import streamkit
from streamkit.server import ServerThread
from tests.client.conftest import comparable
from tests.client.test_resume import INPUT, front, partial_of, stored_events
from tests.client.webapp import serving
from tests.sync.conftest import MODEL, SAFE, fault


@pytest.mark.parametrize(("cut", "breaks"), [("6:4", 2), ("8.5", 1)])
def test_a_cut_background_stream_resumes_with_nothing_lost_or_repeated(
    client: streamkit.Client, sync_server: ServerThread, cut: str, breaks: int
) -> None:
    with client.responses.create(
        model=MODEL, input=INPUT, stream=True, background=True, extra_headers=fault(f"cut={cut}")
    ) as stream:
        seen: list[Any] = list(stream)
    final: Any = stream.get_final_response()
    truth = stored_events(sync_server, final.id)
    assert [(e.sequence_number, e.type) for e in seen] == [(e["sequence_number"], e["type"]) for e in truth]
    whole = comparable(client.responses.create(model=MODEL, input=INPUT), usage=True)
    assert comparable(final, usage=True) == {**whole, "background": True}
    assert stream.metrics.resumes == breaks and stream.completed


def test_past_its_retries_a_stream_fails_with_everything_received(sync_server: ServerThread) -> None:
    with streamkit.Client(base_url=sync_server.base_url, api_key="sk-test", timeout=SAFE, max_retries=0) as c:
        stream = c.responses.create(
            model=MODEL, input=INPUT, stream=True, background=True, extra_headers=fault("cut=4")
        )
        seen: list[Any] = []
        with pytest.raises(streamkit.ReadError) as caught, stream:
            for event in stream:
                seen.append(event)  # noqa: PERF402 (what came before the error)
    assert [e.sequence_number for e in seen] == [0, 1, 2, 3]
    assert caught.value.partial is not None and partial_of(caught.value).id == seen[0].response.id


def test_a_resume_the_server_refuses_raises_with_everything_received(sync_server: ServerThread) -> None:
    with (
        serving(("127.0.0.1", front(sync_server, 3, 404))) as (port,),
        streamkit.Client(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", timeout=SAFE) as c,
    ):
        stream = c.responses.create(model=MODEL, input=INPUT, stream=True, background=True)
        seen: list[Any] = []
        with pytest.raises(streamkit.NotFoundError) as caught:
            for event in stream:
                seen.append(event)  # noqa: PERF402 (what came before the error)
    assert [e.sequence_number for e in seen] == [0, 1, 2]
    assert caught.value.partial is not None


def test_retrieve_and_cancel(client: streamkit.Client) -> None:
    stream = client.responses.create(
        model=MODEL, input=INPUT, stream=True, background=True,
        extra_headers={"x-streamkit-timing": "itl=0.05,tokens=200"},
    )  # fmt: skip
    with stream:
        first: list[Any] = [next(stream) for _ in range(3)]
    response_id: Any = first[0].response.id
    assert client.responses.retrieve(response_id).status == "in_progress"
    with client.responses.retrieve(response_id, stream=True, starting_after=1) as again:
        more: list[Any] = [next(again) for _ in range(3)]
    assert [event.sequence_number for event in more] == [2, 3, 4]
    assert client.responses.cancel(response_id).status == "cancelled"
    assert client.responses.retrieve(response_id).status == "cancelled"
    with pytest.raises(streamkit.NotFoundError):
        client.responses.retrieve("resp_unknown")
