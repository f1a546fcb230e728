"""The responses that the built-in server keeps for `GET /v1/responses/{id}`: the Responses API's background
mode, and the whole answers of the others.

A background response (`background: true`) is produced once, by a task of the server that plays its plan
with its timing, and each of its events is kept here as it is produced (`StoredResponse.add`). Whoever streams
it, the POST that created it or any `GET /v1/responses/{id}?stream=true` later, reads its events from here:
those kept already at once, then each as it comes (`StoredResponse.changed`), until the response ends. So a
client that comes back after its connection broke finds what was produced meanwhile, and the rest live, and
the producer never depends on anyone reading.

The Response object that a GET returns is the one carried by the last event that carries one (its `status`
apart: `queued` until the producer has a slot, then `in_progress`, then the terminal event's), with
`cancelled` once cancelled. The server does not piece output together from events, so a cancelled response's
object is the one its stream last carried (its `output` as it was then: empty before the terminal event).

A response created without `background` (and without `store: false`) is kept too, once its answer was
written whole, as its whole Response object only, as OpenAI keeps it for a GET: it cannot be streamed again
or cancelled. One cut short (a fault, its client gone) is not kept.

OpenAI keeps a background response's data for about 10 minutes (its background mode guide), which
`BACKGROUND_KEEP_SECONDS` follows, counted from when the response ended: one still in progress is never too
old. Each kind (background, or not) is kept apart, at most `BACKGROUND_KEPT` responses of
`BACKGROUND_KEPT_TOKENS` planned tokens in all, the oldest forgotten first beyond either: a benchmark's
thousands of plain requests never push a background response out, and no client can make the server hold
gigabytes. A background response forgotten while it is produced is stopped, and its streams end as a
cancelled one's do.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Coroutine
from typing import Any

from streamkit.server.scripted import Frame

__all__ = [
    "BACKGROUND_KEEP_SECONDS",
    "BACKGROUND_KEPT",
    "BACKGROUND_KEPT_TOKENS",
    "TERMINAL_EVENTS",
    "BackgroundStore",
    "StoredResponse",
]

# How long a response is kept after it ended: OpenAI's "roughly 10 minutes" of its background mode.
BACKGROUND_KEEP_SECONDS = 600.0
# The responses of each kind kept at once, and their planned tokens in all (as `MAX_REQUEST_TOKENS` counts
# them: a logprob alternate is a token). Each planned token costs about 1 KiB of events while it is kept, so
# this is about 128 MiB: two of the longest answers a request may ask for (`MAX_REQUEST_TOKENS`).
BACKGROUND_KEPT = 256
BACKGROUND_KEPT_TOKENS = 131_072

# The events that end a response's stream: its terminal events, and the `error` event (the `error=event`
# fault), after which OpenAI sends nothing more. A cancelled response has none: no stream event says so (the
# `response.cancelled` of the API's reference is a webhook's, not a stream's), so its streams just end.
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


class StoredResponse:
    """One response the server keeps: its events so far (a background one's), its Response object as it
    stands, and how many connections have streamed it (what the `cut` fault counts).

    `response` is the Response object of the last event that carried one, `status` the response's status
    now: `queued`, `in_progress`, or how it ended (`completed`, `incomplete`, `failed`, `cancelled`)."""

    def __init__(
        self,
        id: str,
        response: dict[str, Any],
        *,
        background: bool,
        stream: bool = False,
        cuts: tuple[float, ...] = (),
        cost: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = id
        self.response = response
        self.background = background
        self.stream = stream
        """Created with `stream: true`: only such a background response can be streamed again, as OpenAI
        has it."""
        self.cuts = cuts
        self.cost = cost
        """Its planned tokens, what the store's `BACKGROUND_KEPT_TOKENS` counts."""
        self.events: list[Frame] = []
        self.status = "queued"
        self.ended_at: float | None = None
        self.connections = 0
        self.producer: asyncio.Task[None] | None = None
        self._clock = clock
        self._changed = asyncio.Event()

    @classmethod
    def whole(
        cls, id: str, response: dict[str, Any], cost: int, clock: Callable[[], float] = time.monotonic
    ) -> StoredResponse:
        """A response that was not created in the background, kept as its whole Response object, ended."""
        stored = cls(id, response, background=False, cost=cost, clock=clock)
        stored.end(response.get("status", "completed"))
        return stored

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def object(self) -> dict[str, Any]:
        """The Response object as it stands, which `GET /v1/responses/{id}` and a cancel return."""
        return {**self.response, "status": self.status}

    def is_terminal(self, index: int) -> bool:
        """Whether event `index` is the one that ended the response's stream."""
        return self.ended and index == len(self.events) - 1 and self.events[index].event in TERMINAL_EVENTS

    def start(self) -> None:
        """The producer has its slot: the response is in progress."""
        if not self.ended:
            self.status = "in_progress"

    def add(self, frame: Frame) -> None:
        """Keep one more event, and wake whoever waits for it. A terminal event (`TERMINAL_EVENTS`) ends the
        response with its status; an `error` event fails it. Nothing is added to a response that has ended
        (cancelled, or forgotten)."""
        if self.ended:
            return
        self.events.append(frame)
        data = frame.data if isinstance(frame.data, dict) else {}
        if isinstance(data.get("response"), dict):
            self.response = data["response"]
        if frame.event == "error":
            error = {"code": data.get("code"), "message": data.get("message")}
            self.response = {**self.response, "error": error}
            self.end("failed")
        elif frame.event in TERMINAL_EVENTS:
            self.end(self.response.get("status", "failed"))
        else:
            self._notify()

    def end(self, status: str) -> None:
        """End the response with `status` (cancelled, say), unless it has ended already; its readers wake and
        end their streams once they have written what is kept."""
        if self.ended:
            return
        self.status = status
        self.ended_at = self._clock()
        self._notify()

    def changed(self) -> Coroutine[Any, Any, Any]:
        """Something to await until the next event is kept or the response ends: taken before awaiting, so
        that nothing added in between is missed."""
        return self._changed.wait()

    def connect(self) -> float | None:
        """Count one more connection that streams this response; returns the `cut` fault's entry for it (None:
        it is not cut)."""
        self.connections += 1
        return self.cuts[self.connections - 1] if self.connections <= len(self.cuts) else None

    def stop(self) -> None:
        """End it as cancelled and cancel its producer, if it has one still running."""
        self.end("cancelled")
        if self.producer is not None and not self.producer.done():
            self.producer.cancel()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class BackgroundStore:
    """The responses the server keeps, by id: background ones and the others each apart, each kind at most
    `kept` responses and `kept_tokens` planned tokens, and each kept `keep_seconds` after it ended."""

    def __init__(
        self,
        keep_seconds: float = BACKGROUND_KEEP_SECONDS,
        kept: int = BACKGROUND_KEPT,
        kept_tokens: int = BACKGROUND_KEPT_TOKENS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keep_seconds = keep_seconds
        self.kept = kept
        self.kept_tokens = kept_tokens
        self.clock = clock
        self._kinds: dict[bool, collections.OrderedDict[str, StoredResponse]] = {
            True: collections.OrderedDict(),
            False: collections.OrderedDict(),
        }
        self._costs = {True: 0, False: 0}
        self._stopped: list[asyncio.Task[None]] = []

    def __len__(self) -> int:
        return sum(len(kind) for kind in self._kinds.values())

    def add(self, stored: StoredResponse) -> None:
        """Keep `stored`, forgetting the oldest of its kind beyond the limits (never `stored` itself)."""
        kind = self._kinds[stored.background]
        kind[stored.id] = stored
        self._costs[stored.background] += stored.cost
        self._prune(stored.background)
        while len(kind) > 1 and (len(kind) > self.kept or self._costs[stored.background] > self.kept_tokens):
            self._forget(stored.background, next(iter(kind)))

    def get(self, id: str) -> StoredResponse | None:
        """The response kept as `id`, or None: never kept, or forgotten."""
        for background in self._kinds:
            self._prune(background)
        return self._kinds[True].get(id) or self._kinds[False].get(id)

    def close(self) -> None:
        """Stop every background response still produced (the app is shutting down): their streams end, and
        `wait_closed` awaits their producers."""
        for stored in self._kinds[True].values():
            self._stop(stored)

    async def wait_closed(self) -> None:
        """Await the producers that `close` (or a forgotten response) stopped."""
        stopped, self._stopped = self._stopped, []
        await asyncio.gather(*stopped, return_exceptions=True)

    def _prune(self, background: bool) -> None:
        """Forget the responses of a kind that ended more than `keep_seconds` ago. The others are ended from
        the start, in the order kept, so the oldest come first; background ones end in any order."""
        kind, deadline = self._kinds[background], self.clock() - self.keep_seconds
        for id, stored in list(kind.items()):
            if stored.ended_at is not None and stored.ended_at < deadline:
                self._forget(background, id)
            elif not background:
                break

    def _forget(self, background: bool, id: str) -> None:
        stored = self._kinds[background].pop(id)
        self._costs[background] -= stored.cost
        self._stop(stored)

    def _stop(self, stored: StoredResponse) -> None:
        """Stop `stored`, keeping its producer, if one still runs, for `wait_closed`."""
        if stored.producer is not None and not stored.producer.done():
            self._stopped = [task for task in self._stopped if not task.done()]
            self._stopped.append(stored.producer)
        stored.stop()
