"""`streamkit bench`: measure an OpenAI-compatible endpoint's TTFT and streaming latencies under load.

streamkit bench --base-url http://localhost:8000/v1 --model m --concurrency 64 --num-requests 1000
streamkit bench --rate 20 --burstiness 0.5 --duration 60 --output result.json --plot result.html
streamkit bench merge a.json b.json --output all.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from streamkit.bench.metrics import RequestRecord, Slo
from streamkit.bench.redact import public
from streamkit.bench.report import load_result, merge_results, plot, result_json, save_requests, table
from streamkit.bench.runner import (
    LoadConfig,
    RunResult,
    calibrate,
    key_variable,
    run_in_loop,
    run_load,
    run_workers,
    worker_limit,
)
from streamkit.bench.workload import Requests, generated_requests, load_requests
from streamkit.protocols import APIS

__all__ = ["add_parser", "run"]

LOCAL = "local"  # `--ray` alone: a local Ray runtime, started for the run


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="measure an endpoint's TTFT and streaming latencies under load")
    p.add_argument(
        "action", nargs="?", choices=["run", "merge"], default="run", help="run (default) or merge"
    )
    p.add_argument("files", nargs="*", type=Path, help="result files to merge (with `merge`)")
    target = p.add_argument_group("endpoint")
    target.add_argument(
        "--base-url",
        help="API base URL (default: OPENAI_BASE_URL, or ANTHROPIC_BASE_URL for messages; else the built-in "
        "server)",
    )
    target.add_argument(
        "--api-key", help="API key (default: OPENAI_API_KEY, or ANTHROPIC_API_KEY for messages)"
    )
    target.add_argument("--model", help="model name (default: the endpoint's first model in /v1/models)")
    target.add_argument(
        "--api",
        choices=list(APIS),
        default="chat",
        help="the API to measure: chat (default), completions (legacy), responses, messages (Anthropic)",
    )
    target.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    load = p.add_argument_group("load")
    load.add_argument(
        "--concurrency", type=_count, help="closed loop with N slots; with --rate, a cap in flight"
    )
    load.add_argument("--rate", type=float, help="open loop: requests per second (inf: all at once)")
    load.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps (1: Poisson)")
    load.add_argument("--num-requests", type=_count, default=100)
    load.add_argument("--duration", type=float, help="stop sending after this many seconds")
    load.add_argument("--warmup", type=int, default=0, help="requests sent first and not measured")
    load.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        help="spread the load over K processes, one event loop each; auto: one per core this process may use",
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
        help="each process's event loop (default: uvloop where installed, the `bench` extra)",
    )
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--timeout", type=float, default=600.0, help="per-request limit in seconds")
    data = p.add_argument_group("requests")
    data.add_argument("--input-len", type=int, default=32, help="prompt length in words (generated prompts)")
    data.add_argument("--output-len", type=int, default=128, help="max_tokens of each request")
    data.add_argument("--requests-file", type=Path, help="a JSONL file of request bodies")
    data.add_argument(
        "--extra-body", default="{}", help='JSON merged into every body, e.g. {"ignore_eos": true}'
    )
    out = p.add_argument_group("output")
    out.add_argument("--slo", help="goodput objectives in ms: ttft=500,tpot=50,e2el=10000")
    out.add_argument("--output", "-o", type=Path, help="write the result JSON here")
    out.add_argument("--save-requests", type=Path, help="write one JSON line per request here")
    out.add_argument("--plot", type=Path, help="write plots to a .html or .png file")
    out.add_argument("--no-calibrate", action="store_true", help="skip measuring the client's own floor")
    out.add_argument("--quiet", action="store_true", help="no progress display")


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


def _fail(message: str) -> int:
    print(f"streamkit bench: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run `streamkit bench` with parsed arguments; returns the exit status."""
    try:
        slo = Slo.parse(args.slo) if args.slo else None
        if args.action == "merge":
            if len(args.files) < 1:
                return _fail("merge needs result files")
            result = merge_results([load_result(f) for f in args.files], slo)
            _emit(result, args)
            return 0
        if args.files:
            return _fail("result files are only for `merge`")
        extra = json.loads(args.extra_body)
        if not isinstance(extra, dict):
            return _fail("--extra-body must be a JSON object")
        return _run(args, slo, extra)
    except (ValueError, OSError, RuntimeError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("streamkit bench: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, slo: Slo | None, extra: dict[str, Any]) -> int:
    from streamkit.server import ServerConfig, ServerThread

    # Each provider's own variables: a key from one is never sent to the other's API.
    provider = APIS[args.api].provider.upper()
    base_url = args.base_url or os.environ.get(f"{provider}_BASE_URL")
    if base_url and not args.base_url and provider == "ANTHROPIC":
        base_url = base_url.rstrip("/") + "/v1"  # Anthropic's base URLs have no /v1: its SDK adds it
    api_key = args.api_key or os.environ.get(key_variable(args.api))
    if args.ray not in (None, LOCAL) and base_url is None:
        # The built-in server listens on this machine's loopback, which a cluster's nodes cannot reach.
        return _fail(
            f"--ray {args.ray} needs --base-url: the built-in server serves this machine only (on a cluster, "
            "run `streamkit serve --host 0.0.0.0 --api-key KEY` on a node and pass its URL and --api-key KEY)"
        )
    ray_bench = None
    with contextlib.ExitStack() as stack:
        if args.ray is not None:
            from streamkit.bench.ray import RayBench

            address = None if args.ray == LOCAL else args.ray
            # A local runtime's processes inherit the key from their start, so it never crosses Ray.
            environ = {key_variable(args.api): api_key} if api_key else {}
            ray_bench = stack.enter_context(RayBench(address, local_cpus=args.workers, environ=environ))
        if base_url is None:
            base_url = stack.enter_context(ServerThread(ServerConfig())).base_url
            print(
                f"streamkit bench: no endpoint given; measuring the built-in server at {base_url}",
                file=sys.stderr,
            )
        model = args.model or listed_model(base_url, api_key, APIS[args.api].provider, args.transport)
        api = APIS[args.api]
        count = args.num_requests if args.duration is None else None  # made as they are sent
        if args.requests_file:
            requests = load_requests(args.requests_file, count, api=api, extra_body=extra)
        else:
            requests = generated_requests(
                count, args.input_len, args.output_len, api=api, seed=args.seed, extra_body=extra
            )
        if args.rate is None and args.concurrency is None:
            args.concurrency = 1
        config = LoadConfig(
            base_url=base_url, model=model, api_key=api_key, api=args.api, concurrency=args.concurrency,
            rate=args.rate, burstiness=args.burstiness, duration=args.duration, warmup=args.warmup,
            seed=args.seed, timeout=args.timeout, transport=args.transport, loop=args.loop,
        )  # fmt: skip
        if ray_bench is not None:
            ray_bench.place(_starting(config, requests, args.workers, ray_bench.cpus, "Ray actor"))
            calibration = None if args.no_calibrate else ray_bench.calibrate(args.loop)
            result = ray_bench.run(config, requests)
            for line in ray_bench.errors:
                print(f"streamkit bench: {line}", file=sys.stderr)
        else:
            calibration = None if args.no_calibrate else run_in_loop(calibrate(), args.loop)
            workers = _starting(config, requests, args.workers, _cores, "worker")
            if workers > 1:
                result = run_workers(config, requests, workers)
            else:
                result = _with_progress(config, requests, args)
    settings = {
        "model": model,
        "base_url": base_url,
        "endpoint_type": args.api,
        "num_prompts": len(result.records),
        "request_rate": "inf" if args.rate is None else args.rate,
        "burstiness": args.burstiness,
        "max_concurrency": args.concurrency,
    }
    capped = args.rate is None or args.concurrency is not None
    output = result_json(result, slo, settings, calibration, capped)
    if args.save_requests:
        save_requests(result, args.save_requests)
    _emit(output, args)
    return 1 if output["streamkit"].get("partial") else 0


def _emit(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(table(result))
    if args.output:
        args.output.write_text(json.dumps(result) + "\n", encoding="utf-8")
    if args.plot:
        plot(result, args.plot)


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
    with Progress(transient=True) as progress:
        task = progress.add_task("requests", total=total)
        failed = 0

        def advance(record: RequestRecord) -> None:
            nonlocal failed
            failed += not record.ok
            progress.update(task, advance=1, description=f"requests ({failed} failed)")

        return run_in_loop(run_load(config, requests, progress=advance), config.loop)
