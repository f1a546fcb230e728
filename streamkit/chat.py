"""`streamkit chat`: print an answer token by token as it arrives, or hold a conversation in a terminal.

`--api` picks the dialect: chat (the default), completions (legacy), responses, or messages (Anthropic).
With no endpoint configured (no `--base-url` or `--api-key`, and no `OPENAI_BASE_URL` or `OPENAI_API_KEY`, or
for messages no `ANTHROPIC_BASE_URL` or `ANTHROPIC_API_KEY`), it starts the embedded default: the local
SmolLM2 model where the `local` extra is installed, else the scripted model, with a one-line notice. Either
is a real HTTP server on loopback that speaks all four APIs, stopped when the command exits.

What an endpoint sends is printed without its terminal controls (`streamkit.terminal`): a hostile or
compromised endpoint could otherwise write the clipboard (OSC 52), retitle the window or clear the screen.
`--raw` keeps the answer on stdout as it came.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO

from streamkit.bench.redact import public
from streamkit.client import AsyncClient
from streamkit.conversation import Conversation
from streamkit.errors import (
    APIStatusError,
    AuthenticationError,
    ConnectError,
    NotFoundError,
    ReadError,
    StreamAPIError,
    StreamkitError,
)
from streamkit.protocols import APIS
from streamkit.protocols.chat import ChatCompletion
from streamkit.protocols.completions import Completion
from streamkit.server.app import ServerConfig
from streamkit.server.faults import Timing
from streamkit.server.local import MODEL_NAME, LocalModel, LocalModelUnavailable
from streamkit.server.runner import ServerThread
from streamkit.streams import Stream
from streamkit.terminal import TerminalSanitizer, sanitized

__all__ = ["add_parser", "run"]

_PROVIDERS = {"openai": "OpenAI", "anthropic": "Anthropic"}
# The model asked of each provider's own API when none is named.
DEFAULT_REMOTE_MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
# The scripted fallback answers at a pace a reader can follow.
SCRIPTED_TIMING = Timing(ttft=0.05, itl=0.02, tokens=40)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = sub.add_parser("chat", help="stream an answer to stdout, or chat in a terminal")
    chat.add_argument("prompt", nargs="?", help="the question (default: stdin, or a chat in a terminal)")
    chat.add_argument(
        "--api",
        choices=list(APIS),
        default="chat",
        help="chat (default), completions (legacy), responses, or messages (Anthropic)",
    )
    chat.add_argument(
        "--model",
        help="model name (default: the embedded model's, the endpoint's first, or the provider's small one)",
    )
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--top-p", type=float)
    chat.add_argument(
        "--max-tokens", type=int, help="the answer's token limit (Responses: max_output_tokens)"
    )
    chat.add_argument("-n", type=int, help="number of choices, printed one after another (chat, completions)")
    chat.add_argument("--stop", action="append", help="a stop sequence (repeatable)")
    chat.add_argument("--seed", type=int)
    chat.add_argument(
        "--base-url", help="API base URL (default: OPENAI_BASE_URL or ANTHROPIC_BASE_URL, else embedded)"
    )
    chat.add_argument(
        "--api-key", help="API key (default: OPENAI_API_KEY, or ANTHROPIC_API_KEY for messages)"
    )
    chat.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    chat.add_argument("--json", action="store_true", help="print the final object as JSON")
    chat.add_argument("--stats", action="store_true", help="print TTFT, tokens, tokens/s to stderr")
    chat.add_argument("--suffix", help="text after the completion (completions)")
    chat.add_argument("--echo", action="store_true", help="echo the prompt (completions)")
    chat.add_argument(
        "--raw",
        action="store_true",
        help="print the answer as it came, terminal controls included (for pipes)",
    )


# What JSON leaves unescaped that a terminal reads as a control: DEL and C1 (json escapes C0 itself).
_JSON_CONTROL = re.compile("[\x7f-\x9f]")


@dataclass
class _Endpoint:
    """Where the answers come from: `base_url` and `api_key` as given (None: the client's own default, from
    the environment), and the model (None: the endpoint's first listed)."""

    base_url: str | None
    api_key: str | None
    model: str | None


def _variables(provider: str) -> tuple[str, str]:
    variable = provider.upper()  # OPENAI_..., ANTHROPIC_...
    return f"{variable}_BASE_URL", f"{variable}_API_KEY"


@contextlib.contextmanager
def _endpoint(args: argparse.Namespace, printer: _Printer) -> Iterator[_Endpoint]:
    """The configured endpoint, or the embedded default, running for as long as the block."""
    provider = APIS[args.api].provider
    url_variable, key_variable = _variables(provider)
    base_url = args.base_url or os.environ.get(url_variable)
    if base_url or args.api_key or os.environ.get(key_variable):
        model = args.model
        # An endpoint of one's own (vLLM, llama.cpp, ...) serves what it lists; the provider's own API gets
        # its small model.
        if model is None and not (
            base_url and not any(host in base_url for host in ("api.openai.com", "api.anthropic.com"))
        ):
            model = DEFAULT_REMOTE_MODELS[provider]
        yield _Endpoint(args.base_url, args.api_key, model)
        return
    other = next(name for name in ("openai", "anthropic") if name != provider)
    others = [name for name in _variables(other) if os.environ.get(name)]
    if others:
        # Set for the other provider's APIs, which may look meant for this one too: say where this one goes.
        printer.note(
            f"streamkit chat: {url_variable} and {key_variable} are not set ({' and '.join(others)} "
            f"{'is' if len(others) == 1 else 'are'} for the {_PROVIDERS[other]} APIs), so --api {args.api} "
            "asks the embedded model"
        )
    try:
        local = LocalModel().start()
    except LocalModelUnavailable as exc:
        printer.note(f"streamkit chat: {exc}; answering with the scripted model")
        # The scripted model answers to whatever name is asked, so `--model` never meets a 404 here.
        config = ServerConfig(any_model=True, timing=SCRIPTED_TIMING)
        with ServerThread(config) as server:
            yield _Endpoint(server.base_url, args.api_key, args.model or config.model)
        return
    try:
        yield _Endpoint(local.base_url, args.api_key, args.model or MODEL_NAME)
    finally:
        local.stop()


class _Usage(Exception):
    """A mistake in how the command was used, printed as it is."""


async def _model(args: argparse.Namespace, client: AsyncClient, endpoint: _Endpoint) -> str:
    """The model to ask: the one given, or the first the endpoint lists."""
    if endpoint.model is not None:
        return endpoint.model
    provider = APIS[args.api].provider
    try:
        names = [model.id for model in await client.models.list(provider=provider)]
    except NotFoundError:
        raise _Usage(
            f"{_where(client, args.api)} lists no models (/models is not found); pass --model"
        ) from None
    if not names:
        raise _Usage(f"{_where(client, args.api)}/models lists no model; pass --model")
    return names[0]


def _where(client: AsyncClient, api: str) -> str:
    """The base URL that the API's requests go to, as a person would write it (credentials out)."""
    provider = client._providers[APIS[api].provider]
    return public(provider.base_url + provider.prefix)


def _conversation(args: argparse.Namespace, client: AsyncClient, model: str) -> Conversation:
    params: dict[str, Any] = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "n": args.n,
        "stop": args.stop,
        "seed": args.seed,
    }
    if args.api == "completions":
        params.update(suffix=args.suffix, echo=args.echo or None)
    elif args.suffix or args.echo:
        raise ValueError("--suffix and --echo are for --api completions")
    if args.stats and args.api in ("chat", "completions"):
        params["stream_options"] = {"include_usage": True}  # the real token count, in a last chunk
    settings = {k: v for k, v in params.items() if v is not None}
    return Conversation(
        client,
        model=model,
        system=args.system,
        api=args.api,
        max_tokens=args.max_tokens,
        **settings,
    )


