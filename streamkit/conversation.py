"""A multi-turn chat that keeps its history.

    conversation = streamkit.Conversation(client, model="m", system="Be brief.")
    stream = await conversation.send("What is TLS?")
    async for text in stream.text_deltas():
        print(text, end="", flush=True)
    stream = await conversation.send("And mTLS?")      # the first question and answer go along

A turn joins the history only when its stream completes: the user's message and the assistant's final message
are appended together, so a failed or abandoned turn leaves the history as it was, ready to be sent again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Unpack

from streamkit.client import AsyncClient, ChatParams
from streamkit.protocols.chat import ChatCompletion
from streamkit.streams import ChatCompletionStream

__all__ = ["Conversation"]


class Conversation:
    """The messages of a chat so far (`messages`, in OpenAI's shape), and `send` to add a turn.

    `params` (temperature, max_tokens, tools, ...) go with every request; `send` may override them.
    """

    def __init__(
        self, client: AsyncClient, *, model: str, system: str | None = None, **params: Unpack[ChatParams]
    ) -> None:
        self.client = client
        self.model = model
        self.system = system
        self.params = params
        self.messages: list[dict[str, object]] = []
        self.reset()

    def reset(self) -> None:
        """Forget every turn; keep the system message."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    async def send(
        self, content: str | Mapping[str, object], **params: Unpack[ChatParams]
    ) -> ChatCompletionStream:
        """Send a user message (text, or a whole message such as a tool result) with the history; return the
        stream of the answer. When the stream completes, both messages join the history."""
        message: dict[str, object] = (
            dict(content) if isinstance(content, Mapping) else {"role": "user", "content": content}
        )
        turn = [*self.messages, message]
        merged = self.params.copy()
        merged.update(params)

        def completed(final: ChatCompletion) -> None:
            if final.choices:
                self.messages = [*turn, final.choices[0].message.to_dict()]

        stream = await self.client.chat.completions.create(
            model=self.model, messages=turn, stream=True, **merged
        )
        stream.add_done_callback(completed)
        return stream
