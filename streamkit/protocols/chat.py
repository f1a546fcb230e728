"""Chat Completions (`/v1/chat/completions`): its models, its accumulator and its rules.

A stream is `chat.completion.chunk`s until `data: [DONE]`. An `event: error` event and data of the form
`{"error": ...}` are errors; events of any other type than `message` (`ping`) are skipped.

The merge rules of `ChatCompletionAccumulator`:

- Choices are merged by `index`, in any order and with gaps; the result lists them by index.
- `content`, `refusal`, `reasoning_content`, `reasoning` and tool-call `function.arguments` are concatenated.
- `role`, a tool call's `id`, `type` and `function.name` are set once: a repeat never doubles them, and an
  empty string does not count as set.
- A tool-call fragment without `index` (some servers send each call whole) goes to the first call that took
  its id; a new id starts a call (at the number of calls so far), and no id continues the call with the
  highest index. Each is found in O(1), however many calls came before.
- Logprob lists are extended.
- `finish_reason`: the last non-null value wins; a later null never clears it.
- `usage`: the last chunk that carries usage wins; a chunk without usage never erases it.
- `id`, `model`, `created`, `system_fingerprint` and `service_tier` come from the first chunk that has them.

Text arrives as many small pieces, so each is kept in a list and joined when a snapshot is taken: adding a
chunk costs the same however long the answer already is. A snapshot shares no list with the accumulator, so
it never changes when later chunks arrive.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, TypeVar

import msgspec

from streamkit.errors import StreamAPIError
from streamkit.protocols.base import COUNTED, TOKEN, Api, Model, Outcome, detached, stream_error

__all__ = [
    "CHAT",
    "ChatApi",
    "ChatCompletion",
    "ChatCompletionAccumulator",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "Choice",
    "ChoiceDelta",
    "ChoiceLogprobs",
    "ChunkChoice",
    "CompletionTokensDetails",
    "FunctionCall",
    "PromptTokensDetails",
    "TokenLogprob",
    "ToolCall",
    "TopLogprob",
    "Usage",
]


# Models shared with the legacy completions API


class FunctionCall(Model):
    """A function's `name` and its JSON `arguments`; in a delta, either may be a fragment or absent."""

    name: str | None = None
    arguments: str | None = None


class ToolCall(Model):
    """A tool call. In a delta, `index` says which call a fragment belongs to; `id`, `type` and `name` come
    once and `function.arguments` arrives in pieces."""

    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: FunctionCall | None = None


class TopLogprob(Model):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(Model):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] | None = None


class ChoiceLogprobs(Model):
    """Log probabilities of a chat choice's content and refusal tokens."""

    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class CompletionTokensDetails(Model):
    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None


class PromptTokensDetails(Model):
    cached_tokens: int | None = None
    audio_tokens: int | None = None


class Usage(Model):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    completion_tokens_details: CompletionTokensDetails | None = None
    prompt_tokens_details: PromptTokensDetails | None = None


# Chat completions


class ChoiceDelta(Model):
    """What one chunk adds to a choice. `reasoning_content` (vLLM, DeepSeek) and `reasoning` (OpenRouter,
    Ollama) carry a reasoning model's thoughts."""

    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None


class ChunkChoice(Model):
    index: int = 0
    delta: ChoiceDelta = msgspec.field(default_factory=ChoiceDelta)
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(Model):
    """One `chat.completion.chunk` of a stream."""

    id: str | None = None
    object: str = "chat.completion.chunk"
    created: int | None = None
    model: str | None = None
    choices: list[ChunkChoice] = msgspec.field(default_factory=list)
    system_fingerprint: str | None = None
    service_tier: str | None = None
    usage: Usage | None = None


class ChatCompletionMessage(Model):
    role: str = "assistant"
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None


