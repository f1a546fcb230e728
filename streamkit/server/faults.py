"""Timing and fault settings of the built-in server, and their `name=value,...` syntax.

The same syntax serves the command line (`streamkit serve --timing ... --fault ...`) and a single request
(the `x-streamkit-timing` and `x-streamkit-fault` headers), so one server can play many test cases.

Timing (`--timing SPEC`, or the `x-streamkit-timing` header of a request):

| setting | what it sets |
| --- | --- |
| `ttft=S` | seconds before the first token |
| `itl=S`, `tps=N` | seconds per token, or tokens per second, after the first |
| `tokens_per_chunk=N` | tokens in each chunk |
| `jitter=F` | each wait is scaled by a random factor in [1-F, 1+F] |
| `tokens=N` | the natural length of an answer, at most 32,768 (`MAX_ANSWER_TOKENS`) |
| `events_per_write=N` | events sent together, up to N per write, until a wait: a firehose that lets a |
| | benchmark measure the client rather than the server |
| `write_bytes=N` | events sent together until they fill N bytes, or a wait comes: one big stream in |
| | 64 KiB writes, say, whose reads cut events anywhere |
| `slots=N` | at most N requests are answered at once; the others wait in a queue, first come first |
| | served, as a real server's slots do (0: no limit, the default). The wait is part of a request's |
| | time to first token. A setting of the server (`--timing`) that a request's header may not change |

Faults (`--fault SPEC`, or the `x-streamkit-fault` header of a request): every fault comes in the form of the
API that was called. "Events" are chunks for chat and legacy completions, and the typed events of the
Responses and Messages APIs.

| fault | what the server does |
| --- | --- |
| `drop=K` | aborts the connection after K events |
| `cut=K1:K2:...` | aborts the n-th connection that streams a response after the Kn-th event that connection |
| | wrote (counted per connection, from its first); connections past the list are not cut. `K.F` |
| | writes K events and the fraction .F of the next one's bytes before the abort: `cut=5.5` cuts |
| | the 6th event in half. A background response (`background: true`) counts its own connections: |
| | its POST's stream is the first, each `GET /v1/responses/{id}?stream=true` the next; any other |
| | stream is its only connection. K equal to the events the connection writes: aborted after the |
| | last of them, before the body's proper end; past that, not cut |
| `truncate=K` | ends the body cleanly after K events: no finish, no `[DONE]` or terminal event |
| `no_done` | sends every event but the end: `data: [DONE]`, `response.completed`, `message_stop` |
| `stall_head=S` | waits S seconds before the response head |
| `stall=K:S` | waits S seconds after K events |
| `error=FORM` | after `error_after=K` events (default 1), sends an error in one of the API's FORMs, and |
| | ends. Chat and legacy: `object` (`data: {"error": {...}}`), `string` (`data: {"error": "..."}`), |
| | `event` (`event: error`). Responses: `event` (an `error` event), `failed` (`response.failed`). |
| | Messages: `event` (an `error` event, `overloaded_error`) |
| `status=CODE` | answers every attempt with CODE and the API's error body |
| `status=CODE:K` | answers CODE to the first K attempts only, then serves normally (`fail_times=K` is the |
| | same count); attempts are counted per `key=...` (default: the fault string) |
| `retry_after=S`, `retry_after_ms=MS` | headers sent with `status` |
| `html` | answers 200 with an HTML page |
| `malformed=K` | after K events, sends data that is not valid JSON, and ends |
| `framing=END` | the line ends used: `lf`, `crlf` or `cr` |
| `bom` | starts the body with a UTF-8 BOM |
| `keepalive=S` | sends a `: keep-alive` comment every S seconds of waiting |
| `ping=S` | sends an `event: ping` event every S seconds of waiting |
| `split=N` | writes every event in pieces of N bytes (so a piece can end inside a UTF-8 sequence) |

A background response (`background: true` on the Responses API) is produced once and kept
(`streamkit.server.background`): `stall` and `error` play in its production, so that every reader sees them
(an `error` fails the response), and `cut` is kept with it. The other faults play on each connection that
streams it: the POST's take its own header's, and a `GET /v1/responses/{id}?stream=true` takes its own
header's, less its `cut`, `stall` and `error`, which are the production's (a client that resumes sends the
creating request's headers again).
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from dataclasses import dataclass

__all__ = ["MAX_ANSWER_TOKENS", "Faults", "Timing", "describe"]

# The longest answer, in tokens, that the scripted model writes (`tokens=N`). Each planned token costs about
# 1 KiB of events until the answer is sent, so a million of them took gigabytes; 32,768 is longer than any
# model's answer that a test or a benchmark plays, and costs tens of MiB.
MAX_ANSWER_TOKENS = 32_768

_ERROR_FORMS = ("object", "string", "event", "failed")  # each API takes some (`ServerApi.error_forms`)
_FRAMINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


def _pairs(spec: str) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    for item in spec.replace(";", ",").split(","):
        item = item.strip()
        if item:
            name, eq, value = item.partition("=")
            pairs.append((name.strip(), value.strip() if eq else None))
    return pairs


def _number(name: str, value: str | None, kind: type[int] | type[float]) -> float:
    if value is None:
        raise ValueError(f"{name} needs a value")
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a valid {kind.__name__}") from None
    if number < 0:
        raise ValueError(f"{name} must not be negative")
    return number


@dataclass(frozen=True)
class Timing:
    """How fast the scripted model answers."""

    ttft: float = 0.0
    itl: float = 0.0
    tokens_per_chunk: int = 1
    jitter: float = 0.0
    tokens: int = 16
    events_per_write: int = 1
    write_bytes: int = 0
    slots: int | None = None
    """How many requests the server answers at once (None or 0: any number). The server's alone: the app
    checks that a request's header leaves it as it is."""

    def __post_init__(self) -> None:
        """Raises ValueError on a setting out of its range."""
        if self.tokens_per_chunk < 1 or self.events_per_write < 1:
            raise ValueError("tokens_per_chunk and events_per_write must be at least 1")
        if self.jitter > 1:
            raise ValueError("jitter must be at most 1")
        if self.tokens > MAX_ANSWER_TOKENS:
            raise ValueError(f"tokens must be at most {MAX_ANSWER_TOKENS}")
        if self.slots is not None and self.slots < 0:
            raise ValueError("slots must not be negative")

    @classmethod
    def parse(cls, spec: str, base: Timing | None = None) -> Timing:
        """Settings from `spec` over those of `base`. Raises ValueError on an unknown name or bad value,
        and on a setting out of its range (`tokens` over `MAX_ANSWER_TOKENS`, say)."""
        timing = base or cls()
        changes: dict[str, float] = {}
        for name, value in _pairs(spec):
            if name == "tps":
                tps = _number(name, value, float)
                changes["itl"] = 1 / tps if tps else 0.0
            elif name in ("ttft", "itl", "jitter"):
                changes[name] = _number(name, value, float)
            elif name in ("tokens_per_chunk", "tokens", "events_per_write", "write_bytes", "slots"):
                changes[name] = int(_number(name, value, int))
            else:
                raise ValueError(f"unknown timing setting {name!r}")
        return dataclasses.replace(timing, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Faults:
    """How the server misbehaves; the default misbehaves in no way."""

    drop: int | None = None
    truncate: int | None = None
    no_done: bool = False
    stall_head: float = 0.0
    stall: tuple[int, float] | None = None
    error: str | None = None
    error_after: int = 1
    status: int | None = None
    fail_times: int | None = None  # the attempts that `status` fails (`status=CODE:K`); None: every one
    retry_after: str | None = None
    retry_after_ms: str | None = None
    key: str = ""
    html: bool = False
    malformed: int | None = None
    framing: str = "lf"
    bom: bool = False
    keepalive: float | None = None
    ping: float | None = None
    split: int | None = None
    cut: tuple[float, ...] = ()
    """The `cut` fault: per connection, the events after which it is aborted, a fraction being that part of
    the next event's bytes written first."""

    @property
    def line_end(self) -> bytes:
        return _FRAMINGS[self.framing]

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """Faults from `spec`. Raises ValueError on an unknown name or bad value."""
        changes: dict[str, object] = {"key": spec}
        for name, value in _pairs(spec):
            if name in ("no_done", "html", "bom"):
                changes[name] = True
            elif name in ("drop", "truncate", "malformed", "error_after", "fail_times"):
                changes[name] = int(_number(name, value, int))
            elif name == "split":
                changes[name] = max(1, int(_number(name, value, int)))
            elif name in ("stall_head", "keepalive", "ping"):
                changes[name] = _number(name, value, float)
            elif name == "stall":
                after, _, seconds = (value or "").partition(":")
                changes[name] = (int(_number(name, after, int)), _number(name, seconds, float))
            elif name == "cut":
                cuts = tuple(_number(name, part or None, float) for part in (value or "").split(":"))
                if not all(math.isfinite(k) for k in cuts):
                    raise ValueError("cut must be finite")
                changes[name] = cuts
            elif name == "status":
                code, colon, times = (value or "").partition(":")
                status = int(_number(name, code or None, int))
                if not 400 <= status <= 599:
                    raise ValueError("status must be a 4xx or 5xx code")
                changes[name] = status
                if colon:
                    changes["fail_times"] = int(_number("status count", times or None, int))
            elif name in ("retry_after", "retry_after_ms", "key"):
                changes[name] = value or ""
            elif name == "error":
                if value not in _ERROR_FORMS:
                    raise ValueError(f"error must be one of {', '.join(_ERROR_FORMS)}")
                changes[name] = value
            elif name == "framing":
                if value not in _FRAMINGS:
                    raise ValueError(f"framing must be one of {', '.join(_FRAMINGS)}")
                changes[name] = value
            else:
                raise ValueError(f"unknown fault {name!r}")
        for name in ("keepalive", "ping"):
            if changes.get(name) == 0:
                raise ValueError(f"{name} must be positive")
        return dataclasses.replace(cls(), **changes)  # type: ignore[arg-type]


def describe(width: int = 100) -> str:
    """This module's documentation of the timing settings and faults, as plain text at most `width` columns
    wide: what `streamkit serve --help` ends with. Each table becomes two columns, the setting and what it
    does, without markdown's marks. "" when Python runs without docstrings (`-OO`)."""
    blocks: list[str] = []
    for block in (__doc__ or "").strip().replace("`", "").split("\n\n"):
        if block.startswith("|"):
            blocks.append(_table(block.splitlines()[2:], width))  # past the header and its rule
        else:
            blocks.append(textwrap.fill(" ".join(block.split()), width))
    return "\n\n".join(blocks)


def _table(lines: list[str], width: int) -> str:
    """A markdown table's rows of two cells as indented plain text, a row with no first cell going on with
    the row above."""
    rows: list[tuple[str, str]] = []
    for line in lines:
        name, _, what = line.strip().strip("|").partition("|")
        if name.strip() or not rows:
            rows.append((name.strip(), what.strip()))
        else:
            rows[-1] = (rows[-1][0], f"{rows[-1][1]} {what.strip()}")
    column = 2 + min(max(len(name) for name, _ in rows), 22) + 2  # a longer name has a line of its own
    out: list[str] = []
    for name, what in rows:
        text = textwrap.wrap(what, width - column) or [""]
        if len(name) + 4 > column:
            out.append(f"  {name}")
            text[0] = " " * column + text[0]
        else:
            text[0] = f"  {name}".ljust(column) + text[0]
        out += [text[0], *(" " * column + line for line in text[1:])]
    return "\n".join(out)
