"""`streamkit bench --ray`: the load on Ray actors, against a real local Ray runtime on loopback (2 CPUs, 2
actors) and the built-in server in its own process. Every check holds by construction, or within bounds that
the run measures itself: the suite runs on a busy 2-core machine."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import math
import os
import pickle
import re
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamkit.bench import BenchRequest, LoadConfig, RequestRecord, generated_requests, run_load
from streamkit.bench.ray import RAY_INSTALL, ActorInfo, RayBench, _one_line, _started_with, time_bound
from streamkit.bench.report import result_json, table
from streamkit.bench.runner import RunResult, merge_parts
from streamkit.protocols import CHAT
from streamkit.server import ServerProcess

HI = [{"role": "user", "content": "Hi"}]
TOKENS = 20
NODE_KEY = "node-key-0123456789"  # the key in the environment of the runtime's node
# The command as a user runs it, without an endpoint of the environment's: the built-in server is the one.
ENV = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}


def requests(n: int) -> list[BenchRequest]:
    return [BenchRequest({"messages": HI, "max_tokens": TOKENS}, 1)] * n


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[Any]:
    """A local Ray runtime for the module: 2 logical CPUs (one per actor), no dashboard, a small store; on
    loopback, as the bench starts one, and its node has NODE_KEY in the provider's variable."""
    ray = pytest.importorskip("ray", reason=f"the `ray` extra: {RAY_INSTALL}")
    with _started_with({"OPENAI_API_KEY": NODE_KEY}):
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=100 * 1024**2,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The built-in server in its own process: 50 ms to the first token, then 10 ms per token, +-20%."""
    with ServerProcess("--ttft", "0.05", "--tps", "100", "--jitter", "0.2", "--tokens", str(TOKENS)) as url:
        yield url


@dataclasses.dataclass
class RayRun:
    result: RunResult
    parts: list[dict[str, Any]]
    bench: RayBench


@pytest.fixture(scope="module")
def ray_run(ray_runtime: Any, server: str) -> RayRun:
    """40 requests, 4 at a time, over 2 actors (2 slots each)."""
    config = LoadConfig(base_url=server, model="scripted", concurrency=4)
    with RayBench() as bench:
        assert bench.cpus() == 2  # what `--workers auto` means on this runtime
        bench.place(2)
        result = bench.run(config, requests(40))
    return RayRun(result, bench.parts, bench)


# On a real local Ray runtime


@pytest.mark.timeout(300)  # the runtime's start: some 20 s on two cores, more on a busy machine
def test_merged_records_are_the_union_of_the_actors_records(ray_run: RayRun) -> None:
    result, parts = ray_run.result, ray_run.parts
    assert sorted(p["worker"] for p in parts) == [0, 1] and len(result.records) == 40
    expected = []
    for part in parts:
        shift = part["start_wall"] - part["clock_offset"] - result.start_wall
        for data in part["records"]:
            record = RequestRecord.from_dict(data)
            expected.append(dataclasses.replace(record, t_sched=record.t_sched + shift, t0=record.t0 + shift))

    def key(r: RequestRecord) -> tuple[int, str]:
        return r.worker, r.response_id or ""

    merged, union = sorted(result.records, key=key), sorted(expected, key=key)
    assert [key(r) for r in merged] == [key(r) for r in union]
    for got, want in zip(merged, union, strict=True):
        assert dataclasses.replace(got, t_sched=0, t0=0) == dataclasses.replace(want, t_sched=0, t0=0)
        assert got.t_sched == pytest.approx(want.t_sched, abs=1e-9) and got.t0 == pytest.approx(
            want.t0, abs=1e-9
        )
    assert result.start_wall == min(p["start_wall"] - p["clock_offset"] for p in parts)
    cluster = result.ray
    assert cluster is not None and cluster["failed"] == [] and len(cluster["nodes"]) == 1
    assert [a["name"] for a in cluster["actors"]] == ["streamkit-bench-0", "streamkit-bench-1"]
    for actor in cluster["actors"]:
        assert actor["status"] == "ok" and actor["ip"] and actor["node_id"] == cluster["nodes"][0]["node_id"]
        # One machine, one clock: the offset is zero, and the measurement says so within its uncertainty.
        assert actor["uncertainty_ms"] > 0 and abs(actor["offset_ms"]) <= actor["uncertainty_ms"]
    out = result_json(result)
    assert out["streamkit"]["ray"] == cluster and out["streamkit"]["partial"] is False
    assert out["streamkit"]["workers"] == 2
    assert "Workers (Ray actors):                    2 on 1 node" in table(out)


def test_the_result_agrees_with_one_process_on_the_same_load(ray_run: RayRun, server: str) -> None:
    config = LoadConfig(base_url=server, model="scripted", concurrency=4)
    alone = asyncio.run(run_load(config, requests(40)))
    ray_out, alone_out = result_json(ray_run.result), result_json(alone)
    # Exact by construction: the same requests, every one answered with the same tokens.
    assert ray_out["completed"] == alone_out["completed"] == 40
    assert ray_out["total_output_tokens"] == alone_out["total_output_tokens"] == 40 * TOKENS
    assert ray_out["failed"] == alone_out["failed"] == 0
    # The medians agree within what both clients say of their own lateness, plus a margin for a busy machine.
    bound = ray_out["streamkit"]["loop_lag_ms"]["p99"] + alone_out["streamkit"]["loop_lag_ms"]["p99"] + 50
    for name in ("ttft", "tpot", "e2el"):
        assert abs(ray_out[f"median_{name}_ms"] - alone_out[f"median_{name}_ms"]) <= bound, name


@pytest.mark.timeout(180)
def test_clock_offsets_are_applied(ray_runtime: Any, server: str) -> None:
    """Actor 1's clock reads a minute ahead, as another node's might: the driver measures it, and its records
    land where they ran, on the driver's clock."""
    skew = 60.0
    config = LoadConfig(base_url=server, model="scripted", concurrency=2)
    with RayBench(clock_skew={1: skew}) as bench:
        bench.place(2)
        first, second = bench.actors
        assert abs(first.offset) <= first.uncertainty  # the same clock: by construction
        assert abs(second.offset - skew) <= second.uncertainty
        before = time.time()
        result = bench.run(config, requests(16))
        after = time.time()
    u = max(first.uncertainty, second.uncertainty)
    slack = 0.01  # perf_counter against time.time over a few seconds
    for part in bench.parts:
        # Each actor started its run while the driver waited for it: between `before` and `after`.
        true_start = part["start_wall"] - part["clock_offset"]
        assert before - u - slack <= true_start <= after + u + slack
    skewed = next(p for p in bench.parts if p["worker"] == 1)
    assert before + skew - slack <= skewed["start_wall"] <= after + skew + slack  # as it came: a minute off
    assert skewed["clock_offset"] == second.offset
    assert before - u - slack <= result.start_wall
    assert result.start_wall + result.duration <= after + u + slack  # uncorrected: a minute past the end
    uncorrected = merge_parts([{**p, "clock_offset": 0.0} for p in bench.parts])
    assert uncorrected.duration > skew - 1 > result.duration
    # Between the two merges, worker 1's records move against worker 0's by the measured offset, exactly.
    moved = {(r.worker, r.response_id): r.t0 for r in uncorrected.records}
    shifts = {w: {moved[(w, r.response_id)] - r.t0 for r in result.records if r.worker == w} for w in (0, 1)}
    assert all(max(s) - min(s) == pytest.approx(0, abs=1e-9) for s in shifts.values())  # each by one amount
    assert min(shifts[1]) - min(shifts[0]) == pytest.approx(second.offset - first.offset, abs=1e-9)


