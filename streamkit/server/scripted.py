"""The `scripted` model: deterministic answers, planned in full before the first chunk is sent (no I/O).

An answer is a list of word-piece tokens drawn from a seeded generator: the same request with the same `seed`
always gets the same text, so tests can state exactly what they expect. Planning the whole answer up front
makes `stop` exact (a stop string is never emitted, even when it spans tokens), and makes the non-streamed
answer the aggregate of the very chunks a stream would carry.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChatRequest", "CompletionRequest", "Plan", "plan_chat", "plan_completion", "tokens_for"]

# Plain words and a few non-ASCII ones, so that split writes can land inside a UTF-8 sequence.
VOCABULARY = (
    "the a stream of tokens arrives as server sent events and each chunk carries a small delta which the "
    "client merges into choices until done while latency matters more than anything else for people who "
    "read answers as they appear on screen café naïve über façade résumé jalapeño streaming protocol "
    "decoder aggregate benchmark measurement connection response request"
).split()

SYSTEM_FINGERPRINT = "fp_streamkit"


def tokens_for(seed: int, count: int) -> list[str]:
    """`count` deterministic word-piece tokens: words with a leading space, long words cut in two, and a
    full stop every few words."""
    rng = random.Random(seed)
    tokens: list[str] = []
    sentence_start = True
    while len(tokens) < count:
        word = rng.choice(VOCABULARY)
        if sentence_start:
            word = word.capitalize()
        space = "" if not tokens else " "
        if len(word) > 6:
            tokens += [space + word[:4], word[4:]]
        else:
            tokens.append(space + word)
        sentence_start = rng.random() < 0.15
        if sentence_start:
            tokens.append(".")
    return tokens[:count]


def apply_stop(tokens: list[str], stop: list[str]) -> tuple[list[str], bool]:
    """Cut the tokens before the first occurrence of any stop string; say whether one was found."""
    text = "".join(tokens)
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    if cut < 0:
        return tokens, False
    kept: list[str] = []
    size = 0
    for token in tokens:
        if size + len(token) > cut:
            if cut > size:
                kept.append(token[: cut - size])
            break
        kept.append(token)
        size += len(token)
    return kept, True


def logprob_of(rng: random.Random) -> float:
    return -round(rng.random() * 3, 4)


@dataclass
class ChatRequest:
    """The parts of a chat request the scripted model honours (validated by the app)."""

    model: str
    prompt_tokens: int
    n: int = 1
    seed: int = 0
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int = 0
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    include_usage: bool = False


@dataclass
class CompletionRequest:
    """The parts of a legacy completion request the scripted model honours."""

    model: str
    prompts: list[str]
    prompt_tokens: int
    n: int = 1
    seed: int = 0
    max_tokens: int | None = 16
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    include_usage: bool = False


@dataclass
class Plan:
    """Every chunk of one answer, in the order they are sent, and how many tokens each carries."""

    chunks: list[dict[str, Any]]
    tokens: list[int]
    completion_tokens: int


def _header(prefix: str, obj: str, model: str) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _answer(seed: int, length: int, max_tokens: int | None, stop: list[str]) -> tuple[list[str], str]:
    tokens, _ = apply_stop(tokens_for(seed, length), stop)
    if max_tokens is not None and len(tokens) > max_tokens:
        return tokens[:max_tokens], "length"
    return tokens, "stop"


def _groups(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _interleave(per_choice: list[list[tuple[dict[str, Any], int]]]) -> list[tuple[dict[str, Any], int]]:
    """Round-robin over the choices' own sequences, as OpenAI interleaves them for n > 1."""
    out: list[tuple[dict[str, Any], int]] = []
    for step in range(max(map(len, per_choice), default=0)):
        out += [seq[step] for seq in per_choice if step < len(seq)]
    return out


def _tool_arguments(tool: dict[str, Any], rng: random.Random) -> str:
    """JSON arguments that fit the tool's parameter schema."""
    properties = tool.get("function", {}).get("parameters", {}).get("properties", {})
    args: dict[str, Any] = {}
    for name, schema in properties.items():
        kind = schema.get("type") if isinstance(schema, dict) else None
        if isinstance(schema, dict) and schema.get("enum"):
            args[name] = schema["enum"][0]
        elif kind in ("number", "integer"):
            args[name] = rng.randint(1, 100)
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = [rng.choice(VOCABULARY)]
        else:
            args[name] = rng.choice(VOCABULARY)
    return json.dumps(args)


def _chosen_tools(request: ChatRequest) -> list[dict[str, Any]]:
    choice = request.tool_choice
    if not request.tools or choice == "none":
        return []
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name")
        return [t for t in request.tools if t.get("function", {}).get("name") == name]
    return request.tools if request.parallel_tool_calls else request.tools[:1]


