"""The suite of `streamkit.Client`, the synchronous client: every call blocks the test's own thread, with no
event loop and no thread of the client's, against the built-in server running in a thread of its own.

What a test expects never comes from the client's code: it comes from the server's plan (the scripted model's
answer to the very body the server parses, `planned`), from the server's whole answer to the same request
(`stream: false`), from the server's own counters (`ServerStats`), or from constants here.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import streamkit
from streamkit.server import ServerConfig, ServerThread, Timing
from streamkit.server.apis import SERVER_APIS
from streamkit.server.scripted import Answer, Plan, answer

# The natural length of every answer of the suite's server, in tokens: short, so every test is fast.
TOKENS = 12
MODEL = "m"  # any name: the server answers every one (`any_model`)
HI = [{"role": "user", "content": "hi"}]
APIS = ("chat", "completions", "responses", "messages")
CONVERSATION_APIS = ("chat", "responses", "messages")
# Every call gets bounds, so that no test can hang whatever the client does; the tests of a time limit set
# their own.
SAFE = streamkit.Timeout(connect=5.0, idle=10.0, total=30.0)
# What each API's request needs (the model apart).
REQUIRED: dict[str, dict[str, Any]] = {
    "chat": {"messages": HI},
    "completions": {"prompt": "Say hi"},
    "responses": {"input": "Tell me a story."},
    "messages": {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 256},
}
# A stream under way for longer than any wait of a test (`wait_for`): 1,000 tokens, 20 ms apart.
SLOW = {"x-streamkit-timing": "itl=0.02,tokens=1000"}
# The parameters that let each API's answer run that long: legacy Completions stop at 16 tokens unless told.
LONG: dict[str, dict[str, Any]] = {
    "chat": {},
    "completions": {"max_tokens": 4096},
    "responses": {},
    "messages": {"max_tokens": 4096},
}


@pytest.fixture(scope="session")
def sync_server() -> Iterator[ServerThread]:
    """The built-in server for this suite: every model name, answers of `TOKENS` tokens 1 ms apart."""
    with ServerThread(ServerConfig(any_model=True, timing=Timing(itl=0.001, tokens=TOKENS))) as server:
        yield server


@pytest.fixture
def client(sync_server: ServerThread) -> Iterator[streamkit.Client]:
    with streamkit.Client(base_url=sync_server.base_url, api_key="sk-test", timeout=SAFE) as client:
        yield client


def fault(spec: str) -> dict[str, str]:
    """Request headers that make the built-in server play a fault."""
    return {"x-streamkit-fault": spec}


def timing(spec: str) -> dict[str, str]:
    return {"x-streamkit-timing": spec}


def unique(spec: str) -> tuple[dict[str, str], str]:
    """A `status` fault whose attempts the server counts apart from every other test's, and its key."""
    key = uuid.uuid4().hex
    return fault(f"{spec},key={key}"), key


def resource(client: streamkit.Client, api: str) -> Any:
    return {
        "chat": client.chat.completions,
        "completions": client.completions,
        "responses": client.responses,
        "messages": client.messages,
    }[api]


def create(client: streamkit.Client, api: str, **params: Any) -> Any:
    """`create` of the API's resource with its required parameters, `MODEL` and `params` over them."""
    return resource(client, api).create(**{**REQUIRED[api], "model": MODEL, **params})


@dataclass
class Planned:
    """The server's plan for one request: its events, and the scripted answers they were rendered from."""

    plan: Plan
    answers: list[Answer]

    @property
    def text(self) -> str:
        """The whole text of the first answer."""
        return "".join(self.answers[0].tokens)

    def text_after(self, events: int) -> str:
        """The text of the first answer that its first `events` events carry."""
        tokens = sum(frame.tokens for frame in self.plan.frames[:events])
        return "".join(self.answers[0].tokens[:tokens])


def planned(api: str, body: dict[str, Any]) -> Planned:
    """What the server plans for `body` (as the server parses it: its own code, none of the client's)."""
    server = SERVER_APIS[api]
    script = server.parse_request(body, None)
    answers = answer(script, TOKENS)
    return Planned(server.render(script, answers, 1), answers)


def body_of(api: str, **params: Any) -> dict[str, Any]:
    """The JSON body that a streamed `create(client, api, **params)` sends (`params` holding no request
    options)."""
    return {**REQUIRED[api], "model": MODEL, **params, "stream": True}


def text_of(final: Any) -> str:
    """The text of an answer of any API (its first choice's)."""
    if isinstance(final, streamkit.ChatCompletion):
        return final.choices[0].message.content or "" if final.choices else ""
    if isinstance(final, streamkit.Completion):
        return final.choices[0].text if final.choices else ""
    if isinstance(final, streamkit.Response):
        return final.output_text
    assert isinstance(final, streamkit.Message)
    return final.text


def finish_of(final: Any) -> str | None:
    """How an answer of any API ended: its first choice's finish_reason, a response's status, a message's
    stop_reason."""
    if isinstance(final, streamkit.ChatCompletion | streamkit.Completion):
        return final.choices[0].finish_reason if final.choices else None
    if isinstance(final, streamkit.Response):
        return final.status
    assert isinstance(final, streamkit.Message)
    return final.stop_reason


# How a whole answer of each API ends (the server's words), and how one cut short stands.
FINISHED = {"chat": "stop", "completions": "stop", "responses": "completed", "messages": "end_turn"}
UNFINISHED = {"chat": None, "completions": None, "responses": "in_progress", "messages": None}


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll `condition` until it holds, for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def open_sockets() -> int:
    """Sockets this process holds open (Linux), the in-process server's included."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def sockets_to(port: int) -> int:
    """This process's TCP sockets connected to `port` (Linux): the client's ends of connections to a server
    on that port, never the server's own ends (whose local port it is)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)  # the header
            for line in lines:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                count += remote_port == port and fields[9] in inodes
    return count


linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/net/tcp"), reason="reads /proc")
