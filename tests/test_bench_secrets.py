"""`streamkit bench` never writes a URL's credentials: not in the result file, the plots, the saved requests,
the table, nor an error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamkit.bench.plots import plot
from streamkit.bench.redact import public
from tests.test_bench import run_bench

PASSWORD = "hunter2-Pa55word"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://user:pw@host:8000/v1", "http://host:8000/v1"),
        ("https://user@host/v1", "https://host/v1"),
        ("http://user:p@ss:w@rd@host/v1", "http://host/v1"),  # a bare `@` in the password
        ("HTTP://u:p@[::1]:8000/v1", "HTTP://[::1]:8000/v1"),
        ("http://host/v1?key=AIza123&alt=sse", "http://host/v1?key=***&alt=sse"),
        ("http://host/v1?token=a?b=c&alt=sse", "http://host/v1?token=***&alt=sse"),
        ("http://host/v1?api-version=1&api_key=k1&X-Amz-Signature=abc", "http://host/v1?api-version=1&api_key=***&X-Amz-Signature=***"),
        ("invalid URL: ws://a:b@h/x and ray://c:d@head:10001", "invalid URL: ws://h/x and ray://head:10001"),
        # No URL's credentials: left as it is
        ("http://host/v1/models/a@b", "http://host/v1/models/a@b"),
        ("write to me@example.com", "write to me@example.com"),
        ("http://host/v1?alt=sse", "http://host/v1?alt=sse"),
        ("local", "local"),
    ],
)  # fmt: skip
def test_public_takes_the_credentials_out_of_urls(text: str, shown: str) -> None:
    assert public(text) == shown


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("?" * 1_000_000, "?" * 1_000_000),
        ("&key" * 1_000_000, "&key" * 1_000_000),
        ("?key=" + "?a=b" * 1_000_000, "?key=***"),
        ("http://" + "@" * 1_000_000, "http://"),
        ("a://" * 1_000_000, "a://" * 1_000_000),
    ],
)
def test_public_reads_any_text_in_one_pass(text: str, shown: str) -> None:
    # An error message is the server's to choose: a pattern that backtracked over it would hang the run.
    assert public(text) == shown


def test_no_output_keeps_the_urls_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A port out of range: every request fails with an error that names the URL (aiohttp's InvalidURL).
    url = f"http://alice:{PASSWORD}@127.0.0.1:99999/v1"
    out, lines, html = tmp_path / "run.json", tmp_path / "requests.jsonl", tmp_path / "run.html"
    status = run_bench("--base-url", url, "--model", "m", "--num-requests", "2", "--no-calibrate",
                       "--output", str(out), "--save-requests", str(lines), "--plot", str(html))  # fmt: skip
    assert status == 1  # every request failed
    printed = capsys.readouterr()
    result = json.loads(out.read_text())
    assert result["base_url"] == "http://127.0.0.1:99999/v1"
    assert result["errors"] == ["invalid URL: http://127.0.0.1:99999/v1/chat/completions"] * 2
    assert "<h1>streamkit bench: m at http://127.0.0.1:99999/v1 (chat API)</h1>" in html.read_text()
    for text in (out.read_text(), lines.read_text(), html.read_text(), printed.out, printed.err):
        assert PASSWORD not in text and "alice" not in text


def test_the_error_line_of_the_model_list_keeps_no_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    status = run_bench("--base-url", f"http://alice:{PASSWORD}@127.0.0.1:9/v1", "--num-requests", "1")
    err = capsys.readouterr().err
    assert status == 2 and "could not list the models at http://127.0.0.1:9/v1 (" in err
    assert PASSWORD not in err


@pytest.mark.parametrize("suffix", [".html", ".png"])
def test_plots_name_the_endpoint_without_its_credentials(tmp_path: Path, suffix: str) -> None:
    # A result file written before the URLs were cleaned, as `bench merge` may be given
    result = {"model": "m", "base_url": f"http://alice:{PASSWORD}@host/v1", "streamkit": {"records": []}}
    path = tmp_path / f"plot{suffix}"
    plot(result, path)
    data = path.read_bytes()
    assert b"streamkit bench: m at http://host/v1" in data  # the HTML's title, the PNG's Title field
    assert PASSWORD.encode() not in data
