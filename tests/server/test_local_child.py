"""The local model's child process, with no model: what it is given of the parent's environment, and how it
gets its key (on stdin, never on its command line). `tests/client/test_real_model.py` checks the key on
llama.cpp's server itself."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from streamkit.server.local import LocalModel, LocalModelUnavailable, child_environment

KEY = "sk-local-model"
# In place of llama.cpp's server: a child that reads its key as the real one does, prints a port if it is
# the right one (as the real one prints its port once started), and waits for its parent to stop it.
STUB = (
    "import sys; key = sys.stdin.readline(); "
    f"print(1 if key == {KEY + chr(10)!r} else 'wrong key: ' + repr(key), flush=True); sys.stdin.read()"
)
linux_only = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads the child in /proc")


class StubModel(LocalModel):
    """A LocalModel whose child runs `STUB` in place of llama.cpp's server."""

    def _command(self) -> list[str]:
        return [sys.executable, "-c", STUB]


def test_the_childs_environment_is_cut_to_what_it_needs() -> None:
    parent = {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "LD_LIBRARY_PATH": "/opt/lib",
        "OMP_NUM_THREADS": "2",
        "LC_ALL": "C.UTF-8",
        "OPENAI_API_KEY": "sk-openai",
        "ANTHROPIC_API_KEY": "sk-ant",
        "OPENAI_BASE_URL": "https://user:pass@example.com/v1",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "GITHUB_TOKEN": "ghp",
        "LLAMA_ARG_API_KEY": "llama",
        "STREAMKIT_API_KEY": "streamkit",
    }
    assert child_environment(parent) == {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "LD_LIBRARY_PATH": "/opt/lib",
        "OMP_NUM_THREADS": "2",
        "LC_ALL": "C.UTF-8",
    }


@linux_only
def test_the_child_has_no_provider_key_and_reads_its_own_on_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-parent-anthropic")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with StubModel(api_key=KEY) as model:  # the stub prints a port only if the key came on its stdin
        proc = Path(f"/proc/{model.pid}")  # (its command line is the stub's; the real one's is checked below)
        environ = dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0") if item)
    assert b"OPENAI_API_KEY" not in environ and b"ANTHROPIC_API_KEY" not in environ
    assert environ[b"OMP_NUM_THREADS"] == b"1" and b"PATH" in environ


def test_the_real_childs_command_line_never_holds_the_key() -> None:
    try:
        command = LocalModel(api_key=KEY)._command()
    except LocalModelUnavailable:
        pytest.skip("the `local` extra is not installed")
    assert KEY not in " ".join(command) and "--api-key-stdin" in command
    assert "--api-key-stdin" not in LocalModel()._command()


@pytest.mark.parametrize("key", ["", "two\nlines", "sk-\r", "nul\0"])
def test_a_key_that_is_not_one_line_of_text_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="printable text on one line"):
        LocalModel(api_key=key)
