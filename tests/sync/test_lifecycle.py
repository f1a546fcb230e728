"""Closing, Ctrl-C, connection reuse and threads: a sync stream never leaves a connection open behind it,
and one client serves several threads at once, and code inside a running event loop."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import threading
import time
from types import FrameType
from typing import Any

import pytest

import streamkit
from streamkit.server import ServerThread
from tests.sync.conftest import (
    APIS,
    HI,
    LONG,
    SAFE,
    SLOW,
    UNFINISHED,
    body_of,
    create,
    fault,
    finish_of,
    linux_only,
    open_sockets,
    planned,
    sockets_to,
    text_of,
    wait_for,
)

STALLED = fault("stall=3:30")  # three events, then a wait no test sits out


def port_of(server: ServerThread) -> int:
    return server.server.port


@pytest.mark.parametrize("api", APIS)
def test_breaking_out_of_with_closes_the_connection(
    client: streamkit.Client, sync_server: ServerThread, api: str
) -> None:
    assert wait_for(lambda: sync_server.stats.streams_open == 0)  # what earlier tests left is gone
    stream = create(client, api, stream=True, extra_headers=SLOW, **LONG[api])
    seen = ""
    with stream:
        for text in stream.text_deltas():
            seen += text
            if len(seen) > 10:
                break
        assert sync_server.stats.streams_open == 1
    assert wait_for(lambda: sync_server.stats.streams_open == 0)
    # What was received, as it stands: not raised, not finished, not complete.
    final = stream.get_final()
    assert text_of(final) == seen and finish_of(final) == UNFINISHED[api]
    assert not stream.completed
    stream.close()  # idempotent
    assert list(stream) == []


@linux_only
def test_a_broken_out_stream_leaves_no_socket(sync_server: ServerThread) -> None:
    with streamkit.Client(base_url=sync_server.base_url, api_key="k", timeout=SAFE) as client:
        stream = client.chat.completions.create(model="m", messages=HI, stream=True, extra_headers=SLOW)
        with stream:
            for _ in stream:
                break
        # No socket of the client's is left connected to the server: the stream's was closed, not pooled.
        assert wait_for(lambda: sockets_to(port_of(sync_server)) == 0)


def test_a_stream_read_to_its_end_gives_its_connection_back(
    client: streamkit.Client, sync_server: ServerThread
) -> None:
    sync_server.stats.peers.clear()
    for api in APIS:
        for _ in range(2):
            create(client, api, stream=True).get_final()
            create(client, api)
    assert len(sync_server.stats.peers) == 1  # one connection, reused by every call


def test_closing_the_client_closes_its_pooled_connections(sync_server: ServerThread) -> None:
    client = streamkit.Client(base_url=sync_server.base_url, api_key="k", timeout=SAFE)
    client.chat.completions.create(model="m", messages=HI, stream=True).get_final()
    if sys.platform == "linux":
        assert sockets_to(port_of(sync_server)) == 1
    client.close()
    client.close()  # idempotent
    if sys.platform == "linux":
        assert sockets_to(port_of(sync_server)) == 0


# Ctrl-C


class Alarm:
    """A KeyboardInterrupt raised by SIGALRM `after` seconds, as Ctrl-C raises it, wherever the main thread
    is then (blocked in a read of the socket, here). pytest-timeout's own alarm is put back after."""

    def __init__(self, after: float) -> None:
        self.after = after

    def __enter__(self) -> Alarm:
        def interrupt(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        self.handler = signal.signal(signal.SIGALRM, interrupt)
        self.started = time.monotonic()
        self.timer = signal.setitimer(signal.ITIMER_REAL, self.after)
        return self

    def __exit__(self, *exc_info: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.handler)
        delay, interval = self.timer
        if delay:  # pytest-timeout's alarm, with the time it had left
            signal.setitimer(
                signal.ITIMER_REAL, max(delay - (time.monotonic() - self.started), 0.01), interval
            )


@linux_only
@pytest.mark.parametrize("api", APIS)
def test_ctrl_c_in_the_middle_of_a_stream_leaves_no_socket_open(sync_server: ServerThread, api: str) -> None:
    assert wait_for(lambda: sync_server.stats.streams_open == 0)
    before = open_sockets()
    client = streamkit.Client(base_url=sync_server.base_url, api_key="k", timeout=SAFE)
    stream = create(client, api, stream=True, extra_headers=STALLED)
    items: list[Any] = []
    with pytest.raises(KeyboardInterrupt), Alarm(0.3):
        for item in stream:  # three events, then the read blocks until the alarm
            items.append(item)  # noqa: PERF402 (the items before the interrupt are the point)
    assert len(items) == 3 - (api == "messages")  # a Messages ping is no item
    # Closed at once, by the stream itself: not by a `with` block (there is none), nor by the client.
    assert sockets_to(port_of(sync_server)) == 0
    assert wait_for(lambda: sync_server.stats.streams_open == 0)
    assert not stream.completed and text_of(stream.get_final()) == planned(api, body_of(api)).text_after(3)
    client.close()
    assert wait_for(lambda: open_sockets() <= before), (before, open_sockets())


@linux_only
@pytest.mark.parametrize("api", APIS)
def test_ctrl_c_while_the_client_decodes_closes_the_connection(sync_server: ServerThread, api: str) -> None:
    """Ctrl-C lands wherever the main thread is: in a blocking read (above), where httpcore also closes the
    connection, or in the client's own code, between reads, where only the stream can. Here it lands as the
    client decodes the second read of the body."""
    assert wait_for(lambda: sync_server.stats.streams_open == 0)
    with streamkit.Client(base_url=sync_server.base_url, api_key="k", timeout=SAFE) as client:
        stream = create(client, api, stream=True, extra_headers=SLOW, **LONG[api])
        feed, feeds = stream._feed, []

        def interrupted(data: bytes, typed: bool) -> Any:
            feeds.append(data)
            if len(feeds) == 2:
                raise KeyboardInterrupt
            return feed(data, typed)

        stream._feed = interrupted
        with pytest.raises(KeyboardInterrupt):
            for _ in stream:
                pass
        assert len(feeds) == 2 and not stream.completed
        assert wait_for(lambda: sockets_to(port_of(sync_server)) == 0)  # closed, not kept, not pooled
        assert wait_for(lambda: sync_server.stats.streams_open == 0)
        assert list(stream) == []


CHILD = textwrap.dedent(
    """
    import sys
    import streamkit

    base_url, held = sys.argv[1], sys.argv[2] == "held"
    try:
        with streamkit.Client(base_url=base_url, api_key="k") as client:
            stream = client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                extra_headers={"x-streamkit-fault": "stall=3:30"},
            )
            with stream:
                for chunk in stream:
                    print("chunk", flush=True)
    except KeyboardInterrupt:
        if not held:
            raise
        print("interrupted", flush=True)
        sys.stdin.read()  # alive, until the parent has looked at the server
        sys.exit(130)
    """
)


@pytest.mark.parametrize("held", [True, False], ids=["held", "plain"])
def test_ctrl_c_stops_a_script_and_its_stream(sync_server: ServerThread, held: bool) -> None:
    """A script that streams with `for`, stopped with SIGINT, as Ctrl-C does: it exits as Python does on
    Ctrl-C (killed by SIGINT, or 130 where it catches it), and the server sees the stream closed. The held
    script stays alive after catching it, so the stream was closed by the client, not by the process's
    exit."""
    assert wait_for(lambda: sync_server.stats.streams_open == 0)
    command = [sys.executable, "-c", CHILD, sync_server.base_url, "held" if held else "plain"]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None and child.stdin is not None
        try:
            assert [child.stdout.readline() for _ in range(3)] == ["chunk\n"] * 3
            assert sync_server.stats.streams_open == 1
            child.send_signal(signal.SIGINT)
            if held:
                assert child.stdout.readline() == "interrupted\n"
                assert wait_for(lambda: sync_server.stats.streams_open == 0)
                assert child.poll() is None  # still running: its client closed the stream
                child.stdin.close()
            code = child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
        assert child.stderr is not None
        stderr = child.stderr.read()
    assert code in (130, -signal.SIGINT), stderr
    if not held:
        assert "KeyboardInterrupt" in stderr
    assert wait_for(lambda: sync_server.stats.streams_open == 0)


# Threads, and a running event loop


def test_two_threads_stream_through_one_client_at_once(sync_server: ServerThread) -> None:
    """One thread's stream stalls; another's, through the same client, streams to its end meanwhile: no
    lock is held across a read, nor while a thread waits on the pool."""
    assert wait_for(lambda: sync_server.stats.streams_open == 0)
    stalled_started, fast_done = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    with streamkit.Client(base_url=sync_server.base_url, api_key="k", timeout=SAFE) as client:

        def stalled() -> None:
            stream = client.chat.completions.create(
                model="m",
                messages=HI,
                stream=True,
                extra_headers=STALLED,
                timeout=streamkit.Timeout(idle=2.0),
            )
            try:
                for i, _ in enumerate(stream):
                    if i == 2:
                        stalled_started.set()  # the server stalls after these three events
            except streamkit.IdleTimeout as exc:
                results["stalled"] = exc
            results["fast done while stalled ended"] = fast_done.is_set()

        def fast() -> None:
            stream = client.chat.completions.create(model="m", messages=HI, stream=True, seed=3)
            results["fast"] = stream.get_final_completion()
            fast_done.set()

        first = threading.Thread(target=stalled)
        first.start()
        try:
            assert stalled_started.wait(10)
            second = threading.Thread(target=fast)
            second.start()
            second.join(10)
            assert fast_done.is_set()
            assert first.is_alive()  # still stalled, while the other stream came whole
        finally:
            first.join(10)
    assert isinstance(results["stalled"], streamkit.IdleTimeout)
    assert results["fast done while stalled ended"]
    assert text_of(results["fast"]) == planned("chat", body_of("chat", messages=HI, seed=3)).text


def test_many_threads_share_one_client(client: streamkit.Client) -> None:
    texts: dict[int, str] = {}

    def one(seed: int) -> None:
        stream = client.chat.completions.create(model="m", messages=HI, stream=True, seed=seed)
        with stream:
            texts[seed] = "".join(stream.text_deltas())

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert texts == {seed: planned("chat", body_of("chat", messages=HI, seed=seed)).text for seed in range(8)}


def test_the_sync_client_works_inside_a_running_event_loop(client: streamkit.Client) -> None:
    async def main() -> tuple[str, str]:
        whole = client.chat.completions.create(model="m", messages=HI, seed=2)
        stream = client.chat.completions.create(model="m", messages=HI, stream=True, seed=2)
        with stream:
            streamed = "".join(stream.text_deltas())
        await asyncio.sleep(0)
        return text_of(whole), streamed

    expected = planned("chat", body_of("chat", messages=HI, seed=2)).text
    assert asyncio.run(main()) == (expected, expected)


def test_the_sync_client_starts_no_thread(client: streamkit.Client) -> None:
    threads = set(threading.enumerate())
    stream = client.chat.completions.create(model="m", messages=HI, stream=True)
    with stream:
        for _ in stream:
            assert set(threading.enumerate()) == threads
    client.models.list()
    assert set(threading.enumerate()) == threads
