"""What a run sends, and when (no I/O but reading a JSONL file).

Requests come from a built-in generator (`--input-len` words of prompt, `--output-len` tokens asked for) or
from a JSONL file, one request body per line in the API's shape: `{"messages": [...]}` (chat, Messages),
`{"prompt": "..."}` (legacy completions) or `{"input": ...}` (Responses), plus any parameter. Send times
come from a closed loop (each of `--concurrency` slots sends again as soon as its request ends) or an open
loop (`--rate` requests/s, a Poisson process, or gamma-distributed gaps with
`--burstiness`: below 1 burstier, above 1 more even).
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from streamkit.protocols.base import Api

__all__ = [
    "BenchRequest",
    "Requests",
    "Share",
    "arrival_times",
    "dealt",
    "generated_requests",
    "load_requests",
]

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


@dataclass(frozen=True)
class Requests(Sequence[BenchRequest]):
    """The requests of a run, each made when it is read: a run of any length (`--duration`) costs nothing up
    front. Slicing gives another lazy view, and so does a worker's `Share`; request `i` is the same
    whichever view reads it."""

    make: Callable[[int], BenchRequest]
    indices: range

    def __len__(self) -> int:
        return len(self.indices)

    @overload
    def __getitem__(self, index: int) -> BenchRequest: ...
    @overload
    def __getitem__(self, index: slice) -> Requests: ...
    def __getitem__(self, index: int | slice) -> BenchRequest | Requests:
        if isinstance(index, slice):
            return Requests(self.make, self.indices[index])
        return self.make(self.indices[index])


def dealt(count: int, period: int, slots: range) -> int:
    """How many of `count` things dealt out in turn to `period` places land on `slots` (a range of places):
    those whose index modulo `period` is in `slots`."""
    return count // period * len(slots) + len(range(slots.start, min(slots.stop, count % period), slots.step))


@dataclass(frozen=True)
class Share(Sequence[BenchRequest]):
    """One worker's share of the requests, in order: those whose index modulo `period` is in `slots`. Request
    `j` goes to the worker that holds place `j % period`, so that shares of any sizes add up to the whole, and
    each is as lazy as `requests` is (a `Requests` of a `--duration` run is endless)."""

    requests: Sequence[BenchRequest]
    period: int
    slots: range

    def __len__(self) -> int:
        return dealt(len(self.requests), self.period, self.slots)

    @overload
    def __getitem__(self, index: int) -> BenchRequest: ...
    @overload
    def __getitem__(self, index: slice) -> list[BenchRequest]: ...
    def __getitem__(self, index: int | slice) -> BenchRequest | list[BenchRequest]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("share index out of range")
        turn, place = divmod(index, len(self.slots))
        return self.requests[turn * self.period + self.slots[place]]


@dataclass(frozen=True)
class _Generated:
    input_len: int
    output_len: int
    api: Api[Any, Any]
    seed: int
    extra_body: Mapping[str, Any]

    def __call__(self, i: int) -> BenchRequest:
        rng = random.Random(f"{self.seed}:{i}")
        text = " ".join(rng.choice(_WORDS) for _ in range(max(self.input_len, 1)))
        user = [{"role": "user", "content": text}]
        body = self.api.turn("", user, max_tokens=self.output_len, params=dict(self.extra_body))
        del body["model"]  # the run's, added when the request is sent
        return BenchRequest(body, self.input_len)


@dataclass(frozen=True)
class _Cycled:
    requests: tuple[BenchRequest, ...]

    def __call__(self, i: int) -> BenchRequest:
        return self.requests[i % len(self.requests)]


def _indices(count: int | None) -> range:
    return range(sys.maxsize if count is None else count)


def generated_requests(
    count: int | None,
    input_len: int,
    output_len: int,
    *,
    api: Api[Any, Any],
    seed: int,
    extra_body: Mapping[str, Any],
) -> Requests:
    """`count` requests (None: as many as a run asks for) of `input_len` words each, asking for `output_len`
    tokens, in the shape of `api`. Each prompt is random words, drawn from `seed` and its own index."""
    return Requests(_Generated(input_len, output_len, api, seed, extra_body), _indices(count))


def load_requests(
    path: Path, count: int | None, *, api: Api[Any, Any], extra_body: Mapping[str, Any]
) -> Requests:
    """`count` requests (None: as many as a run asks for) from a JSONL file, cycling through it if it is
    shorter. Raises ValueError on a line that is not a JSON object with the API's prompt field (`messages`,
    `prompt` or `input`)."""
    need = api.prompt_field
    requests = []
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
            words = len(json.dumps(body[need], ensure_ascii=False).split())
            requests.append(BenchRequest({**body, **extra_body}, words))
    if not requests:
        raise ValueError(f"{path}: no requests")
    return Requests(_Cycled(tuple(requests)), _indices(count))


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
