"""A hostile HTTP server for the client's tests: raw TCP, answering each request with a scripted sequence of
byte writes, pauses, closes and resets, whatever HTTP says.

    with HostileServer() as server:
        base_url = server.add(Script([Send(b"HTTP/1.1 200 OK\\r\\n"), Reset()]))
        client = streamkit.AsyncClient(base_url=base_url, ...)

Each script gets a base URL of its own, `http://127.0.0.1:PORT/case/NAME/v1`, so one server serves a whole
session: the script is chosen by the request's path. The server reads a request's head (and, unless the
script says otherwise, its body by `Content-Length`), then plays the script. A script that does not close the
connection leaves it open for the next request, as keep-alive does.

The server runs in a thread of its own with its own event loop. It counts the connections it accepted and
those still open (`open`), and the requests each script received, so that tests can check that a client
retried, and that it left no connection behind. Leaving the `with` block closes every connection and joins
the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import struct
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import anyio

__all__ = [
    "Close",
    "HalfClose",
    "HostileServer",
    "Pause",
    "Repeat",
    "Reset",
    "Script",
    "Send",
    "Stall",
    "Step",
    "chunk",
    "chunked",
    "head",
    "no_leaks",
    "open_sockets",
    "sse_event",
    "wait_for",
]

# The longest any step waits for the client, so that a script can never keep the server from shutting down
# for long, whatever a test does.
MAX_WAIT = 60.0


@dataclass(frozen=True, repr=False)
class Send:
    """Write these bytes (and wait until the socket took them)."""

    data: bytes

    def __repr__(self) -> str:  # short, for the tracebacks of failed tests: some scripts send megabytes
        more = f"... ({len(self.data)} bytes)" if len(self.data) > 60 else ""
        return f"Send({self.data[:60]!r}{more})"


@dataclass(frozen=True)
class Pause:
    """Wait this long; bytes from the client are read and dropped. Ends the script if the client closes."""

    seconds: float


@dataclass(frozen=True)
class Stall:
    """Send nothing until the client closes the connection."""


@dataclass(frozen=True)
class Close:
    """Close the connection (a FIN, or an RST if unread request bytes are left, as the kernel decides)."""


@dataclass(frozen=True)
class Reset:
    """Abort the connection with an RST (SO_LINGER 0), once the bytes written before have left."""


@dataclass(frozen=True)
class HalfClose:
    """Shut the sending side (a FIN), then wait for the client to close."""


@dataclass(frozen=True)
class Repeat:
    """Play `steps` `times` times, or until the client closes when `times` is None."""

    steps: tuple[Step, ...]
    times: int | None = None


Step = Send | Pause | Stall | Close | Reset | HalfClose | Repeat


@dataclass(frozen=True)
class Script:
    """What the server does with a request once it has read its head (and its body, if `read_body`)."""

    steps: Sequence[Step]
    read_body: bool = True
    one_per_connection: bool = False
    """Answer the first request of a connection only, then close it when the next one arrives, unanswered:
    a keep-alive connection that the server gave up on while the client kept it in its pool."""


NOT_FOUND = Script([Send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")])


def head(status: str = "200 OK", *headers: str, version: str = "HTTP/1.1") -> bytes:
    """A response head: the status line, each header line as given, and the blank line."""
    return "".join([f"{version} {status}\r\n", *(f"{line}\r\n" for line in headers), "\r\n"]).encode(
        "latin-1"
    )


def chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def chunked(*parts: bytes) -> bytes:
    """A chunked body: one chunk per part, then the last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts if part) + b"0\r\n\r\n"


class _Closed(Exception):
    """The connection is closed (by the script or by the client): stop playing."""


