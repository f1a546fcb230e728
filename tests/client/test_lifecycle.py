"""Closing, connection reuse, leaks, secrets and conversations, through each transport."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from aiohttp import web

import streamkit
from streamkit.server import ServerThread
from tests.client.conftest import HI, timing

pytestmark = pytest.mark.anyio

SLOW = timing("itl=0.02,tokens=200")


def open_sockets() -> int:
    """Sockets this process holds open (Linux)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def wait_for(condition: Any, seconds: float = 3.0) -> bool:
    with anyio.move_on_after(seconds):
        while not condition():
            await anyio.sleep(0.01)
        return True
    return False


async def test_breaking_out_of_async_with_closes_the_response(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    stream = await client.chat.completions.create(
        model="scripted", messages=HI, stream=True, extra_headers=SLOW
    )
    seen = ""
    async with stream:
        async for chunk in stream:
            seen += chunk.choices[0].delta.content or "" if chunk.choices else ""
            if seen:
                break
    assert await wait_for(lambda: streamkit_server.stats.streams_open == 0)
    # What was received, as it stands: not raised, not finished.
    final = await stream.get_final_completion()
    assert final.choices[0].message.content == seen and final.choices[0].finish_reason is None
    assert not stream.completed
    await stream.aclose()  # idempotent
    assert [chunk async for chunk in stream] == []


async def test_a_stream_read_after_its_client_closed_raises_a_streamkit_error(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    # The bench, stopped by Ctrl-C, closes its client while requests are in flight: a read then meets a
    # closed connection, which aiohttp says with a bare RuntimeError.
    stream = await client.chat.completions.create(
        model="scripted", messages=HI, stream=True, extra_headers=SLOW
    )
    async with stream:
        async for _ in stream:
            break
        await client.aclose()
        with pytest.raises(streamkit.StreamkitError) as caught:
            async for _ in stream:
                pass
    assert caught.value.partial is not None


async def test_cancelling_a_read_closes_the_response(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    stream = await client.chat.completions.create(
        model="scripted", messages=HI, stream=True, extra_headers=SLOW
    )
    with anyio.move_on_after(0.1):
        await stream.get_final()
    assert await wait_for(lambda: streamkit_server.stats.streams_open == 0)
    assert stream.snapshot.choices  # what arrived before the cancellation is kept


async def test_connection_is_reused_after_done(
    client: streamkit.AsyncClient, streamkit_server: ServerThread
) -> None:
    streamkit_server.stats.peers.clear()
    for _ in range(5):
        stream = await client.chat.completions.create(model="scripted", messages=HI, stream=True)
        async for _ in stream:
            pass
    assert len(streamkit_server.stats.peers) == 1


async def test_no_leaks_after_a_thousand_streams_half_cancelled(
    streamkit_server: ServerThread, transport: Any, anyio_backend_name: str
) -> None:
    before = open_sockets()
    tasks = len(asyncio.all_tasks()) if anyio_backend_name == "asyncio" else 0
    finished = cancelled = 0
    async with streamkit.AsyncClient(base_url=streamkit_server.base_url, transport=transport) as client:

        async def one(i: int) -> None:
            nonlocal finished, cancelled
            with anyio.CancelScope() as scope:
                stream = await client.chat.completions.create(
                    model="scripted",
                    messages=HI,
                    stream=True,
                    seed=i,
                    extra_headers=timing("itl=0.01,tokens=20"),
                )
                async with stream:
                    async for chunk in stream:
                        if i % 2 and chunk.choices and chunk.choices[0].delta.content:
                            # Midway, whether the rest came in this read or not: cancelled at once.
                            scope.cancel()
                            await anyio.lowlevel.checkpoint()
                finished += 1
            cancelled += scope.cancelled_caught

        async with anyio.create_task_group() as group:
            for i in range(1000):
                group.start_soon(one, i)
        assert (finished, cancelled) == (500, 500)
    assert await wait_for(lambda: streamkit_server.stats.streams_open == 0, 10)
    assert await wait_for(lambda: open_sockets() <= before, 10), (before, open_sockets())
    if anyio_backend_name == "asyncio":  # under trio, structured concurrency leaves no task behind by design
        assert await wait_for(lambda: len(asyncio.all_tasks()) <= tasks)


async def test_the_key_never_shows(transport: Any) -> None:
    secret = "sk-secret-0123456789"
    with ServerThread(streamkit.server.ServerConfig(api_key="sk-other")) as server:
        async with streamkit.AsyncClient(
            base_url=server.base_url, api_key=secret, transport=transport
        ) as client:
            assert secret not in repr(client)
            with pytest.raises(streamkit.AuthenticationError) as caught:
                await client.chat.completions.create(model="scripted", messages=HI, stream=True)
    error = caught.value
    assert error.status_code == 401 and error.code == "invalid_api_key"
    assert secret not in f"{error!r} {error} {error.body} {error.__dict__}"


@pytest.fixture(scope="module")
def redirecting() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A server on 127.0.0.1 that redirects (307) to a recording server on `localhost`, which gzips its
    stream (as some proxies do) so that both transports must undo the Content-Encoding."""
    seen: list[dict[str, str]] = []
    ports: dict[str, int] = {}

    async def target(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_compression(web.ContentCoding.gzip)
        await response.prepare(request)
        chunk = b'{"id":"x","choices":[{"index":0,"delta":{"content":"moved"},"finish_reason":"stop"}]}'
        await response.write(b"data: " + chunk + b"\n\ndata: [DONE]\n\n")
        return response

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"http://localhost:{ports['target']}/v1/chat/completions")

    loop = asyncio.new_event_loop()
    runners: list[web.AppRunner] = []

    async def start() -> None:
        for name, handler in (("target", target), ("redirect", redirect)):
            app = web.Application()
            app.router.add_post("/v1/chat/completions", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "localhost" if name == "target" else "127.0.0.1", 0)
            await site.start()
            ports[name] = runner.addresses[0][1]
            runners.append(runner)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result()
    yield f"http://127.0.0.1:{ports['redirect']}/v1", seen
    for runner in runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


async def test_authorization_is_not_sent_to_another_host(
    redirecting: tuple[str, list[dict[str, str]]], transport: Any
) -> None:
    base_url, seen = redirecting
    seen.clear()
    async with streamkit.AsyncClient(base_url=base_url, api_key="sk-secret", transport=transport) as client:
        stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
        final = await stream.get_final()
    assert final.choices[0].message.content == "moved"
    assert len(seen) == 1 and "Authorization" not in seen[0]


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_aiohttp_under_trio_says_what_to_do(streamkit_server: ServerThread) -> None:
    async with streamkit.AsyncClient(base_url=streamkit_server.base_url, transport="aiohttp") as client:
        with pytest.raises(RuntimeError, match="transport='httpx'"):
            await client.chat.completions.create(model="scripted", messages=HI, stream=True)


# Conversation


async def test_conversation_keeps_its_history(client: streamkit.AsyncClient) -> None:
    conversation = streamkit.Conversation(client, model="scripted", system="Be brief.", seed=2)
    first = await conversation.send("What is TLS?")
    first_text = "".join([text async for text in first.text_deltas()])
    assert conversation.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is TLS?"},
        {"role": "assistant", "content": first_text},
    ]
    second = await conversation.send("And mTLS?")
    final = await second.get_final()
    assert [m["role"] for m in conversation.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert conversation.messages[-1]["content"] == final.choices[0].message.content
    conversation.reset()
    assert conversation.messages == [{"role": "system", "content": "Be brief."}]


async def test_closing_early_leaves_nothing_to_the_garbage_collector(client: streamkit.AsyncClient) -> None:
    """httpx reads through a chain of async generators. Left suspended when a stream closes early, trio warns
    about each one the garbage collector finds (a ResourceWarning, so an error here), whenever that is."""
    stream = await client.chat.completions.create(
        model="scripted", messages=HI, stream=True, extra_headers=SLOW
    )
    async with stream:
        async for _ in stream:
            break
    del stream
    gc.collect()
    await anyio.sleep(0.01)


async def test_a_send_while_the_last_turn_streams_is_refused(client: streamkit.AsyncClient) -> None:
    """Two turns at once would each be sent after the same history, and the one to finish last would drop
    the other; the second is refused until the first is read to its end or closed, and no turn is lost."""
    conversation = streamkit.Conversation(client, model="scripted")
    first = await conversation.send("one")
    assert conversation.busy
    with pytest.raises(streamkit.ConversationBusyError):
        await conversation.send("two")
    first_text = "".join([text async for text in first.text_deltas()])
    assert not conversation.busy
    second = await conversation.send("two")
    async with second:  # closed early: refused no more, and not kept
        async for _ in second:
            break
    third = await conversation.send("three")
    # Read to its end, but its last items not taken yet: still the turn under way.
    while third._reading:
        await third._read_more()
    assert conversation.busy
    third_text = "".join([text async for text in third.text_deltas()])
    assert [(m["role"], m["content"]) for m in conversation.messages] == [
        ("user", "one"),
        ("assistant", first_text),
        ("user", "three"),
        ("assistant", third_text),
    ]
    failing = await conversation.send("four", extra_headers={"x-streamkit-fault": "drop=2"})
    with pytest.raises(streamkit.ReadError):
        await failing.get_final()
    assert not conversation.busy


async def test_a_failed_turn_leaves_the_history_as_it_was(client: streamkit.AsyncClient) -> None:
    conversation = streamkit.Conversation(client, model="scripted")
    stream = await conversation.send("hi", extra_headers={"x-streamkit-fault": "drop=2"})
    with pytest.raises(streamkit.ReadError):
        await stream.get_final()
    assert conversation.messages == []
    stream = await conversation.send("hi")
    async with stream:
        async for _ in stream:
            break
    assert conversation.messages == []
