"""Accumulators that merge stream chunks into the final completion (sans-I/O).

The merge rules:

- Choices are merged by `index`, in any order and with gaps; the result lists them by index.
- `content`, `refusal`, `reasoning_content`, `reasoning`, tool-call `function.arguments` and legacy `text`
  are concatenated.
- `role`, a tool call's `id`, `type` and `function.name` are set once: a repeat never doubles them, and an
  empty string does not count as set.
- Logprob lists are extended.
- `finish_reason`: the last non-null value wins; a later null never clears it.
- `usage`: the last chunk that carries usage wins; a chunk without usage never erases it.
- `id`, `model`, `created`, `system_fingerprint` and `service_tier` come from the first chunk that has them.

Text arrives as many small pieces, so each is kept in a list and joined when a snapshot is taken: adding a
chunk costs the same however long the answer already is.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from streamkit.types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    Choice,
    ChoiceLogprobs,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    FunctionCall,
    TokenLogprob,
    ToolCall,
    Usage,
)

__all__ = ["ChatCompletionAccumulator", "CompletionAccumulator"]

_ChunkT = TypeVar("_ChunkT", ChatCompletionChunk, CompletionChunk)
_T = TypeVar("_T")


def _joined(parts: list[str]) -> str | None:
    return "".join(parts) if parts else None


def _extended(items: list[_T] | None, more: list[_T] | None) -> list[_T] | None:
    if more is None:
        return items
    if items is None:
        return list(more)
    items.extend(more)
    return items


class _Header(Generic[_ChunkT]):
    """The fields that describe the whole response, shared by both accumulators."""

    __slots__ = ("chunks", "created", "id", "model", "system_fingerprint", "usage")

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self.usage: Usage | None = None
        self.chunks = 0

    def add_header(self, chunk: _ChunkT) -> None:
        self.chunks += 1
        if self.id is None:
            self.id = chunk.id or None
        if self.model is None:
            self.model = chunk.model or None
        if self.created is None:
            self.created = chunk.created
        if self.system_fingerprint is None:
            self.system_fingerprint = chunk.system_fingerprint or None
        if chunk.usage is not None:
            self.usage = chunk.usage


class _ToolCallParts:
    __slots__ = ("arguments", "id", "index", "name", "type")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id: str | None = None
        self.type: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []

    def add(self, delta: ToolCall) -> None:
        if delta.id and self.id is None:
            self.id = delta.id
        if delta.type and self.type is None:
            self.type = delta.type
        function = delta.function
        if function is not None:
            if function.name and self.name is None:
                self.name = function.name
            if function.arguments is not None:
                self.arguments.append(function.arguments)

    def build(self) -> ToolCall:
        function = FunctionCall(name=self.name, arguments="".join(self.arguments))
        return ToolCall(index=self.index, id=self.id, type=self.type, function=function)


class _ChatChoiceParts:
    __slots__ = (
        "content",
        "finish_reason",
        "function_call",
        "index",
        "logprobs_content",
        "logprobs_refusal",
        "reasoning",
        "reasoning_content",
        "refusal",
        "role",
        "tool_calls",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.role: str | None = None
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.reasoning_content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, _ToolCallParts] = {}
        self.function_call: _ToolCallParts | None = None
        self.finish_reason: str | None = None
        self.logprobs_content: list[TokenLogprob] | None = None
        self.logprobs_refusal: list[TokenLogprob] | None = None

    def add_tool_call(self, delta: ToolCall) -> None:
        calls = self.tool_calls
        index = delta.index
        if index is None:
            # Some servers send each call whole, without an index: a new id starts a new call, and a
            # fragment without an id continues the last one.
            index = next((c.index for c in calls.values() if delta.id and c.id == delta.id), None)
            if index is None:
                index = len(calls) if delta.id or not calls else max(calls)
        parts = calls.get(index)
        if parts is None:
            parts = calls[index] = _ToolCallParts(index)
        parts.add(delta)

    def build(self) -> Choice:
        message = ChatCompletionMessage(
            role=self.role or "assistant",
            content=_joined(self.content),
            refusal=_joined(self.refusal),
            reasoning_content=_joined(self.reasoning_content),
            reasoning=_joined(self.reasoning),
            tool_calls=[self.tool_calls[i].build() for i in sorted(self.tool_calls)] or None,
            function_call=self.function_call.build().function if self.function_call else None,
        )
        logprobs = None
        if self.logprobs_content is not None or self.logprobs_refusal is not None:
            logprobs = ChoiceLogprobs(content=self.logprobs_content, refusal=self.logprobs_refusal)
        return Choice(index=self.index, message=message, finish_reason=self.finish_reason, logprobs=logprobs)


class ChatCompletionAccumulator:
    """Merges `ChatCompletionChunk`s into a `ChatCompletion`.

        acc = ChatCompletionAccumulator()
        for chunk in chunks:
            acc.add(chunk)
        completion = acc.final()

    `snapshot` is the completion so far, at any point.
    """

    __slots__ = ("_choices", "_header", "_service_tier")

    def __init__(self) -> None:
        self._header: _Header[ChatCompletionChunk] = _Header()
        self._service_tier: str | None = None
        self._choices: dict[int, _ChatChoiceParts] = {}

    @property
    def chunks(self) -> int:
        """How many chunks were added."""
        return self._header.chunks

    def add(self, chunk: ChatCompletionChunk) -> None:
        """Merge one chunk."""
        self._header.add_header(chunk)
        if self._service_tier is None:
            self._service_tier = chunk.service_tier
        choices = self._choices
        for choice in chunk.choices:
            parts = choices.get(choice.index)
            if parts is None:
                parts = choices[choice.index] = _ChatChoiceParts(choice.index)
            delta = choice.delta
            if delta.role and parts.role is None:
                parts.role = delta.role
            if delta.content is not None:
                parts.content.append(delta.content)
            if delta.refusal is not None:
                parts.refusal.append(delta.refusal)
            if delta.reasoning_content is not None:
                parts.reasoning_content.append(delta.reasoning_content)
            if delta.reasoning is not None:
                parts.reasoning.append(delta.reasoning)
            if delta.tool_calls:
                for call in delta.tool_calls:
                    parts.add_tool_call(call)
            if delta.function_call is not None:
                if parts.function_call is None:
                    parts.function_call = _ToolCallParts(0)
                parts.function_call.add(ToolCall(function=delta.function_call))
            if choice.finish_reason is not None:
                parts.finish_reason = choice.finish_reason
            logprobs = choice.logprobs
            if logprobs is not None:
                parts.logprobs_content = _extended(parts.logprobs_content, logprobs.content)
                parts.logprobs_refusal = _extended(parts.logprobs_refusal, logprobs.refusal)

    @property
    def snapshot(self) -> ChatCompletion:
        """The completion accumulated so far (a new object each time)."""
        header = self._header
        return ChatCompletion(
            id=header.id,
            created=header.created,
            model=header.model,
            choices=[self._choices[i].build() for i in sorted(self._choices)],
            system_fingerprint=header.system_fingerprint,
            service_tier=self._service_tier,
            usage=header.usage,
        )

    def final(self) -> ChatCompletion:
        """The completion once every chunk has been added (the same as `snapshot`, by name of intent)."""
        return self.snapshot

    def is_finished(self) -> bool:
        """Whether at least one choice was seen and every choice seen has a `finish_reason`."""
        return bool(self._choices) and all(c.finish_reason is not None for c in self._choices.values())


class _CompletionChoiceParts:
    __slots__ = ("finish_reason", "index", "text", "text_offset", "token_logprobs", "tokens", "top_logprobs")

    def __init__(self, index: int) -> None:
        self.index = index
        self.text: list[str] = []
        self.finish_reason: str | None = None
        self.tokens: list[str] | None = None
        self.token_logprobs: list[float | None] | None = None
        self.top_logprobs: list[dict[str, float] | None] | None = None
        self.text_offset: list[int] | None = None

    def add_logprobs(self, logprobs: CompletionLogprobs) -> None:
        self.tokens = _extended(self.tokens, logprobs.tokens)
        self.token_logprobs = _extended(self.token_logprobs, logprobs.token_logprobs)
        self.top_logprobs = _extended(self.top_logprobs, logprobs.top_logprobs)
        self.text_offset = _extended(self.text_offset, logprobs.text_offset)

    def build(self) -> CompletionChoice:
        logprobs = None
        if any(
            x is not None for x in (self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset)
        ):
            logprobs = CompletionLogprobs(
                tokens=self.tokens,
                token_logprobs=self.token_logprobs,
                top_logprobs=self.top_logprobs,
                text_offset=self.text_offset,
            )
        return CompletionChoice(
            index=self.index, text="".join(self.text), logprobs=logprobs, finish_reason=self.finish_reason
        )


class CompletionAccumulator:
    """Merges legacy `CompletionChunk`s into a `Completion`, with the same rules as the chat accumulator."""

    __slots__ = ("_choices", "_header")

    def __init__(self) -> None:
        self._header: _Header[CompletionChunk] = _Header()
        self._choices: dict[int, _CompletionChoiceParts] = {}

    @property
    def chunks(self) -> int:
        """How many chunks were added."""
        return self._header.chunks

    def add(self, chunk: CompletionChunk) -> None:
        """Merge one chunk."""
        self._header.add_header(chunk)
        choices = self._choices
        for choice in chunk.choices:
            parts = choices.get(choice.index)
            if parts is None:
                parts = choices[choice.index] = _CompletionChoiceParts(choice.index)
            parts.text.append(choice.text)
            if choice.finish_reason is not None:
                parts.finish_reason = choice.finish_reason
            if choice.logprobs is not None:
                parts.add_logprobs(choice.logprobs)

    @property
    def snapshot(self) -> Completion:
        """The completion accumulated so far (a new object each time)."""
        header = self._header
        return Completion(
            id=header.id,
            created=header.created,
            model=header.model,
            choices=[self._choices[i].build() for i in sorted(self._choices)],
            system_fingerprint=header.system_fingerprint,
            usage=header.usage,
        )

    def final(self) -> Completion:
        """The completion once every chunk has been added (the same as `snapshot`, by name of intent)."""
        return self.snapshot

    def is_finished(self) -> bool:
        """Whether at least one choice was seen and every choice seen has a `finish_reason`."""
        return bool(self._choices) and all(c.finish_reason is not None for c in self._choices.values())
