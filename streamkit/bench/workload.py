"""What a run sends, and when (no I/O but reading a JSONL file).

Requests come from a built-in generator (`--input-len` words of prompt, `--output-len` tokens asked for) or
from a JSONL file, one request body per line: `{"messages": [...]}` or `{"prompt": "..."}`, plus any
parameter. Send times come from a closed loop (each of `--concurrency` slots sends again as soon as its
request ends) or an open loop (`--rate` requests/s, a Poisson process, or gamma-distributed gaps with
`--burstiness`: below 1 burstier, above 1 more even).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BenchRequest", "arrival_times", "generated_requests", "load_requests"]

# Common English words, about one token each for the usual tokenizers.
_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this from have or by one had "
    "not but what all were when we there can an your which their said if do will each about how up out them "
    "then she many some so these would other into has more her two like him see time could no make than "
    "first been its who now people my made over did down only way find use may water long little very after"
).split()


@dataclass(frozen=True)
class BenchRequest:
    """One request body (without `model` and `stream`), and the prompt length it was made with."""

    body: Mapping[str, Any]
    input_len: int


def _prompt(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(max(words, 1)))


def generated_requests(
    count: int, input_len: int, output_len: int, *, chat: bool, seed: int, extra_body: Mapping[str, Any]
) -> list[BenchRequest]:
    """`count` requests of `input_len` words each, asking for `output_len` tokens."""
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        text = _prompt(rng, input_len)
        body: dict[str, Any] = {"messages": [{"role": "user", "content": text}]} if chat else {"prompt": text}
        body["max_tokens"] = output_len
        body.update(extra_body)
        requests.append(BenchRequest(body, input_len))
    return requests


def load_requests(path: Path, count: int, *, chat: bool, extra_body: Mapping[str, Any]) -> list[BenchRequest]:
    """`count` requests from a JSONL file, cycling through it if it is shorter. Raises ValueError on a line
    that is not a JSON object with `messages` (chat) or `prompt` (completions)."""
    need = "messages" if chat else "prompt"
    bodies = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                body = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(body, dict) or need not in body:
                raise ValueError(f"{path}:{number}: a request needs {need!r}")
            body.pop("model", None)
            body.pop("stream", None)
            bodies.append({**body, **extra_body})
    if not bodies:
        raise ValueError(f"{path}: no requests")
    return [
        BenchRequest(body, len(json.dumps(body.get(need), ensure_ascii=False).split()))
        for body in (bodies[i % len(bodies)] for i in range(count))
    ]


def arrival_times(rate: float, burstiness: float, seed: int) -> Iterator[float]:
    """Intended send times in seconds from the start: 0, then gaps with mean `1/rate`.

    burstiness 1 is a Poisson process (exponential gaps); otherwise the gaps are gamma-distributed with shape
    `burstiness`, as in vLLM's benchmark. An infinite rate sends everything at once.
    """
    if rate <= 0 or burstiness <= 0:
        raise ValueError("rate and burstiness must be positive")
    rng = random.Random(seed)
    t = 0.0
    while True:
        yield t
        if not math.isinf(rate):
            t += rng.gammavariate(burstiness, 1 / (rate * burstiness))
