"""`streamkit bench`: measure an OpenAI-compatible endpoint's TTFT and streaming latencies under load.

streamkit bench --base-url http://localhost:8000/v1 --model m --concurrency 64 --num-requests 1000
streamkit bench --rate 20 --burstiness 0.5 --duration 60 --output result.json --plot result.html
streamkit bench merge a.json b.json --output all.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from streamkit.bench.metrics import RequestRecord, Slo
from streamkit.bench.plots import check_path, plot
from streamkit.bench.redact import public
from streamkit.bench.report import error_kinds, load_result, merge_results, result_json, save_requests, table
from streamkit.bench.runner import (
    LoadConfig,
    RunResult,
    auto_workers,
    calibrate,
    key_variable,
    run_in_loop,
    run_load,
    run_workers,
    split,
    warm_slots,
    worker_limit,
)
from streamkit.bench.scrape import MetricsScraper
from streamkit.bench.sweep import capacity_line, sweep_header, sweep_result, sweep_row
from streamkit.bench.workload import Requests, generated_requests, load_requests
from streamkit.protocols import APIS

if TYPE_CHECKING:
    from streamkit.bench.ray import RayBench

__all__ = ["add_parser", "run"]

LOCAL = "local"  # `--ray` alone: a local Ray runtime, started for the run
SCRIPTED = "scripted"  # `--model scripted`, no endpoint: the built-in scripted server, not the local model

UNSET = 0  # `--workers` not given: auto for processes, one Ray actor with --ray

_N = TypeVar("_N", int, float)


class _Help(argparse.HelpFormatter):
    """`--help` with each option's default, where it has one worth showing (not None, not False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or "default" in text or default in (None, False, argparse.SUPPRESS):
            return text
        if not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure an endpoint's TTFT and streaming latencies under load",
        description="Measure an endpoint's TTFT and streaming latencies under load. `run` (the default) "
        "measures one load; `sweep` measures one load per level of --concurrency or --rate and finds the "
        "capacity, the highest level at which the requests met their --goodput targets; `merge` makes one "
        "run of several result files.",
        formatter_class=_Help,
    )
    p.add_argument(
        "action", nargs="?", choices=["run", "sweep", "merge"], default="run", help="run, sweep or merge"
    )
    p.add_argument("files", nargs="*", type=Path, help="result files to merge (with `merge`)")
    target = p.add_argument_group("endpoint")
    target.add_argument(
        "--base-url",
        help="API base URL (default: OPENAI_BASE_URL, or ANTHROPIC_BASE_URL for messages; else the embedded "
        "local model, as `streamkit chat` talks to it)",
    )
    target.add_argument(
        "--api-key", help="API key (default: OPENAI_API_KEY, or ANTHROPIC_API_KEY for messages)"
    )
    target.add_argument(
        "--model",
        help="model name (default: the endpoint's first model in /v1/models). With no endpoint, "
        f"`--model {SCRIPTED}` measures the built-in scripted server instead of the local model",
    )
    target.add_argument(
        "--api",
        choices=list(APIS),
        default="chat",
        help="the API to measure: chat, completions (legacy), responses, messages (Anthropic)",
    )
    target.add_argument(
        "--transport", choices=["aiohttp", "httpx"], default="aiohttp", help="the client's HTTP transport"
    )
    load = p.add_argument_group("load")
    load.add_argument(
        "--concurrency",
        type=_levels(_count),
        metavar="N[,N...]",
        help="closed loop with N slots; with --rate, a cap in flight. `sweep`: the levels, 1,2,4,8",
    )
    load.add_argument(
        "--rate",
        type=_levels(_rate),
        metavar="R[,R...]",
        help="open loop: requests per second (inf: all at once). `sweep`: the levels, 1,2,4",
    )
    load.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps (1: Poisson)")
    load.add_argument("--num-requests", type=_count, default=100, help="requests (with `sweep`, per level)")
    load.add_argument("--duration", type=float, help="stop sending after this many seconds")
    load.add_argument("--warmup", type=int, default=0, help="requests sent first and not measured")
    load.add_argument(
        "--no-warm-connections",
        dest="warm_connections",
        action="store_false",
        help="do not open one connection per slot, with a one-token request each, before measuring",
    )
    load.add_argument(
        "--workers",
        type=_worker_count,
        default=UNSET,
        help="spread the load over K processes, one event loop each. auto (the default): one per 128 streams "
        "in flight, one per core at most, as one event loop stamps up to 128 on time. With --ray, the "
        "number of actors (default 1; auto: one per CPU of the cluster)",
    )
    load.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help="run the workers as Ray actors (the `ray` extra): alone, on a local Ray runtime started for the "
        "run; auto or ray://HOST:PORT, on a cluster. --workers is then the number of actors (auto: one per "
        "CPU of the cluster)",
    )
    load.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="each process's event loop (auto: uvloop where installed, the `bench` extra)",
    )
    load.add_argument("--seed", type=int, default=0, help="seed of the generated prompts and arrival times")
    load.add_argument("--timeout", type=float, default=600.0, help="per-request limit in seconds")
    data = p.add_argument_group("requests")
    data.add_argument("--input-len", type=int, default=32, help="prompt length in words (generated prompts)")
    data.add_argument("--output-len", type=int, default=128, help="max_tokens of each request")
    data.add_argument("--requests-file", type=Path, help="a JSONL file of request bodies")
    data.add_argument(
        "--extra-body", default="{}", help='JSON merged into every body, e.g. {"ignore_eos": true}'
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--goodput",
        nargs="+",
        metavar="NAME:MS",
        help="goodput targets in ms, as vLLM spells them: --goodput ttft:500 tpot:50 e2el:10000",
    )
    out.add_argument("--slo", help="goodput targets in ms, the same as --goodput: ttft=500,tpot=50")
    out.add_argument(
        "--slo-fraction",
        type=_fraction,
        default=0.99,
        help="`sweep`: the share of requests that must meet every target for a level to count",
    )
    out.add_argument(
        "--server-metrics",
        metavar="URL",
        help="scrape this Prometheus endpoint at the start, every second and at the end (default: the "
        "built-in server's or the local model's own, when the bench started it)",
    )
    out.add_argument("--output", "-o", type=Path, help="write the result JSON here")
    out.add_argument("--save-requests", type=Path, help="write one JSON line per request here")
    out.add_argument("--plot", type=Path, help="write plots to a .html or .png file")
    out.add_argument("--no-calibrate", action="store_true", help="skip measuring the client's own floor")
    out.add_argument("--quiet", action="store_true", help="no progress display")


