"""aiohttp.web apps served from a thread of their own, for client tests that need a real server with behaviour
of its own (a redirect, a proxy that records what it was sent), on any event loop of the matrix."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from aiohttp import web

__all__ = ["serving"]


@contextlib.contextmanager
def serving(*apps: tuple[str, web.Application]) -> Iterator[list[int]]:
    """Serve each `(host, app)` on a free port of `host`, all on one event loop in a thread; yields their
    ports, in order, and stops them all on leaving."""
    loop = asyncio.new_event_loop()
    runners: list[web.AppRunner] = []
    ports: list[int] = []

    async def start() -> None:
        for host, app in apps:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, 0).start()
            ports.append(runner.addresses[0][1])
            runners.append(runner)

    async def stop() -> None:
        for runner in runners:
            await runner.cleanup()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result()
        yield ports
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
