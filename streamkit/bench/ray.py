"""The load on a Ray cluster: `streamkit bench --ray [ADDRESS]` (the `ray` extra).

Each worker is a Ray actor, placed with Ray's SPREAD strategy over the cluster's nodes. It runs the load
runner of one `--workers` process (`runner._worker`) on its share of the load, on its own event loop of the
`--loop` kind, in a thread of its own: the actor's Ray event loop stays free to answer the driver's clock and
liveness calls while the load runs. The driver measures each actor's clock offset from round trips before
the load, and merges the actors' records with `runner.merge_parts`, the code of `bench merge`, taking each
offset off.

An actor that dies, stops answering, or outlives the run's time bound is reported by name; the other actors'
records are kept and the result is marked partial. Ray is imported inside the functions here, so streamkit
works without it.

A local runtime started here listens on loopback only. The run's key goes to no actor whose node holds it in
the provider's variable (`OPENAI_API_KEY`, ...): a local runtime's processes inherit it from their start,
and a cluster's nodes may have it set. Ray's runtime environments are no way to send it: Ray logs their
variables, on every node.

    with RayBench(address=None) as bench:   # None: a local Ray runtime of its own; else ray.init(address)
        bench.place(2)
        calibration = bench.calibrate()
        result = bench.run(config, requests)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import importlib
import math
import os
import socket
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

from streamkit.bench.redact import public
from streamkit.bench.runner import (
    LoadConfig,
    RunResult,
    _worker,
    calibrate,
    key_variable,
    merge_parts,
    run_in_loop,
    split,
    worker_limit,
)
from streamkit.bench.workload import BenchRequest

__all__ = ["RAY_INSTALL", "ActorInfo", "RayBench", "time_bound"]

RAY_INSTALL = '.venv/bin/pip install -e ".[ray]"'
CLOCK_SAMPLES = 20
"""Round trips per actor for its clock offset: the one with the smallest round trip is kept."""
PLACEMENT_TIMEOUT = 60.0
"""Seconds for every actor to be placed and started; longer, and the actors still waiting are named."""
PING_INTERVAL = 5.0
"""How often the driver asks each running actor for its clock, to know that it is still there."""
PING_TIMEOUT = 30.0
"""An actor that leaves a clock call unanswered this long is taken for lost."""
JOIN_TIMEOUT = 10.0
"""Seconds to reach a cluster's address before Ray is asked to join it."""
GRACE = 60.0
"""Added to a run's own time bound: the actors' start, the transfer of their records."""
# Ray's processes listen on their node's address, and Ray puts a node on loopback where it takes the machine
# for a single-machine runtime: its default on macOS and Windows, and elsewhere where the variable
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is 0, which Ray reads into this constant when it is imported.
SINGLE_MACHINE = ("ray._private.ray_constants", "ENABLE_RAY_CLUSTER")


def _ray() -> Any:
    """The `ray` module. Raises RuntimeError, in one line that says how to install it, when it is missing."""
    try:
        import ray
    except ImportError:
        raise RuntimeError(f"--ray needs Ray (the `ray` extra), from the checkout: {RAY_INSTALL}") from None
    return ray