def _finish(final: object) -> str:
    """Why the answer ended, as its API says it: each choice's finish_reason, a response's status (and why it
    is incomplete), or a message's stop_reason."""
    if isinstance(final, ChatCompletion | Completion):
        return "finish_reason " + ",".join(str(c.finish_reason) for c in final.choices)
    status = getattr(final, "status", None)
    if status is not None:
        details = getattr(final, "incomplete_details", None)
        reason = getattr(details, "reason", None)
        return f"status {status}" + (f" ({reason})" if reason else "")
    return f"stop_reason {getattr(final, 'stop_reason', None)}"


def _stats(stream: Stream[Any, Any], final: object) -> str:
    """TTFT, the tokens (as the server counted them, else the chunks that carried text) and their rate after
    the first (`-` where it cannot be measured: one token, or all of them in one read), and the finish."""
    metrics = stream.metrics
    tokens = metrics.completion_tokens
    first, last = metrics.first_token, metrics.last_token
    ttft = "-" if metrics.ttft is None else f"{metrics.ttft:.3f} s"
    if tokens is None:
        count = f"{len(metrics.token_arrivals)} chunks with text (no usage reported)"
        rate_of = len(metrics.token_arrivals)
    else:
        count = f"{tokens} tokens"
        rate_of = tokens
    rate = "-"
    if rate_of > 1 and first is not None and last is not None and last > first:
        rate = f"{(rate_of - 1) / (last - first):.1f}"
    return f"ttft {ttft} · {count} · {rate} tokens/s · {_finish(final)}"


