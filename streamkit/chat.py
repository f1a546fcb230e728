"""`streamkit chat`: print an answer token by token as it arrives, or hold a conversation in a terminal.

With no endpoint configured (no `--base-url`, no `OPENAI_BASE_URL`, no `OPENAI_API_KEY`), it starts the
embedded default: the local SmolLM2 model where the `local` extra is installed, else the scripted model,
with a one-line notice. Either is a real HTTP server on loopback, stopped when the command exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from streamkit.client import AsyncClient, ChatParams, CompletionParams
from streamkit.conversation import Conversation
from streamkit.errors import APIError, APIStatusError, StreamkitError
from streamkit.protocols.completions import CompletionChoice
from streamkit.server.app import ServerConfig
from streamkit.server.faults import Timing
from streamkit.server.local import MODEL_NAME, LocalModel, LocalModelUnavailable
from streamkit.server.runner import ServerThread
from streamkit.streams import ChatCompletionStream, CompletionStream

__all__ = ["add_parser", "run"]

DEFAULT_REMOTE_MODEL = "gpt-4o-mini"
# The scripted fallback answers at a pace a reader can follow.
SCRIPTED_TIMING = Timing(ttft=0.05, itl=0.02, tokens=40)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = sub.add_parser("chat", help="stream an answer to stdout, or chat in a terminal")
    chat.add_argument("prompt", nargs="?", help="the question (default: stdin, or a chat in a terminal)")
    chat.add_argument("--model", help="model name (default: the embedded model, or gpt-4o-mini)")
    chat.add_argument("--system", help="a system message")
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--top-p", type=float)
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("-n", type=int, help="number of choices, printed one after another")
    chat.add_argument("--stop", action="append", help="a stop sequence (repeatable)")
    chat.add_argument("--seed", type=int)
    chat.add_argument("--base-url", help="API base URL (default: OPENAI_BASE_URL, else the embedded model)")
    chat.add_argument("--api-key", help="API key (default: OPENAI_API_KEY)")
    chat.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    chat.add_argument("--json", action="store_true", help="print the final completion object as JSON")
    chat.add_argument("--stats", action="store_true", help="print TTFT, tokens, tokens/s to stderr")
    chat.add_argument("--completion", action="store_true", help="use the legacy /v1/completions")
    chat.add_argument("--suffix", help="text after the completion (with --completion)")
    chat.add_argument("--echo", action="store_true", help="echo the prompt (with --completion)")


@dataclass
class _Endpoint:
    base_url: str | None
    api_key: str | None
    model: str


@contextlib.contextmanager
def _endpoint(args: argparse.Namespace) -> Iterator[_Endpoint]:
    """The configured endpoint, or the embedded default, running for as long as the block."""
    if args.base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY"):
        yield _Endpoint(args.base_url, args.api_key, args.model or DEFAULT_REMOTE_MODEL)
        return
    try:
        local = LocalModel().start()
    except LocalModelUnavailable as exc:
        print(f"streamkit chat: {exc}; answering with the scripted model", file=sys.stderr)
        with ServerThread(ServerConfig(timing=SCRIPTED_TIMING)) as server:
            yield _Endpoint(server.base_url, args.api_key, args.model or "scripted")
        return
    try:
        yield _Endpoint(local.base_url, args.api_key, args.model or MODEL_NAME)
    finally:
        local.stop()


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_tokens": args.max_tokens,
        "n": args.n,
        "stop": args.stop,
        "seed": args.seed,
    }
    if args.completion:
        params.update(suffix=args.suffix, echo=args.echo or None)
    return {k: v for k, v in params.items() if v is not None}


class _Printer:
    """Writes answers to stdout as they arrive, and notes to stderr, dimmed on a terminal unless NO_COLOR."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self.color = err.isatty() and "NO_COLOR" not in os.environ

    def note(self, text: str) -> None:
        print(f"\x1b[2m{text}\x1b[0m" if self.color else text, file=self.err, flush=True)

    async def stream(self, stream: ChatCompletionStream | CompletionStream, args: argparse.Namespace) -> None:
        async with stream:
            if args.json:
                final = await stream.get_final_completion()
                print(json.dumps(final.to_dict(), ensure_ascii=False, indent=2), file=self.out, flush=True)
            else:
                labelled = (args.n or 1) > 1
                if labelled:
                    print("[choice 0]", file=self.out, flush=True)
                async for text in stream.text_deltas():
                    self.out.write(text)
                    self.out.flush()
                final = await stream.get_final_completion()
                for choice in final.choices[1:]:
                    body = choice.text if isinstance(choice, CompletionChoice) else choice.message.content
                    print(f"\n[choice {choice.index}]\n{body or ''}", end="", file=self.out)
                print(file=self.out, flush=True)
        if args.stats:
            metrics = stream.metrics
            tokens = metrics.completion_tokens
            estimated = tokens is None
            count = len(metrics.token_arrivals) if tokens is None else tokens
            seconds = (metrics.e2e or 0) - (metrics.ttft or 0)
            rate = (count - 1) / seconds if count > 1 and seconds > 0 else 0.0
            ttft = "-" if metrics.ttft is None else f"{metrics.ttft:.3f} s"
            reasons = ",".join(str(c.finish_reason) for c in final.choices)
            self.note(
                f"ttft {ttft} · {count}{'~' if estimated else ''} tokens · {rate:.1f} tokens/s · "
                f"finish_reason {reasons}"
            )


def _describe(error: StreamkitError) -> str:
    """One line: status, type and message; never the key (the client redacts it)."""
    parts = []
    if isinstance(error, APIStatusError):
        parts.append(str(error.status_code))
    if isinstance(error, APIError) and error.type:
        parts.append(error.type)
    head = " ".join(parts) or type(error).__name__
    message = " ".join(error.message.split())
    return f"streamkit chat: error: {head}: {message}"


async def _one(args: argparse.Namespace, endpoint: _Endpoint, prompt: str, printer: _Printer) -> None:
    async with AsyncClient(
        base_url=endpoint.base_url, api_key=endpoint.api_key, transport=args.transport
    ) as client:
        params = _params(args)
        stream: ChatCompletionStream | CompletionStream
        if args.completion:
            completion_params: CompletionParams = params  # type: ignore[assignment]
            stream = await client.completions.create(
                model=endpoint.model, prompt=prompt, stream=True, **completion_params
            )
        else:
            messages = [{"role": "system", "content": args.system}] if args.system else []
            messages.append({"role": "user", "content": prompt})
            chat_params: ChatParams = params  # type: ignore[assignment]
            stream = await client.chat.completions.create(
                model=endpoint.model, messages=messages, stream=True, **chat_params
            )
        await printer.stream(stream, args)


async def _repl(args: argparse.Namespace, endpoint: _Endpoint, printer: _Printer) -> None:
    printer.note(
        f"streamkit chat: {endpoint.model}; /reset forgets the conversation, /exit (or Ctrl-D) leaves"
    )
    async with AsyncClient(
        base_url=endpoint.base_url, api_key=endpoint.api_key, transport=args.transport
    ) as client:
        params: ChatParams = _params(args)  # type: ignore[assignment]
        conversation = Conversation(client, model=endpoint.model, system=args.system, **params)
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
                print(_describe(exc), file=printer.err, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run `streamkit chat`; returns the exit status."""
    printer = _Printer(sys.stdout, sys.stderr)
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
        print(_describe(exc), file=sys.stderr, flush=True)
        return 1
    except (RuntimeError, ValueError) as exc:
        print(f"streamkit chat: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stdout, flush=True)
        return 130
    return 0