@pytest.mark.timeout(180)
def test_a_killed_actor_is_reported_and_the_others_kept(ray_runtime: Any, server: str) -> None:
    config = LoadConfig(base_url=server, model="scripted", concurrency=2, duration=3.0)
    endless = generated_requests(None, 1, TOKENS, api=CHAT, seed=0, extra_body={})  # as --duration makes
    with RayBench() as bench:
        bench.place(2)
        victim = bench.actors[1]
        kill = threading.Timer(1.0, lambda: ray_runtime.kill(victim.handle))
        started = time.monotonic()
        kill.start()
        try:
            result = bench.run(config, endless)
        finally:
            kill.join()
        elapsed = time.monotonic() - started
    assert elapsed < 60  # actor 0 ran its 3 s; nothing waited for actor 1
    assert len(bench.errors) == 1
    assert "streamkit-bench-1" in bench.errors[0] and "died" in bench.errors[0]
    assert "\n" not in bench.errors[0]
    assert result.records and {r.worker for r in result.records} == {0}
    assert [p["worker"] for p in bench.parts] == [0]
    out = result_json(result)
    assert out["streamkit"]["partial"] is True and out["streamkit"]["ray"]["failed"] == ["streamkit-bench-1"]
    assert out["streamkit"]["ray"]["actors"][1]["status"] == "died"
    text = table(out)
    assert "FLAG: partial result: Ray actor(s) streamkit-bench-1 failed" in text
    assert "streamkit-bench-1 @" in text and "[died]" in text


