"""A multi-turn conversation that keeps its history, on any API that has one (chat, Responses, Messages).

    conversation = streamkit.Conversation(client, model="m", system="Be brief.")
    stream = await conversation.send("What is TLS?")
    async for text in stream.text_deltas():
        print(text, end="", flush=True)
    stream = await conversation.send("And mTLS?")      # the first question and answer go along

A turn joins the history only when its stream completes: the user's message and the answer are appended
together, so a failed or abandoned turn leaves the history as it was, ready to be sent again. One turn
streams at a time: a `send` before the last turn's stream was read to its end or closed raises
`ConversationBusyError`, since a turn sent alongside another would leave one of them out of the history.
The history is in the API's own shape (`api`): chat messages, Responses input items, or Anthropic messages;
the answer joins it as the API has it (`Api.reply`): the assistant message with its tool calls, or the
response's output items.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from streamkit.client import AsyncClient, _RequestOptions, _split
from streamkit.errors import ConversationBusyError
from streamkit.protocols import APIS
from streamkit.protocols.base import Api
from streamkit.streams import Stream, SyncStream, _Reader
from streamkit.sync import Client

__all__ = ["Conversation", "SyncConversation"]


_ClientT = TypeVar("_ClientT")


class _History(Generic[_ClientT]):
    """What `Conversation` and `SyncConversation` share: the history, and a turn's request and its joining
    the history; each sends in its own way."""

    def __init__(
        self,
        client: _ClientT,
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
        # The turn under way: True while its request is sent, then its stream until it is done with.
        self._turn: _Reader[Any, Any] | bool = False
        self.reset()

    @property
    def busy(self) -> bool:
        """Whether a turn is under way: sent, and its stream neither read to its end nor closed."""
        turn = self._turn
        if isinstance(turn, bool):
            return turn
        # Reading, or complete with items its caller has not yet taken (the turn joins when they are).
        busy = turn._reading or (turn.completed and turn._done_callbacks != [])
        if not busy:
            self._turn = False
        return busy

    def reset(self) -> None:
        """Forget every turn; keep the system prompt."""
        self.messages = self.api.history_start(self.system)

    def _request(
        self, content: str | Mapping[str, object], params: Mapping[str, object]
    ) -> tuple[dict[str, object], _RequestOptions, Callable[[Any], None]]:
        """A turn's body and request options, and what joins it to the history once its stream completes.
        Raises `ConversationBusyError` while the last turn's stream is still open; the turn is under way from
        here (`_started` or `_failed` follows)."""
        if self.busy:
            raise ConversationBusyError(
                "the conversation's last turn is still streaming: read its stream to the end or close it "
                "before the next send"
            )
        message: dict[str, Any] = (
            dict(content) if isinstance(content, Mapping) else {"role": "user", "content": content}
        )
        turn = [*self.messages, message]
        kept = self.api.history_start(self.system)  # chat keeps the system prompt in the history
        settings, options = _split({**self.params, **params})  # extra_headers, timeout...: not for the body
        body = self.api.turn(self.model, turn, None if kept else self.system, self.max_tokens, settings)

        def completed(final: Any) -> None:
            self.messages = [*turn, *self.api.reply(final)]

        self._turn = True
        return body, options, completed

    def _started(self, stream: _Reader[Any, Any], completed: Callable[[Any], None]) -> None:
        stream.add_done_callback(completed)
        self._turn = stream


class Conversation(_History[AsyncClient]):
    """The messages of a conversation so far (`messages`, in the API's shape), and `send` to add a turn.

    `api` is `chat` (the default), `responses` or `messages`. `system` is the system prompt: the first
    chat message, or the `instructions` or `system` of every request. `max_tokens` is each answer's token
    limit, under the API's own name (`max_tokens`, `max_output_tokens`). `params` (temperature, tools, ...),
    under the API's own names, and the request options (`extra_headers`, `timeout`, ...) go with every
    request; `send` may override them.
    """

    async def send(self, content: str | Mapping[str, object], **params: object) -> Stream[Any, Any]:
        """Send a user message (text, or a whole message or input item such as a tool result) after the
        history; return the stream of the answer. When the stream completes, both join the history.

        Raises `ConversationBusyError` while the last turn's stream is still open (see `busy`)."""
        body, options, completed = self._request(content, params)
        try:
            stream: Stream[Any, Any] = await self.client.stream(self.api, body, **options)
        except BaseException:
            self._turn = False
            raise
        self._started(stream, completed)
        return stream


class SyncConversation(_History[Client]):
    """`Conversation` for a `streamkit.Client`: the same history and rules, and a `send` that returns a
    `SyncStream`."""

    def send(self, content: str | Mapping[str, object], **params: object) -> SyncStream[Any, Any]:
        """Send a user message after the history; return the stream of the answer (see
        `Conversation.send`)."""
        body, options, completed = self._request(content, params)
        try:
            stream: SyncStream[Any, Any] = self.client.stream(self.api, body, **options)
        except BaseException:
            self._turn = False
            raise
        self._started(stream, completed)
        return stream
