"""Anthropic Messages (`/v1/messages`): its typed stream events, the `Message`, its accumulator and rules.

A stream is `message_start`, then for each content block `content_block_start`, `content_block_delta`s and
`content_block_stop`, then `message_delta` (the stop reason and the output usage) and `message_stop`, with
`ping`s anywhere:

- `message_stop` ends the stream. An `error` event raises `StreamAPIError`, its `error.type` (such as
  `overloaded_error`) as the error's `type`. A body that ends without `message_stop` ends normally only if a
  `message_delta` already gave a `stop_reason`; otherwise the stream is incomplete.
- Where the SSE `event:` field and the data's `type` disagree, the data's type wins. An event of a type this
  version does not know becomes an `UnknownEvent`, and a new kind of content block or delta an
  `UnknownObject`: new types never break a stream. `ping` is skipped.

Servers differ: llama.cpp sends no `ping`, opens tool blocks without an `input` key, and ends a stop-sequence
hit with `end_turn` while it sets `stop_sequence`; LiteLLM's `message_start` usage is all zeros and the real
counts come in `message_delta`; Anthropic repeats its running totals in `message_delta`. All of them give the
right final usage.

The merge rules of `MessageAccumulator`:

- Content blocks are keyed by `index`.
- `text_delta` and `thinking_delta` are concatenated, `signature_delta` sets the signature, `citations_delta`
  appends a citation.
- A `tool_use` (or `server_tool_use`) block's `input_json_delta` fragments are concatenated, and parsed as
  JSON once, at `content_block_stop` or when the message ends with the block still open. Input that is not
  valid JSON is kept as its raw string and never raises. Adding an event costs the same however long the
  input already is.
- `message_delta` sets `stop_reason` and `stop_sequence`; its `usage` fields update those of
  `message_start` one by one (a field it leaves out keeps its value).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec
from msgspec.structs import replace

from streamkit.errors import StreamAPIError
from streamkit.protocols.base import (
    END,
    ERROR,
    TOKEN,
    Model,
    OpenUnion,
    Outcome,
    TaggedModel,
    TypedEventApi,
    UnknownEvent,
    UnknownObject,
    detached,
)

__all__ = [
    "MESSAGES",
    "CitationsDelta",
    "ContentBlock",
    "Delta",
    "InputJSONDelta",
    "Message",
    "MessageAccumulator",
    "MessageEvent",
    "MessageStreamEvent",
    "MessageUsage",
    "MessagesApi",
    "RedactedThinkingBlock",
    "ServerToolUseBlock",
    "SignatureDelta",
    "TextBlock",
    "TextDelta",
    "ThinkingBlock",
    "ThinkingDelta",
    "ToolUseBlock",
    "UnknownContentBlock",
    "UnknownDelta",
]


# The message and its blocks


class ServerToolUsage(Model):
    web_search_requests: int | None = None
    web_fetch_requests: int | None = None


class MessageUsage(Model):
    """Tokens in and out, and the prompt cache's share of the input."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    server_tool_use: ServerToolUsage | None = None
    service_tier: str | None = None


class ContentBlock(OpenUnion):
    """A block of a message's content: `TextBlock`, `ToolUseBlock`, `ServerToolUseBlock`, `ThinkingBlock`,
    `RedactedThinkingBlock`, or `UnknownContentBlock` (a server tool's result, say)."""

    __slots__ = ()


class TextBlock(Model, ContentBlock, tag_field="type", tag="text"):
    text: str = ""
    citations: list[dict[str, Any]] | None = None


class ToolUseBlock(Model, ContentBlock, tag_field="type", tag="tool_use"):
    id: str | None = None
    name: str | None = None
    input: Any = None
    """The tool's input: the parsed JSON object, or the raw string where it was not valid JSON."""


class ServerToolUseBlock(Model, ContentBlock, tag_field="type", tag="server_tool_use"):
    id: str | None = None
    name: str | None = None
    input: Any = None


class ThinkingBlock(Model, ContentBlock, tag_field="type", tag="thinking"):
    thinking: str = ""
    signature: str | None = None


class RedactedThinkingBlock(Model, ContentBlock, tag_field="type", tag="redacted_thinking"):
    data: str = ""


class UnknownContentBlock(UnknownObject, ContentBlock):
    """A content block of a type streamkit does not know."""

    __slots__ = ()


ContentBlock.variants = (TextBlock, ToolUseBlock, ServerToolUseBlock, ThinkingBlock, RedactedThinkingBlock)
ContentBlock.unknown = UnknownContentBlock


class Delta(OpenUnion):
    """What a `content_block_delta` adds: `TextDelta`, `InputJSONDelta`, `ThinkingDelta`,
    `SignatureDelta`, `CitationsDelta`, or `UnknownDelta`."""

    __slots__ = ()