@dataclass
class HostileServer:
    """The server on 127.0.0.1 at a free port, in a thread of its own (see the module's docstring)."""

    host: str = "127.0.0.1"
    port: int = 0
    accepted: int = 0  # connections accepted
    open: int = 0  # connections not yet closed
    requests: Counter[str] = field(default_factory=Counter)  # requests received, per script name
    _scripts: dict[str, Script] = field(default_factory=dict)
    _names: itertools.count[int] = field(default_factory=itertools.count)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    def add(self, script: Script, name: str | None = None) -> str:
        """Serve `script` under a name of its own (or `name`); return the base URL that reaches it."""
        if name is None:
            name = f"s{next(self._names)}"
        self._scripts[name] = script
        return self.base_url(name)

    @property
    def thread(self) -> threading.Thread | None:
        """The server's thread, once started."""
        return self._thread

    def base_url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/case/{name}/v1"

    def __enter__(self) -> HostileServer:
        loop = self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="hostile-server", daemon=True)
        self._thread.start()
        ready.wait()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), loop).result()
        return self

    async def _start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._accept, self.host, self.port, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop, thread = self._loop, self._thread
        assert loop is not None and thread is not None
        asyncio.run_coroutine_threadsafe(self._stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._scripts.clear()

    async def _stop(self) -> None:
        server = self._server
        assert server is not None
        server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers))
        await server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        try:
            for served in itertools.count():
                request_head = await reader.readuntil(b"\r\n\r\n")
                name, length = _parse(request_head)
                script = self._scripts.get(name, NOT_FOUND)
                self.requests[name] += 1
                if script.one_per_connection and served:
                    raise _Closed
                if script.read_body and length:
                    await reader.readexactly(length)
                await self._play(script.steps, reader, writer)
        except (_Closed, OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.transport.abort()
            self.open -= 1

    async def _play(
        self, steps: Sequence[Step], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        for step in steps:
            if isinstance(step, Send):
                writer.write(step.data)
                await writer.drain()
            elif isinstance(step, Pause):
                await _wait_for_close(reader, step.seconds)
            elif isinstance(step, Stall):
                await _wait_for_close(reader, MAX_WAIT)
                raise _Closed
            elif isinstance(step, Close):
                writer.close()
                raise _Closed
            elif isinstance(step, Reset):
                await _flushed(writer)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                raise _Closed
            elif isinstance(step, HalfClose):
                await _flushed(writer)
                writer.write_eof()
                await _wait_for_close(reader, MAX_WAIT)
                raise _Closed
            else:
                for _ in range(step.times) if step.times is not None else itertools.count():
                    await self._play(step.steps, reader, writer)


def _parse(request_head: bytes) -> tuple[str, int]:
    """The script name in the request's path (`/case/NAME/...`) and the body's Content-Length."""
    lines = request_head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    path = parts[1] if len(parts) > 1 else ""
    segments = path.split("/")
    name = segments[2] if len(segments) > 2 and segments[1] == "case" else ""
    length = 0
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-length":
            length = int(value.strip())
    return name, length


async def _wait_for_close(reader: asyncio.StreamReader, seconds: float) -> None:
    """Wait up to `seconds`, reading and dropping what the client sends; raise `_Closed` if it closes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            data = await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            return
        if not data:
            raise _Closed


async def _flushed(writer: asyncio.StreamWriter) -> None:
    """Wait until every byte written has been handed to the kernel (an RST would drop the rest)."""
    for _ in range(1000):
        if writer.transport.get_write_buffer_size() == 0:
            return
        await asyncio.sleep(0.001)


def open_sockets() -> int:
    """Sockets this process holds open (Linux), the server's own included."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def sse_event(content: str | None = None, finish: str | None = None, role: str | None = None) -> bytes:
    """One chat chunk of choice 0 as an SSE event."""
    delta = {k: v for k, v in (("role", role), ("content", content)) if v is not None}
    data = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    with anyio.move_on_after(seconds):
        while not condition():
            await anyio.sleep(0.01)
        return True
    return False


@contextlib.asynccontextmanager
async def no_leaks(server: HostileServer, anyio_backend_name: str) -> AsyncIterator[None]:
    """Check, after the block, that the server saw every connection closed, and that no socket and no asyncio
    task is left over from it."""
    sockets = open_sockets()
    tasks = len(asyncio.all_tasks()) if anyio_backend_name == "asyncio" else 0
    yield
    assert await wait_for(lambda: server.open == 0), f"{server.open} connections left open"
    assert await wait_for(lambda: open_sockets() <= sockets), (sockets, open_sockets())
    if anyio_backend_name == "asyncio":  # under trio, structured concurrency leaves no task behind by design
        assert await wait_for(lambda: len(asyncio.all_tasks()) <= tasks), asyncio.all_tasks()
