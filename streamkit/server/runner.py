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

# How long a stopping server lets the streams still open run on before it cancels them (aiohttp waits up to
# twice this). A stop means now: aiohttp's own default, a minute, would let one stalled stream hold it.
SHUTDOWN_GRACE_SECONDS = 0.1
# How long `ServerProcess` waits for `streamkit serve` to print its URL, and for it to exit once told to
# stop before it is killed. It starts in well under a second and stops at once; a machine busy with other
# work needs far more, and a server that never answers must not hang its caller.
START_SECONDS = 60.0
STOP_SECONDS = 10.0


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
    runner = web.AppRunner(
        create_app(config, stats),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
    )
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port, backlog=4096, reuse_address=True)
        await site.start()
    except BaseException:  # a port in use: nothing is left half started
        await runner.cleanup()
        raise
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
        """Start the server; raises what `start_server` raises (OSError for a port in use), with the thread
        stopped."""
        self._thread.start()
        try:
            self._server = asyncio.run_coroutine_threadsafe(start_server(self.config), self._loop).result()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and its thread. Idempotent."""
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

    Entering raises RuntimeError if the server does not print its URL within `START_SECONDS`. Leaving stops
    it (SIGTERM, then SIGKILL after `STOP_SECONDS`) and reaps it; so does a failed start.
    """

    def __init__(self, *args: str) -> None:
        self._args = args  # more `streamkit serve` options
        self._process: subprocess.Popen[str] | None = None

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "streamkit.cli", "serve", "--port", "0", *self._args]

    @property
    def pid(self) -> int:
        """The process id of `streamkit serve`, while it runs (inside the `with` block). Raises RuntimeError
        outside it."""
        if self._process is None:
            raise RuntimeError("the server process is not running")
        return self._process.pid

    def __enter__(self) -> str:
        process = self._process = subprocess.Popen(self._command(), stdout=subprocess.PIPE, text=True)
        try:
            # "streamkit serve: scripted at http://127.0.0.1:PORT/v1 (answers any model name; Ctrl-C to stop)"
            line = _first_line(process, START_SECONDS)
            if " at " not in line:
                raise RuntimeError(f"streamkit serve did not start: {line!r}")
        except BaseException:
            self.__exit__()
            raise
        return line.split(" at ")[1].split()[0]

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.terminate()
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        finally:
            assert process.stdout is not None
            process.stdout.close()


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first line `process` prints, or "" if none comes within `timeout` seconds. It is read in a thread,
    which ends when the process's output does."""
    stdout = process.stdout
    assert stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""