class Choice(Model):
    index: int = 0
    message: ChatCompletionMessage = msgspec.field(default_factory=ChatCompletionMessage)
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(Model):
    """A whole `chat.completion`: the answer of a request with `stream=False`, or a stream's aggregate."""

    id: str | None = None
    object: str = "chat.completion"
    created: int | None = None
    model: str | None = None
    choices: list[Choice] = msgspec.field(default_factory=list)
    system_fingerprint: str | None = None
    service_tier: str | None = None
    usage: Usage | None = None


# Accumulating

_T = TypeVar("_T")


def joined(parts: list[str]) -> str | None:
    """The pieces as one string, or None when there were none."""
    return "".join(parts) if parts else None


def copied(items: list[_T] | None) -> list[_T] | None:
    """A list of the snapshot's own (None stays None)."""
    return None if items is None else list(items)


def extended(items: list[_T] | None, more: list[_T] | None) -> list[_T] | None:
    """`items` with `more` appended: in place, as the list belongs to the accumulator alone."""
    if more is None:
        return items
    if items is None:
        return list(more)
    items.extend(more)
    return items


class ChunkHead(Protocol):
    """The fields of a chat or legacy chunk that describe the whole completion."""

    id: str | None
    created: int | None
    model: str | None
    system_fingerprint: str | None
    usage: Usage | None


class Header:
    """The fields that describe a whole chat or legacy completion, from its chunks."""

    __slots__ = ("chunks", "created", "id", "missing", "model", "system_fingerprint", "usage")

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self.usage: Usage | None = None
        self.chunks = 0
        self.missing = True  # some field has not come yet: the chunks are still looked at for it

    @property
    def output_tokens(self) -> int | None:
        return None if self.usage is None else self.usage.completion_tokens

    @property
    def input_tokens(self) -> int | None:
        return None if self.usage is None else self.usage.prompt_tokens

    def add_header(self, chunk: ChunkHead) -> None:
        """Take the fields that have not come yet (the accumulators call it while `missing`)."""
        if self.id is None:
            self.id = chunk.id or None
        if self.model is None:
            self.model = chunk.model or None
        if self.created is None:
            self.created = chunk.created
        if self.system_fingerprint is None:
            self.system_fingerprint = chunk.system_fingerprint or None
        self.missing = None in (self.id, self.model, self.created, self.system_fingerprint)


class _ToolCallParts:
    __slots__ = ("arguments", "id", "index", "name", "order", "type")

    def __init__(self, index: int, order: int = 0) -> None:
        self.index = index
        self.order = order  # how many calls of its choice came before it
        self.id: str | None = None
        self.type: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []

    def add(self, delta: ToolCall) -> None:
        """Merge a fragment, but for its `id`, which `_ChoiceParts.add_tool_call` sets."""
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


