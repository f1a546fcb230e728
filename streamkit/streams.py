"""Streams: the typed chunks of one streamed response, their aggregate, and when each one arrived.

    stream = await client.chat.completions.create(model="m", messages=[...], stream=True)
    async with stream:
        async for chunk in stream:
            ...
    final = await stream.get_final_completion()

A stream reads the body's bytes from its transport, stamps the time of each read before anything is decoded,
feeds the bytes to `SSEDecoder`, decodes each event into a chunk and adds it to an accumulator, so `snapshot`
and the `.partial` of any error always hold everything received.

End of stream, as DESIGN.md decides it:

- An event whose data starts with `[DONE]` ends the stream; nothing after it is read, and the connection goes
  back to the pool.
- An event of type `error`, and data of the form `{"error": ...}`, raise `StreamAPIError`. Events of any other
  type than `message` (`ping`, say) are skipped.
- A body that ends without `[DONE]` ends the stream normally if every choice has a `finish_reason`, and raises
  `IncompleteStreamError` otherwise (an empty body included).

Chunks decoded before an error are still yielded; the error is raised after them.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from time import perf_counter
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

import anyio
import msgspec

from streamkit.aggregate import ChatCompletionAccumulator, CompletionAccumulator
from streamkit.errors import (
    FirstTokenTimeout,
    IncompleteStreamError,
    StreamAPIError,
    StreamkitError,
    TotalTimeout,
    api_error_fields,
)
from streamkit.sse import SSEDecoder
from streamkit.transports.base import Response
from streamkit.types import ChatCompletion, ChatCompletionChunk, Completion, CompletionChunk

__all__ = ["ChatCompletionStream", "CompletionStream", "StreamMetrics"]

_ChunkT = TypeVar("_ChunkT", ChatCompletionChunk, CompletionChunk)
_FinalT = TypeVar("_FinalT", ChatCompletion, Completion)


class StreamMetrics:
    """When a stream's parts happened, in `time.perf_counter()` seconds, and what they add up to.

    Arrival times are taken when a read's bytes come off the connection, before any decoding, so they measure
    the server and the network rather than this client. A token-carrying chunk is one with content, refusal,
    reasoning or a tool call (legacy: text); a role-only or empty chunk, a usage chunk and a comment are not.
    """

    __slots__ = (
        "arrivals",
        "completion_tokens",
        "headers_received",
        "reads",
        "request_sent",
        "token_arrivals",
    )

    def __init__(self, request_sent: float, headers_received: float) -> None:
        self.request_sent = request_sent
        self.headers_received = headers_received
        self.arrivals: list[float] = []  # one per chunk
        self.token_arrivals: list[float] = []  # one per token-carrying chunk
        self.reads = 0  # reads of the body that brought bytes
        self.completion_tokens: int | None = None  # from usage, when the server sent it

    @property
    def chunks(self) -> int:
        """How many chunks arrived."""
        return len(self.arrivals)

    @property
    def first_token(self) -> float | None:
        """When the first token-carrying chunk arrived."""
        return self.token_arrivals[0] if self.token_arrivals else None

    @property
    def last_token(self) -> float | None:
        """When the last token-carrying chunk arrived."""
        return self.token_arrivals[-1] if self.token_arrivals else None

    @property
    def ttft(self) -> float | None:
        """Time to first token: from sending the request to the first token-carrying chunk, in seconds."""
        first = self.first_token
        return None if first is None else first - self.request_sent

    @property
    def e2e(self) -> float | None:
        """End to end: from sending the request to the last token-carrying chunk, in seconds."""
        last = self.last_token
        return None if last is None else last - self.request_sent

    @property
    def itl(self) -> list[float]:
        """Inter-token latencies: the gaps between consecutive token-carrying chunks, in seconds."""
        times = self.token_arrivals
        return [b - a for a, b in itertools.pairwise(times)]

    def __repr__(self) -> str:
        ttft = "None" if self.ttft is None else f"{self.ttft * 1e3:.1f}ms"
        e2e = "None" if self.e2e is None else f"{self.e2e * 1e3:.1f}ms"
        return f"StreamMetrics(ttft={ttft}, e2e={e2e}, chunks={self.chunks}, tokens={self.completion_tokens})"


class _Stream(Generic[_ChunkT, _FinalT]):
    """What chat and legacy streams share; the subclasses say what a chunk is and what carries a token."""

    _chunk_type: ClassVar[type[ChatCompletionChunk] | type[CompletionChunk]]
    _accumulator_type: ClassVar[type[ChatCompletionAccumulator] | type[CompletionAccumulator]]
    _chunk_decoder: ClassVar[msgspec.json.Decoder[Any]]

    def __init__(
        self,
        response: Response,
        metrics: StreamMetrics,
        *,
        first_token_deadline: float | None = None,
        total_deadline: float | None = None,
        redact: Callable[[str], str] = str,
    ) -> None:
        self._response = response
        self._accumulator = self._accumulator_type()
        self.metrics = metrics
        self._decoder = SSEDecoder()
        self._pending: deque[_ChunkT] = deque()
        self._first_token_deadline = first_token_deadline
        self._total_deadline = total_deadline
        self._deadline = _earliest(first_token_deadline, total_deadline)
        self._done_callbacks: list[Callable[[_FinalT], object]] = []
        self._redact = redact
        self._reading = True  # False once the body is done with: ended, failed or closed
        self._complete = False  # ended as a whole stream should
        self._error: BaseException | None = None  # raised once the pending chunks are yielded

    # What the subclasses define

    @staticmethod
    def _carries_token(chunk: _ChunkT) -> bool:
        raise NotImplementedError

    @staticmethod
    def _text(chunk: _ChunkT) -> str | None:
        raise NotImplementedError

    # The public surface

    @property
    def snapshot(self) -> _FinalT:
        """Everything received so far, aggregated (a new object each time)."""
        snapshot: _FinalT = self._accumulator.snapshot  # type: ignore[assignment]
        return snapshot

    @property
    def response_headers(self) -> Mapping[str, str]:
        """The headers of the response (case-insensitive)."""
        return self._response.headers

    def __aiter__(self) -> _Stream[_ChunkT, _FinalT]:
        return self

    async def __anext__(self) -> _ChunkT:
        pending = self._pending
        while not pending:
            if not self._reading:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            await self._read_more()
        return pending.popleft()

    async def text_deltas(self) -> AsyncIterator[str]:
        """The text of choice 0 as it arrives (content, or legacy text), skipping empty deltas."""
        async for chunk in self:
            text = self._text(chunk)
            if text:
                yield text

    async def get_final_completion(self) -> _FinalT:
        """Read the rest of the stream and return the aggregated completion.

        Raises the stream's error if it failed (again, if it was raised before), and `IncompleteStreamError`
        if the stream was closed before it was complete.
        """
        while self._reading:
            self._pending.clear()
            await self._read_more()
        self._pending.clear()
        if self._error is not None:
            raise self._error
        if not self._complete:
            raise IncompleteStreamError("the stream was closed before it was complete", partial=self.snapshot)
        return self.snapshot

    def add_done_callback(self, callback: Callable[[_FinalT], object]) -> None:
        """Call `callback(final)` when the stream completes (not when it fails or is closed early)."""
        self._done_callbacks.append(callback)

    async def aclose(self) -> None:
        """Close the response at once; chunks not yet read are dropped. Idempotent."""
        self._pending.clear()
        if self._reading:
            self._reading = False
            await self._response.aclose()

    async def __aenter__(self) -> _Stream[_ChunkT, _FinalT]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # Reading

    async def _read_more(self) -> None:
        """Read once and decode what arrived; at `[DONE]` or at the end of the body, finish or fail."""
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
            exc.partial = self.snapshot
            self._error = exc
            self._reading = False
            await response.aclose()
        except BaseException:  # cancelled, or a bug: the connection must not outlive it
            self._reading = False
            await response.aclose()
            raise

    async def _finish(self, close: Callable[[], Awaitable[None]]) -> None:
        self._reading = False
        self._complete = True
        await close()
        if self._done_callbacks:
            final = self.snapshot
            for callback in self._done_callbacks:
                callback(final)

    def _decode(self, data: bytes, now: float) -> bool:
        """Decode the events a read completes into pending chunks; True at `[DONE]`."""
        metrics = self.metrics
        metrics.reads += 1
        decode = self._chunk_decoder.decode
        add = self._accumulator.add
        carries_token = self._carries_token
        keep = self._pending.append
        arrived = metrics.arrivals.append
        error = None
        datas = self._decoder.feed_data(data)
        if datas is None:
            datas = []
            for event in self._decoder.feed(data):
                if event.event == "message":
                    datas.append(event.data.encode())
                elif event.event == "error":  # raised once the chunks before it are taken
                    error = self._stream_error(event.data)
                    break
        for raw in datas:
            if raw[:6] == b"[DONE]":
                return True
            try:
                chunk = decode(raw)
            except (msgspec.DecodeError, UnicodeDecodeError):
                # The event's text, with U+FFFD for bytes that are not UTF-8, as SSE decodes it: a chunk
                # after all, or ChunkDecodeError with the text in `.raw`.
                chunk = self._chunk_type.from_json(raw.decode("utf-8", "replace"))
            if not chunk.choices and chunk.usage is None and b'"error"' in raw:
                raise self._stream_error(raw.decode("utf-8", "replace"))
            add(chunk)
            keep(chunk)
            arrived(now)
            if carries_token(chunk):
                metrics.token_arrivals.append(now)
                if self._first_token_deadline is not None:
                    self._first_token_deadline = None
                    self._deadline = self._total_deadline
            if chunk.usage is not None:
                metrics.completion_tokens = chunk.usage.completion_tokens
        if error is not None:
            raise error
        return False

    def _stream_error(self, text: str) -> StreamAPIError:
        try:
            body: object = msgspec.json.decode(text)
        except msgspec.DecodeError:
            body = text
        message, type, code, param = api_error_fields(body)
        return StreamAPIError(
            self._redact(message or text),
            raw=self._redact(text),
            body=body,
            code=code,
            type=type,
            param=param,
        )

    def _deadline_error(self) -> StreamkitError:
        if self._first_token_deadline is not None and (
            self._total_deadline is None or self._first_token_deadline <= self._total_deadline
        ):
            return FirstTokenTimeout("no token arrived within the first_token timeout")
        return TotalTimeout("the request took longer than the total timeout")


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


class ChatCompletionStream(_Stream[ChatCompletionChunk, ChatCompletion]):
    """A streamed chat completion: an async iterator of `ChatCompletionChunk`s."""

    _chunk_type = ChatCompletionChunk
    _chunk_decoder = msgspec.json.Decoder(ChatCompletionChunk)
    _accumulator_type = ChatCompletionAccumulator

    @staticmethod
    def _carries_token(chunk: ChatCompletionChunk) -> bool:
        for choice in chunk.choices:
            delta = choice.delta
            if (
                delta.content
                or delta.reasoning_content
                or delta.reasoning
                or delta.refusal
                or delta.tool_calls
                or delta.function_call
            ):
                return True
        return False

    @staticmethod
    def _text(chunk: ChatCompletionChunk) -> str | None:
        for choice in chunk.choices:
            if choice.index == 0:
                return choice.delta.content
        return None


class CompletionStream(_Stream[CompletionChunk, Completion]):
    """A streamed legacy completion: an async iterator of `CompletionChunk`s."""

    _chunk_type = CompletionChunk
    _chunk_decoder = msgspec.json.Decoder(CompletionChunk)
    _accumulator_type = CompletionAccumulator

    @staticmethod
    def _carries_token(chunk: CompletionChunk) -> bool:
        return any(choice.text for choice in chunk.choices)

    @staticmethod
    def _text(chunk: CompletionChunk) -> str | None:
        for choice in chunk.choices:
            if choice.index == 0:
                return choice.text
        return None