class TextDelta(Model, Delta, tag_field="type", tag="text_delta"):
    text: str = ""


class InputJSONDelta(Model, Delta, tag_field="type", tag="input_json_delta"):
    partial_json: str = ""


class ThinkingDelta(Model, Delta, tag_field="type", tag="thinking_delta"):
    thinking: str = ""


class SignatureDelta(Model, Delta, tag_field="type", tag="signature_delta"):
    signature: str = ""


class CitationsDelta(Model, Delta, tag_field="type", tag="citations_delta"):
    citation: dict[str, Any] | None = None


class UnknownDelta(UnknownObject, Delta):
    """A delta of a type streamkit does not know."""

    __slots__ = ()


Delta.variants = (TextDelta, InputJSONDelta, ThinkingDelta, SignatureDelta, CitationsDelta)
Delta.unknown = UnknownDelta

# The delta of `content_block_delta`, the event of nearly every token, decodes as a closed union of the known
# kinds, at full speed; a delta of a kind streamkit does not know takes the slow path, which makes it an
# `UnknownDelta` (see `MessagesApi._decode_slowly`). For the type checker it is a `Delta`, as it may be.
if TYPE_CHECKING:
    _KnownDelta: TypeAlias = Delta
else:
    _KnownDelta = TextDelta | InputJSONDelta | ThinkingDelta | SignatureDelta | CitationsDelta


class Message(Model):
    """A whole message: the answer of a request with `stream=False`, or a stream's aggregate."""

    id: str | None = None
    type: str = "message"
    role: str = "assistant"
    content: list[ContentBlock] = msgspec.field(default_factory=list)
    model: str | None = None
    stop_reason: str | None = None
    """`end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `pause_turn` or `refusal`."""
    stop_sequence: str | None = None
    usage: MessageUsage | None = None

    @property
    def text(self) -> str:
        """The text of every text block, joined."""
        return "".join(block.text for block in self.content if isinstance(block, TextBlock))


# The events


class MessageStartEvent(TaggedModel, tag="message_start"):
    message: Message = msgspec.field(default_factory=Message)


class ContentBlockStartEvent(TaggedModel, tag="content_block_start"):
    index: int = 0
    content_block: ContentBlock | None = None


class ContentBlockDeltaEvent(TaggedModel, tag="content_block_delta"):
    index: int = 0
    delta: _KnownDelta | None = None


class ContentBlockStopEvent(TaggedModel, tag="content_block_stop"):
    index: int = 0


class MessageDeltaBody(Model):
    stop_reason: str | None = None
    stop_sequence: str | None = None


class MessageDeltaEvent(TaggedModel, tag="message_delta"):
    delta: MessageDeltaBody = msgspec.field(default_factory=MessageDeltaBody)
    usage: MessageUsage | None = None


class MessageStopEvent(TaggedModel, tag="message_stop"):
    """Ends the stream."""


class ErrorBody(Model):
    type: str | None = None
    message: str | None = None


class MessageErrorEvent(TaggedModel, tag="error"):
    """An error (`overloaded_error`, say); the stream raises `StreamAPIError`. Anthropic sends
    `{"type": "error", "error": {"type", "message"}, "request_id"}`; other servers send the message flat."""

    error: ErrorBody = msgspec.field(default_factory=ErrorBody)
    message: str | None = None
    """The message of an error sent flat, without the `error` object."""
    request_id: str | None = None
    """The request's id, as Anthropic gives it (`StreamAPIError.request_id`)."""


MessageStreamEvent: TypeAlias = (
    MessageStartEvent
    | ContentBlockStartEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
    | MessageErrorEvent
)
"""Every event type of a Messages stream that streamkit knows (but `ping`, which is skipped)."""

MessageEvent: TypeAlias = MessageStreamEvent | UnknownEvent
"""What a `MessageStream` yields."""


# Accumulating

_INPUT_BLOCKS = (ToolUseBlock, ServerToolUseBlock)