class _ChoiceParts:
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
        "tool_call_ids",
        "tool_calls",
        "top_tool_call",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.role: str | None = None
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.reasoning_content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, _ToolCallParts] = {}
        # For fragments without an index, found in O(1) whatever the number of calls: each id's first call,
        # in order of arrival, and the highest index.
        self.tool_call_ids: dict[str, _ToolCallParts] = {}
        self.top_tool_call = 0
        self.function_call: _ToolCallParts | None = None
        self.finish_reason: str | None = None
        self.logprobs_content: list[TokenLogprob] | None = None
        self.logprobs_refusal: list[TokenLogprob] | None = None

    def add_tool_call(self, delta: ToolCall) -> None:
        calls = self.tool_calls
        index = delta.index
        call_id = delta.id
        if index is None:
            # Some servers send each call whole, without an index: a known id goes to its call, a new id
            # starts a new call, and a fragment without an id continues the last one (the highest index).
            known = self.tool_call_ids.get(call_id) if call_id else None
            if known is not None:
                index = known.index
            elif call_id or not calls:
                index = len(calls)
            else:
                index = self.top_tool_call
        parts = calls.get(index)
        if parts is None:
            if not calls or index > self.top_tool_call:
                self.top_tool_call = index
            parts = calls[index] = _ToolCallParts(index, len(calls))
        if call_id and parts.id is None:
            parts.id = call_id
            known = self.tool_call_ids.get(call_id)
            if known is None or parts.order < known.order:
                self.tool_call_ids[call_id] = parts
        parts.add(delta)

    def build(self) -> Choice:
        message = ChatCompletionMessage(
            role=self.role or "assistant",
            content=joined(self.content),
            refusal=joined(self.refusal),
            reasoning_content=joined(self.reasoning_content),
            reasoning=joined(self.reasoning),
            tool_calls=[self.tool_calls[i].build() for i in sorted(self.tool_calls)] or None,
            function_call=self.function_call.build().function if self.function_call else None,
        )
        logprobs = None
        if self.logprobs_content is not None or self.logprobs_refusal is not None:
            logprobs = ChoiceLogprobs(
                content=copied(self.logprobs_content), refusal=copied(self.logprobs_refusal)
            )
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
        self._header = Header()
        self._service_tier: str | None = None
        self._choices: dict[int, _ChoiceParts] = {}

    @property
    def chunks(self) -> int:
        """How many chunks were added."""
        return self._header.chunks

    @property
    def output_tokens(self) -> int | None:
        """`usage.completion_tokens`, when a chunk carried usage."""
        return self._header.output_tokens

    @property
    def input_tokens(self) -> int | None:
        """`usage.prompt_tokens`, when a chunk carried usage."""
        return self._header.input_tokens

    def add(self, chunk: ChatCompletionChunk) -> int:
        """Merge one chunk and return what it means to the stream, `CHAT.flags(chunk)`: the stream's one call
        per chunk. The common chunk, one choice with content, is told here at no cost."""
        header = self._header
        header.chunks += 1
        if chunk.usage is not None:
            header.usage = chunk.usage
        if header.missing:
            header.add_header(chunk)
        if self._service_tier is None:
            self._service_tier = chunk.service_tier
        choices = self._choices
        for choice in chunk.choices:
            parts = choices.get(choice.index)
            if parts is None:
                parts = choices[choice.index] = _ChoiceParts(choice.index)
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
                parts.logprobs_content = extended(parts.logprobs_content, logprobs.content)
                parts.logprobs_refusal = extended(parts.logprobs_refusal, logprobs.refusal)
        if len(chunk.choices) == 1:
            choice = chunk.choices[0]
            if choice.delta.content:
                return TOKEN if choice.logprobs is None else TOKEN | COUNTED
        return CHAT.flags(chunk)

    @property
    def snapshot(self) -> ChatCompletion:
        """The completion accumulated so far (a new object each time)."""
        header = self._header
        completion = ChatCompletion(
            id=header.id,
            created=header.created,
            model=header.model,
            choices=[self._choices[i].build() for i in sorted(self._choices)],
            system_fingerprint=header.system_fingerprint,
            service_tier=self._service_tier,
            usage=header.usage,
        )
        return detached(completion)  # the usage and logprobs are the chunks' own

    def final(self) -> ChatCompletion:
        """The completion once every chunk has been added (the same as `snapshot`, by name of intent)."""
        return self.snapshot

    def is_finished(self) -> bool:
        """Whether at least one choice was seen and every choice seen has a `finish_reason`."""
        return bool(self._choices) and all(c.finish_reason is not None for c in self._choices.values())


# The rules


def drop_none(body: dict[str, Any]) -> dict[str, Any]:
    """A request body without the parameters that are None."""
    return {k: v for k, v in body.items() if v is not None}


def openai_stream_error(data: bytes) -> StreamAPIError:
    """The error of an `event: error` event, or of data of the form `{"error": ...}`."""
    text = data.decode("utf-8", "replace")
    try:
        body: object = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        body = text
    return stream_error(body, text)


