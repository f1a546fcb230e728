"""A multi-turn conversation that keeps its history, on any API that has one (chat, Responses, Messages).

    conversation = streamkit.Conversation(client, model="m", system="Be brief.")
    stream = await conversation.send("What is TLS?")
    async for text in stream.text_deltas():
        print(text, end="", flush=True)
    stream = await conversation.send("And mTLS?")      # the first question and answer go along

A turn joins the history only when its stream completes: the user's message and the answer are appended
together, so a failed or abandoned turn leaves the history as it was, ready to be sent again. The history is
in the API's own shape (`api`): chat messages, Responses input items, or Anthropic messages; the answer joins
it as the API has it (`Api.reply`): the assistant message with its tool calls, or the response's output
items.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamkit.client import AsyncClient, _split
from streamkit.protocols import APIS
from streamkit.protocols.base import Api
from streamkit.streams import Stream

__all__ = ["Conversation"]


class Conversation:
    """The messages of a conversation so far (`messages`, in the API's shape), and `send` to add a turn.

    `api` is `chat` (the default), `responses` or `messages`. `system` is the system prompt: the first
    chat message, or the `instructions` or `system` of every request. `max_tokens` is each answer's token
    limit, under the API's own name (`max_tokens`, `max_output_tokens`). `params` (temperature, tools, ...),
    under the API's own names, and the request options (`extra_headers`, `timeout`, ...) go with every
    request; `send` may override them.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        model: str,
        system: str | None = None,
        api: str | Api[Any, Any] = "chat",
        max_tokens: int | None = None,
        **params: object,
    ) -> None:
        self.client = client
        self.model = model
        self.system = system
        self.api = APIS[api] if isinstance(api, str) else api
        self.max_tokens = max_tokens
        self.params = params
        self.messages: list[dict[str, Any]] = []
        self.reset()

    def reset(self) -> None:
        """Forget every turn; keep the system prompt."""
        self.messages = self.api.history_start(self.system)

    async def send(self, content: str | Mapping[str, object], **params: object) -> Stream[Any, Any]:
        """Send a user message (text, or a whole message or input item such as a tool result) after the
        history; return the stream of the answer. When the stream completes, both join the history."""
        message: dict[str, Any] = (
            dict(content) if isinstance(content, Mapping) else {"role": "user", "content": content}
        )
        turn = [*self.messages, message]
        kept = self.api.history_start(self.system)  # chat keeps the system prompt in the history
        settings, options = _split({**self.params, **params})  # extra_headers, timeout...: not for the body
        body = self.api.turn(self.model, turn, None if kept else self.system, self.max_tokens, settings)

        def completed(final: Any) -> None:
            self.messages = [*turn, *self.api.reply(final)]

        stream = await self.client.stream(self.api, body, **options)
        stream.add_done_callback(completed)
        return stream
