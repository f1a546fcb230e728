"""The `streamkit` command's own surface: its version, each command's usage on a bad option, `serve --help`
and `serve` on a port in use. In-process (`main([...])`) where no server starts, else as a user runs it."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys

import pytest

from streamkit._version import __version__
from streamkit.cli import main
from streamkit.server import faults
from streamkit.server.faults import Faults, Timing
from streamkit.server.local import MODEL_NAME


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int | str | None, str, str]:
    """The exit status of `streamkit ARGV` when argparse ends it, and what it printed."""
    with pytest.raises(SystemExit) as caught:
        main(list(argv))
    out, err = capsys.readouterr()
    return caught.value.code, out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version") == (0, f"streamkit {__version__}\n", "")


@pytest.mark.parametrize(
    ("argv", "unknown"),
    [(["chat", "--bogus"], "--bogus"), (["chat", "hi", "more"], "more"), (["bench", "--bogus"], "--bogus"),
     (["serve", "--bogus", "x"], "--bogus x")],
)  # fmt: skip
def test_a_commands_bad_option_prints_that_commands_usage(
    capsys: pytest.CaptureFixture[str], argv: list[str], unknown: str
) -> None:
    status, out, err = run(capsys, *argv)
    assert (status, out) == (2, "")
    assert err.startswith(f"usage: streamkit {argv[0]} [-h]")
    assert err.endswith(f"\nstreamkit {argv[0]}: error: unrecognized arguments: {unknown}\n")


def test_no_command_prints_the_top_level_usage(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys)
    assert status == 2 and err.startswith("usage: streamkit [-h] [--version]")


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--fault", "explode"], "unknown fault 'explode'"),
        (["--timing", "tokens=99999999"], "tokens must be at most 32768"),
        (["--api-key", ""], "--api-key must be printable text on one line, as a header carries it"),
    ],
)
def test_serves_bad_settings_print_serves_usage(
    capsys: pytest.CaptureFixture[str], argv: list[str], why: str
) -> None:
    status, out, err = run(capsys, "serve", *argv)
    assert (status, out) == (2, "")
    assert err.startswith("usage: streamkit serve [-h]") and err.endswith(
        f"\nstreamkit serve: error: {why}\n"
    )


def test_serve_help_lists_every_timing_setting_and_fault(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "72")
    status, out, _ = run(capsys, "serve", "--help")
    assert status == 0 and out.startswith("usage: streamkit serve [-h]")
    epilog = out[out.index("\nTiming and fault settings") :]
    lines = epilog.splitlines()
    assert max(map(len, lines)) <= 70  # the terminal's width, as argparse wraps its own help
    for row in ("  ttft=S ", "  itl=S, tps=N ", "  write_bytes=N ", "  status=CODE ", "  status=CODE:K "):
        assert any(line.startswith(row) for line in lines), row
    assert "  status=CODE             answers every attempt with CODE and the" in lines  # two columns
    assert "`" not in epilog and "|" not in epilog  # markdown's marks are gone
    # A row that goes on over several lines of the table is one paragraph, wrapped as a whole.
    assert "a firehose that lets a benchmark measure the client rather than the server" in faults.describe(
        200
    )
    # Every setting that `--timing` and `--fault` take is in it: the list cannot fall behind the parsers.
    names = [f.name for f in dataclasses.fields(Timing) + dataclasses.fields(Faults)] + ["tps"]
    assert [name for name in names if f"{name}=" not in epilog and f"  {name} " not in epilog] == []


@pytest.mark.parametrize(
    ("model", "host"), [("scripted", "127.0.0.1"), ("scripted", "localhost"), (MODEL_NAME, "127.0.0.1")]
)
def test_serve_on_a_port_in_use_prints_one_line(model: str, host: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamkit.cli",
                "serve",
                "--model",
                model,
                "--host",
                host,
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"streamkit serve: port {port} is in use: pass --port 0 for a free one\n"