class _BlockParts:
    """One content block: the block as it started, and what its deltas add until it stops."""

    __slots__ = ("block", "citations", "pieces", "signature", "stopped")

    def __init__(self, block: ContentBlock) -> None:
        self.block = block
        self.pieces: list[str] = []  # text, thinking, or tool input JSON
        self.signature: str | None = None
        self.citations: list[dict[str, Any]] | None = None
        self.stopped: ContentBlock | None = None  # the whole block, once `content_block_stop` came

    def add(self, delta: Delta | None) -> None:
        if isinstance(delta, TextDelta):
            self.pieces.append(delta.text)
        elif isinstance(delta, InputJSONDelta):
            self.pieces.append(delta.partial_json)
        elif isinstance(delta, ThinkingDelta):
            self.pieces.append(delta.thinking)
        elif isinstance(delta, SignatureDelta):
            self.signature = delta.signature
        elif isinstance(delta, CitationsDelta) and delta.citation is not None:
            if self.citations is None:
                self.citations = [delta.citation]
            else:
                self.citations.append(delta.citation)  # the block's own list: no copy per citation

    def build(self) -> ContentBlock:
        if self.stopped is not None:
            return self.stopped
        block = self.block
        if isinstance(block, TextBlock):
            citations = self.citations if self.citations is not None else block.citations
            return replace(
                block,
                text=block.text + "".join(self.pieces),
                citations=None if citations is None else list(citations),
            )
        if isinstance(block, ThinkingBlock):
            signature = self.signature if self.signature is not None else block.signature
            return replace(block, thinking=block.thinking + "".join(self.pieces), signature=signature)
        if isinstance(block, _INPUT_BLOCKS):
            text = "".join(self.pieces)
            # No input at all (a tool without parameters: only an empty fragment) keeps the block's own `{}`.
            if text:
                return replace(block, input=_parsed(text))
        return block

    def stop(self) -> None:
        # Tool input is parsed once, here, however many fragments it came in.
        self.stopped = self.build()


def _parsed(text: str) -> Any:
    """JSON input, or the raw text where it is not valid JSON (fine-grained tool streaming sends such)."""
    try:
        return msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return text


class MessageAccumulator:
    """Merges a Messages stream's events into a `Message`.

        acc = MessageAccumulator()
        for event in events:
            acc.add(event)
        message = acc.final()

    `snapshot` is the message so far, at any point.
    """

    __slots__ = ("_blocks", "_events", "_message", "_stop_reason", "_stop_sequence", "_usage")

    def __init__(self) -> None:
        self._message = Message()  # as message_start gave it
        self._blocks: dict[int, _BlockParts] = {}
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        self._usage: dict[str, Any] = {}
        self._events = 0

    @property
    def events(self) -> int:
        """How many events were added."""
        return self._events

    @property
    def output_tokens(self) -> int | None:
        """`usage.output_tokens`, as `message_delta` last updated it."""
        value = self._usage.get("output_tokens")
        return value if isinstance(value, int) else None

    @property
    def input_tokens(self) -> int | None:
        """`usage.input_tokens` (without the cached part, as Anthropic counts it)."""
        value = self._usage.get("input_tokens")
        return value if isinstance(value, int) else None

    def add(self, event: MessageStreamEvent | UnknownEvent) -> int:
        """Merge one event and return what it means to the stream, `MESSAGES.flags(event)`: the stream's one
        call per event. A text delta, the common event, is told here at no cost."""
        self._events += 1
        if isinstance(event, ContentBlockDeltaEvent):
            parts = self._blocks.get(event.index)
            if parts is None:  # a delta for a block that never started: a text block, as most are
                parts = self._blocks[event.index] = _BlockParts(TextBlock())
            delta = event.delta
            if type(delta) is TextDelta:
                text = delta.text
                parts.pieces.append(text)
                return TOKEN if text else 0
            parts.add(delta)
        elif isinstance(event, ContentBlockStartEvent):
            block = event.content_block if event.content_block is not None else TextBlock()
            self._blocks[event.index] = _BlockParts(block)
        elif isinstance(event, ContentBlockStopEvent):
            parts = self._blocks.get(event.index)
            if parts is not None:
                parts.stop()
        elif isinstance(event, MessageStartEvent):
            self._message = event.message
            self._update_usage(event.message.usage)
        elif isinstance(event, MessageDeltaEvent):
            if event.delta.stop_reason is not None:
                self._stop_reason = event.delta.stop_reason
            if event.delta.stop_sequence is not None:
                self._stop_sequence = event.delta.stop_sequence
            self._update_usage(event.usage)
        return MESSAGES.flags(event)

    def _update_usage(self, usage: MessageUsage | None) -> None:
        if usage is not None:
            self._usage.update((k, v) for k, v in msgspec.structs.asdict(usage).items() if v is not None)

    @property
    def snapshot(self) -> Message:
        """The message accumulated so far (a new object each time)."""
        message = self._message
        built = replace(
            message,
            content=[self._blocks[i].build() for i in sorted(self._blocks)] or message.content,
            stop_reason=self._stop_reason or message.stop_reason,
            stop_sequence=self._stop_sequence or message.stop_sequence,
            usage=msgspec.convert(self._usage, MessageUsage) if self._usage else None,
        )
        return detached(built)  # blocks, tool inputs and citations are the events' own

    def final(self) -> Message:
        """The message once every event has been added (the same as `snapshot`, by name of intent)."""
        return self.snapshot

    def is_finished(self) -> bool:
        """Whether a `stop_reason` came: a body that ends here ends normally, `message_stop` or not."""
        return self._stop_reason is not None or self._message.stop_reason is not None