def plan_chat(request: ChatRequest, length: int, tokens_per_chunk: int) -> Plan:
    """All chunks of a chat completion stream for this request; `length` is the natural answer length."""
    head = _header("chatcmpl", "chat.completion.chunk", request.model)
    per_choice: list[list[tuple[dict[str, Any], int]]] = []
    completion_tokens = 0
    tools = _chosen_tools(request)
    for index in range(request.n):
        seed = request.seed * 1000 + index
        rng = random.Random(seed)
        seq: list[tuple[dict[str, Any], int]] = []

        def chunk(
            delta: dict[str, Any], ntokens: int, finish: str | None = None, logprobs: Any = None
        ) -> None:
            seq.append((_chat_chunk(head, index, delta, finish, logprobs), ntokens))  # noqa: B023 (called at once)

        if tools:
            chunk({"role": "assistant", "content": None}, 0)
            for call_index, tool in enumerate(tools):
                arguments = _tool_arguments(tool, rng)
                call = {
                    "index": call_index,
                    "id": f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": tool["function"]["name"], "arguments": ""},
                }
                chunk({"tool_calls": [call]}, 1)
                pieces = [arguments[i : i + 7] for i in range(0, len(arguments), 7)]
                for group in _groups(pieces, tokens_per_chunk):
                    delta = {"tool_calls": [{"index": call_index, "function": {"arguments": "".join(group)}}]}
                    chunk(delta, len(group))
                completion_tokens += 1 + len(pieces)
            chunk({}, 0, "tool_calls")
        else:
            tokens, finish = _answer(seed, length, request.max_tokens, request.stop)
            completion_tokens += len(tokens)
            chunk(
                {"role": "assistant", "content": ""},
                0,
                logprobs={"content": []} if request.logprobs else None,
            )
            for group in _groups(tokens, tokens_per_chunk):
                logprobs = None
                if request.logprobs:
                    logprobs = {"content": [_chat_logprob(t, rng, request.top_logprobs) for t in group]}
                chunk({"content": "".join(group)}, len(group), logprobs=logprobs)
            chunk({}, 0, finish)
        per_choice.append(seq)
    planned = _interleave(per_choice)
    if request.include_usage:
        usage = _usage(request.prompt_tokens, completion_tokens)
        planned.append(({**head, "choices": [], "usage": usage}, 0))
    return Plan([c for c, _ in planned], [t for _, t in planned], completion_tokens)


def _chat_chunk(
    head: dict[str, Any], index: int, delta: dict[str, Any], finish: str | None, logprobs: Any
) -> dict[str, Any]:
    return {
        **head,
        "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
    }


def _chat_logprob(token: str, rng: random.Random, top: int) -> dict[str, Any]:
    logprob = logprob_of(rng)
    alternates = [(token, logprob)] + [
        (rng.choice(VOCABULARY), round(logprob - 1 - i, 4)) for i in range(top - 1)
    ]
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in alternates[:top]
        ],
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def plan_completion(request: CompletionRequest, length: int, tokens_per_chunk: int) -> Plan:
    """All chunks of a legacy completion stream: n choices for each prompt, indexed prompt by prompt."""
    head = _header("cmpl", "text_completion", request.model)
    per_choice: list[list[tuple[dict[str, Any], int]]] = []
    completion_tokens = 0
    for p, prompt in enumerate(request.prompts):
        for j in range(request.n):
            index = p * request.n + j
            seed = request.seed * 1000 + index
            rng = random.Random(seed)
            tokens, finish = _answer(seed, length, request.max_tokens, request.stop)
            completion_tokens += len(tokens)
            pieces = [([prompt] if prompt else [], 0)] if request.echo else []  # echo: the prompt comes first
            pieces += [(group, len(group)) for group in _groups(tokens, tokens_per_chunk)]
            seq: list[tuple[dict[str, Any], int]] = []
            offset = 0
            for group, ntokens in pieces:
                text = "".join(group)
                logprobs = None
                if request.logprobs is not None:
                    logprobs = _legacy_logprobs(group, offset, rng, request.logprobs, echo=ntokens == 0)
                choice = {"text": text, "index": index, "logprobs": logprobs, "finish_reason": None}
                seq.append(({**head, "choices": [choice]}, ntokens))
                offset += len(text)
            seq.append(({**head, "choices": [_legacy_finish(index, finish, request.logprobs)]}, 0))
            per_choice.append(seq)
    planned = _interleave(per_choice)
    if request.include_usage:
        planned.append(
            ({**head, "choices": [], "usage": _usage(request.prompt_tokens, completion_tokens)}, 0)
        )
    return Plan([c for c, _ in planned], [t for _, t in planned], completion_tokens)


def _legacy_finish(index: int, finish: str, logprobs: int | None) -> dict[str, Any]:
    empty: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    return {
        "text": "",
        "index": index,
        "logprobs": empty if logprobs is not None else None,
        "finish_reason": finish,
    }


def _legacy_logprobs(
    tokens: list[str], offset: int, rng: random.Random, top: int, echo: bool
) -> dict[str, Any]:
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    token_logprobs: list[float | None] = [None if echo else logprob_of(rng) for _ in tokens]
    top_logprobs: list[dict[str, float] | None] = []
    for token, lp in zip(tokens, token_logprobs, strict=True):
        if lp is None:
            top_logprobs.append(None)
        else:
            alternates = {token: lp}
            for i in range(top - 1):
                alternates.setdefault(rng.choice(VOCABULARY), round(lp - 1 - i, 4))
            top_logprobs.append(alternates)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }
