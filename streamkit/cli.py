"""The `streamkit` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from streamkit import chat
from streamkit.bench import cli as bench_cli
from streamkit.server.app import ServerConfig
from streamkit.server.faults import Faults, Timing
from streamkit.server.local import MODEL_NAME, LocalModel, LocalModelUnavailable
from streamkit.server.runner import start_server

__all__ = ["main"]


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the built-in OpenAI-compatible server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    serve.add_argument(
        "--model",
        default="scripted",
        choices=["scripted", MODEL_NAME],
        help="the model to serve: scripted, or smollm2 (llama.cpp, the `local` extra)",
    )
    serve.add_argument("--api-key", help="require this key as 'Authorization: Bearer ...'")
    serve.add_argument("--ttft", type=float, help="seconds before the first token")
    serve.add_argument("--tps", type=float, help="tokens per second after the first")
    serve.add_argument("--tokens-per-chunk", type=int, help="tokens in each chunk")
    serve.add_argument("--jitter", type=float, help="random spread of each wait, as a fraction (0 to 1)")
    serve.add_argument("--tokens", type=int, help="natural length of an answer, in tokens")
    serve.add_argument("--timing", default="", metavar="SPEC", help="timing as 'ttft=0.05,itl=0.01,...'")
    serve.add_argument(
        "--fault", default="", metavar="SPEC", help="faults for every request, as 'drop=3,...'"
    )
    serve.add_argument(
        "--trace", action="store_true", help="record token write times, served at GET /streamkit/trace"
    )


def _serve_config(args: argparse.Namespace) -> ServerConfig:
    spec = [args.timing]
    for name in ("ttft", "tps", "tokens_per_chunk", "jitter", "tokens"):
        value = getattr(args, name)
        if value is not None:
            spec.append(f"{name}={value}")
    return ServerConfig(
        host=args.host,
        port=args.port,
        model=args.model,
        api_key=args.api_key,
        timing=Timing.parse(",".join(spec)),
        faults=Faults.parse(args.fault),
        trace=args.trace,
    )


async def _serve(config: ServerConfig) -> None:
    server = await start_server(config)
    print(f"streamkit serve: {config.model} at {server.base_url} (Ctrl-C to stop)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.aclose()


def _serve_local(args: argparse.Namespace) -> int:
    try:
        with LocalModel(args.host, args.port) as model:
            print(f"streamkit serve: {MODEL_NAME} at {model.base_url} (Ctrl-C to stop)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    except (LocalModelUnavailable, RuntimeError) as exc:
        print(f"streamkit serve: {exc}", file=sys.stderr)
        return 1
    print("streamkit serve: stopped", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the `streamkit` command; returns its exit status."""
    parser = argparse.ArgumentParser(prog="streamkit", description="Stream from OpenAI-compatible LLM APIs.")
    sub = parser.add_subparsers(dest="command", required=True)
    chat.add_parser(sub)
    bench_cli.add_parser(sub)
    _serve_parser(sub)
    args = parser.parse_args(argv)
    # A stop from a supervisor or a script (SIGTERM) unwinds like Ctrl-C, so that the local model's server
    # process and open streams are closed rather than orphaned.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.command == "chat":
        return chat.run(args)
    if args.command == "bench":
        return bench_cli.run(args)
    if args.command == "serve" and args.model == MODEL_NAME:
        return _serve_local(args)
    if args.command == "serve":
        try:
            config = _serve_config(args)
        except ValueError as exc:
            parser.error(str(exc))
        try:
            asyncio.run(_serve(config))
        except KeyboardInterrupt:
            print("streamkit serve: stopped", file=sys.stderr)
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
