"""`streamkit bench`'s capacity question: goodput targets in both spellings, the share of requests that met
them, `bench sweep` and its capacity, and the report that says what was measured."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamkit.bench import RequestRecord, Slo, summarize
from streamkit.bench import cli as bench_cli
from streamkit.bench.report import flags
from streamkit.bench.runner import RunResult
from streamkit.bench.sweep import capacity, sweep_result
from streamkit.server import ServerConfig, ServerThread, Timing

# Goodput targets


@pytest.mark.parametrize(
    "spec",
    ["ttft:500 tpot:50 e2el:10000", "ttft:500,tpot:50,e2el:10000", "ttft=500,tpot=50,e2el=10000",
     "ttft:500, tpot=50 e2el:1e4"],
)  # fmt: skip
def test_goodput_targets_in_vllm_and_streamkit_spelling(spec: str) -> None:
    assert Slo.parse(spec) == Slo(ttft=0.5, tpot=0.05, e2el=10.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("latency:3", "unknown SLO 'latency'"), ("ttft", "ttft:MS"), ("ttft:fast", "not 'fast'"),
     ("ttft:0", "positive"), ("ttft:-5", "positive"), ("", "no SLO given"), ("ttft:inf", "positive")],
)  # fmt: skip
def test_bad_goodput_targets_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Slo.parse(spec)


def record(ttft: float | None, gap: float = 0.01, tokens: int = 3, error: str | None = None) -> RequestRecord:
    """A request whose first token came after `ttft` s and the others `gap` apart (None: no token)."""
    times = [] if ttft is None else [ttft + i * gap for i in range(tokens)]
    return RequestRecord(
        0, 0, token_times=times, token_counts=[1] * len(times), output_tokens=len(times), error=error
    )


def test_the_share_of_requests_that_met_each_target_and_all_of_them() -> None:
    records = [
        record(0.1),  # meets both
        record(0.1, gap=0.2),  # meets ttft, misses tpot (200 ms per token)
        record(0.9),  # misses ttft, meets tpot
        record(0.9, gap=0.2),  # misses both
        record(0.1, error="ReadError"),  # failed: meets nothing, whatever its times
        record(None),  # no token at all
    ]
    summary = summarize(records, duration=2.0, slo=Slo.parse("ttft:500 tpot:100"))
    assert summary.slo_met == {"ttft": 2 / 6, "tpot": 2 / 6}
    assert summary.goodput_fraction == 1 / 6
    assert summary.request_goodput == 0.5  # one good request in 2 s
    assert summarize(records, 2.0).goodput_fraction is None and summarize(records, 2.0).slo_met == {}


def test_the_capacity_is_the_highest_level_that_met_the_fraction() -> None:
    runs = [
        {"max_concurrency": 1, "goodput_fraction": 1.0},
        {"max_concurrency": 2, "goodput_fraction": 0.98},  # below 99%: a lower level may miss too
        {"max_concurrency": 4, "goodput_fraction": 0.995},
        {"max_concurrency": 8, "goodput_fraction": 0.5},
    ]
    assert capacity(runs, "max_concurrency", 0.99) == 4
    assert capacity(runs, "max_concurrency", 0.999) == 1
    assert capacity(runs, "max_concurrency", 0.4) == 8
    assert capacity(runs[3:], "max_concurrency", 0.99) is None
    sweep = sweep_result(runs, "concurrency", None, 0.99)
    assert sweep["capacity"] is None and sweep["levels"] == [1, 2, 4, 8]  # no targets, no capacity


@pytest.mark.parametrize(("lag", "whose"), [(0.001, "server"), (0.050, "client")])
def test_the_coalesced_reads_flag_says_whose_they_were(lag: float, whose: str) -> None:
    """Half the token gaps inside one read: on time, the server sent them together, and more workers would
    change nothing; late, the client read them late, and --workers is the remedy."""
    records = [record(0.1, gap=gap, tokens=5) for gap in (0.0, 0.01)]  # 4 of 8 gaps are 0
    records[0].token_times = [0.1, 0.1, 0.12, 0.12, 0.14]
    result = RunResult(records, 1.0, 0.0, lag=[lag] * 100)
    found = [flag for flag in flags(result, summarize(records, 1.0), True) if "inside one read" in flag]
    assert len(found) == 1
    if whose == "server":
        assert "the server sent those tokens together" in found[0] and "use --workers" not in found[0]
    else:
        assert "the client read late" in found[0] and found[0].endswith("use --workers")


# The command


def bench(*argv: str) -> int:
    """`streamkit bench ...` in this process."""
    parser = argparse.ArgumentParser()
    bench_cli.add_parser(parser.add_subparsers())
    return bench_cli.run(parser.parse_args(["bench", *argv]))


# Two slots, and each answer holds its slot for about half a second: up to two streams at once start at
# once, and a third waits for a slot, as a real server's requests do.
SLOTS = Timing(slots=2, ttft=0.02, itl=0.05, tokens=8)


@pytest.fixture
def slotted() -> Iterator[ServerThread]:
    with ServerThread(ServerConfig(timing=SLOTS, trace=True)) as server:
        yield server


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_a_sweep_finds_the_capacity_that_the_slots_imply(slotted: ServerThread, tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    status = bench(
        "sweep", "--base-url", slotted.base_url, "--model", "scripted", "--concurrency", "1,2,4",
        "--num-requests", "8", "--goodput", "ttft:250", "--slo-fraction", "0.75", "--no-calibrate", "--quiet",
        "--output", str(out), "--output-len", "8", "--save-requests", str(tmp_path / "requests.jsonl"),
    )  # fmt: skip
    assert status == 0
    for level in (1, 2, 4):  # each level's requests in a file of its own
        lines = (tmp_path / f"requests-concurrency{level}.jsonl").read_text().splitlines()
        assert len(lines) == 8
    sweep = json.loads(out.read_text())
    assert sweep["level_key"] == "max_concurrency" and sweep["levels"] == [1, 2, 4]
    # Two slots: one or two streams never wait (TTFT 20 ms); at four, half of them wait out a whole answer.
    assert sweep["capacity"] == 2
    assert [run["max_concurrency"] for run in sweep["runs"]] == [1, 2, 4]
    assert all(run["completed"] == 8 for run in sweep["runs"])
    # The server's own account of the same requests: from its receipt to its first token's write.
    received, written = get(slotted.url + "/streamkit/received"), get(slotted.url + "/streamkit/trace")
    for run in sweep["runs"]:
        ids = [r["response_id"] for r in run["streamkit"]["records"]]
        good = sum(written[i][0] - received[i] <= 0.25 for i in ids)
        assert run["request_goodput"] == pytest.approx(good / run["duration"])
        assert run["goodput_fraction"] == good / 8


def test_a_sweep_over_worker_processes(slotted: ServerThread, tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    status = bench(
        "sweep", "--base-url", slotted.base_url, "--model", "scripted", "--concurrency", "1,2",
        "--num-requests", "4", "--workers", "2", "--goodput", "ttft:250", "--slo-fraction", "0.75",
        "--no-calibrate", "--quiet", "--output", str(out),
    )  # fmt: skip
    assert status == 0
    sweep = json.loads(out.read_text())
    # As many workers as each level keeps busy
    assert [run["streamkit"]["workers"] for run in sweep["runs"]] == [1, 2]
    assert [run["completed"] for run in sweep["runs"]] == [4, 4] and sweep["capacity"] == 2


def test_a_single_run_refuses_a_list_of_levels() -> None:
    assert bench("--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--concurrency", "1,2") == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["sweep"],
        ["sweep", "--concurrency", "1,2", "--rate", "1,2"],
        ["sweep", "--concurrency", "1", "--rate", "2"],
    ],
)
def test_a_sweep_names_the_levels_of_one_setting(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert bench(*argv, "--base-url", "http://127.0.0.1:9/v1", "--model", "m") == 2
    assert "sweep" in capsys.readouterr().err


def test_ctrl_c_keeps_the_levels_measured(tmp_path: Path) -> None:
    """Ctrl-C during the second level: the first is written as measured, and the exit status says so."""
    out = tmp_path / "sweep.json"
    # Each level sends for a second, and each answer takes two: the second level runs for at least two.
    timing = Timing(ttft=0.01, itl=0.1, tokens=20)
    with ServerThread(ServerConfig(timing=timing)) as server:
        command = [
            sys.executable, "-m", "streamkit.cli", "bench", "sweep", "--base-url", server.base_url,
            "--model", "scripted", "--concurrency", "1,2", "--duration", "1",
            "--goodput", "ttft:1000", "--no-calibrate", "--quiet", "--output", str(out),
        ]  # fmt: skip
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as bench:
            assert bench.stdout is not None
            rows = []
            for line in bench.stdout:  # the row of level 1, printed as it ends
                rows.append(line)
                if line.split()[:1] == ["1"]:
                    break
            time.sleep(0.3)  # into the second level
            bench.send_signal(signal.SIGINT)
            rest, err = bench.communicate(timeout=60)
    assert bench.returncode == 130, err
    assert "interrupted; keeping the levels measured" in err
    sweep = json.loads(out.read_text())
    assert sweep["interrupted"] is True and sweep["levels"] == [1]
    assert sweep["capacity"] == 1 and sweep["runs"][0]["completed"] >= 1
    assert "Capacity: concurrency 1" in rest


def test_a_run_reads_the_servers_metrics(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    with ServerThread(ServerConfig(timing=Timing(tokens=5))) as server:
        metrics = server.url + "/metrics"
        status = bench(
            "--base-url", server.base_url, "--model", "scripted", "--num-requests", "6", "--concurrency", "2",
            "--server-metrics", metrics, "--no-calibrate", "--quiet", "--output", str(out),
        )  # fmt: skip
        sent = server.stats.requests
    assert status == 0
    result = json.loads(out.read_text())
    series = result["server_metrics"]
    requests = series['streamkit_requests_total{api="chat"}']
    # Scraped before the first request and after the last: every request the server had is counted.
    assert requests["first"] == 0 and requests["last"] == requests["max"] == sent >= 6
    tokens = series['streamkit_output_tokens_total{api="chat"}']
    assert tokens["last"] >= 6 * 5
    assert series['streamkit_requests_running{api="messages"}']["max"] == 0
    assert all(len(entry["samples"]) >= 2 for entry in series.values())
    assert result["streamkit"]["server_metrics_url"] == metrics


def test_a_run_in_which_every_request_failed_exits_1_with_its_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with ServerThread(ServerConfig(faults=bench_faults("status=503"))) as server:
        status = bench(
            "--base-url", server.base_url, "--model", "scripted", "--num-requests", "3", "--no-calibrate",
            "--quiet",
        )  # fmt: skip
    assert status == 1
    captured = capsys.readouterr()
    assert "streamkit bench: every request failed: 3 x InternalServerError: " in captured.err
    assert "     3 x InternalServerError: " in captured.out  # the table's errors, by kind


def bench_faults(spec: str) -> Any:
    from streamkit.server import Faults

    return Faults.parse(spec)


def test_a_plot_it_cannot_write_is_refused_before_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    with ServerThread(ServerConfig()) as server:
        status = bench(
            "--base-url", server.base_url, "--model", "scripted", "--num-requests", "3", "--no-calibrate",
            "--quiet", "--plot", "result.pdf",
        )  # fmt: skip
        assert server.stats.requests == 0  # nothing was sent, so nothing was lost
    assert status == 2
    assert "--plot needs a .html or .png file, not result.pdf" in capsys.readouterr().err


def test_the_report_says_what_it_measured_and_where_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, plot = tmp_path / "run.json", tmp_path / "run.html"
    with ServerThread(ServerConfig()) as server:
        url = server.base_url
        status = bench(
            "--base-url", url, "--model", "scripted", "--num-requests", "4", "--concurrency", "2",
            "--output-len", "7", "--no-calibrate", "--quiet", "--output", str(out), "--plot", str(plot),
        )  # fmt: skip
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    head = [line.split(None, 1) if ":" not in line else line.split(":", 1) for line in lines[1:7]]
    assert [(k.strip(), v.strip()) for k, v in head] == [
        ("Endpoint", url),
        ("API", "chat"),
        ("Model", "scripted"),
        ("Load", "concurrency 2 (closed loop)"),
        ("Requests", "4"),
        ("Output length (max tokens)", "7"),
    ]
    assert lines[-2:] == [f"Output written to {out}", f"Plot written to {plot}"]


def test_help_shows_the_defaults() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    bench_cli.add_parser(sub)
    text = " ".join(sub.choices["bench"].format_help().split())
    for option, default in (
        ("--num-requests", "100"),
        ("--output-len", "128"),
        ("--slo-fraction", "0.99"),
        ("--timeout", "600.0"),
        ("--transport", "aiohttp"),
    ):
        assert f"(default: {default})" in text.split(option, 2)[-1].split(" --", 1)[0], option


def test_no_endpoint_and_model_scripted_measures_the_scripted_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert bench("--model", "scripted", "--num-requests", "2", "--no-calibrate", "--quiet") == 0
    captured = capsys.readouterr()
    assert (
        "streamkit bench: no endpoint given; measuring the built-in scripted server at http://"
        in captured.err
    )
    assert "Model:                                   scripted" in captured.out


@pytest.mark.real_model
@pytest.mark.timeout(600)
def test_a_sweep_of_the_local_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no endpoint, the sweep measures the embedded llama.cpp model, and scrapes its own metrics."""
    pytest.importorskip("xllamacpp")
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    out, plot = tmp_path / "sweep.json", tmp_path / "sweep.html"
    status = bench(
        "sweep", "--concurrency", "1,2", "--num-requests", "3", "--output-len", "8", "--goodput",
        "ttft:60000", "--no-calibrate", "--quiet", "--output", str(out), "--plot", str(plot),
    )  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "measuring the embedded local model (smollm2 on llama.cpp)" in captured.err
    sweep = json.loads(out.read_text())
    assert sweep["levels"] == [1, 2] and sweep["capacity"] == 2  # a minute to the first token: always met
    for run in sweep["runs"]:
        assert run["model"] == "smollm2" and run["completed"] == 3
        series = run["server_metrics"]
        assert any(name.startswith("llamacpp:") for name in series), sorted(series)
    assert "Capacity: concurrency 2" in captured.out
    assert "data-mark='capacity'" in plot.read_text()