def _one_line(exc: BaseException) -> str:
    """A Ray error in one line: its last line says why (Ray's own are several lines long), with no URL's
    credentials."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    if "No module named 'streamkit'" in str(exc):
        text = "streamkit is not installed on that node (install the same version as the driver's)"
    return public(text)[:300]


@contextlib.contextmanager
def _started_with(environ: Mapping[str, str]) -> Iterator[None]:
    """A local Ray runtime started meanwhile is on loopback only (SINGLE_MACHINE), and its processes, hence
    its actors, inherit `environ`. This process's environment, and Ray's constant, are as they were after."""
    module, name = SINGLE_MACHINE
    try:
        constants = vars(importlib.import_module(module))
    except ImportError:  # a Ray that has moved it: the test of the local runtime's addresses says so
        constants = {}
    cluster = constants.get(name)
    saved = {key: os.environ.get(key) for key in environ}
    os.environ.update(environ)
    if name in constants:
        constants[name] = False
    try:
        yield
    finally:
        if name in constants:
            constants[name] = cluster
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _proof(key: str, nonce: bytes) -> str:
    """What shows that one holds `key` without showing the key: its HMAC of `nonce`."""
    return hmac.new(key.encode(), nonce, hashlib.sha256).hexdigest()


def _reachable(address: str, timeout: float = JOIN_TIMEOUT) -> None:
    """Raise RuntimeError, in one line, when nothing listens at a cluster's address (`host:port`,
    `ray://host:port`; for `auto`, RAY_ADDRESS when it is set). Ray itself would retry for minutes."""
    target = os.environ.get("RAY_ADDRESS", "") if address == "auto" else address
    host, _, port = target.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # `auto` with no RAY_ADDRESS: Ray looks for a cluster on this machine, and says if none
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RuntimeError(f"could not join the Ray cluster at {address}: {host}:{port}: {exc}") from None


def _answered(ray: Any, ref: Any) -> bool:
    """Whether a call has come back (with a value or an error), without waiting."""
    return bool(ray.wait([ref], timeout=0)[0])


class BenchActor:
    """The body of the bench's Ray actor (made remote by `RayBench.place`): one worker of the load."""

    def __init__(self, name: str, skew: float = 0.0) -> None:
        self._name = name
        self._skew = skew  # tests only: a clock this many seconds ahead, as another node's may be

    async def clock(self) -> float:
        """`time.time()` on the actor's node: its offset from the driver's clock is measured with it."""
        return time.time() + self._skew

    async def where(self) -> dict[str, Any]:
        """Where the actor runs: its node's id and host name, and its process."""
        import ray

        node_id: str = ray.get_runtime_context().get_node_id()
        return {"name": self._name, "node_id": node_id, "hostname": socket.gethostname(), "pid": os.getpid()}

    async def calibrate(self, loop: str) -> dict[str, float]:
        """The client's floor on this node (`runner.calibrate`), on an event loop of the `loop` kind."""
        return await asyncio.to_thread(lambda: run_in_loop(calibrate(), loop))

    async def key_proof(self, variable: str, nonce: bytes) -> str | None:
        """The proof (`_proof`) of the key in this node's environment variable `variable`; None where it is
        not set. The driver learns whether the node holds the run's key; the key crosses Ray neither way."""
        key = os.environ.get(variable)
        return None if key is None else _proof(key, nonce)

    async def run(self, config: LoadConfig, requests: Sequence[BenchRequest], worker: int) -> dict[str, Any]:
        """Run this worker's share as one `--workers` process would (`runner._worker`), on an event loop of
        the `config.loop` kind in a thread, and return its records: the same dict as a worker process's."""
        part = await asyncio.to_thread(_worker, config, requests, worker)
        part["start_wall"] += self._skew
        where = await self.where()
        part.update(actor=self._name, node_id=where["node_id"], hostname=where["hostname"])
        return part


