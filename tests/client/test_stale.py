"""A keep-alive connection the server closed while the client kept it in its pool (llama.cpp's server answers
`Keep-Alive: timeout=5`, then closes): the request that fails on it before any byte of an answer is sent
again at once on a fresh connection, and that is not a retry."""

from __future__ import annotations

import pytest

import streamkit
from tests.client.conftest import HI
from tests.hostile import Close, HostileServer, Script, Send, chunked, head, sse_event

pytestmark = pytest.mark.anyio

ANSWER = chunked(sse_event("Hi", role="assistant"), sse_event(finish="stop"), b"data: [DONE]\n\n")
ONE_PER_CONNECTION = Script(
    [Send(head("200 OK", "Content-Type: text/event-stream", "Transfer-Encoding: chunked") + ANSWER)],
    one_per_connection=True,
)


async def test_a_stale_pooled_connection_is_replaced_at_once(
    hostile_server: HostileServer, transport: str
) -> None:
    base_url = hostile_server.add(ONE_PER_CONNECTION)
    name = base_url.split("/")[-2]
    # No retries at all, and no backoff to wait: a stale connection costs a resend, not a retry.
    async with streamkit.AsyncClient(
        base_url=base_url,
        transport=transport,  # type: ignore[arg-type]
        max_retries=0,
        timeout=streamkit.Timeout(connect=2, idle=2, total=10),
    ) as client:
        attempts = []
        for _ in range(4):
            stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
            final = await stream.get_final_completion()
            assert final.choices[0].message.content == "Hi"
            metrics = stream.metrics
            attempts.append(metrics.attempts)
            assert metrics.call_started <= metrics.request_sent  # call_ttft counts the resend, ttft not
            assert metrics.call_ttft is not None and metrics.ttft is not None
            assert metrics.call_ttft >= metrics.ttft
    # The first call opened a connection; each later one found the pooled one closed, and sent again.
    assert attempts == [1, 2, 2, 2]
    assert hostile_server.requests[name] == sum(attempts)


async def test_a_fresh_connection_that_breaks_is_a_retry_not_a_resend(
    hostile_server: HostileServer, transport: str
) -> None:
    # The server closes every connection before answering: the connection was fresh, so this is no stale
    # pooled connection, and with max_retries=0 the error is raised.
    base_url = hostile_server.add(Script([Close()]))
    async with streamkit.AsyncClient(
        base_url=base_url,
        transport=transport,  # type: ignore[arg-type]
        max_retries=0,
        timeout=streamkit.Timeout(connect=2, idle=2, total=10),
    ) as client:
        with pytest.raises(streamkit.ReadError) as caught:
            await client.chat.completions.create(model="m", messages=HI, stream=True)
    assert not caught.value.stale
