"""The built-in server's `scripted` model and the request checks its APIs share (sans-I/O).

The model answers what any API asks in one neutral form: a `Script` (how many choices, which seed, the stop
strings, the token limit, the tools to call) gives one `Answer` per choice, a list of word-piece tokens or of
tool calls. Each module of `streamkit.server.apis` turns a request into a `Script` (`ServerApi.parse_request`)
and the answers into a `Plan` (`ServerApi.render`): the frames of its own stream, and the whole answer that a
request with `stream: false` gets, both built from the same answers. So the same model speaks every dialect.

An answer's tokens are drawn from a seeded generator: the same request with the same `seed` always gets the
same text, so tests can state exactly what they expect. Planning the whole answer up front makes `stop` exact
(a stop string is never emitted, even when it spans tokens). Nothing here decodes a frame or merges one: the
whole answer is written from the plan, so that it is an oracle for the client's accumulators, not a copy.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ECHO_CHARACTERS_PER_TOKEN",
    "MAX_REQUEST_TOKENS",
    "SYSTEM_FINGERPRINT",
    "Answer",
    "Call",
    "Frame",
    "Plan",
    "RequestError",
    "Script",
    "Tool",
    "answer",
    "apply_stop",
    "check_model",
    "check_range",
    "check_stop",
    "check_type",
    "groups",
    "logprob_of",
    "new_id",
    "now",
    "tokens_for",
    "word_count",
]

# Plain words and a few non-ASCII ones, so that split writes can land inside a UTF-8 sequence.
VOCABULARY = (
    "the a stream of tokens arrives as server sent events and each chunk carries a small delta which the "
    "client merges into choices until done while latency matters more than anything else for people who "
    "read answers as they appear on screen café naïve über façade résumé jalapeño streaming protocol "
    "decoder aggregate benchmark measurement connection response request"
).split()

SYSTEM_FINGERPRINT = "fp_streamkit"
ARGUMENT_PIECE = 7  # characters of a tool call's JSON arguments per token
# The most tokens that the answers to one request hold in all: `n` x prompts x tokens per answer, each tool
# call's pieces and each logprob alternate counted as tokens. Every planned token costs about 1 KiB of
# events until the answer is sent, so one request holds about 64 MiB at most, where 2,000 legacy prompts x
# `n=16` took 530 MB and a tool call's arguments (its schema's names, copied into every choice) gigabytes.
# It allows two answers of `MAX_ANSWER_TOKENS` (`streamkit.server.faults`), or 128 choices of 512 tokens.
MAX_REQUEST_TOKENS = 65_536
# An echoed prompt (legacy `echo`) is copied into each of its choices: it counts as one token per this many
# characters, about what a planned token costs in memory.
ECHO_CHARACTERS_PER_TOKEN = 1024


# Checking requests


class RequestError(Exception):
    """A request the API would reject: its status and error fields. Each API shapes the body its own way
    (`Api.error_body`)."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type