def _levels(kind: Callable[[str], _N]) -> Callable[[str], list[_N]]:
    """A comma-separated list of `kind` values: one for a run, several for a sweep's levels."""

    def parse(value: str) -> list[_N]:
        levels = [kind(item.strip()) for item in value.split(",") if item.strip()]
        if not levels:
            raise argparse.ArgumentTypeError(f"{value!r} names no level")
        return levels

    return parse


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a rate in requests per second") from None
    if not rate > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive rate")
    return rate


def _fraction(value: str) -> float:
    try:
        fraction = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 < fraction <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not a share in (0, 1]")
    return fraction


def _count(value: str) -> int:
    """`--concurrency` and `--num-requests`: a whole number, at least 1 (fewer would send nothing)."""
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{count} is not at least 1")
    return count


def _cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _worker_count(value: str) -> int | None:
    """`--workers` as parsed: a count, or None for `auto` (the cores here; with --ray, the cluster's CPUs)."""
    if value == "auto":
        return None
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of workers, nor auto") from None
    if count < 1:
        raise argparse.ArgumentTypeError("--workers must be at least 1")
    return count


def _starting(
    config: LoadConfig, requests: Requests, asked: int | None, auto: Callable[[], int], noun: str
) -> int:
    """How many workers to start: `--workers` (None: `auto()`), but no more than the load keeps busy
    (`runner.worker_limit`). One line on stderr says so when that is fewer than asked."""
    wanted = asked or auto()
    limit, why = worker_limit(config, len(requests))
    if wanted <= limit:
        return wanted
    given = "" if asked else " (--workers auto)"
    plural = "s" if limit != 1 else ""
    print(f"streamkit bench: starting {limit} {noun}{plural}, not {wanted}{given}: {why}", file=sys.stderr)
    return limit


def _processes(config: LoadConfig, requests: Requests, asked: int | None) -> int:
    """The worker processes of a load: `--workers K` (`_starting`), or for auto, as many as it needs
    (`runner.auto_workers`: one per 128 streams in flight, one per core at most)."""
    if asked in (None, UNSET):
        return auto_workers(config, len(requests), _cores())
    return _starting(config, requests, asked, _cores, "worker")


def _warming(config: LoadConfig, requests: Requests, workers: int) -> None:
    """One line on stderr: the connections the warm-up opens before measuring, where it opens any."""
    shares = split(config, requests, workers) if workers > 1 else [(config, requests)]
    warm = sum(warm_slots(c, len(r)) for c, r in shares)
    if warm:
        plural = "s" if warm != 1 else ""
        print(
            f"streamkit bench: warming up {warm} connection{plural}, one per slot, with a one-token request "
            "each, not measured",
            file=sys.stderr,
        )


def _fail(message: str) -> int:
    print(f"streamkit bench: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run `streamkit bench` with parsed arguments; returns the exit status."""
    try:
        slo = _slo(args)
        if args.plot is not None:
            check_path(args.plot)  # before the run: a plot it cannot write would lose the whole run
        if args.action == "merge":
            if len(args.files) < 1:
                return _fail("merge needs result files")
            result = merge_results([load_result(f) for f in args.files], slo)
            _emit(result, args)
            return 0
        if args.files:
            return _fail("result files are only for `merge`")
        levels = _sweep_levels(args)
        extra = json.loads(args.extra_body)
        if not isinstance(extra, dict):
            return _fail("--extra-body must be a JSON object")
        return _run(args, slo, extra, levels)
    except (ValueError, OSError, RuntimeError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("streamkit bench: interrupted", file=sys.stderr)
        return 130


def _slo(args: argparse.Namespace) -> Slo | None:
    if args.goodput and args.slo:
        raise ValueError("give the targets once: --goodput or --slo")
    spec = " ".join(args.goodput) if args.goodput else args.slo
    return Slo.parse(spec) if spec else None


def _sweep_levels(args: argparse.Namespace) -> tuple[str, list[float]] | None:
    """A sweep's levels, by the setting they vary (`concurrency` or `rate`); None for a single run. The
    settings not varied are left in `args` as one value (or None), the varied one as None. Raises ValueError
    for a list outside a sweep, and for a sweep that does not name one setting's levels."""
    given = {name: getattr(args, name) for name in ("concurrency", "rate") if getattr(args, name)}
    lists = [name for name, values in given.items() if len(values) > 1]
    if args.action != "sweep":
        if lists:
            raise ValueError("a list of levels is for `streamkit bench sweep`")
        varied = None
    elif len(lists) > 1:
        raise ValueError("sweep varies one setting: give --concurrency or --rate a list, not both")
    elif lists or len(given) == 1:
        varied = lists[0] if lists else next(iter(given))
    else:
        raise ValueError("sweep needs the levels of one setting: --concurrency 1,2,4,8 or --rate 1,2,4")
    for name, values in given.items():
        setattr(args, name, None if name == varied else values[0])
    return None if varied is None else (varied, sorted(set(given[varied])))


@dataclass
class _Target:
    """What is measured: the endpoint, its key and model, and its Prometheus metrics, if any."""

    base_url: str
    api_key: str | None = field(repr=False)
    model: str
    metrics_url: str | None = None
    note: str = ""


def _target(args: argparse.Namespace, stack: contextlib.ExitStack) -> _Target:
    """The configured endpoint; else the embedded local model (as `streamkit chat` talks to it), or the
    built-in scripted server for `--model scripted` or where the local model is not installed. A server the
    bench starts runs until `stack` closes, and gets no key from the environment: the provider's key is for
    the provider."""
    from streamkit.server import ServerConfig, ServerThread
    from streamkit.server.local import MODEL_NAME, LocalModel, LocalModelUnavailable

    api = APIS[args.api]
    provider = api.provider.upper()
    base_url = args.base_url or os.environ.get(f"{provider}_BASE_URL")
    if base_url and not args.base_url and provider == "ANTHROPIC":
        base_url = base_url.rstrip("/") + "/v1"  # Anthropic's base URLs have no /v1: its SDK adds it
    if base_url is not None:
        api_key = args.api_key or os.environ.get(key_variable(args.api))
        model = args.model or listed_model(base_url, api_key, api.provider, args.transport)
        return _Target(base_url, api_key, model, args.server_metrics)
    why = ""
    if args.model != SCRIPTED:
        try:
            local = stack.enter_context(LocalModel(metrics=True))
        except LocalModelUnavailable as exc:
            why = f" ({exc})"
        else:
            note = (
                f"no endpoint given; measuring the embedded local model ({MODEL_NAME} on llama.cpp) at "
                f"{local.base_url}, as `streamkit chat` talks to it (--model {SCRIPTED}: the scripted server)"
            )
            return _Target(local.base_url, args.api_key, args.model or MODEL_NAME, local.metrics_url, note)
    server = stack.enter_context(ServerThread(ServerConfig(any_model=True)))
    note = f"no endpoint given; measuring the built-in scripted server at {server.base_url}{why}"
    metrics_url = server.base_url.removesuffix("/v1") + "/metrics"
    return _Target(server.base_url, args.api_key, args.model or SCRIPTED, metrics_url, note)


def _run(
    args: argparse.Namespace, slo: Slo | None, extra: dict[str, Any], levels: tuple[str, list[float]] | None
) -> int:
    api = APIS[args.api]
    configured = args.base_url or os.environ.get(f"{api.provider.upper()}_BASE_URL")
    if args.ray not in (None, LOCAL) and not configured:
        # The bench's own servers listen on this machine's loopback, which a cluster's nodes cannot reach.
        return _fail(
            f"--ray {args.ray} needs --base-url: the built-in server serves this machine only (on a cluster, "
            "run `streamkit serve --host 0.0.0.0 --api-key KEY` on a node and pass its URL and --api-key KEY)"
        )
    runs: list[dict[str, Any]] = []
    interrupted = False
    with contextlib.ExitStack() as stack:
        ray_bench = None
        if args.ray is not None:
            from streamkit.bench.ray import RayBench

            address = None if args.ray == LOCAL else args.ray
            api_key = args.api_key or os.environ.get(key_variable(args.api))
            # A local runtime's processes inherit the key from their start, so it never crosses Ray.
            environ = {key_variable(args.api): api_key} if api_key else {}
            if args.workers == UNSET:
                args.workers = 1
            ray_bench = stack.enter_context(RayBench(address, local_cpus=args.workers, environ=environ))
        target = _target(args, stack)
        if target.note:
            print(f"streamkit bench: {target.note}", file=sys.stderr)
        count = args.num_requests if args.duration is None else None  # made as they are sent
        if args.requests_file:
            requests = load_requests(args.requests_file, count, api=api, extra_body=extra)
        else:
            requests = generated_requests(
                count, args.input_len, args.output_len, api=api, seed=args.seed, extra_body=extra
            )
        name, values = levels or ("", [math.nan])
        configs = [_config(args, target, name, value) for value in values]
        if ray_bench is not None:
            counts = [_starting(c, requests, args.workers, ray_bench.cpus, "Ray actor") for c in configs]
            ray_bench.place(max(counts))
            calibration = None if args.no_calibrate else ray_bench.calibrate(args.loop)
        else:
            counts = [_processes(c, requests, args.workers) for c in configs]
            calibration = None if args.no_calibrate else run_in_loop(calibrate(), args.loop)
        if levels:
            measured = {
                "Endpoint": public(target.base_url),
                "API": args.api,
                "Model": target.model,
                "Requests per level": len(requests) if args.duration is None else f"for {args.duration:g} s",
                "Output length (max tokens)": "as the file says" if args.requests_file else args.output_len,
            }
            if args.warm_connections:
                measured["Warm-up"] = "one connection per slot, a one-token request each, not measured"
            print(sweep_header(name, slo, args.slo_fraction, measured))
        try:
            for value, config, workers in zip(values, configs, counts, strict=True):
                label = f"{name}{value:g}" if levels else ""
                output = _measure(args, target, config, requests, workers, ray_bench, slo, calibration, label)
                runs.append(output)
                if levels:
                    print(sweep_row(name, output), flush=True)
        except KeyboardInterrupt:
            if not levels or not runs:
                raise
            interrupted = True
            print("streamkit bench: interrupted; keeping the levels measured", file=sys.stderr)
    if levels is None:
        output = runs[0]
        _emit(output, args)
        return _status(output)
    sweep = sweep_result(runs, name, slo, args.slo_fraction, interrupted)
    print(capacity_line(sweep))
    _emit_sweep(sweep, args)
    if interrupted:
        return 130
    return 1 if all(run["completed"] == 0 for run in runs) else 0


def _config(args: argparse.Namespace, target: _Target, setting: str, level: float) -> LoadConfig:
    """The load of one run: the options, with `setting` (of a sweep) at `level`."""
    concurrency, rate = args.concurrency, args.rate
    if setting == "concurrency":
        concurrency = int(level)
    elif setting == "rate":
        rate = level
    if rate is None and concurrency is None:
        concurrency = 1
    return LoadConfig(
        base_url=target.base_url, model=target.model, api_key=target.api_key, api=args.api,
        concurrency=concurrency, rate=rate, burstiness=args.burstiness, duration=args.duration,
        warmup=args.warmup, warm_connections=args.warm_connections, seed=args.seed, timeout=args.timeout,
        transport=args.transport, loop=args.loop,
    )  # fmt: skip


def _measure(
    args: argparse.Namespace,
    target: _Target,
    config: LoadConfig,
    requests: Requests,
    workers: int,
    ray_bench: RayBench | None,
    slo: Slo | None,
    calibration: dict[str, float] | None,
    label: str = "",
) -> dict[str, Any]:
    """One measured run, as its result file has it, with the server's metrics scraped meanwhile. `label`
    names a sweep's level (`concurrency4`)."""
    scraper = MetricsScraper(target.metrics_url) if target.metrics_url else None
    if scraper is not None:
        scraper.start()
    if not label:  # a sweep says it once, in its head
        _warming(config, requests, workers)
    try:
        if ray_bench is not None:
            result = ray_bench.run(config, requests, actors=workers)
            for line in ray_bench.errors:
                print(f"streamkit bench: {line}", file=sys.stderr)
        elif workers > 1:
            result = run_workers(config, requests, workers)
        else:
            result = _with_progress(config, requests, args)
    finally:
        if scraper is not None:
            scraper.stop()
    settings = {
        "model": target.model,
        "base_url": target.base_url,
        "endpoint_type": args.api,
        "num_prompts": len(result.records),
        "output_len": None if args.requests_file else args.output_len,
        "request_rate": "inf" if config.rate is None else config.rate,
        "burstiness": config.burstiness,
        "max_concurrency": config.concurrency,
    }
    capped = config.rate is None or config.concurrency is not None
    output = result_json(result, slo, settings, calibration, capped)
    if scraper is not None:
        output["server_metrics"] = scraper.result(result.start_wall)
        output["streamkit"]["server_metrics_url"] = public(scraper.url)
        output["streamkit"]["server_metrics_failures"] = scraper.failures
    if args.save_requests:
        path = args.save_requests
        if label:  # a sweep's levels each write their own: requests.jsonl, requests-concurrency4.jsonl
            path = path.with_name(f"{path.stem}-{label}{path.suffix}")
        save_requests(result, path)
    return output


def _status(output: dict[str, Any]) -> int:
    """A run's exit status: 1 when every request failed (their errors said by kind on stderr), or when Ray
    actors failed; else 0."""
    if output["completed"] == 0:
        kinds = error_kinds(output["streamkit"]["records"])
        summary = "; ".join(f"{count} x {kind}" for kind, count in kinds[:3]) or "no request was sent"
        print(f"streamkit bench: every request failed: {summary}", file=sys.stderr)
        return 1
    return 1 if output["streamkit"].get("partial") else 0


def _emit(result: dict[str, Any], args: argparse.Namespace) -> None:
    if args.output:
        args.output.write_text(json.dumps(result) + "\n", encoding="utf-8")
    if args.plot:
        plot(result, args.plot)
    print(table(result, {"output": args.output, "plot": args.plot}))


def _emit_sweep(sweep: dict[str, Any], args: argparse.Namespace) -> None:
    if args.output:
        args.output.write_text(json.dumps(sweep) + "\n", encoding="utf-8")
        print(f"Output written to {args.output}")
    if args.plot:
        plot(sweep, args.plot)
        print(f"Plot written to {args.plot}")


def listed_model(
    base_url: str | None,
    api_key: str | None,
    provider: Literal["openai", "anthropic"] = "openai",
    transport: Literal["aiohttp", "httpx"] = "aiohttp",
) -> str:
    """The first model the endpoint lists (`client.models.list`), asked through a client of its own, with
    the provider's key header. Raises RuntimeError, which says to pass --model, when the endpoint cannot list
    its models or lists none."""
    import asyncio

    from streamkit.client import AsyncClient
    from streamkit.errors import StreamkitError

    async def models() -> list[str]:
        async with AsyncClient(base_url=base_url, api_key=api_key, transport=transport) as client:
            return [model.id for model in await client.models.list(provider=provider)]

    shown = public(base_url or "the default endpoint")
    try:
        names = asyncio.run(models())
    except StreamkitError as exc:
        reason = public(" ".join(f"{type(exc).__name__}: {exc}".split()))
        raise RuntimeError(f"could not list the models at {shown} ({reason}); pass --model") from None
    if not names:
        raise RuntimeError(f"{shown}/models lists no model; pass --model")
    return names[0]


def _with_progress(config: LoadConfig, requests: Requests, args: argparse.Namespace) -> RunResult:
    if args.quiet or not sys.stderr.isatty():
        return run_in_loop(run_load(config, requests), config.loop)
    try:
        from rich.progress import Progress
    except ImportError:
        return run_in_loop(run_load(config, requests), config.loop)
    total = None if args.duration is not None else len(requests)
    # Twice a second, not rich's 10: each refresh renders the display in a thread that takes the GIL from the
    # loop that stamps the arrivals.
    with Progress(transient=True, refresh_per_second=2) as progress:
        task = progress.add_task("requests", total=total)
        failed = 0

        def advance(record: RequestRecord) -> None:
            nonlocal failed
            failed += not record.ok
            progress.update(task, advance=1, description=f"requests ({failed} failed)")

        return run_in_loop(run_load(config, requests, progress=advance), config.loop)
