"""Running the built-in server: in the current event loop, or in a thread of its own."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from types import TracebackType

from aiohttp import web

from streamkit.server.app import ServerConfig, ServerStats, create_app

__all__ = ["RunningServer", "ServerProcess", "ServerThread", "start_server"]


class RunningServer:
    """A server listening on loopback; `base_url` is what a client's `base_url` should be."""

    def __init__(self, runner: web.AppRunner, stats: ServerStats, config: ServerConfig, port: int) -> None:
        self._runner = runner
        self.stats = stats
        self.config = config
        self.port = port
        self.url = f"http://{config.host}:{port}"
        self.base_url = f"{self.url}/v1"

    async def aclose(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> RunningServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def start_server(config: ServerConfig | None = None) -> RunningServer:
    """Start the server in the running event loop (port 0 picks a free port)."""
    config = config or ServerConfig()
    stats = ServerStats()
    runner = web.AppRunner(create_app(config, stats), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=4096, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1]
    return RunningServer(runner, stats, config, port)


class ServerThread:
    """The server in a thread with its own event loop, for sync code and for tests on any async backend.

    with ServerThread() as server:
        client = streamkit.AsyncClient(base_url=server.base_url, api_key="test")
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="streamkit-server", daemon=True)
        self._server: RunningServer | None = None

    @property
    def server(self) -> RunningServer:
        if self._server is None:
            raise RuntimeError("the server is not running")
        return self._server

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def stats(self) -> ServerStats:
        return self.server.stats

    def start(self) -> ServerThread:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(start_server(self.config), self._loop).result()
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.aclose(), self._loop).result()
            self._server = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ServerProcess:
    """`streamkit serve` in a child process, so that its work never shares a core with the code measuring it.

    with ServerProcess() as base_url:
        ...
    """

    def __init__(self, *args: str) -> None:
        self._args = args  # more `streamkit serve` options
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> str:
        command = [sys.executable, "-m", "streamkit.cli", "serve", "--port", "0", *self._args]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # "streamkit serve: scripted at http://127.0.0.1:PORT/v1 ..."
        if " at " not in line:
            self.__exit__()
            raise RuntimeError(f"streamkit serve did not start: {line!r}")
        return line.split(" at ")[1].split()[0]

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