@pytest.mark.timeout(180)
def test_actors_past_the_time_bound_are_stopped(
    ray_runtime: Any, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver gives up on an actor once the run's time bound has passed: here 1 s, for a share of 8
    requests of some 250 ms each, one at a time. With no actor finished, it fails in one line."""
    import streamkit.bench.ray as ray_bench

    monkeypatch.setattr(ray_bench, "time_bound", lambda config, count: 1.0)
    monkeypatch.setattr(ray_bench, "GRACE", 0.0)
    config = LoadConfig(base_url=server, model="scripted", concurrency=2)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^no Ray actor finished: [^\n]*$") as error, RayBench() as bench:
        bench.place(2)
        started = time.monotonic()
        bench.run(config, requests(16))
    assert time.monotonic() - started < 30
    assert "streamkit-bench-0 on node" in str(error.value) and "streamkit-bench-1 on node" in str(error.value)
    assert "did not finish within 1 s" in str(error.value)
    assert [a.status for a in bench.actors] == ["late", "late"]


@pytest.mark.timeout(180)
def test_an_actor_that_cannot_be_placed_is_named(ray_runtime: Any) -> None:
    # Each actor takes one CPU, and the runtime has two, once the other tests' actors have let theirs go. The
    # third is never placed; the first two are, unless their processes take over 10 s to start on a busy
    # machine, when they are named too.
    deadline = time.monotonic() + 60
    while ray_runtime.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pattern = r"^Ray actor\(s\) streamkit-bench-\d(, streamkit-bench-\d)* not placed within 10 s: [^\n]*$"
    with pytest.raises(RuntimeError, match=pattern), RayBench(placement_timeout=10) as bench:
        bench.place(3)


@pytest.mark.timeout(300)
def test_cli_on_a_local_ray_runtime(tmp_path: Path) -> None:
    """`--ray` alone: a Ray runtime of the run's own, and the built-in server on this machine's loopback."""
    pytest.importorskip("ray", reason=f"the `ray` extra: {RAY_INSTALL}")
    out = tmp_path / "ray.json"
    # Three actors asked, and a load that keeps two busy: two are started, and every request is sent.
    run = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "bench", "--ray", "--workers", "3", "--num-requests", "7",
         "--concurrency", "2", "--model", "scripted", "--output", str(out)],
        capture_output=True, text=True, timeout=280, env=ENV,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Workers (Ray actors):                    2 on 1 node" in run.stdout
    line = "streamkit bench: starting 2 Ray actors, not 3: the load keeps only 2 busy (concurrency 2)"
    assert line in run.stderr.splitlines()
    result = json.loads(out.read_text())
    assert result["num_prompts"] == result["completed"] == 7 and result["streamkit"]["workers"] == 2
    assert [a["name"] for a in result["streamkit"]["ray"]["actors"]] == [
        "streamkit-bench-0",
        "streamkit-bench-1",
    ]
    assert result["streamkit"]["partial"] is False
    assert set(result["streamkit"]["calibration_ms"]) == {"ttft_p50", "ttft_p99", "late_p50", "late_p99"}


class RunSpy:
    """An actor's handle whose `run` calls are recorded, with their arguments, and then made."""

    def __init__(self, handle: Any, calls: list[tuple[Any, ...]]) -> None:
        self.handle, self._calls = handle, calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    @property
    def run(self) -> Any:
        def remote(*args: Any) -> Any:
            self._calls.append(args)
            return self.handle.run.remote(*args)

        return types.SimpleNamespace(remote=remote)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("key", "where"), [(NODE_KEY, "environment"), ("driver-key-0123456789", "argument")])
def test_the_key_goes_to_no_actor_whose_node_holds_it(ray_runtime: Any, key: str, where: str) -> None:
    """An actor whose node holds the run's key takes it from there, and is sent none; one whose node holds
    another key (or none) receives it with its share. Either way the server, which requires it, has it."""
    with ServerProcess("--api-key", key, "--tokens", str(TOKENS)) as url, RayBench() as bench:
        config = LoadConfig(base_url=url, model="scripted", api_key=key, concurrency=2)
        bench.place(2)
        calls: list[tuple[Any, ...]] = []
        for actor in bench.actors:
            actor.handle = RunSpy(actor.handle, calls)
        try:
            result = bench.run(config, requests(8))
        finally:
            for actor in bench.actors:
                actor.handle = actor.handle.handle
    assert [r.error for r in result.records] == [None] * 8
    assert [a.key for a in bench.actors] == [where] * 2
    assert [a["key"] for a in result_json(result)["streamkit"]["ray"]["actors"]] == [where] * 2
    assert len(calls) == 2 and (key.encode() in pickle.dumps(calls)) == (where == "argument")


