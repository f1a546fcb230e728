"""The `streamkit` command."""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import shutil
import signal
import socket
import sys
import textwrap
from collections.abc import Callable, Iterator
from types import FrameType

from streamkit import chat
from streamkit._version import __version__
from streamkit.bench import cli as bench_cli
from streamkit.server import faults
from streamkit.server.app import ServerConfig
from streamkit.server.faults import Faults, Timing
from streamkit.server.local import MODEL_NAME, LocalModel
from streamkit.server.runner import ServerThread

__all__ = ["main"]

# What stops `serve`: Ctrl-C, and a supervisor's or a script's stop.
STOPS = (signal.SIGINT, signal.SIGTERM)


# What `streamkit serve --model` answers to by default: any model name, with the scripted model.
SCRIPTED = "scripted"


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    width = max(60, min(100, shutil.get_terminal_size().columns - 2))  # as argparse wraps its own help
    serve = sub.add_parser(
        "serve",
        help="run the built-in OpenAI-compatible server",
        description=textwrap.fill(
            "Run the built-in server, for tests, benchmarks and local work: the chat, legacy completions, "
            "Responses and Messages APIs and /v1/models, answered by the scripted model (or the local one).",
            width,
        ),
        epilog=faults.describe(width),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    serve.add_argument(
        "--model",
        default=SCRIPTED,
        metavar="NAME",
        help=f"{SCRIPTED} (default): the scripted model, answering any model name under the name asked; "
        f"{MODEL_NAME}: the real local model (llama.cpp, the `local` extra); any other NAME: the scripted "
        "model under that name only (others get a 404)",
    )
    serve.add_argument(
        "--api-key",
        help="require this key on every model, as 'Authorization: Bearer ...' (x-api-key on /v1/messages)",
    )
    serve.add_argument("--ttft", type=float, help="seconds before the first token")
    serve.add_argument("--tps", type=float, help="tokens per second after the first")
    serve.add_argument("--tokens-per-chunk", type=int, help="tokens in each chunk")
    serve.add_argument("--jitter", type=float, help="random spread of each wait, as a fraction (0 to 1)")
    serve.add_argument("--tokens", type=int, help="natural length of an answer, in tokens")
    serve.add_argument(
        "--timing", default="", metavar="SPEC", help="timing as 'ttft=0.05,itl=0.01,...' (the settings below)"
    )
    serve.add_argument(
        "--fault",
        default="",
        metavar="SPEC",
        help="faults for every request, as 'drop=3,...' (the faults below)",
    )
    serve.add_argument(
        "--trace", action="store_true", help="record token write times, served at GET /streamkit/trace"
    )


def _serve_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ServerConfig:
    """The scripted model's server as `serve`'s options set it; a bad option exits 2 through `parser`, the
    `serve` command's own (its usage, then `streamkit serve: error: ...`)."""
    spec = [args.timing]
    for name in ("ttft", "tps", "tokens_per_chunk", "jitter", "tokens"):
        value = getattr(args, name)
        if value is not None:
            spec.append(f"{name}={value}")
    try:
        return ServerConfig(
            host=args.host,
            port=args.port,
            model=args.model,
            any_model=args.model == SCRIPTED,
            api_key=args.api_key,
            timing=Timing.parse(",".join(spec)),
            faults=Faults.parse(args.fault),
            trace=args.trace,
        )
    except ValueError as exc:
        parser.error(str(exc))


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Serve until the first stop (SIGINT or SIGTERM); returns the exit status: 0 once stopped, 1 if the
    server could not start, 2 for bad options.

    A stop interrupts nothing: it is recorded, and acted on once the server has started. So a stop at any
    moment, start-up included, exits 0 with whatever had started stopped; one during the local model's load
    takes effect when the load ends (about a second; at most `streamkit.server.local.STARTUP_SECONDS`). Only
    a stop that comes before the options are checked, while Python and streamkit are still being imported,
    ends the process as the signal does by default."""
    if args.api_key is not None and not (args.api_key and args.api_key.isprintable()):
        parser.error("--api-key must be printable text on one line, as a header carries it")
    config = None if args.model == MODEL_NAME else _serve_config(args, parser)
    with _stops() as wait_for_stop:
        server: LocalModel | ServerThread
        if config is None:
            server = LocalModel(args.host, args.port, api_key=args.api_key)
        else:
            server = ServerThread(config)
        if args.api_key is None and not _loopback(args.host):
            print(
                f"streamkit serve: warning: listening on {args.host} with no --api-key: anyone who can reach "
                "the port can use the server",
                file=sys.stderr,
                flush=True,
            )
        try:
            # llama.cpp says that a port is in use in a line of its own log: asked first, it is said in ours.
            if args.model == MODEL_NAME and _in_use(args.host, args.port):
                raise OSError(errno.EADDRINUSE, "address already in use")
            server.start()
            note = "answers any model name; Ctrl-C to stop" if args.model == SCRIPTED else "Ctrl-C to stop"
            print(f"streamkit serve: {args.model} at {server.base_url} ({note})", flush=True)
            wait_for_stop()
        except (OSError, RuntimeError) as exc:  # a port in use; the local model missing or failing to load
            if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
                print(
                    f"streamkit serve: port {args.port} is in use: pass --port 0 for a free one",
                    file=sys.stderr,
                )
            else:
                print(f"streamkit serve: {exc}", file=sys.stderr)
            return 1
        finally:
            server.stop()
    print("streamkit serve: stopped", file=sys.stderr)
    return 0


def _in_use(host: str, port: int) -> bool:
    """Whether `port` of `host` is taken: another socket listens there, so a bind to it fails (as the
    server's own would, with `SO_REUSEADDR`). Port 0 is never taken, and a host that does not resolve is
    left for the server to report."""
    if port == 0:
        return False
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def _loopback(host: str) -> bool:
    """Whether `host` is a loopback address or `localhost`, which only this machine can reach. Any other
    name may resolve to an interface that others reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def _stops() -> Iterator[Callable[[], None]]:
    """Record SIGINT and SIGTERM, for the rest of the process, rather than be interrupted by them (a signal
    that the process was started to ignore stays ignored, as a background job ignores Ctrl-C). Yields
    `wait_for_stop()`, which returns at once if a stop came already, else at the first one.

    A stop is recorded by the signal's C-level handler, which writes its number to the wakeup fd, a socket
    here; the Python handler does nothing. A stop raised as KeyboardInterrupt would cut short whatever the
    process was doing, even an unfinished `Popen` of the local model (leaving its server with no one to stop
    it); and a wait by `signal.pause()` would sleep through a stop that came just before it."""
    wakeup, ring = socket.socketpair()
    with wakeup, ring:
        ring.setblocking(False)
        previous = signal.set_wakeup_fd(ring.fileno(), warn_on_full_buffer=False)
        try:
            for stop in STOPS:
                if signal.getsignal(stop) is not signal.SIG_IGN:
                    signal.signal(stop, _recorded)

            def wait_for_stop() -> None:
                while wakeup.recv(1)[0] not in STOPS:
                    pass

            yield wait_for_stop
        finally:
            signal.set_wakeup_fd(previous)


def _recorded(signum: int, frame: FrameType | None) -> None:
    """A stop's Python handler: nothing to do, the wakeup fd has it (see `_stops`)."""


def main(argv: list[str] | None = None) -> int:
    """Run the `streamkit` command; returns its exit status."""
    parser = argparse.ArgumentParser(prog="streamkit", description="Stream from OpenAI-compatible LLM APIs.")
    parser.add_argument("--version", action="version", version=f"streamkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    chat.add_parser(sub)
    bench_cli.add_parser(sub)
    _serve_parser(sub)
    # In two steps, so that an option the command does not know is reported by the command's own parser,
    # with its usage (`usage: streamkit chat ...`), rather than by the top-level one.
    args, unknown = parser.parse_known_args(argv)
    command = sub.choices[args.command]
    if unknown:
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "serve":
        return _serve(args, command)
    # A stop from a supervisor or a script (SIGTERM) unwinds like Ctrl-C, so that the local model's server
    # process and open streams are closed rather than orphaned.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.command == "chat":
        return chat.run(args)
    if args.command == "bench":
        return bench_cli.run(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