class _Printer:
    """Writes answers to stdout as they arrive, and notes to stderr, dimmed on a terminal unless NO_COLOR.

    The answer loses its terminal controls unless `raw`, whether stdout is a terminal or not: a pipe may
    end in one too (`| less -R`, `| tee`, a file shown later), and what is on the other side cannot be
    seen from here; `--raw` is the explicit way to keep the bytes. Notes and errors on stderr, which a
    person reads, lose them always. JSON is not stripped but escaped, which changes no value.
    """

    def __init__(self, out: TextIO, err: TextIO, *, raw: bool = False) -> None:
        self.out = out
        self.err = err
        self.raw = raw
        self.color = err.isatty() and "NO_COLOR" not in os.environ
        self.line_open = False  # the answer's last line has no newline yet
        self.stream: Stream[Any, Any] | None = None  # the last stream printed, for its token count

    def note(self, text: str) -> None:
        text = sanitized(text)
        print(f"\x1b[2m{text}\x1b[0m" if self.color else text, file=self.err, flush=True)

    def error(self, text: str) -> None:
        """Writes `text` as one line, without terminal controls, on a line of its own."""
        self.end_line()
        print(" ".join(sanitized(text).split()), file=self.err, flush=True)

    def end_line(self) -> None:
        """Ends the answer's line, where it stopped in the middle of one."""
        if self.line_open:
            self.line_open = False
            print(file=self.out, flush=True)

    def write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self.line_open = not text.endswith("\n")

    async def answer(
        self, pending: Awaitable[Stream[Any, Any]], args: argparse.Namespace, where: str
    ) -> None:
        """Print the stream's answer as it arrives, then, on stderr, which endpoint and model answered (and
        the stats)."""
        self.stream = None
        stream = self.stream = await pending
        async with stream:
            if args.json:
                final = await stream.get_final()
                text = json.dumps(final.to_dict(), ensure_ascii=False, indent=2)
                # json escapes C0 but not DEL and C1; escaped, they are the same JSON.
                text = _JSON_CONTROL.sub(lambda control: f"\\u{ord(control[0]):04x}", text)
                self.write(text + "\n")
            else:
                if (args.n or 1) > 1:
                    self.write("[choice 0]\n")
                answer = None if self.raw else TerminalSanitizer()
                async for text in stream.text_deltas():
                    self.write(text if answer is None else answer.feed(text))
                final = await stream.get_final()
                others: list[tuple[int, str | None]]
                if isinstance(final, Completion):
                    others = [(c.index, c.text) for c in final.choices[1:]]
                elif isinstance(final, ChatCompletion):
                    others = [(c.index, c.message.content) for c in final.choices[1:]]
                else:
                    others = []
                for index, body in others:
                    body = (body or "") if self.raw else sanitized(body or "")
                    self.write(f"\n[choice {index}]\n{body}")
                self.write("\n")
        if args.provenance:
            self.note(f"streamkit chat: {getattr(final, 'model', None) or '?'} at {where} ({args.api})")
        if args.stats:
            self.note(_stats(stream, final))

    def describe(self, error: StreamkitError, where: str, api_key: bool) -> str:
        """One line in streamkit's words: where it failed and why; never the key (the client redacts it)."""
        if isinstance(error, ConnectError):
            text = f"could not connect to {where}: {error.reason or error.message}"
        elif isinstance(error, AuthenticationError):
            why = "the API key was refused" if api_key else "it wants an API key (--api-key)"
            text = f"401 from {where}: {why}"
        elif isinstance(error, APIStatusError):
            kind = f"{error.type}: " if error.type else ""
            text = f"{error.status_code} from {where}: {kind}{error.message}"
        elif isinstance(error, StreamAPIError):
            kind = f"{error.type}: " if error.type else ""
            text = f"the server sent an error mid-answer: {kind}{error.message}"
        else:
            text = error.message
        stream = self.stream
        if isinstance(error, ReadError) and error.partial is not None and stream is not None:
            tokens = len(stream.metrics.token_arrivals)
            text += (
                f" (after {tokens} token{'' if tokens == 1 else 's'})" if tokens else " (before any token)"
            )
        return f"streamkit chat: error: {text}"


