"""Streams: the typed items of one streamed response, their aggregate, and when each one arrived.

    stream = await client.chat.completions.create(model="m", messages=[...], stream=True)
    async with stream:
        async for chunk in stream:
            ...
    final = await stream.get_final_completion()

One class, `Stream`, reads every API; what differs between APIs is its `api` object
(`streamkit.protocols`), which decodes each event into an item and says what the item means. A stream reads
the body's bytes from its transport, stamps the time of each read before anything is decoded, feeds the bytes
to `SSEDecoder`, decodes each event into an item and adds it to the API's accumulator, so `snapshot` and the
`.partial` of any error always hold everything received.

End of stream, for every API:

- An event whose data starts with `[DONE]` ends the stream; nothing after it is read, and the connection goes
  back to the pool. It completes a chat or legacy stream; for the other APIs it must come after the end.
- An item the API flags as the end (`response.completed`, `message_stop`) ends the stream at once.
- An item the API flags as an error raises `StreamAPIError`, after the items before it are yielded.
- A body that ends without either ends the stream normally if the accumulator holds a whole answer (every
  choice has a `finish_reason`; a `stop_reason` came), and raises `IncompleteStreamError` otherwise.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from time import perf_counter
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

import anyio
import msgspec

from streamkit.errors import (
    FirstTokenTimeout,
    IdleTimeout,
    IncompleteStreamError,
    ProtocolError,
    ReadError,
    StreamkitError,
    TotalTimeout,
)
from streamkit.protocols.base import COUNTED, END, ERROR, TOKEN, Accumulator, Api, Model, UnknownEvent
from streamkit.protocols.chat import CHAT, ChatCompletion, ChatCompletionChunk
from streamkit.protocols.completions import COMPLETIONS, Completion, CompletionChunk
from streamkit.protocols.messages import MESSAGES, Message, MessageEvent
from streamkit.protocols.responses import RESPONSES, Response, ResponseEvent
from streamkit.sse import SSEDecoder
from streamkit.telemetry import Call
from streamkit.transports.base import DeadlineExpired
from streamkit.transports.base import Response as HTTPResponse
from streamkit.transports.base import SyncResponse as SyncHTTPResponse

__all__ = [
    "ChatCompletionStream",
    "CompletionStream",
    "MessageStream",
    "ResponseStream",
    "Stream",
    "StreamMetrics",
    "SyncChatCompletionStream",
    "SyncCompletionStream",
    "SyncMessageStream",
    "SyncResponseStream",
    "SyncStream",
]

ItemT = TypeVar("ItemT")
FinalT = TypeVar("FinalT", bound=Model)

# What a background stream resumes after: its connection reset or cut mid-body, an idle read, a body that
# ended before the terminal event. Anything else (an error event, bad data, a deadline) fails it as before.
BROKEN = (ReadError, IdleTimeout, IncompleteStreamError)
# `resume(response_id, after, broke)`: the rest of a stored response's events, as an open response (awaited
# by `Stream`, returned by `SyncStream`).
Resume = Callable[[str, int, StreamkitError], Any]


class StreamMetrics:
    """When a stream's parts happened, in `time.perf_counter()` seconds, and what they add up to.

    Arrival times are taken when a read's bytes come off the connection, before any decoding, so they measure
    the server and the network rather than this client. A token-carrying item is one with text, a refusal,
    reasoning, a summary or tool arguments (`Stream.carries_token`); a role-only or empty chunk, a usage
    chunk, a lifecycle event and a comment are not.

    `request_sent` is when the attempt that got the answer was sent; `call_started` is when the call began,
    before its first attempt, so `ttft` is the answering attempt's and `call_ttft` the whole call's, retries
    and their waits included.
    """

    __slots__ = (
        "arrivals",
        "attempts",
        "call_started",
        "completion_tokens",
        "headers_received",
        "outages",
        "prompt_tokens",
        "reads",
        "request_sent",
        "resumes",
        "token_arrivals",
        "token_counts",
    )

    def __init__(
        self,
        request_sent: float,
        headers_received: float,
        call_started: float | None = None,
        attempts: int = 1,
    ) -> None:
        self.request_sent = request_sent
        self.headers_received = headers_received
        self.call_started = request_sent if call_started is None else call_started
        self.attempts = attempts  # requests sent for this call, the answering one included
        self.arrivals: list[float] = []  # one per item
        self.token_arrivals: list[float] = []  # one per token-carrying item
        # The tokens each of those carried, where it said (logprobs): as long as `token_arrivals`, with None
        # where an item did not say; empty while none has said.
        self.token_counts: list[int | None] = []
        self.reads = 0  # reads of the body that brought bytes
        self.completion_tokens: int | None = None  # output tokens from usage, once the stream has ended
        self.prompt_tokens: int | None = None  # input tokens from usage, likewise
        self.resumes = 0  # times a background stream picked itself up after its connection broke
        # Each outage of a resumed stream: when the break was seen, and when the resumed stream's head came.
        self.outages: list[tuple[float, float]] = []

    @property
    def chunks(self) -> int:
        """How many items (chunks or events) arrived."""
        return len(self.arrivals)

    @property
    def first_token(self) -> float | None:
        """When the first token-carrying item arrived."""
        return self.token_arrivals[0] if self.token_arrivals else None

    @property
    def last_token(self) -> float | None:
        """When the last token-carrying item arrived."""
        return self.token_arrivals[-1] if self.token_arrivals else None

    @property
    def ttft(self) -> float | None:
        """Time to first token: from sending the answering request to its first token-carrying item, in
        seconds."""
        first = self.first_token
        return None if first is None else first - self.request_sent

    @property
    def call_ttft(self) -> float | None:
        """Time to first token of the whole call: from its start, retries and their waits included."""
        first = self.first_token
        return None if first is None else first - self.call_started

    @property
    def e2e(self) -> float | None:
        """End to end: from sending the answering request to the last token-carrying item, in seconds."""
        last = self.last_token
        return None if last is None else last - self.request_sent

    @property
    def itl(self) -> list[float]:
        """Inter-token latencies: the gaps between consecutive token-carrying items, in seconds. A gap across
        an outage (a resumed stream's break and reconnection) is no token gap, and is left out: the outage
        is in `outages`."""
        times = self.token_arrivals
        if not self.outages:
            return [b - a for a, b in itertools.pairwise(times)]
        breaks = [start for start, _ in self.outages]
        return [b - a for a, b in itertools.pairwise(times) if not any(a <= t < b for t in breaks)]

    @property
    def outage(self) -> float:
        """The seconds a resumed stream spent between its breaks and its reconnections, in all."""
        return sum(end - start for start, end in self.outages)

    def __repr__(self) -> str:
        ttft = "None" if self.ttft is None else f"{self.ttft * 1e3:.1f}ms"
        e2e = "None" if self.e2e is None else f"{self.e2e * 1e3:.1f}ms"
        return f"StreamMetrics(ttft={ttft}, e2e={e2e}, chunks={self.chunks}, tokens={self.completion_tokens})"


class _Reader(Generic[ItemT, FinalT]):
    """What a stream is apart from how it waits for bytes: its items, their aggregate and their times, from
    the bytes each read brings (`_decode`). `Stream` reads with `await`, `SyncStream` blocks; the rest is
    here, once.

    `api` says what the items are (`streamkit.protocols`). The subclasses bind it and name the final object
    (`get_final_completion`, `get_final_response`, ...).
    """

    api: ClassVar[Api[Any, Any]]

    __slots__ = (
        "_accumulator",
        "_add",
        "_after",
        "_call",
        "_complete",
        "_deadline",
        "_decode_item",
        "_decode_many",
        "_decoder",
        "_done_callbacks",
        "_ended_at",
        "_error",
        "_feed",
        "_first_token_deadline",
        "_pending",
        "_reading",
        "_redact",
        "_response",
        "_resume",
        "_token_arrivals",
        "_token_count",
        "_total_deadline",
        "_typed_arrays",
        "metrics",
    )

    def __init__(
        self,
        response: Any,
        metrics: StreamMetrics,
        *,
        first_token_deadline: float | None = None,
        total_deadline: float | None = None,
        redact: Callable[[str], str] = str,
        accumulator: Accumulator[ItemT, FinalT] | None = None,
        call: Call | None = None,
    ) -> None:
        self._response = response
        self._call = call  # the request's telemetry, told once the stream has stopped and its caller knows
        self._ended_at = 0.0  # when the stream stopped reading, for the telemetry
        self._accumulator: Accumulator[ItemT, FinalT] = accumulator or self.api.accumulator()
        self.metrics = metrics
        self._decoder = SSEDecoder()
        self._pending: deque[ItemT] = deque()
        self._first_token_deadline = first_token_deadline
        self._total_deadline = total_deadline
        self._deadline = _earliest(first_token_deadline, total_deadline)
        self._done_callbacks: list[Callable[[FinalT], object]] = []
        self._redact = redact
        self._reading = True  # False once the body is done with: ended, failed or closed
        self._complete = False  # ended as a whole stream should
        self._error: BaseException | None = None  # raised once the pending items are yielded
        # The hot path's callables, bound once rather than at every read.
        self._feed = self._decoder.feed_array
        self._typed_arrays = not self.api.event_field_matters
        self._decode_item: Callable[[bytes, str], ItemT | None] = self.api.decode
        self._decode_many = self.api.decode_many
        self._add = self._accumulator.add
        self._token_arrivals = metrics.token_arrivals
        self._token_count = self.api.token_count
        self._resume: Resume | None = None  # how a background stream picks itself up (`_resumable`)
        self._after: int | None = None  # the last `sequence_number` decoded, where the stream is resumable

    # The public surface

    @property
    def snapshot(self) -> FinalT:
        """Everything received so far, aggregated (a new object each time)."""
        return self._accumulator.snapshot

    @property
    def response_headers(self) -> Mapping[str, str]:
        """The headers of the response (case-insensitive)."""
        headers: Mapping[str, str] = self._response.headers
        return headers

    @property
    def completed(self) -> bool:
        """Whether the stream ended as a whole stream should (False while it is read, and after an error or
        an early close)."""
        return self._complete

    def is_finished(self) -> bool:
        """Whether what arrived is a whole answer: every choice has a `finish_reason`, a terminal event or a
        `stop_reason` came. A stream can complete without it, where a server ends a chat stream with
        `[DONE]` early."""
        return self._accumulator.is_finished()

    def carries_token(self, item: ItemT) -> bool:
        """Whether an item carries a token (text, a refusal, reasoning, a summary or tool arguments): the
        items that `metrics.token_arrivals` stamps."""
        return bool(self.api.flags(item) & TOKEN)

    def add_done_callback(self, callback: Callable[[FinalT], object]) -> None:
        """Call `callback(final)` once the stream has completed and its caller has taken it all: at the end of
        the loop over it (`async for`, `for`), in `get_final_...()`, or at its close (`aclose()`, `close()`)
        after the last item. Not when it fails, nor when it is closed with items left unread."""
        self._done_callbacks.append(callback)

    # Reading

    def _stop(self) -> None:
        self._reading = False
        self.metrics.completion_tokens = self._accumulator.output_tokens
        self.metrics.prompt_tokens = self._accumulator.input_tokens
        if self._call is not None:
            self._ended_at = perf_counter()

    def _report(self) -> None:
        """Hand the stream's end to its telemetry, once: where its caller meets the end (the loop's end, the
        error, `get_final`, the close), never in the read that brought the last items, which would keep them
        from the caller for as long as the telemetry takes."""
        call = self._call
        if call is not None and not self._reading:
            self._call = None
            call.ended(self._accumulator.snapshot, self.metrics, self._error, self._ended_at)

    def _failed(self, exc: StreamkitError) -> None:
        """The stream fails with `exc`, which carries what was received; it is raised once the items before
        it are taken."""
        self._redacted(exc).partial = self.snapshot
        self._error = exc
        self._stop()

    def _call_back(self) -> None:
        """Run the done callbacks, once, if the stream completed."""
        callbacks = self._done_callbacks
        if self._complete and callbacks:
            self._done_callbacks = []
            final = self.snapshot
            for callback in callbacks:
                callback(final)

    def _decode(self, data: bytes, now: float) -> bool:
        """Decode the events a read completes into pending items; True at the end of the stream."""
        metrics = self.metrics
        metrics.reads += 1
        got = self._feed(data, self._typed_arrays)
        if type(got) is list and len(got) == 1 and got[0][1][:1] != b"[":
            # One event, as a live stream's reads bring them: the loop below, for one item. (`[DONE]`, and
            # data that is a JSON array, which is no item, take the loop.)
            event, raw = got[0]
            item = self._decode_item(raw, event)  # raises with no item before it to keep
            if item is None:
                return False
            flags = self._add(item)
            if flags:
                if flags & ERROR:
                    error = self.api.error(item)
                    error.raw = raw.decode("utf-8", "replace")
                    raise error
                if flags & TOKEN:
                    self._tokens_arrived(1, now)
                    if flags & COUNTED:
                        self._counted(item)
            self._pending.append(item)
            metrics.arrivals.append(now)
            return bool(flags & END)
        items: list[ItemT] | None = None
        raws: list[bytes] = []  # each item's data, where they were decoded one by one
        end = failure = None
        if isinstance(got, bytes):  # several plain events: decoded at once where they allow it
            count = self._decoder.batched
            if got[-8:] == b",[DONE]]":  # the last read of a stream that ends so
                got, count, end = got[:-8] + b"]", count - 1, b"[DONE]"
            items = self._decode_many(got)
            if items is None or len(items) != count:  # an item made of two events' data, or of one's
                items, end = None, None
                events = self._decoder.unbatch()
            else:
                events = []
        else:
            events = got
        if items is None:
            items = []
            decode = self._decode_item
            for event, raw in events:
                if raw[:1] == b"[" and raw[:6] == b"[DONE]":  # a one-byte slice is a cached object
                    end = raw
                    break
                try:
                    item = decode(raw, event)
                except StreamkitError as exc:  # raised once the items before it are taken
                    failure = exc
                    break
                if item is not None:
                    items.append(item)
                    raws.append(raw)
        # Each item is added, which says its flags, in turn; the plain token items among them are stamped,
        # and all are kept, at once after the loop, so that the common item costs one call.
        add = self._add
        taken, tokens = len(items), 0  # how many items are kept; plain token items not stamped yet
        ended = False
        try:
            for item in items:
                flags = add(item)
                if flags == TOKEN:
                    tokens += 1
                elif flags:
                    if flags & ERROR:
                        error = self.api.error(item)
                        at = _index(items, item)
                        raw = raws[at] if raws else self._decoder.unbatch()[at][1]  # items were one an event
                        error.raw = raw.decode("utf-8", "replace")  # the event as it came
                        raise error
                    if flags & TOKEN:
                        self._tokens_arrived(tokens + 1, now)
                        tokens = 0
                        if flags & COUNTED:
                            self._counted(item)
                    if flags & END:
                        taken, ended = _index(items, item) + 1, True
                        break
        except BaseException:  # an error item, or one that `add` refused: the items before it are kept
            taken = _index(items, item)
            raise
        finally:
            if tokens:
                self._tokens_arrived(tokens, now)
            if taken:
                self._pending.extend(items if taken == len(items) else items[:taken])
                self.metrics.arrivals.extend([now] * taken)
        if ended:
            return True
        if failure is not None:
            raise failure
        if end is not None:
            if self.api.done_completes or self._accumulator.is_finished():
                return True
            raise IncompleteStreamError("data: [DONE] came before the stream was complete")
        return False

    # Resuming a background Responses stream

    def _resumable(self, resume: Resume) -> None:
        """Let the stream pick itself up when its connection breaks before its terminal event: `resume(id,
        after, broke)` opens the stored response's events after `after` (or raises a typed error, `broke`
        where no retry is left). Every event's `sequence_number` is checked as it is decoded: one at or
        below the last is dropped, as a resumed stream may repeat it, and one that skips ahead is an error
        (`ProtocolError`), as events would be lost."""
        self._resume = resume
        self._typed_arrays = False  # each event through `decode` below, never decoded in a batch
        inner = self._decode_item

        def decode(raw: bytes, event: str) -> ItemT | None:
            item = inner(raw, event)
            sequence = getattr(item, "sequence_number", None)
            if sequence is None and isinstance(item, UnknownEvent):  # a type that came after this version
                data = item.data
                sequence = data.get("sequence_number") if isinstance(data, dict) else None
            if not isinstance(sequence, int):
                return item
            after = self._after
            if after is not None:
                if sequence <= after:
                    return None  # delivered already
                if sequence != after + 1:
                    raise ProtocolError(
                        f"event {sequence} came after event {after}: events {after + 1} to {sequence - 1} "
                        "are missing"
                    )
            self._after = sequence
            return item

        self._decode_item = decode

    def _resume_point(self, exc: StreamkitError) -> tuple[str, int] | None:
        """Where a stream that broke with `exc` picks up: the response's id and the last sequence number
        delivered; None where it cannot (not resumable, not a break, finished, or no id or sequence yet)."""
        if self._resume is None or self._after is None or not isinstance(exc, BROKEN):
            return None
        if self._accumulator.is_finished():
            return None
        response_id = getattr(self._accumulator.snapshot, "id", None)
        return (response_id, self._after) if response_id else None

    def _resumed(self, response: Any, broke_at: float) -> None:
        """Read on from `response`, a resumed stream: a new SSE decoder (what the broken connection left of
        an event is dropped), and the outage noted."""
        self._response = response
        self._decoder = SSEDecoder()
        self._feed = self._decoder.feed_array
        self.metrics.resumes += 1
        self.metrics.outages.append((broke_at, perf_counter()))

    def _tokens_arrived(self, count: int, now: float) -> None:
        """Stamp `count` token items; the first one ends the wait for a first token."""
        self._token_arrivals.extend([now] * count)
        if self._first_token_deadline is not None:
            self._first_token_deadline = None
            self._deadline = self._total_deadline

    def _counted(self, item: ItemT) -> None:
        """Note the tokens a token item says it carried, the items before it that did not say as None."""
        counts = self.metrics.token_counts
        counts += [None] * (len(self.metrics.token_arrivals) - 1 - len(counts))
        counts.append(self._token_count(item))

    def _redacted(self, exc: StreamkitError) -> StreamkitError:
        """The error with the API key, should a server have echoed it, taken out of its texts."""
        redact = self._redact
        if redact is not str:
            exc.message = redact(exc.message)
            exc.args = (exc.message, *exc.args[1:])
            raw = getattr(exc, "raw", None)
            if isinstance(raw, str):
                exc.raw = redact(raw)  # type: ignore[attr-defined]
            body = getattr(exc, "body", None)
            if body is not None:
                text = msgspec.json.encode(body).decode()
                if redact(text) != text:
                    exc.body = msgspec.json.decode(redact(text))  # type: ignore[attr-defined]
        return exc

    def _deadline_error(self) -> StreamkitError:
        if self._first_token_deadline is not None and (
            self._total_deadline is None or self._first_token_deadline <= self._total_deadline
        ):
            return FirstTokenTimeout("no token arrived within the first_token timeout")
        return TotalTimeout("the request took longer than the total timeout")


def _index(items: list[Any], item: Any) -> int:
    """Where `item` itself is in `items` (items equal to it may come before)."""
    return next(i for i, each in enumerate(items) if each is item)


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


class Stream(_Reader[ItemT, FinalT]):
    """A streamed response of any API: an async iterator of its typed items (`_Reader` has the rest)."""

    __slots__ = ()

    _response: HTTPResponse

    def __aiter__(self) -> Stream[ItemT, FinalT]:
        return self

    async def __anext__(self) -> ItemT:
        pending = self._pending
        while not pending:
            if not self._reading:
                self._report()
                if self._error is not None:
                    raise self._error
                self._call_back()
                raise StopAsyncIteration
            await self._read_more()
        return pending.popleft()

    async def text_deltas(self) -> AsyncIterator[str]:
        """The answer's text as it arrives (choice 0's content or text, output text, text deltas), skipping
        empty deltas."""
        text_of = self.api.text
        async for item in self:
            text = text_of(item)
            if text:
                yield text

    async def get_final(self) -> FinalT:
        """Read the rest of the stream and return the aggregated final object.

        Raises the stream's error if it failed (again, if it was raised before). A stream that its caller
        closed before it ended (a `break` out of `async with stream:`, `aclose()`, a cancellation) returns
        what it received, as it stands: the choices that had not finished have no `finish_reason`, a response
        keeps the status it last had (`in_progress`), a message has no `stop_reason`; `completed` is False,
        and the done callbacks do not run (a conversation does not keep the turn).
        """
        while self._reading:
            self._pending.clear()
            await self._read_more()
        self._pending.clear()
        self._report()
        if self._error is not None:
            raise self._error
        self._call_back()
        return self.snapshot

    async def aclose(self) -> None:
        """Close the response at once; items not yet read are dropped, and a stream closed with items left
        unread is not complete. Idempotent."""
        if self._pending:
            self._pending.clear()
            self._complete = False
        self._call_back()
        if self._reading:
            self._stop()
            await self._response.aclose()
        self._report()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _read_more(self) -> None:
        """Read once and decode what arrived; at the end of the stream or of the body, finish or fail."""
        response = self._response
        try:
            deadline = self._deadline
            if deadline is None:
                data = await response.read()
            else:
                data = b""
                with anyio.move_on_at(deadline) as scope:
                    data = await response.read()
                if scope.cancelled_caught:
                    raise self._deadline_error()
            if data:
                if self._decode(data, perf_counter()):
                    await self._finish(response.release)
            else:
                self._decoder.close()
                if not self._accumulator.is_finished():
                    raise IncompleteStreamError("the body ended before the stream was complete")
                await self._finish(response.aclose)
        except StreamkitError as exc:
            point = self._resume_point(exc)
            if point is not None:
                broke_at = perf_counter()
                await response.aclose()
                resume = self._resume
                assert resume is not None
                try:
                    resumed = await resume(*point, exc)
                except StreamkitError as refused:  # refused, or no retry left: the stream fails with it
                    exc = refused
                except BaseException:
                    self._stop()
                    raise
                else:
                    self._resumed(resumed, broke_at)
                    return
            self._failed(exc)
            await response.aclose()
        except BaseException:  # cancelled, or a bug: the connection must not outlive it
            self._stop()
            await response.aclose()
            raise

    async def _finish(self, close: Callable[[], Awaitable[None]]) -> None:
        self._stop()
        self._complete = True
        await close()


class SyncStream(_Reader[ItemT, FinalT]):
    """A streamed response of any API for synchronous code: an iterator of its typed items, read by blocking
    on the connection, with the same items, aggregate, metrics and errors as `Stream`.

        with client.chat.completions.create(model="m", messages=[...], stream=True) as stream:
            for text in stream.text_deltas():
                print(text, end="", flush=True)
        final = stream.get_final_completion()
    """

    __slots__ = ()

    _response: SyncHTTPResponse

    def __iter__(self) -> SyncStream[ItemT, FinalT]:
        return self

    def __next__(self) -> ItemT:
        pending = self._pending
        while not pending:
            if not self._reading:
                self._report()
                if self._error is not None:
                    raise self._error
                self._call_back()
                raise StopIteration
            self._read_more()
        return pending.popleft()

    def text_deltas(self) -> Iterator[str]:
        """The answer's text as it arrives (choice 0's content or text, output text, text deltas), skipping
        empty deltas."""
        text_of = self.api.text
        for item in self:
            text = text_of(item)
            if text:
                yield text

    def get_final(self) -> FinalT:
        """Read the rest of the stream and return the aggregated final object.

        Raises the stream's error if it failed (again, if it was raised before). A stream that its caller
        closed before it ended (a `break` out of `with stream:`, `close()`, Ctrl-C) returns what it received,
        as it stands, as `Stream.get_final` does.
        """
        while self._reading:
            self._pending.clear()
            self._read_more()
        self._pending.clear()
        self._report()
        if self._error is not None:
            raise self._error
        self._call_back()
        return self.snapshot

    def close(self) -> None:
        """Close the response at once; items not yet read are dropped, and a stream closed with items left
        unread is not complete. Idempotent."""
        if self._pending:
            self._pending.clear()
            self._complete = False
        self._call_back()
        if self._reading:
            self._stop()
            self._response.close()
        self._report()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _read_more(self) -> None:
        """Read once and decode what arrived; at the end of the stream or of the body, finish or fail."""
        response = self._response
        try:
            try:
                data = response.read(self._deadline)
            except DeadlineExpired:
                raise self._deadline_error() from None
            if data:
                if self._decode(data, perf_counter()):
                    self._finish(response.release)
            else:
                self._decoder.close()
                if not self._accumulator.is_finished():
                    raise IncompleteStreamError("the body ended before the stream was complete")
                self._finish(response.close)
        except StreamkitError as exc:
            point = self._resume_point(exc)
            if point is not None:
                broke_at = perf_counter()
                response.close()
                resume = self._resume
                assert resume is not None
                try:
                    resumed = resume(*point, exc)
                except StreamkitError as refused:  # refused, or no retry left: the stream fails with it
                    exc = refused
                except BaseException:
                    self._stop()
                    raise
                else:
                    self._resumed(resumed, broke_at)
                    return
            self._failed(exc)
            response.close()
        except BaseException:  # Ctrl-C, or a bug: the connection must not outlive it
            self._stop()
            response.close()
            raise

    def _finish(self, close: Callable[[], None]) -> None:
        self._stop()
        self._complete = True
        close()


class ChatCompletionStream(Stream[ChatCompletionChunk, ChatCompletion]):
    """A streamed chat completion: an async iterator of `ChatCompletionChunk`s."""

    api = CHAT

    async def get_final_completion(self) -> ChatCompletion:
        """Read the rest of the stream and return the `ChatCompletion` (see `Stream.get_final`)."""
        return await self.get_final()


class CompletionStream(Stream[CompletionChunk, Completion]):
    """A streamed legacy completion: an async iterator of `CompletionChunk`s."""

    api = COMPLETIONS

    async def get_final_completion(self) -> Completion:
        """Read the rest of the stream and return the `Completion` (see `Stream.get_final`)."""
        return await self.get_final()


class ResponseStream(Stream[ResponseEvent, Response]):
    """A streamed Responses API answer: an async iterator of typed events (`event.type` is its name, such as
    `response.output_text.delta`); events of a type streamkit does not know come as `UnknownEvent`."""

    api = RESPONSES

    async def get_final_response(self) -> Response:
        """Read the rest of the stream and return the `Response` (see `Stream.get_final`)."""
        return await self.get_final()


class MessageStream(Stream[MessageEvent, Message]):
    """A streamed Anthropic Messages answer: an async iterator of typed events (`message_start`,
    `content_block_delta`, ...); events of a type streamkit does not know come as `UnknownEvent`."""

    api = MESSAGES

    async def get_final_message(self) -> Message:
        """Read the rest of the stream and return the `Message` (see `Stream.get_final`)."""
        return await self.get_final()


class SyncChatCompletionStream(SyncStream[ChatCompletionChunk, ChatCompletion]):
    """A streamed chat completion for synchronous code: an iterator of `ChatCompletionChunk`s."""

    __slots__ = ()
    api = CHAT

    def get_final_completion(self) -> ChatCompletion:
        """Read the rest of the stream and return the `ChatCompletion` (see `Stream.get_final`)."""
        return self.get_final()


class SyncCompletionStream(SyncStream[CompletionChunk, Completion]):
    """A streamed legacy completion for synchronous code: an iterator of `CompletionChunk`s."""

    __slots__ = ()
    api = COMPLETIONS

    def get_final_completion(self) -> Completion:
        """Read the rest of the stream and return the `Completion` (see `Stream.get_final`)."""
        return self.get_final()


class SyncResponseStream(SyncStream[ResponseEvent, Response]):
    """A streamed Responses API answer for synchronous code: an iterator of typed events."""

    __slots__ = ()
    api = RESPONSES

    def get_final_response(self) -> Response:
        """Read the rest of the stream and return the `Response` (see `Stream.get_final`)."""
        return self.get_final()


class SyncMessageStream(SyncStream[MessageEvent, Message]):
    """A streamed Anthropic Messages answer for synchronous code: an iterator of typed events."""

    __slots__ = ()
    api = MESSAGES

    def get_final_message(self) -> Message:
        """Read the rest of the stream and return the `Message` (see `Stream.get_final`)."""
        return self.get_final()