_ChunkModelT = TypeVar("_ChunkModelT", bound=Model)
_FinalModelT = TypeVar("_FinalModelT", bound=Model)


class OpenAIChunkApi(Api[_ChunkModelT, _FinalModelT]):
    """What chat and legacy completions share: chunks until `data: [DONE]`, errors as `{"error": ...}` or
    `event: error`, other event types skipped."""

    done_completes = True
    chunk_type: ClassVar[type[Any]]

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(self.chunk_type)
        self._many = msgspec.json.Decoder(list[self.chunk_type])  # type: ignore[name-defined]

    def decode(self, data: bytes, event: str = "message") -> _ChunkModelT | None:
        if event != "message":
            if event == "error":
                raise openai_stream_error(data)
            return None
        try:
            chunk: _ChunkModelT = self._decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            # The event's text, with U+FFFD for bytes that are not UTF-8, as SSE decodes it: a chunk after
            # all, or ChunkDecodeError with the text in `.raw`.
            chunk = self.chunk_type.from_json(data.decode("utf-8", "replace"))
        if not chunk.choices and chunk.usage is None and b'"error"' in data:  # type: ignore[attr-defined]
            raise openai_stream_error(data)
        return chunk

    def error(self, item: _ChunkModelT) -> StreamAPIError:  # pragma: no cover - chunks are never errors
        raise AssertionError("a chunk is never flagged as an error")

    def ask_usage(self, body: dict[str, Any]) -> dict[str, Any]:
        options = body.get("stream_options")
        return {
            **body,
            "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True},
        }


class ChatApi(OpenAIChunkApi[ChatCompletionChunk, ChatCompletion]):
    """The rules of Chat Completions (`streamkit.protocols.CHAT`)."""

    name = "chat"
    path = "/chat/completions"
    chunk_type = ChatCompletionChunk
    final_type = ChatCompletion

    def flags(self, item: ChatCompletionChunk) -> int:
        # A token-carrying chunk has content, a refusal, reasoning or a tool call; a role-only or empty
        # chunk and a usage chunk do not.
        for choice in item.choices:
            delta = choice.delta
            if (
                delta.content
                or delta.reasoning_content
                or delta.reasoning
                or delta.refusal
                or delta.tool_calls
                or delta.function_call
            ):
                return TOKEN if choice.logprobs is None else TOKEN | COUNTED
        return 0

    def text(self, item: ChatCompletionChunk) -> str | None:
        for choice in item.choices:
            if choice.index == 0:
                return choice.delta.content
        return None

    def token_count(self, item: ChatCompletionChunk) -> int | None:
        for choice in item.choices:
            logprobs = choice.logprobs
            if logprobs is not None and logprobs.content:
                return len(logprobs.content)
        return None

    def accumulator(self) -> ChatCompletionAccumulator:
        return ChatCompletionAccumulator()

    def history_start(self, system: str | None) -> list[dict[str, Any]]:
        return [{"role": "system", "content": system}] if system else []

    def turn(
        self,
        model: str,
        history: list[dict[str, Any]],
        system: str | None = None,
        max_tokens: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        messages = [*self.history_start(system), *history] if system else history
        return drop_none({"model": model, "messages": messages, "max_tokens": max_tokens, **(params or {})})

    def reply(self, final: ChatCompletion) -> list[dict[str, Any]]:
        return [final.choices[0].message.to_dict()] if final.choices else []

    def output_messages(self, final: ChatCompletion) -> list[dict[str, Any]]:
        return [{**c.message.to_dict(), "finish_reason": c.finish_reason} for c in final.choices]

    def outcome(self, final: ChatCompletion) -> Outcome:
        usage = final.usage
        return Outcome(
            final.id,
            final.model,
            [choice.finish_reason for choice in final.choices],
            None if usage is None else usage.prompt_tokens,
            None if usage is None else usage.completion_tokens,
        )


CHAT = ChatApi()