async def _one(args: argparse.Namespace, endpoint: _Endpoint, prompt: str, printer: _Printer) -> None:
    async with AsyncClient(
        base_url=endpoint.base_url, api_key=endpoint.api_key, transport=args.transport
    ) as client:
        where = _where(client, args.api)
        try:
            conversation = _conversation(args, client, await _model(args, client, endpoint))
            await printer.answer(conversation.send(prompt), args, where)
        except StreamkitError as exc:
            has_key = bool(client._providers[APIS[args.api].provider].key)
            raise _Failed(printer.describe(exc, where, has_key)) from exc


class _Failed(Exception):
    """A request failed; its one line says how."""


class _Terminated(KeyboardInterrupt):
    """A stop from a supervisor or a script (SIGTERM): it ends the conversation, where Ctrl-C during an answer
    only stops the answer."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


# The REPL's commands: what each does, and whether it needs a history (the legacy API keeps none).
_COMMANDS = {
    "/help": ("list the commands", False),
    "/reset": ("forget the conversation so far", True),
    "/exit": ("leave (or Ctrl-D, or Ctrl-C at the prompt)", False),
}


def _repl(args: argparse.Namespace, endpoint: _Endpoint, printer: _Printer) -> int:
    """A conversation in a terminal, as the Python REPL holds one: the line is read in the main thread with
    `readline`'s editing and history, so Ctrl-C or Ctrl-D at the prompt leaves at once; the answer streams in
    an event loop that lives as long as the conversation (`asyncio.Runner`), where Ctrl-C cancels the answer,
    closes its stream and comes back to the prompt. A stopped answer is not kept: the conversation goes on
    from the turn before it, as after any failed turn. Returns the exit status."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (input() edits lines and keeps their history once it is loaded)
    keeps_history = args.api != "completions"
    commands = {name: what for name, (what, history) in _COMMANDS.items() if keeps_history or not history}
    signal.signal(signal.SIGTERM, _terminate)
    with asyncio.Runner() as runner:
        client = AsyncClient(base_url=endpoint.base_url, api_key=endpoint.api_key, transport=args.transport)
        where = _where(client, args.api)
        has_key = bool(client._providers[APIS[args.api].provider].key)
        try:
            try:
                model = runner.run(_model(args, client, endpoint))
                conversation = _conversation(args, client, model)
            except StreamkitError as exc:
                printer.error(printer.describe(exc, where, has_key))
                return 1
            printer.note(
                f"streamkit chat: {model} at {where} ({args.api}). "
                + ", ".join(f"{name}" for name in commands)
                + " (/help says what they do)"
                + ("" if keeps_history else "; the legacy API keeps no history: each prompt stands alone")
            )
            while True:
                try:
                    line = input("> ").strip()
                except EOFError:  # Ctrl-D
                    print(file=printer.out)
                    return 0
                except _Terminated:
                    raise
                except KeyboardInterrupt:  # Ctrl-C at the prompt
                    print(file=printer.out)
                    return 130
                if not line:
                    continue
                if line.startswith("/") and " " not in line:
                    if line == "/exit":
                        return 0
                    if line == "/help":
                        for name, what in commands.items():
                            printer.note(f"{name:8} {what}")
                        printer.note("Ctrl-C    stop the answer being written")
                    elif line == "/reset" and keeps_history:
                        conversation.reset()
                        printer.note("(conversation reset)")
                    else:
                        printer.error(f"streamkit chat: unknown command {line}: /help lists the commands")
                    continue
                if not keeps_history:
                    conversation.reset()
                try:
                    runner.run(printer.answer(conversation.send(line), args, where))
                except _Terminated:
                    raise
                except KeyboardInterrupt:  # Ctrl-C during the answer: the answer stops, the chat goes on
                    printer.end_line()
                    printer.note("(answer stopped; it is not kept in the conversation)")
                except StreamkitError as exc:
                    printer.error(printer.describe(exc, where, has_key))
        finally:
            runner.run(client.aclose())


def run(args: argparse.Namespace) -> int:
    """Run `streamkit chat`; returns the exit status."""
    printer = _Printer(sys.stdout, sys.stderr, raw=args.raw)
    prompt = args.prompt
    interactive = prompt is None and sys.stdin.isatty()
    if prompt is None and not interactive:
        prompt = sys.stdin.read()
    args.provenance = not interactive  # the REPL's banner says it once
    try:
        with _endpoint(args, printer) as endpoint:
            if interactive:
                return _repl(args, endpoint, printer)
            asyncio.run(_one(args, endpoint, prompt or "", printer))
    except _Failed as exc:
        printer.error(str(exc))
        return 1
    except (_Usage, RuntimeError, ValueError) as exc:
        printer.error(f"streamkit chat: error: {exc}")
        return 1
    except KeyboardInterrupt:
        printer.end_line()
        return 130
    return 0
