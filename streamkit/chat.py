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
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from streamkit.bench.cli import listed_model
from streamkit.client import AsyncClient
from streamkit.conversation import Conversation
from streamkit.errors import APIError, APIStatusError, StreamkitError
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
    base_url: str | None
    api_key: str | None
    model: str


@contextlib.contextmanager
def _endpoint(args: argparse.Namespace) -> Iterator[_Endpoint]:
    """The configured endpoint, or the embedded default, running for as long as the block."""
    provider = APIS[args.api].provider
    variable = provider.upper()  # OPENAI_..., ANTHROPIC_...
    base_url = args.base_url or os.environ.get(f"{variable}_BASE_URL")
    if base_url or args.api_key or os.environ.get(f"{variable}_API_KEY"):
        model = args.model
        if model is None:
            # An endpoint of one's own (vLLM, llama.cpp, ...) serves what it lists; the provider's own API
            # gets its small model.
            key = args.api_key or os.environ.get(f"{variable}_API_KEY")
            if base_url and not any(host in base_url for host in ("api.openai.com", "api.anthropic.com")):
                if provider == "anthropic" and not args.base_url:
                    base_url = base_url.rstrip("/") + "/v1"  # as the client takes ANTHROPIC_BASE_URL
                model = listed_model(base_url, key, provider, args.transport)
            else:
                model = DEFAULT_REMOTE_MODELS[provider]
        yield _Endpoint(args.base_url, args.api_key, model)
        return
    try:
        local = LocalModel().start()
    except LocalModelUnavailable as exc:
        print(f"streamkit chat: {exc}; answering with the scripted model", file=sys.stderr)
        # The scripted model answers to whatever name is asked, so `--model` never meets a 404 here.
        config = ServerConfig(model=args.model or "scripted", timing=SCRIPTED_TIMING)
        with ServerThread(config) as server:
            yield _Endpoint(server.base_url, args.api_key, config.model)
        return
    try:
        yield _Endpoint(local.base_url, args.api_key, args.model or MODEL_NAME)
    finally:
        local.stop()


def _conversation(args: argparse.Namespace, client: AsyncClient, endpoint: _Endpoint) -> Conversation:
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
    settings = {k: v for k, v in params.items() if v is not None}
    return Conversation(
        client,
        model=endpoint.model,
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

    def note(self, text: str) -> None:
        text = sanitized(text)
        print(f"\x1b[2m{text}\x1b[0m" if self.color else text, file=self.err, flush=True)

    def error(self, text: str) -> None:
        """Writes `text` as one line, without terminal controls."""
        print(" ".join(sanitized(text).split()), file=self.err, flush=True)

    async def stream(self, stream: Stream[Any, Any], args: argparse.Namespace) -> None:
        async with stream:
            if args.json:
                final = await stream.get_final()
                text = json.dumps(final.to_dict(), ensure_ascii=False, indent=2)
                # json escapes C0 but not DEL and C1; escaped, they are the same JSON.
                text = _JSON_CONTROL.sub(lambda control: f"\\u{ord(control[0]):04x}", text)
                print(text, file=self.out, flush=True)
            else:
                labelled = (args.n or 1) > 1
                if labelled:
                    print("[choice 0]", file=self.out, flush=True)
                answer = None if self.raw else TerminalSanitizer()
                async for text in stream.text_deltas():
                    self.out.write(text if answer is None else answer.feed(text))
                    self.out.flush()
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
                    print(f"\n[choice {index}]\n{body}", end="", file=self.out)
                print(file=self.out, flush=True)
        if args.stats:
            metrics = stream.metrics
            tokens = metrics.completion_tokens
            estimated = tokens is None
            count = len(metrics.token_arrivals) if tokens is None else tokens
            seconds = (metrics.e2e or 0) - (metrics.ttft or 0)
            rate = (count - 1) / seconds if count > 1 and seconds > 0 else 0.0
            ttft = "-" if metrics.ttft is None else f"{metrics.ttft:.3f} s"
            self.note(
                f"ttft {ttft} · {count}{'~' if estimated else ''} tokens · {rate:.1f} tokens/s · "
                f"{_finish(final)}"
            )


def _describe(error: StreamkitError) -> str:
    """Status, type and message; never the key (the client redacts it)."""
    parts = []
    if isinstance(error, APIStatusError):
        parts.append(str(error.status_code))
    if isinstance(error, APIError) and error.type:
        parts.append(error.type)
    head = " ".join(parts) or type(error).__name__
    return f"streamkit chat: error: {head}: {error.message}"


async def _one(args: argparse.Namespace, endpoint: _Endpoint, prompt: str, printer: _Printer) -> None:
    async with AsyncClient(
        base_url=endpoint.base_url, api_key=endpoint.api_key, transport=args.transport
    ) as client:
        conversation = _conversation(args, client, endpoint)
        await printer.stream(await conversation.send(prompt), args)


async def _repl(args: argparse.Namespace, endpoint: _Endpoint, printer: _Printer) -> None:
    printer.note(
        f"streamkit chat: {endpoint.model} ({args.api}); /reset forgets the conversation, /exit (or Ctrl-D) "
        "leaves"
    )
    async with AsyncClient(
        base_url=endpoint.base_url, api_key=endpoint.api_key, transport=args.transport
    ) as client:
        conversation = _conversation(args, client, endpoint)
        while True:
            try:
                line = await asyncio.to_thread(input, "> ")
            except EOFError:
                print(file=printer.out)
                return
            line = line.strip()
            if line == "/exit":
                return
            if line == "/reset":
                conversation.reset()
                printer.note("(conversation reset)")
                continue
            if not line:
                continue
            try:
                await printer.stream(await conversation.send(line), args)
            except StreamkitError as exc:
                printer.error(_describe(exc))


def run(args: argparse.Namespace) -> int:
    """Run `streamkit chat`; returns the exit status."""
    printer = _Printer(sys.stdout, sys.stderr, raw=args.raw)
    prompt = args.prompt
    interactive = prompt is None and sys.stdin.isatty()
    if prompt is None and not interactive:
        prompt = sys.stdin.read()
    try:
        with _endpoint(args) as endpoint:
            if interactive:
                asyncio.run(_repl(args, endpoint, printer))
            else:
                asyncio.run(_one(args, endpoint, prompt or "", printer))
    except StreamkitError as exc:
        printer.error(_describe(exc))
        return 1
    except (RuntimeError, ValueError) as exc:
        printer.error(f"streamkit chat: error: {exc}")
        return 1
    except KeyboardInterrupt:
        print(file=sys.stdout, flush=True)
        return 130
    return 0