# The rules

_TOKEN_DELTAS = (TextDelta, InputJSONDelta, ThinkingDelta)
_DELTA_TAGS = frozenset(str(v.__struct_config__.tag) for v in Delta.variants)


class MessagesApi(TypedEventApi[MessageEvent, Message]):
    """The rules of Anthropic Messages (`streamkit.protocols.MESSAGES`)."""

    name = "messages"
    path = "/messages"
    provider = "anthropic"
    final_type = Message
    events = MessageStreamEvent

    def prepare(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        delta = obj.get("delta")
        if kind == "content_block_delta" and isinstance(delta, dict):
            tag = delta.get("type")
            # A kind this version does not know, or none told: `finish` puts it back as an `UnknownDelta`. A
            # `type` that is no string is left to fail as a broken delta, as `decode_hook` has it.
            if tag is None or (isinstance(tag, str) and tag not in _DELTA_TAGS):
                return {**obj, "delta": None}
        return obj

    def finish(self, event: MessageEvent, obj: dict[str, Any]) -> MessageEvent:
        delta = obj.get("delta")
        if isinstance(event, ContentBlockDeltaEvent) and event.delta is None and isinstance(delta, dict):
            event.delta = UnknownDelta(delta)
        return event

    def flags(self, item: MessageEvent) -> int:
        kind = type(item)
        if kind is ContentBlockDeltaEvent:
            delta = item.delta  # type: ignore[union-attr]
            if isinstance(delta, TextDelta):
                return TOKEN if delta.text else 0
            if isinstance(delta, InputJSONDelta):
                return TOKEN if delta.partial_json else 0
            if isinstance(delta, ThinkingDelta):
                return TOKEN if delta.thinking else 0
            return 0
        if kind is ContentBlockStartEvent:
            # A tool_use block's start carries the tool's name, the model's first tokens of the call: as chat
            # counts the chunk that names a tool call, so that TTFT means the same on every API.
            block = item.content_block  # type: ignore[union-attr]
            return TOKEN if isinstance(block, ToolUseBlock | ServerToolUseBlock) and block.name else 0
        if kind is MessageStopEvent:
            return END
        if kind is MessageErrorEvent:
            return ERROR
        return 0

    def text(self, item: MessageEvent) -> str | None:
        if type(item) is ContentBlockDeltaEvent and isinstance(item.delta, TextDelta):
            return item.delta.text
        return None

    def error(self, item: MessageEvent) -> StreamAPIError:
        assert isinstance(item, MessageErrorEvent)
        body = item.to_dict()
        error = item.error
        return StreamAPIError(
            error.message or item.message or "the server sent an error event",
            raw=msgspec.json.encode(body).decode(),
            body=body,
            type=error.type,
        )

    def accumulator(self) -> MessageAccumulator:
        return MessageAccumulator()

    def turn(
        self,
        model: str,
        history: list[dict[str, Any]],
        system: str | None = None,
        max_tokens: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        params = dict(params or {})
        for name in ("n", "seed"):
            if params.get(name) is not None:
                raise ValueError(f"Anthropic Messages have no {name!r}")
        stop = params.pop("stop", None)
        limit = params.pop("max_tokens", None)  # a None here must not leave the limit out
        if limit is None:
            limit = max_tokens
        body: dict[str, Any] = {
            "model": model,
            "messages": history,
            "system": system,
            # Anthropic requires a token limit; 1024 is what its own examples ask.
            "max_tokens": limit if limit is not None else 1024,
            "stop_sequences": [stop] if isinstance(stop, str) else stop,
            **params,
        }
        return {k: v for k, v in body.items() if v is not None}

    def reply(self, final: Message) -> list[dict[str, Any]]:
        blocks = [block.to_dict() for block in final.content if isinstance(block, Model)]
        return [{"role": "assistant", "content": blocks}] if blocks else []

    def outcome(self, final: Message) -> Outcome:
        usage = final.usage
        input_tokens = None if usage is None else usage.input_tokens
        if usage is not None and input_tokens is not None:
            # Anthropic counts the prompt cache's reads and writes apart; the conventions' input holds them.
            input_tokens += (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
        return Outcome(
            final.id,
            final.model,
            [final.stop_reason],
            input_tokens,
            None if usage is None else usage.output_tokens,
        )


MESSAGES = MessagesApi()