@dataclass
class ActorInfo:
    """One actor of the run, as the driver knows it."""

    name: str
    worker: int
    handle: Any = None
    node_id: str = ""
    ip: str = ""
    hostname: str = ""
    pid: int = 0
    offset: float = 0.0
    """Its clock minus the driver's, in seconds."""
    uncertainty: float = math.nan
    """Half the shortest round trip of the offset's measurement: the offset is right within this."""
    status: str = "ok"
    """`ok`, `died`, `failed` (its run raised), `lost` (no answer) or `late` (past the run's time bound)."""
    error: str = ""
    key: str = ""
    """Where the actor took the run's key from: `environment` (its node's variable held that key, which was
    not sent), `argument` (sent with its share of the load), or empty (the run has none)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "worker": self.worker,
            "node_id": self.node_id,
            "ip": self.ip,
            "hostname": self.hostname,
            "pid": self.pid,
            "offset_ms": self.offset * 1000,
            "uncertainty_ms": None if math.isnan(self.uncertainty) else self.uncertainty * 1000,
            "status": self.status,
            "error": self.error,
            "key": self.key or None,
        }


def time_bound(config: LoadConfig, count: int) -> float:
    """How long a share of `count` requests can run at most, in seconds, when every request ends within
    `config.timeout`: the driver waits this long (plus GRACE) for an actor before it gives up on it."""
    # The warm-up requests, and the one-token requests that open the connections, each within a timeout.
    warmup = config.timeout * (bool(config.warmup) + config.warm_connections)
    if config.rate is None:  # closed loop: after the duration, only what is in flight still runs
        if config.duration is not None:
            return warmup + config.duration + config.timeout
        return warmup + math.ceil(count / (config.concurrency or 1)) * config.timeout
    finite = math.isfinite(config.rate)
    if config.duration is not None:
        sending = config.duration
        if finite:  # the arrivals before the duration: twice as many as expected is far beyond chance
            count = min(count, math.ceil(2 * config.rate * config.duration) + 10)
    else:
        sending = 2 * count / config.rate + 10 / config.rate if finite else 0.0
    waves = math.ceil(count / config.concurrency) if config.concurrency else 1
    return warmup + sending + waves * config.timeout


@dataclass
class RayBench:
    """A Ray runtime, started here (`address` None: a local one, stopped at the end) or joined (`auto`,
    `ray://host:port`, a GCS address; an initialized Ray is used as it is), and the bench's actors on it."""

    address: str | None = None
    local_cpus: int | None = None
    """The logical CPUs of a local runtime started here: at least the actors' count (each takes one)."""
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Variables that a local runtime started here has in its processes' environment, from their start: the
    run's key, under its provider's variable, so that it never crosses Ray. A cluster's nodes have theirs."""
    placement_timeout: float = PLACEMENT_TIMEOUT
    clock_skew: Mapping[int, float] = field(default_factory=dict)
    """Tests only: actor i's clock reads this many seconds ahead, as another node's may."""
    actors: list[ActorInfo] = field(default_factory=list)
    parts: list[dict[str, Any]] = field(default_factory=list)
    """What each actor that finished returned, as it returned it (before the merge)."""
    errors: list[str] = field(default_factory=list)
    """One line for each actor that failed, naming it."""
    _owned: bool = False

    def __enter__(self) -> RayBench:
        ray = _ray()
        if not ray.is_initialized():
            import logging

            options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            if self.address is None:
                cpus = max(self.local_cpus or 1, os.cpu_count() or 1)
                options.update(address="local", num_cpus=cpus, include_dashboard=False)
            else:
                _reachable(self.address)
                options.update(address=self.address)
            try:
                with _started_with(self.environ) if self.address is None else contextlib.nullcontext():
                    ray.init(**options)
            except (OSError, ValueError, RuntimeError) as exc:
                where = f"join the Ray cluster at {self.address}" if self.address else "start Ray"
                raise RuntimeError(f"could not {where}: {_one_line(exc)}") from None
            self._owned = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill the actors, and stop the runtime if it was started here. Safe to call more than once."""
        ray = _ray()
        try:
            if ray.is_initialized():
                for actor in self.actors:
                    if actor.handle is not None:
                        ray.kill(actor.handle)
                        actor.handle = None
        finally:
            if self._owned:
                self._owned = False
                ray.shutdown()

    def cpus(self) -> int:
        """The cluster's CPUs: what `--workers auto` means on Ray, one actor for each."""
        return max(1, int(_ray().cluster_resources().get("CPU", 1)))

    def place(self, count: int) -> None:
        """Start `count` actors spread over the nodes (`streamkit-bench-0`, ...) and measure their clocks: no
        more than the load keeps busy (`runner.worker_limit`), or `run` refuses it. Raises RuntimeError
        naming the actors that could not be placed or started in time."""
        ray = _ray()
        remote = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(BenchActor)
        namespace = f"streamkit-bench-{uuid.uuid4().hex[:8]}"  # two runs on one cluster never share names
        for i in range(count):
            name = f"streamkit-bench-{i}"
            handle = remote.options(name=name, namespace=namespace, scheduling_strategy="SPREAD").remote(
                name, self.clock_skew.get(i, 0.0)
            )
            self.actors.append(ActorInfo(name, i, handle))
        calls = {actor.handle.where.remote(): actor for actor in self.actors}
        ready, waiting = ray.wait(list(calls), num_returns=len(calls), timeout=self.placement_timeout)
        if waiting:
            names = ", ".join(calls[ref].name for ref in waiting)
            free = ray.available_resources().get("CPU", 0)
            raise RuntimeError(
                f"Ray actor(s) {names} not placed within {self.placement_timeout:g} s: each actor takes one "
                f"CPU and the cluster has {free:g} free (see `ray status`); use fewer --workers"
            )
        ips = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
        for ref in ready:
            actor = calls[ref]
            try:
                where = ray.get(ref)
            except ray.exceptions.RayError as exc:
                raise RuntimeError(f"Ray actor {actor.name} could not start: {_one_line(exc)}") from None
            actor.node_id, actor.hostname, actor.pid = where["node_id"], where["hostname"], where["pid"]
            actor.ip = ips.get(actor.node_id, "")
        for actor in self.actors:
            actor.offset, actor.uncertainty = self._clock(actor)

    def _clock(self, actor: ActorInfo) -> tuple[float, float]:
        """The actor's clock minus the driver's, and how far off that can be: of CLOCK_SAMPLES round trips,
        the one with the smallest round trip, whose midpoint is taken for the moment the actor read its
        clock; it read it at most half the round trip away from that."""
        ray = _ray()
        best: tuple[float, float, float] | None = None
        for _ in range(CLOCK_SAMPLES):
            t0 = time.time()
            try:
                t = ray.get(actor.handle.clock.remote(), timeout=PING_TIMEOUT)
            except ray.exceptions.RayError as exc:
                why = _one_line(exc)
                raise RuntimeError(f"Ray actor {actor.name}'s clock did not answer: {why}") from None
            t1 = time.time()
            if best is None or t1 - t0 < best[1] - best[0]:
                best = (t0, t1, t)
        assert best is not None
        t0, t1, t = best
        return t - (t0 + t1) / 2, (t1 - t0) / 2

    def calibrate(self, loop: str = "auto") -> dict[str, float]:
        """The client's floor measured by every actor on its node (`runner.calibrate`), all at once: the worst
        of them, as `bench merge` keeps, since the merged records are stamped as late as the latest."""
        ray = _ray()
        calls = [actor.handle.calibrate.remote(loop) for actor in self.actors]
        try:
            floors = ray.get(calls, timeout=self.placement_timeout + PING_TIMEOUT)
        except ray.exceptions.RayError as exc:
            raise RuntimeError(f"the Ray actors' calibration failed: {_one_line(exc)}") from None
        return {k: max(f[k] for f in floors) for k in floors[0]}

    def run(
        self, config: LoadConfig, requests: Sequence[BenchRequest], actors: int | None = None
    ) -> RunResult:
        """Run the load over the placed actors, or the first `actors` of them (a sweep's lighter levels), as
        over `--workers` processes (`runner.split`), and merge their records onto the driver's clock. An
        actor that fails is named in `errors`; the others' records are kept and the result is marked
        partial. Raises ValueError, before anything is sent, when the load keeps fewer actors busy than it
        is given (`runner.worker_limit`), and RuntimeError when no actor finished."""
        ray = _ray()
        self.parts, self.errors = [], []
        given = self.actors[: actors or len(self.actors)]
        shares = split(config, requests, len(given))
        if len(shares) < len(given):
            why = worker_limit(config, len(requests))[1]
            raise ValueError(f"{len(given)} Ray actors are placed, but {why}: place {len(shares)}")
        self._find_key(config)
        running = {}
        for actor, (share, part) in zip(given, shares, strict=True):
            if actor.key == "environment":  # without a key, the client reads the provider's variable
                share = replace(share, api_key=None)
            running[actor.handle.run.remote(share, part, actor.worker)] = actor
        bound = max(time_bound(c, len(r)) for c, r in shares) + GRACE
        deadline = time.monotonic() + bound
        pings: dict[int, tuple[Any, float]] = {}  # by worker: a clock call in flight, and when it was sent
        last_ping = time.monotonic()
        while running:
            wait = max(0.0, min(PING_INTERVAL, deadline - time.monotonic()))
            ready, _ = ray.wait(list(running), num_returns=1, timeout=wait)
            for ref in ready:
                actor = running.pop(ref)
                try:
                    part = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    self._fail(actor, "died", f"died: {_one_line(exc)}")
                except ray.exceptions.RayError as exc:
                    self._fail(actor, "failed", f"failed: {_one_line(exc)}")
                else:
                    part["clock_offset"] = actor.offset
                    self.parts.append(part)
            now = time.monotonic()
            for ref, actor in list(running.items()):
                ping = pings.get(actor.worker)
                if now >= deadline:
                    self._fail(actor, "late", f"did not finish within {bound:.0f} s, and was stopped")
                elif ping is not None and not _answered(ray, ping[0]) and now - ping[1] > PING_TIMEOUT:
                    self._fail(actor, "lost", f"left a clock call unanswered for {PING_TIMEOUT:g} s")
                else:
                    continue
                del running[ref]
            if now - last_ping >= PING_INTERVAL:  # a new clock call to each actor that answered the last
                last_ping = now
                for actor in running.values():
                    ping = pings.get(actor.worker)
                    if ping is None or _answered(ray, ping[0]):
                        pings[actor.worker] = (actor.handle.clock.remote(), now)
        if not self.parts:
            raise RuntimeError("no Ray actor finished: " + "; ".join(self.errors))
        result = merge_parts(self.parts, workers=len(shares))
        result.ray = self.summary()
        return result

    def _find_key(self, config: LoadConfig) -> None:
        """Which actors' nodes hold the run's key in its provider's variable (`OPENAI_API_KEY`, ...), as each
        proves for a fresh nonce (`BenchActor.key_proof`): those take it from there (`ActorInfo.key`), the
        others receive it with their share. Raises RuntimeError when an actor does not answer."""
        if config.api_key is None:
            for actor in self.actors:
                actor.key = ""
            return
        ray = _ray()
        nonce = os.urandom(32)
        calls = [actor.handle.key_proof.remote(key_variable(config.api), nonce) for actor in self.actors]
        try:
            proofs = ray.get(calls, timeout=PING_TIMEOUT)
        except ray.exceptions.RayError as exc:
            raise RuntimeError(f"the Ray actors did not answer: {_one_line(exc)}") from None
        expected = _proof(config.api_key, nonce)
        for actor, proof in zip(self.actors, proofs, strict=True):
            held = proof is not None and hmac.compare_digest(proof, expected)
            actor.key = "environment" if held else "argument"

    def _fail(self, actor: ActorInfo, status: str, why: str) -> None:
        actor.status, actor.error = status, why
        where = f" on node {actor.ip}" if actor.ip else ""
        self.errors.append(f"Ray actor {actor.name}{where} {why}")
        if actor.handle is not None and status != "died":
            _ray().kill(actor.handle)  # nothing of it is waited for any more
            actor.handle = None

    def summary(self) -> dict[str, Any]:
        """What the result file keeps of the cluster (`streamkit.ray`): its nodes, the actors with their clock
        offsets and uncertainties, and the actors that failed."""
        nodes: dict[str, dict[str, Any]] = {}
        for actor in self.actors:
            node = nodes.setdefault(
                actor.node_id,
                {"node_id": actor.node_id, "ip": actor.ip, "hostname": actor.hostname, "actors": []},
            )
            node["actors"].append(actor.name)
        known = [a.uncertainty for a in self.actors if not math.isnan(a.uncertainty)]
        return {
            "address": public(self.address) if self.address else "local",
            "nodes": list(nodes.values()),
            "actors": [actor.to_dict() for actor in self.actors],
            "max_uncertainty_ms": max(known) * 1000 if known else None,
            "failed": [a.name for a in self.actors if a.status != "ok"],
        }
