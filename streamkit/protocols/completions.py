"""Legacy Completions (`/v1/completions`): its models, its accumulator and its rules.

The stream and its rules are those of chat completions (`streamkit.protocols.chat`): chunks until
`data: [DONE]`, the same error forms, the same merge rules, with `text` in place of the message.
"""

from __future__ import annotations

from typing import Any

import msgspec

from streamkit.protocols.base import COUNTED, TOKEN, Model, Outcome, detached
from streamkit.protocols.chat import Header, OpenAIChunkApi, TokenLogprob, Usage, copied, drop_none, extended

__all__ = [
    "COMPLETIONS",
    "Completion",
    "CompletionAccumulator",
    "CompletionApi",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionLogprobs",
]


class CompletionLogprobs(Model):
    """Legacy logprobs: four parallel lists, one item per token; or, as llama.cpp's server sends them on
    `/v1/completions`, chat's shape (`content`, one `TokenLogprob` per token), kept as it came."""

    tokens: list[str] | None = None
    token_logprobs: list[float | None] | None = None
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] | None = None
    content: list[TokenLogprob] | None = None


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


class _ChoiceParts:
    __slots__ = (
        "content",
        "finish_reason",
        "index",
        "text",
        "text_offset",
        "token_logprobs",
        "tokens",
        "top_logprobs",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.text: list[str] = []
        self.finish_reason: str | None = None
        self.tokens: list[str] | None = None
        self.token_logprobs: list[float | None] | None = None
        self.top_logprobs: list[dict[str, float] | None] | None = None
        self.text_offset: list[int] | None = None
        self.content: list[TokenLogprob] | None = None

    def add_logprobs(self, logprobs: CompletionLogprobs) -> None:
        self.tokens = extended(self.tokens, logprobs.tokens)
        self.token_logprobs = extended(self.token_logprobs, logprobs.token_logprobs)
        self.top_logprobs = extended(self.top_logprobs, logprobs.top_logprobs)
        self.text_offset = extended(self.text_offset, logprobs.text_offset)
        self.content = extended(self.content, logprobs.content)

    def build(self) -> CompletionChoice:
        logprobs = None
        parts = (self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset, self.content)
        if any(x is not None for x in parts):
            logprobs = CompletionLogprobs(
                tokens=copied(self.tokens),
                token_logprobs=copied(self.token_logprobs),
                top_logprobs=copied(self.top_logprobs),
                text_offset=copied(self.text_offset),
                content=copied(self.content),
            )
        return CompletionChoice(
            index=self.index, text="".join(self.text), logprobs=logprobs, finish_reason=self.finish_reason
        )


class CompletionAccumulator:
    """Merges legacy `CompletionChunk`s into a `Completion`, with the same rules as the chat accumulator."""

    __slots__ = ("_choices", "_header")

    def __init__(self) -> None:
        self._header = Header()
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

    def add(self, chunk: CompletionChunk) -> int:
        """Merge one chunk and return `COMPLETIONS.flags(chunk)`, told here at no cost for one choice with
        text (see `ChatCompletionAccumulator.take`)."""
        header = self._header
        header.chunks += 1
        if chunk.usage is not None:
            header.usage = chunk.usage
        if header.missing:
            header.add_header(chunk)
        choices = self._choices
        for choice in chunk.choices:
            parts = choices.get(choice.index)
            if parts is None:
                parts = choices[choice.index] = _ChoiceParts(choice.index)
            parts.text.append(choice.text)
            if choice.finish_reason is not None:
                parts.finish_reason = choice.finish_reason
            if choice.logprobs is not None:
                parts.add_logprobs(choice.logprobs)
        if len(chunk.choices) == 1:
            choice = chunk.choices[0]
            if choice.text:
                return TOKEN if choice.logprobs is None else TOKEN | COUNTED
        return COMPLETIONS.flags(chunk)

    @property
    def snapshot(self) -> Completion:
        """The completion accumulated so far (a new object each time)."""
        header = self._header
        completion = Completion(
            id=header.id,
            created=header.created,
            model=header.model,
            choices=[self._choices[i].build() for i in sorted(self._choices)],
            system_fingerprint=header.system_fingerprint,
            usage=header.usage,
        )
        return detached(completion)  # the usage and logprobs are the chunks' own

    def final(self) -> Completion:
        """The completion once every chunk has been added (the same as `snapshot`, by name of intent)."""
        return self.snapshot

    def is_finished(self) -> bool:
        """Whether at least one choice was seen and every choice seen has a `finish_reason`."""
        return bool(self._choices) and all(c.finish_reason is not None for c in self._choices.values())


class CompletionApi(OpenAIChunkApi[CompletionChunk, Completion]):
    """The rules of legacy Completions (`streamkit.protocols.COMPLETIONS`)."""

    name = "completions"
    operation = "text_completion"
    path = "/completions"
    prompt_field = "prompt"
    chunk_type = CompletionChunk
    final_type = Completion

    def flags(self, item: CompletionChunk) -> int:
        for choice in item.choices:
            if choice.text:
                return TOKEN if choice.logprobs is None else TOKEN | COUNTED
        return 0

    def text(self, item: CompletionChunk) -> str | None:
        for choice in item.choices:
            if choice.index == 0:
                return choice.text
        return None

    def token_count(self, item: CompletionChunk) -> int | None:
        for choice in item.choices:
            logprobs = choice.logprobs
            if logprobs is not None and (logprobs.tokens or logprobs.content):
                return len(logprobs.tokens or logprobs.content or ())
        return None

    def accumulator(self) -> CompletionAccumulator:
        return CompletionAccumulator()

    def turn(
        self,
        model: str,
        history: list[dict[str, Any]],
        system: str | None = None,
        max_tokens: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        # Legacy completions have no conversation: a turn sends its own prompt, after the system text.
        prompt = str(history[-1]["content"])
        if system:
            prompt = f"{system}\n\n{prompt}"
        return drop_none({"model": model, "prompt": prompt, "max_tokens": max_tokens, **(params or {})})

    def reply(self, final: Completion) -> list[dict[str, Any]]:
        return []

    def output_messages(self, final: Completion) -> list[dict[str, Any]]:
        return [
            {"role": "assistant", "content": c.text, "finish_reason": c.finish_reason} for c in final.choices
        ]

    def outcome(self, final: Completion) -> Outcome:
        usage = final.usage
        return Outcome(
            final.id,
            final.model,
            [choice.finish_reason for choice in final.choices],
            None if usage is None else usage.prompt_tokens,
            None if usage is None else usage.completion_tokens,
        )


COMPLETIONS = CompletionApi()