_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def check_type(body: dict[str, Any], name: str, *kinds: type) -> Any:
    """`body[name]`, or None when absent or null. Raises `RequestError` when it is of none of `kinds`."""
    value = body.get(name)
    if value is None:
        return None
    # bool is an int in Python but not in JSON; an int is a fine number.
    ok = any(
        isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool)) for kind in kinds
    ) or (float in kinds and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        expected = " or ".join(_TYPE_NAMES[k] for k in kinds)
        got = _TYPE_NAMES.get(type(value), "null")
        raise RequestError(
            400, f"Invalid type for '{name}': expected {expected}, but got {got}.", name, "invalid_type"
        )
    return value


def check_range(body: dict[str, Any], name: str, kind: type, low: float, high: float | None = None) -> Any:
    """`body[name]` checked as `check_type` does, and between `low` and `high`."""
    value = check_type(body, name, kind)
    if value is None:
        return None
    if value < low:
        raise RequestError(
            400, f"Invalid '{name}': value below minimum. Expected a value >= {low}, but got {value}.", name,
            "integer_below_min_value" if kind is int else "decimal_below_min_value",
        )  # fmt: skip
    if high is not None and value > high:
        raise RequestError(
            400, f"Invalid '{name}': value above maximum. Expected a value <= {high}, but got {value}.", name,
            "integer_above_max_value" if kind is int else "decimal_above_max_value",
        )  # fmt: skip
    return value


def check_model(body: dict[str, Any], model: str | None) -> str:
    """The model asked, which is the name the answer gives. It must be given, a string, and the one this
    server serves (else 404, as OpenAI answers), or any name when `model` is None."""
    if body.get("model") is None:
        raise RequestError(400, "Missing required parameter: 'model'.", "model", "missing_required_parameter")
    asked: str = check_type(body, "model", str)
    if model is not None and asked != model:
        raise RequestError(
            404,
            f"The model `{asked}` does not exist or you do not have access to it.",
            None,
            "model_not_found",
        )
    return asked


def check_stop(value: Any, name: str = "stop") -> list[str]:
    """Stop strings: a string or an array of at most 4 strings."""
    stops = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if value is not None and (stops is None or len(stops) > 4 or not all(isinstance(s, str) for s in stops)):
        raise RequestError(
            400,
            f"Invalid '{name}': expected a string or an array of at most 4 strings.",
            name,
            "invalid_value",
        )
    return list(stops or [])


def word_count(value: Any) -> int:
    """Words in a prompt, a message's content or a list of either: the scripted model's prompt tokens."""
    count = 0
    pending = [value]  # not recursive: a request nests its lists as deep as the JSON parser allows
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            count += len(item.split())
        elif isinstance(item, list):
            pending += item
        elif isinstance(item, dict):
            pending += [item.get("content"), item.get("text")]
    return count


# Answering


@dataclass
class Tool:
    """A tool the model may call: its name and its parameters' JSON schema."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Script:
    """What the scripted model is asked, whatever the API."""

    model: str
    prompt_tokens: int = 0
    prompts: list[str] = field(default_factory=lambda: [""])
    """Legacy completions answer each prompt `n` times; every other API has one prompt."""
    n: int = 1
    seed: int = 0
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int = 0
    tools: list[Tool] = field(default_factory=list)
    """The tools the answer calls (the API's `tool_choice` already applied); none: the answer is text."""
    include_usage: bool = False
    echo: bool = False
    suffix: str | None = None
    stream: bool = True
    background: bool = False
    """Produce the answer in the background and keep it (the Responses API's `background: true`), rather
    than on the request's connection."""
    request: dict[str, Any] = field(default_factory=dict)
    """The request's body, for the APIs that echo its settings in their answer."""


@dataclass
class Call:
    """One tool call of an answer: its id, name and JSON arguments, which stream in `pieces`."""

    id: str
    name: str
    arguments: str

    @property
    def pieces(self) -> list[str]:
        return [self.arguments[i : i + ARGUMENT_PIECE] for i in range(0, len(self.arguments), ARGUMENT_PIECE)]


@dataclass
class Answer:
    """One choice of an answer: text tokens or tool calls, and why it ended."""

    index: int
    tokens: list[str]
    finish: str
    """`stop`, `length` (the token limit) or `tool_calls`."""
    stop_sequence: str | None = None
    """The stop string that ended it, if one did."""
    calls: list[Call] = field(default_factory=list)
    prompt: str = ""
    rng: random.Random = field(default_factory=random.Random)
    """Draws the answer's logprobs, deterministically."""

    @property
    def output_tokens(self) -> int:
        return len(self.tokens) + sum(1 + len(call.pieces) for call in self.calls)


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


def apply_stop(tokens: list[str], stop: Sequence[str]) -> tuple[list[str], str | None]:
    """Cut the tokens before the first occurrence of any stop string; return them and the string found."""
    text = "".join(tokens)
    found = [(i, s) for s in stop if s for i in (text.find(s),) if i >= 0]
    if not found:
        return tokens, None
    cut, which = min(found)
    kept: list[str] = []
    size = 0
    for token in tokens:
        if size + len(token) > cut:
            if cut > size:
                kept.append(token[: cut - size])
            break
        kept.append(token)
        size += len(token)
    return kept, which


def logprob_of(rng: random.Random) -> float:
    return -round(rng.random() * 3, 4)


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def _tool_arguments(tool: Tool, rng: random.Random) -> str:
    """JSON arguments that fit the tool's parameter schema."""
    properties = tool.parameters.get("properties", {})
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


def answer(script: Script, length: int) -> list[Answer]:
    """Every choice of the answer to `script`, by index; `length` is an answer's natural length in tokens.
    Choice `i` is drawn from the seed `script.seed * 1000 + i`.

    Raises `RequestError` (400) when the answers would hold more than `MAX_REQUEST_TOKENS` tokens in all, as
    soon as that is known: a text choice's cost before it is drawn, a tool-calling one's once its arguments
    are (their length is the schema's, which the request's size bounds)."""
    answers = []
    spent = 0
    per_token = 1 + script.top_logprobs if script.logprobs else 1
    for p, prompt in enumerate(script.prompts):
        echoed = len(prompt) // ECHO_CHARACTERS_PER_TOKEN if script.echo else 0
        for j in range(script.n):
            index = p * script.n + j
            rng = random.Random(script.seed * 1000 + index)
            if script.tools:
                calls = [Call(new_id("call_"), t.name, _tool_arguments(t, rng)) for t in script.tools]
                answers.append(Answer(index, [], "tool_calls", calls=calls, prompt=prompt, rng=rng))
                spent += answers[-1].output_tokens
                _check_spent(spent)
                continue
            spent += length * per_token + echoed
            _check_spent(spent)
            tokens, stop = apply_stop(tokens_for(script.seed * 1000 + index, length), script.stop)
            finish = "stop"
            if script.max_tokens is not None and len(tokens) > script.max_tokens:
                tokens, finish, stop = tokens[: script.max_tokens], "length", None
            answers.append(Answer(index, tokens, finish, stop, prompt=prompt, rng=rng))
    return answers


def _check_spent(spent: int) -> None:
    """Raises `RequestError` (400) when `spent` tokens are over `MAX_REQUEST_TOKENS`."""
    if spent > MAX_REQUEST_TOKENS:
        raise RequestError(
            400,
            "Too many tokens for one request: n x prompts x tokens per answer (tool-call arguments and "
            f"logprob alternates included) comes to more than {MAX_REQUEST_TOKENS}, the built-in server's "
            "limit.",
            None,
            "invalid_value",
        )


def groups(items: list[Any], size: int) -> list[list[Any]]:
    """`items` in runs of `size` (the last may be shorter): the tokens each chunk carries."""
    return [items[i : i + size] for i in range(0, len(items), size)]


# What a stream sends


@dataclass
class Frame:
    """One event of a planned stream: its data (a JSON object, or bytes as they are), its SSE type (None:
    none is sent), and how many tokens it carries (the server waits for them before sending it)."""

    data: Any
    event: str | None = None
    tokens: int = 0


@dataclass
class Plan:
    """One answer in both of its forms. `frames`, then `end`, are every event of its stream in order (`end`
    holds the events that end the stream, which a `no_done` fault leaves out); `whole` is the JSON body of
    the same answer to a request with `stream: false`. `id` names the answer in the server's trace."""

    id: str
    frames: list[Frame]
    end: list[Frame]
    output_tokens: int
    whole: dict[str, Any]
