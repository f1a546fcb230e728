"""Typed models of the OpenAI streaming API, as msgspec Structs.

Every model decodes from JSON with `Model.from_json(data)`, through one reusable decoder per type, and turns
back into OpenAI's JSON shape with `to_dict()`, which leaves out fields that are None. Unknown fields are
ignored, so a server that adds fields never breaks decoding. Fields that some servers send as null or leave
out are optional.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import msgspec

from streamkit.errors import ChunkDecodeError

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "Choice",
    "ChoiceDelta",
    "ChoiceLogprobs",
    "ChunkChoice",
    "Completion",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionLogprobs",
    "CompletionTokensDetails",
    "FunctionCall",
    "PromptTokensDetails",
    "TokenLogprob",
    "ToolCall",
    "TopLogprob",
    "Usage",
]


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


class Model(msgspec.Struct, kw_only=True, gc=False):
    """The base of every model: `from_json` and `to_dict`."""

    _decoder: ClassVar[msgspec.json.Decoder[Any] | None] = None

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """Decode one JSON document into this model. Raises `ChunkDecodeError` (a ValueError) if it is not
        valid JSON or does not have this model's shape."""
        decoder = cls.__dict__.get("_decoder")
        if decoder is None:
            decoder = msgspec.json.Decoder(cls)
            cls._decoder = decoder
        try:
            result: Self = decoder.decode(data)
        except (msgspec.DecodeError, UnicodeEncodeError) as exc:  # the latter: a str with lone surrogates
            raw = data if isinstance(data, str) else data.decode("utf-8", "replace")
            raise ChunkDecodeError(f"invalid {cls.__name__}: {exc}", raw=raw) from exc
        return result

    def to_dict(self) -> dict[str, Any]:
        """This model as OpenAI's JSON shape (plain dicts and lists), without the fields that are None."""
        result: dict[str, Any] = _drop_none(msgspec.to_builtins(self))
        return result


# Shared pieces


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


# Legacy completions (`/v1/completions`)


class CompletionLogprobs(Model):
    """Legacy logprobs: four parallel lists, one item per token."""

    tokens: list[str] | None = None
    token_logprobs: list[float | None] | None = None
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] | None = None


class CompletionChoice(Model):
    index: int = 0
    text: str = ""
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionChunk(Model):
    """One chunk of a legacy `/v1/completions` stream (`object` is `text_completion` there too)."""

    id: str | None = None
    object: str = "text_completion"
    created: int | None = None
    model: str | None = None
    choices: list[CompletionChoice] = msgspec.field(default_factory=list)
    system_fingerprint: str | None = None
    usage: Usage | None = None


class Completion(Model):
    """A whole legacy `text_completion`, or the aggregate of its stream."""

    id: str | None = None
    object: str = "text_completion"
    created: int | None = None
    model: str | None = None
    choices: list[CompletionChoice] = msgspec.field(default_factory=list)
    system_fingerprint: str | None = None
    usage: Usage | None = None
