"""Spreading a load over workers: `--workers K` (and `--ray`'s actors) send every request asked for, at the
whole rate, with every slot, and start no worker that the load would leave idle."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamkit.bench import BenchRequest, LoadConfig, generated_requests
from streamkit.bench.runner import split
from streamkit.cli import main
from streamkit.protocols import CHAT
from streamkit.server import ServerThread


def numbered(n: int) -> list[BenchRequest]:
    """`n` requests that each say which they are."""
    return [BenchRequest({"messages": [], "n": j}, j) for j in range(n)]


RATES = [None, 10.0, math.inf]


@pytest.mark.parametrize("rate", RATES, ids=["closed", "rate 10", "rate inf"])
def test_the_shares_add_up_to_the_load(rate: float | None) -> None:
    for n, concurrency, k, warmup in itertools.product(
        range(1, 10), [None, 1, 2, 3, 5], range(1, 7), [0, 1, 4]
    ):
        config = LoadConfig(base_url="u", model="m", concurrency=concurrency, rate=rate, warmup=warmup)
        slots = concurrency or (1 if rate is None else None)  # a closed loop has one slot by default
        shares = split(config, numbered(n), k)
        case = (n, concurrency, k, warmup)
        assert len(shares) == min(k, n, slots or k), case  # no worker would be idle, none more is dropped
        sent = Counter(r.body["n"] for _, part in shares for r in part)
        assert sent == Counter(range(n)), case  # each request once
        assert all(len(part) >= 1 for _, part in shares), case
        assert sum(c.warmup for c, _ in shares) == warmup, case
        if slots is None:
            assert all(c.concurrency is None for c, _ in shares), case
        else:
            assert all(c.concurrency is not None and c.concurrency >= 1 for c, _ in shares), case
            assert sum(c.concurrency or 0 for c, _ in shares) == slots, case
        if rate is None:
            assert all(c.rate is None for c, _ in shares), case
        else:
            assert math.fsum(c.rate or 0.0 for c, _ in shares) == pytest.approx(rate), case
        assert len({c.seed for c, _ in shares}) == len(shares), case  # each its own arrivals


def test_each_share_is_the_load_scaled_down() -> None:
    # 5 slots over 2 workers: 3 and 2. Of each 5 requests, 3 go to the one and 2 to the other, so both
    # keep their slots busy as long, and with a rate, each has the rate of its slots: 60 and 40 a second.
    config = LoadConfig(base_url="u", model="m", concurrency=5, rate=100.0)
    (a, first), (b, second) = split(config, numbered(20), 2)
    assert (a.concurrency, b.concurrency) == (3, 2)
    assert (a.rate, b.rate) == pytest.approx((60.0, 40.0))
    assert (len(first), len(second)) == (12, 8)
    assert [r.body["n"] for r in second] == [1, 3, 6, 8, 11, 13, 16, 18]
    assert [r.body["n"] for r in first[-3:]] == [15, 17, 19] and second[-1] == second[7]
    with pytest.raises(IndexError):
        second[8]


def test_an_endless_load_is_shared_lazily() -> None:
    endless = generated_requests(None, 4, 8, api=CHAT, seed=1, extra_body={})  # as --duration makes it
    config = LoadConfig(base_url="u", model="m", concurrency=3, duration=1.0)
    shares = split(config, endless, 8)
    assert len(shares) == 3
    (_, first), (_, second), (_, third) = shares
    assert [first[0], second[0], third[0], first[1]] == [endless[0], endless[1], endless[2], endless[3]]
    assert first[10**15] == endless[3 * 10**15]


# The command, on the built-in server


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with ServerThread() as running:
        yield running.base_url


def bench(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[dict[str, Any], str]:
    """Run `streamkit bench` here on `server` and return its result file and its stderr, less the line that
    says how many connections the warm-up opens (one per slot: checked against the result here)."""
    out = tmp_path / "result.json"
    command = ["bench", "--base-url", server, "--model", "scripted", "--no-calibrate", "--quiet"]
    assert main([*command, *args, "--output", str(out)]) == 0
    result: dict[str, Any] = json.loads(out.read_text())
    lines = capsys.readouterr().err.splitlines(keepends=True)
    warm = [line for line in lines if line.startswith("streamkit bench: warming up ")]
    warmed = result["streamkit"]["warmed_connections"]
    assert [line.split()[4] for line in warm] == ([str(warmed)] if warmed else [])
    return result, "".join(line for line in lines if line not in warm)


CLOSED = list(itertools.product([1, 2, 3], [1, 2, 3, 4]))


@pytest.mark.parametrize(("concurrency", "workers"), CLOSED, ids=[f"c{c}-w{w}" for c, w in CLOSED])
def test_every_request_is_sent_whatever_the_split(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], concurrency: int, workers: int
) -> None:
    result, err = bench(
        server, tmp_path, capsys,
        "--num-requests", "7", "--concurrency", str(concurrency), "--workers", str(workers),
    )  # fmt: skip
    assert result["num_prompts"] == result["completed"] == 7 and result["failed"] == 0
    started = min(workers, concurrency)
    assert result["streamkit"]["workers"] == started
    if started < workers:
        plural = "s" if started > 1 else ""
        line = f"streamkit bench: starting {started} worker{plural}, not {workers}: the load keeps only "
        assert err.strip() == f"{line}{started} busy (concurrency {concurrency})"
    else:
        assert err == ""


OPEN = [
    ("inf", None, 4, 4),  # no cap: a worker for each
    ("inf", 2, 3, 2),  # the cap of 2 in flight has slots for 2
    ("50", None, 9, 7),  # 7 requests keep 7 busy
]


@pytest.mark.parametrize(("rate", "cap", "workers", "started"), OPEN)
def test_every_request_is_sent_on_an_open_loop(
    server: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rate: str,
    cap: int | None,
    workers: int,
    started: int,
) -> None:
    capped = [] if cap is None else ["--concurrency", str(cap)]
    result, err = bench(
        server, tmp_path, capsys, "--num-requests", "7", "--rate", rate, *capped, "--workers", str(workers)
    )
    assert result["num_prompts"] == result["completed"] == 7 and result["failed"] == 0
    assert result["streamkit"]["workers"] == started
    assert ("busy" in err) == (started < workers)


def test_workers_auto_starts_what_the_load_needs(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--workers auto` at the default concurrency of 1: one worker, as the load needs, and no word of it."""
    result, err = bench(server, tmp_path, capsys, "--num-requests", "7", "--workers", "auto")
    assert result["num_prompts"] == result["completed"] == 7
    assert result["streamkit"]["workers"] == 1
    assert "starting" not in err


@pytest.mark.parametrize("option", ["--concurrency", "--num-requests"])
def test_a_load_of_nothing_is_refused(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["bench", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", option, "0"])
    assert exit.value.code == 2
    assert f"argument {option}: 0 is not at least 1" in capsys.readouterr().err
