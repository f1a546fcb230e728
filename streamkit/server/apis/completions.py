"""Legacy Completions as the built-in server speaks it (`/v1/completions`).

A stream is `text_completion` chunks, each prompt answered `n` times and the choices interleaved, an optional
usage chunk, then `data: [DONE]`. With `echo`, the prompt comes first, as a piece with no logprob. The whole
answer is the `text_completion` OpenAI sends for `stream: false`: each choice's text and logprob lists in
full, and always its usage.
"""

from __future__ import annotations

import random
from typing import Any

from streamkit.server.apis.chat import OpenAIChunkServer, openai_sampling
from streamkit.server.scripted import (
    SYSTEM_FINGERPRINT,
    VOCABULARY,
    Answer,
    Frame,
    Plan,
    RequestError,
    Script,
    check_range,
    check_type,
    groups,
    logprob_of,
    new_id,
    now,
    word_count,
)

__all__ = ["COMPLETIONS", "CompletionServer"]


class CompletionServer(OpenAIChunkServer):
    """Legacy Completions for the scripted model."""

    name = "completions"
    path = "/completions"

    def parse_request(self, body: dict[str, Any], model: str | None) -> Script:
        script = openai_sampling(body, model)
        if "prompt" not in body:
            raise RequestError(
                400, "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
            )
        prompt = check_type(body, "prompt", str, list)
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise RequestError(
                400, "Invalid 'prompt': expected a string or an array of strings.", "prompt", "invalid_type"
            )
        script.prompts = prompts
        script.suffix = check_type(body, "suffix", str)
        script.echo = bool(check_type(body, "echo", bool))
        logprobs = check_range(body, "logprobs", int, 0, 5)
        script.logprobs = logprobs is not None
        script.top_logprobs = logprobs or 0
        max_tokens = check_range(body, "max_tokens", int, 0)
        script.max_tokens = 16 if max_tokens is None else max_tokens
        best_of = check_range(body, "best_of", int, 1, 20)
        if best_of is not None and best_of < script.n:
            raise RequestError(400, "best_of must be greater than or equal to n.", "best_of", "invalid_value")
        if best_of is not None and best_of > script.n and script.stream:
            raise RequestError(
                400, "Cannot stream results when best_of is greater than n.", "best_of", "invalid_value"
            )
        script.prompt_tokens = word_count(prompts)
        return script

    def render(self, script: Script, answers: list[Answer], tokens_per_chunk: int) -> Plan:
        id = new_id("cmpl-")
        head = {
            "id": id,
            "object": "text_completion",
            "created": now(),
            "model": script.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        per_choice = []
        choices = []  # the whole answer's
        for a in answers:
            pieces = [([a.prompt] if a.prompt else [], 0)] if script.echo else []  # echo: the prompt first
            pieces += [(group, len(group)) for group in groups(a.tokens, tokens_per_chunk)]
            frames = []
            every: dict[str, list[Any]] = {
                "tokens": [],
                "token_logprobs": [],
                "top_logprobs": [],
                "text_offset": [],
            }
            offset = 0
            for group, ntokens in pieces:
                text = "".join(group)
                logprobs = None
                if script.logprobs:
                    logprobs = _logprobs(group, offset, a.rng, script.top_logprobs, echo=ntokens == 0)
                    for name, values in logprobs.items():
                        every[name] += values
                choice = {"text": text, "index": a.index, "logprobs": logprobs, "finish_reason": None}
                frames.append(Frame({**head, "choices": [choice]}, tokens=ntokens))
                offset += len(text)
            empty: dict[str, list[Any]] = {
                "tokens": [],
                "token_logprobs": [],
                "top_logprobs": [],
                "text_offset": [],
            }
            finish = {
                "text": "",
                "index": a.index,
                "logprobs": empty if script.logprobs else None,
                "finish_reason": a.finish,
            }
            frames.append(Frame({**head, "choices": [finish]}))
            per_choice.append(frames)
            choices.append(
                {
                    "text": (a.prompt if script.echo else "") + "".join(a.tokens),
                    "index": a.index,
                    "logprobs": every if script.logprobs else None,
                    "finish_reason": a.finish,
                }
            )
        return self.plan(script, answers, head, per_choice, {**head, "choices": choices})


def _logprobs(tokens: list[str], offset: int, rng: random.Random, top: int, echo: bool) -> dict[str, Any]:
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    token_logprobs: list[float | None] = [None if echo else logprob_of(rng) for _ in tokens]
    top_logprobs: list[dict[str, float] | None] = []
    for token, lp in zip(tokens, token_logprobs, strict=True):
        if lp is None:
            top_logprobs.append(None)
        else:
            alternates = {token: lp}
            for i in range(top - 1):
                alternates.setdefault(rng.choice(VOCABULARY), round(lp - 1 - i, 4))
            top_logprobs.append(alternates)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }


COMPLETIONS = CompletionServer()
