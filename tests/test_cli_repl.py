"""`streamkit chat` as a conversation in a real terminal (a pseudo-terminal): line editing, Ctrl-C and Ctrl-D,
the commands."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamkit.server import Faults, ServerConfig, ServerThread, Timing

# Long enough for a loaded machine; a test waits this long only when what it waits for never comes.
PATIENCE = 60.0


class Terminal:
    """`streamkit chat` in a child process on a pseudo-terminal: what it wrote so far, and keys to type."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: streamkit chat on a terminal
            os.execve(
                sys.executable, [sys.executable, "-m", "streamkit.cli", "chat", *args], env or os.environ
            )
        self.output = b""

    def until(self, marker: bytes, times: int = 1) -> None:
        """Read until `marker` has been written `times` times in all."""
        deadline = time.monotonic() + PATIENCE
        while self.output.count(marker) < times and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.fd, 4096)
                except OSError:  # the child is gone
                    break
        assert self.output.count(marker) >= times, self.output

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def interrupt(self) -> int:
        """Ctrl-C at the prompt; the exit status. A Ctrl-C that comes between the prompt's write and the
        wait for a key is seen only at the next signal or key: CPython checks for signals when a system call
        is interrupted, and that one interrupted none (a person's Ctrl-C never comes that soon after the
        prompt, but a busy machine can pause the child there). So Ctrl-C is pressed again every few seconds,
        as a person would; without the fix (the line read in a thread that `asyncio.run` waited for) no
        number of them would do."""
        for _ in range(int(PATIENCE / 5)):
            self.type(b"\x03")
            status = self.exited(5.0)
            if status is not None:
                return status
        return self.exit_status()

    def exit_status(self) -> int:
        """The child's exit status, once it exits (killed after PATIENCE)."""
        status = self.exited(PATIENCE)
        if status is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self.fd)
            raise AssertionError(f"still running after {PATIENCE} s: {self.output!r}")
        return status

    def exited(self, patience: float) -> int | None:
        """The child's exit status if it exits within `patience`, else None."""
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            with_status, status = os.waitpid(self.pid, os.WNOHANG)
            if with_status:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            with_output, _, _ = select.select([self.fd], [], [], 0.1)
            if with_output:
                with contextlib.suppress(OSError):  # the child is gone
                    self.output += os.read(self.fd, 4096)
        return None


@pytest.fixture(scope="module")
def stalling() -> Iterator[ServerThread]:
    """Every answer stops for a minute after three events: long enough to press Ctrl-C in."""
    config = ServerConfig(timing=Timing(itl=0.01, tokens=12), faults=Faults.parse("stall=3:60"))
    with ServerThread(config) as server:
        yield server


@pytest.fixture(scope="module")
def quick() -> Iterator[ServerThread]:
    config = ServerConfig(timing=Timing(itl=0.001, tokens=6))
    with ServerThread(config) as server:
        yield server


def chat(server: ServerThread, *args: str) -> Terminal:
    env = {**os.environ, "TERM": "xterm", "NO_COLOR": "1"}
    return Terminal("--base-url", server.base_url, "--model", "scripted", *args, env=env)


def test_ctrl_c_stops_the_answer_and_the_conversation_goes_on(stalling: ServerThread) -> None:
    terminal = chat(stalling)
    terminal.until(b"> ")
    terminal.type(b"first question\n")
    terminal.until(b"first question\r\n")
    deadline = time.monotonic() + PATIENCE
    while stalling.stats.streams_open == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    terminal.type(b"\x03")  # Ctrl-C, as the terminal sends it: SIGINT to the foreground process
    terminal.until(b"(answer stopped; it is not kept in the conversation)")
    terminal.until(b"> ", 2)  # the prompt is back
    deadline = time.monotonic() + PATIENCE
    while stalling.stats.streams_open and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stalling.stats.streams_open == 0  # the stopped answer's connection is closed
    # The up arrow brings the line back (readline's history), and the stopped turn is not in the history.
    terminal.type(b"\x1b[A\n")
    deadline = time.monotonic() + PATIENCE
    while len(stalling.stats.bodies) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stalling.stats.bodies[-1]["messages"] == [{"role": "user", "content": "first question"}]
    assert b"^[[A" not in terminal.output
    terminal.type(b"\x03")
    terminal.until(b"(answer stopped", 2)
    terminal.until(b"> ", 3)
    assert terminal.interrupt() == 130  # Ctrl-C at the prompt: gone at once, no Enter needed


def test_ctrl_d_at_the_prompt_leaves(quick: ServerThread) -> None:
    terminal = chat(quick)
    terminal.until(b"> ")
    terminal.type(b"\x04")
    assert terminal.exit_status() == 0


def test_help_and_an_unknown_command_are_not_sent(quick: ServerThread) -> None:
    asked = len(quick.stats.bodies)
    terminal = chat(quick)
    terminal.until(b"> ")
    terminal.type(b"/help\n")
    terminal.until(b"> ", 2)
    for command in (b"/help", b"/reset", b"/exit"):
        assert terminal.output.count(command) >= 2  # the banner, and /help's list
    terminal.type(b"/frobnicate\n")
    terminal.until(b"unknown command /frobnicate: /help lists the commands")
    terminal.until(b"> ", 3)
    terminal.type(b"/exit\n")
    assert terminal.exit_status() == 0
    assert len(quick.stats.bodies) == asked  # nothing went to the model


def test_the_legacy_api_offers_no_reset(quick: ServerThread) -> None:
    terminal = chat(quick, "--api", "completions")
    terminal.until(b"> ")
    assert b"/reset" not in terminal.output and b"keeps no history" in terminal.output
    terminal.type(b"one\n")
    terminal.until(b"> ", 2)
    terminal.type(b"two\n")
    terminal.until(b"> ", 3)
    assert quick.stats.bodies[-1]["prompt"] == "two"  # each prompt stands alone
    terminal.type(b"/reset\n")
    terminal.until(b"unknown command /reset")
    terminal.until(b"> ", 4)  # a key typed before the prompt is read as the terminal had it, not readline
    terminal.type(b"\x04")
    assert terminal.exit_status() == 0


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.real_model
def test_ctrl_c_at_the_prompt_stops_the_local_model() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    terminal = Terminal("--max-tokens", "8", env={**env, "TERM": "xterm", "NO_COLOR": "1"})
    terminal.until(b"> ")
    (model,) = children(terminal.pid)
    terminal.type(b"Hi\n")
    terminal.until(b"> ", 2)
    assert terminal.interrupt() == 130
    deadline = time.monotonic() + PATIENCE
    while alive(model) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(model)