def descendants(root: int) -> set[int]:
    """The process `root` and every process under it (by /proc: Linux only)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, more = {root}, {root}
    while more:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        found |= more
    return found


def listening(pids: set[int]) -> set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """The addresses and ports where these processes listen for TCP connections (by /proc: Linux only)."""
    sockets = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        sockets.add(target[len("socket:[") : -1])
    found = set()
    for kind in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{kind}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in sockets:  # 0A: LISTEN
                # The address as 32-bit words, each in the host's byte order; the port in hexadecimal
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
                ip = ipaddress.ip_address(
                    b"".join(w[::-1] if sys.byteorder == "little" else w for w in words)
                )
                found.add((ip, int(port, 16)))
    return found


def is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.mark.timeout(300)
@pytest.mark.skipif(sys.platform != "linux", reason="reads the listening sockets from /proc")
@pytest.mark.timeout(300)
def test_a_sweep_on_ray_gives_each_level_the_actors_it_keeps_busy(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason=f"the `ray` extra: {RAY_INSTALL}")
    out = tmp_path / "sweep.json"
    run = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "bench", "sweep", "--ray", "--workers", "2", "--num-requests",
         "6", "--concurrency", "1,2", "--model", "scripted", "--goodput", "ttft:10000", "--no-calibrate",
         "--output", str(out)],
        capture_output=True, text=True, timeout=280, env=ENV,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    sweep = json.loads(out.read_text())
    assert sweep["levels"] == [1, 2] and sweep["capacity"] == 2
    assert [r["streamkit"]["workers"] for r in sweep["runs"]] == [1, 2]
    assert [r["completed"] for r in sweep["runs"]] == [6, 6]
    assert "Capacity: concurrency 2" in run.stdout


def test_a_local_runtime_listens_on_loopback_and_its_actors_inherit_the_key(tmp_path: Path) -> None:
    """`--ray` alone: nothing of the run listens beyond this machine, and the key reaches the actors through
    their environment, never with the load."""
    pytest.importorskip("ray", reason=f"the `ray` extra: {RAY_INSTALL}")
    key, out = "cli-key-0123456789", tmp_path / "ray.json"
    with ServerProcess("--api-key", key, "--tokens", str(TOKENS)) as url:
        command = [sys.executable, "-m", "streamkit.cli", "bench", "--ray", "--workers", "2",
                   "--base-url", url, "--api-key", key, "--model", "scripted", "--concurrency", "2",
                   "--num-requests", "8", "--no-calibrate", "--output", str(out)]  # fmt: skip
        stderr = tmp_path / "stderr"
        with (
            stderr.open("w") as err,
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=ENV) as bench,
        ):
            addresses = set()
            while bench.poll() is None:  # Ray's processes listen from their start to the run's end
                addresses |= listening(descendants(bench.pid))
                time.sleep(0.2)
    assert bench.returncode == 0, stderr.read_text()
    # The GCS, the raylet, the actors' workers, Ray's agents: each on loopback
    assert len(addresses) >= 3 and all(is_loopback(ip) for ip, _ in addresses), addresses
    result = json.loads(out.read_text())
    assert result["completed"] == 8  # the server, which requires the key, had it from every actor
    assert [a["key"] for a in result["streamkit"]["ray"]["actors"]] == ["environment"] * 2


# Without Ray


def test_a_cluster_cannot_reach_the_built_in_server() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "bench", "--ray", "ray://127.0.0.1:1", "--workers", "2"],
        capture_output=True, text=True, timeout=60, env=ENV,
    )  # fmt: skip
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert "--ray ray://127.0.0.1:1 needs --base-url" in run.stderr


def test_an_address_where_nothing_listens_fails_at_once() -> None:
    pytest.importorskip("ray", reason=f"the `ray` extra: {RAY_INSTALL}")
    run = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "bench", "--ray", "127.0.0.1:1", "--base-url",
         "http://127.0.0.1:9/v1", "--model", "m"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "could not join the Ray cluster at 127.0.0.1:1" in run.stderr.splitlines()[-1]


def test_a_run_refuses_actors_the_load_would_leave_idle() -> None:
    pytest.importorskip("ray", reason=f"the `ray` extra: {RAY_INSTALL}")
    bench = RayBench(actors=[ActorInfo(f"streamkit-bench-{i}", i) for i in range(4)])  # as placed
    config = LoadConfig(base_url="u", model="m", concurrency=2)
    message = "4 Ray actors are placed, but the load keeps only 2 busy (concurrency 2): place 2"
    with pytest.raises(ValueError, match=re.escape(message)):
        bench.run(config, requests(40))
    with pytest.raises(ValueError, match=re.escape("keeps only 3 busy (3 requests): place 3")):
        bench.run(dataclasses.replace(config, concurrency=None, rate=10.0), requests(3))


def test_ray_error_lines_and_the_address_keep_no_credentials() -> None:
    error = RuntimeError("Traceback (most recent call last):\n  ...\nConnectError: http://alice:pw@host/v1")
    assert _one_line(error) == "ConnectError: http://host/v1"
    assert RayBench("ray://alice:pw@head:10001").summary()["address"] == "ray://head:10001"


def test_without_ray_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(RuntimeError, match=r'--ray needs Ray .*pip install -e "\.\[ray\]"'):
        RayBench().__enter__()


def test_merge_takes_each_parts_clock_offset_off() -> None:
    record = RequestRecord(0.5, 0.5, [0.1], [1], 1).to_dict()
    parts = [
        {"records": [record], "start_wall": 1000.0, "lag": [], "worker": 0},
        {
            "records": [dict(record, worker=1)],
            "start_wall": 1007.0,
            "lag": [],
            "worker": 1,
            "clock_offset": 5.0,
        },
    ]
    merged = merge_parts(parts)
    assert merged.start_wall == 1000.0
    assert [r.t0 for r in merged.records] == [0.5, 2.5]  # 7 s apart on its clock, 2 s on this one
    assert merge_parts(parts[1:]).start_wall == 1002.0


def fake_ray_run(uncertainty_ms: float, ttft: float, failed: list[str]) -> dict[str, Any]:
    records = [RequestRecord(0.0, 0.0, [ttft, ttft + 0.01], [1, 1], 2)]
    cluster = {
        "address": "auto",
        "nodes": [{"node_id": "n", "ip": "10.0.0.1", "hostname": "h", "actors": ["streamkit-bench-0"]}],
        "actors": [
            {
                "name": "streamkit-bench-0",
                "worker": 0,
                "node_id": "n",
                "ip": "10.0.0.1",
                "hostname": "h",
                "pid": 1,
                "offset_ms": 3.0,
                "uncertainty_ms": uncertainty_ms,
                "status": "ok",
                "error": "",
            },
        ],
        "max_uncertainty_ms": uncertainty_ms,
        "failed": failed,
    }
    return result_json(RunResult(records, 1.0, 1000.0, [0.001], ray=cluster))


def test_the_table_flags_an_uncertainty_large_next_to_the_ttft() -> None:
    clock = "clock offset uncertainty"
    assert not any(clock in f for f in fake_ray_run(4.0, 0.050, [])["streamkit"]["flags"])  # < 5 ms
    flagged = fake_ray_run(6.0, 0.050, [])
    assert any(clock in f and "10% of the median TTFT (50.0 ms)" in f for f in flagged["streamkit"]["flags"])
    assert "FLAG: clock offset uncertainty 6.00 ms" in table(flagged)
    assert "streamkit-bench-0 @ 10.0.0.1: clock offset (ms):" in table(flagged)
    partial = fake_ray_run(1.0, 0.050, ["streamkit-bench-1"])
    assert partial["streamkit"]["partial"] is True and any(
        "partial" in f for f in partial["streamkit"]["flags"]
    )


def test_the_driver_waits_a_bounded_time() -> None:
    closed = LoadConfig(base_url="u", model="m", concurrency=4, timeout=10.0, warm_connections=False)
    assert time_bound(closed, 40) == 100.0  # 10 waves of 4, each within the timeout
    assert time_bound(dataclasses.replace(closed, duration=3.0), sys.maxsize) == 13.0
    open_loop = LoadConfig(
        base_url="u", model="m", rate=10.0, timeout=10.0, duration=3.0, warm_connections=False
    )
    assert math.isfinite(time_bound(open_loop, sys.maxsize)) and time_bound(open_loop, sys.maxsize) == 13.0
    capped = dataclasses.replace(open_loop, concurrency=5)
    assert time_bound(capped, sys.maxsize) == 3.0 + math.ceil(70 / 5) * 10.0
    # The warm-up's one-token requests, all at once, and the --warmup requests: a timeout each
    assert time_bound(dataclasses.replace(closed, warm_connections=True), 40) == 110.0
    assert time_bound(dataclasses.replace(closed, warm_connections=True, warmup=2), 40) == 120.0
