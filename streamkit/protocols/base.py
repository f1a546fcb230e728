"""The per-API seam: what the stream, the client, the server and the bench need to know about one API.

Each API module of `streamkit.protocols` defines its msgspec models, an accumulator that merges the streamed
items into the final object, and one `Api` object that says how to decode an SSE event into an item and what
an item means: whether it carries a token, ends the stream, or is an error. Everything else (reading bytes,
deadlines, retries, metrics, the bench) is written once, over that object.

All of it is sans-I/O: no transport, no event loop. It is the client's side only: how the built-in server
speaks each API is `streamkit.server.apis`, which shares none of this code.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Literal, NamedTuple, Protocol, Self, TypeVar

import msgspec

from streamkit.errors import ChunkDecodeError, StreamAPIError, api_error_fields

__all__ = [
    "COUNTED",
    "END",
    "ERROR",
    "TOKEN",
    "Accumulator",
    "Api",
    "Model",
    "OpenUnion",
    "TaggedModel",
    "TypedEventApi",
    "UnknownEvent",
    "UnknownObject",
    "decode_hook",
    "detached",
    "stream_error",
]

# What an item means to the stream, as bit flags (`Api.flags`).
TOKEN = 1
"""The item carries a token: text, a refusal, reasoning, a summary, tool arguments."""
END = 2
"""The item ends the stream as a whole stream ends (`response.completed`, `message_stop`)."""
ERROR = 4
"""The item is an error sent inside the stream: the stream raises `Api.error(item)` in its place."""
COUNTED = 8
"""With `TOKEN`: the item says how many tokens it carried (its logprobs), which `Api.token_count` tells."""


def _drop_none(value: Any) -> Any:
    """JSON without the None values of its objects, at every depth. Iterative rather than recursive: a value
    that a server nested as deep as msgspec decodes (about a thousand levels) is beyond Python's recursion."""
    root: list[Any] = [None]
    todo: list[tuple[Any, Any, Any]] = [(value, root, 0)]  # (a value, the container it goes to, its key)
    while todo:
        value, into, key = todo.pop()
        if isinstance(value, dict):
            into[key] = kept = {k: v for k, v in value.items() if v is not None}
            todo += [(v, kept, k) for k, v in kept.items() if isinstance(v, dict | list)]
        elif isinstance(value, list):
            into[key] = items = list(value)
            todo += [(v, items, i) for i, v in enumerate(items) if isinstance(v, dict | list)]
        else:
            into[key] = value
    return root[0]


class UnknownObject:
    """An object of a type this version of streamkit does not know (a new output item, content block or
    delta): its `type` and its JSON fields as they came, so a new type never breaks a stream."""

    __slots__ = ("data", "type")

    def __init__(self, data: dict[str, Any]) -> None:
        self.type = str(data.get("type"))
        self.data = data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(type={self.type!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnknownObject) and other.data == self.data

    __hash__ = None  # type: ignore[assignment]


class OpenUnion:
    """The base of a union of objects tagged by their `type` field that stays open to new types.

    A field annotated with a subclass of `OpenUnion` decodes through `decode_hook`: into the variant whose tag
    matches, or into the subclass's `unknown` type (an `UnknownObject`) when no variant has that tag. A
    variant whose tag matches but whose fields have the wrong types is an error. Every variant is a tagged
    `Model` that also inherits from the subclass, and so does its `unknown` type, so all pass as one.
    """

    __slots__ = ()
    # `builtins.type`: these annotations are evaluated in the class's namespace, where `type` is the property.
    variants: ClassVar[tuple[builtins.type[Any], ...]] = ()
    unknown: ClassVar[builtins.type[UnknownObject]] = UnknownObject
    _tags: ClassVar[frozenset[str]]
    _union: ClassVar[Any]

    @property
    def type(self) -> str:
        """The object's type: its tag."""
        return str(self.__struct_config__.tag)  # type: ignore[attr-defined]


def _union_of(union: type[OpenUnion]) -> tuple[frozenset[str], Any]:
    cached = union.__dict__.get("_union")
    if cached is None:
        variants = union.variants
        tags = frozenset(str(v.__struct_config__.tag) for v in variants)
        kind: Any = variants[0]
        for variant in variants[1:]:
            kind = kind | variant
        union._tags, union._union = tags, kind
    return union._tags, union._union


def decode_hook(kind: type[Any], obj: Any) -> Any:
    """msgspec's `dec_hook` for `OpenUnion` fields (see there)."""
    if isinstance(kind, type) and issubclass(kind, OpenUnion):
        if isinstance(obj, dict):
            tag = obj.get("type")
            if isinstance(tag, str):
                tags, union = _union_of(kind)
                if tag in tags:
                    return msgspec.convert(obj, union, dec_hook=decode_hook)
            elif tag is not None:
                # A `type` that is no string (a number, a list, an object) names no kind, new or old: the
                # object is broken, as an event with such a `type` is. One that is absent or null is a kind
                # not told, kept as an unknown object. (msgspec adds the path to a TypeError.)
                raise TypeError(f"expected a string `type`, got {type(tag).__name__}")
            return kind.unknown(obj)
        raise msgspec.ValidationError(f"expected an object, got {type(obj).__name__}")
    raise NotImplementedError(f"no decoding for {kind!r}")


def _encode_hook(obj: Any) -> Any:
    if isinstance(obj, UnknownObject):
        return obj.data
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


class Model(msgspec.Struct, kw_only=True, gc=False):
    """The base of every model: `from_json` and `to_dict`. Unknown fields are ignored, so a server that adds
    fields never breaks decoding."""

    _decoder: ClassVar[msgspec.json.Decoder[Any] | None] = None

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """Decode one JSON document into this model. Raises `ChunkDecodeError` (a ValueError) if it is not
        valid JSON or does not have this model's shape."""
        decoder = cls.__dict__.get("_decoder")
        if decoder is None:
            decoder = msgspec.json.Decoder(cls, dec_hook=decode_hook)
            cls._decoder = decoder
        try:
            result: Self = decoder.decode(data)
        # UnicodeEncodeError: a str with lone surrogates. RecursionError: JSON nested past msgspec's depth.
        except (msgspec.DecodeError, UnicodeEncodeError, RecursionError) as exc:
            raw = data if isinstance(data, str) else data.decode("utf-8", "replace")
            raise ChunkDecodeError(f"invalid {cls.__name__}: {exc}", raw=raw) from exc
        return result

    def to_dict(self) -> dict[str, Any]:
        """This model in its API's JSON shape (plain dicts and lists), without the fields that are None."""
        result: dict[str, Any] = _drop_none(msgspec.to_builtins(self, enc_hook=_encode_hook))
        return result


class TaggedModel(Model, tag_field="type"):
    """A model whose JSON names its kind in a `type` field (msgspec's tag), which `type` gives back."""

    @property
    def type(self) -> str:
        """The kind of this object, such as `response.output_text.delta` (its tag)."""
        return str(self.__struct_config__.tag)


class UnknownEvent(Model):
    """An event of a type this version of streamkit does not know, yielded as it came: its `type` and its
    data's text (`raw`). New event types never break a stream."""

    type: str
    raw: str

    @property
    def data(self) -> Any:
        """The event's data, decoded from JSON."""
        return msgspec.json.decode(self.raw)


_ModelT = TypeVar("_ModelT", bound=Model)


def detached(model: _ModelT) -> _ModelT:
    """A deep copy of `model` that shares no mutable part with it (nor with what it was built from): what an
    accumulator hands out, so that changing a snapshot never changes the accumulator, a later snapshot or the
    final object. Built through msgspec's builtins, which costs about as much as building the model did."""
    try:
        copy: _ModelT = msgspec.convert(
            msgspec.to_builtins(model, enc_hook=_encode_hook), type(model), dec_hook=decode_hook
        )
    except RecursionError:  # JSON nested about as deep as msgspec decodes: the model as it was built
        return model
    return copy


ItemT = TypeVar("ItemT")
FinalT = TypeVar("FinalT")
ItemT_contra = TypeVar("ItemT_contra", contravariant=True)
FinalT_co = TypeVar("FinalT_co", covariant=True)


class Accumulator(Protocol[ItemT_contra, FinalT_co]):
    """Merges a stream's items into its final object (sans-I/O)."""

    def add(self, item: ItemT_contra) -> int:
        """Merge one item and return what it means to the stream, the API's `flags(item)`: the merge's own
        type tests already tell it, so that a stream makes one call per item."""
        ...

    @property
    def snapshot(self) -> FinalT_co:
        """The object accumulated so far (a new object each time, sharing nothing with the next one)."""
        ...

    def final(self) -> FinalT_co:
        """The object once every item has been added."""
        ...

    def is_finished(self) -> bool:
        """Whether what was added is a whole answer, so a body that ends here ends normally."""
        ...

    @property
    def output_tokens(self) -> int | None:
        """The output tokens the server's usage reported, if it did."""
        ...

    @property
    def input_tokens(self) -> int | None:
        """The input (prompt) tokens the server's usage reported, if it did."""
        ...


class Outcome(NamedTuple):
    """An answer as telemetry reports it: its id and model, why it ended (each choice's finish reason, a
    response's status or why it is incomplete, a message's stop reason; None where it had not ended), and the
    tokens the server counted."""

    id: str | None
    model: str | None
    finish_reasons: list[str | None]
    input_tokens: int | None
    output_tokens: int | None


class Api(abc.ABC, Generic[ItemT, FinalT]):
    """One API's rules, as the stream, client, server and bench use them. One instance per API.

    - `name`: `chat`, `completions`, `responses` or `messages` (the CLI's `--api`).
    - `path`: the endpoint, after the base URL (`/chat/completions`).
    - `provider`: whose keys and base URL it uses, `openai` or `anthropic`.
    - `done_completes`: whether `data: [DONE]` completes the stream whatever came before it. Where it does
      not, `[DONE]` still ends the stream, which is complete only if `accumulator().is_finished()`.

    A stream uses `decode`, `flags`, `text`, `error`, `token_count` and `accumulator`; conversations and the
    bench build their requests with `history_start`, `turn`, `reply` and `ask_usage`.
    """

    name: ClassVar[str]
    path: ClassVar[str]
    provider: ClassVar[Literal["openai", "anthropic"]] = "openai"
    operation: ClassVar[str] = "chat"
    """What OpenTelemetry's GenAI conventions call the API's operation (`gen_ai.operation.name`)."""
    done_completes: ClassVar[bool] = False
    final_type: ClassVar[type[Any]]
    prompt_field: ClassVar[str] = "messages"
    """The request field that holds the prompt: `messages`, `prompt` or `input`."""

    @abc.abstractmethod
    def decode(self, data: bytes, event: str = "message") -> ItemT | None:
        """One event's data (UTF-8 bytes) and SSE type as an item, or None for an event to skip (a ping).

        Raises `ChunkDecodeError` for data that is not a valid item, and `StreamAPIError` for an error that
        is not an item of its own.
        """

    #: Whether `decode` reads the SSE `event:` field beyond what the data says (chat ignores events of other
    #: types than `message`); where it does not, events with `event:` lines may be decoded at once too.
    event_field_matters: ClassVar[bool] = True

    #: A decoder of a JSON array of items, where an API's plain events can be decoded at once.
    _many: msgspec.json.Decoder[Any] | None = None

    def decode_many(self, array: bytes) -> list[ItemT] | None:
        """The items of several plain events at once, from their data joined as a JSON array
        (`SSEDecoder.feed_array`), with `_many`; None where one of them needs `decode` (an error, a ping, a
        type or shape the fast path does not take), and the stream then decodes them one by one."""
        many = self._many
        if many is None or b'"error"' in array:  # perhaps an error, or an error field: by `decode`'s rules
            return None
        try:
            items: list[ItemT] = many.decode(array)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return None
        return items

    @abc.abstractmethod
    def flags(self, item: ItemT) -> int:
        """`TOKEN` (with `COUNTED`), `END` and `ERROR`, or'ed: what the item means to the stream."""

    @abc.abstractmethod
    def text(self, item: ItemT) -> str | None:
        """The answer's text that the item adds, if any: what `text_deltas()` yields."""

    @abc.abstractmethod
    def accumulator(self) -> Accumulator[ItemT, FinalT]:
        """A new accumulator for one stream."""

    def error(self, item: ItemT) -> StreamAPIError:
        """The error an item flagged `ERROR` stands for."""
        raise NotImplementedError

    def token_count(self, item: ItemT) -> int | None:
        """How many tokens a token-carrying item carried, where the item says (logprobs, and `flags` has
        `COUNTED`); else None."""
        return None

    # Conversations: the CLI's chat, `Conversation` and the bench build their requests through these

    def history_start(self, system: str | None) -> list[dict[str, Any]]:
        """The history a conversation starts with: nothing, or (chat) the system message."""
        return []

    @abc.abstractmethod
    def turn(
        self,
        model: str,
        history: list[dict[str, Any]],
        system: str | None = None,
        max_tokens: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The body of a streamed request that answers the last message of `history` (user and assistant
        messages in this API's shape, the user's last), with the system prompt, the token limit and more
        `params` under this API's names. Raises ValueError for a setting the API does not have."""

    @abc.abstractmethod
    def reply(self, final: FinalT) -> list[dict[str, Any]]:
        """What an answer adds to a conversation's history, in this API's shape."""

    def ask_usage(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` with usage asked for, where the API sends it only when asked."""
        return body

    @abc.abstractmethod
    def outcome(self, final: FinalT) -> Outcome:
        """What telemetry reports of an answer (whole, or as far as it came)."""

    def output_messages(self, final: FinalT) -> list[dict[str, Any]]:
        """The answer's content as telemetry records it where content is captured: every choice's or the
        answer's messages, in this API's shape (by default, what it adds to a conversation)."""
        return self.reply(final)

    def final_from_json(self, data: bytes) -> FinalT:
        """The answer to a request with `stream=False`. Raises `ChunkDecodeError`."""
        final: FinalT = self.final_type.from_json(data)
        return final

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    def __reduce__(self) -> str:
        # One instance per API, named after it in its module (`CHAT`): pickled by that name, as the bench's
        # worker processes need.
        return self.name.upper()


class TypedEventApi(Api[ItemT, FinalT]):
    """What the APIs of typed events share (Responses, Messages): each event's JSON names its `type`, which
    wins over the SSE `event:` field; a type streamkit does not know becomes an `UnknownEvent`; `ping` is
    skipped; an error in a proxy's shape (`event: error` with text, `{"error": ...}` with no type) is an
    `error` event all the same.

    `events` is the union of the API's known event types. The fast path decodes straight into it; anything
    it cannot type goes through `_decode_slowly`, which `prepare` and `finish` let an API adjust.
    """

    events: ClassVar[Any]
    tags: ClassVar[frozenset[str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "events" in cls.__dict__:
            cls.tags = frozenset(str(t.__struct_config__.tag) for t in cls.events.__args__)

    event_field_matters = False  # the data's `type` wins; the field counts only on the slow path

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(self.events, dec_hook=decode_hook)
        self._many = msgspec.json.Decoder(list[self.events], dec_hook=decode_hook)  # type: ignore[name-defined]

    def decode(self, data: bytes, event: str = "message") -> ItemT | None:
        try:
            decoded: ItemT = self._decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return self._decode_slowly(data, event)
        return decoded

    def _decode_slowly(self, data: bytes, event: str) -> ItemT | None:
        """An event the fast path could not type: a new type, a type given only by the SSE `event:` field,
        a ping, an error in a proxy's shape, bytes that are not UTF-8, or data that is no valid event."""
        text = data.decode("utf-8", "replace")
        what = f"invalid {self.name} event"
        try:
            obj = msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError) as exc:
            if event == "error":  # `event: error` with plain text (a proxy's): an error all the same
                raise stream_error(text, text) from None
            raise ChunkDecodeError(f"{what}: {exc}", raw=text) from exc
        if not isinstance(obj, dict):
            if event == "error":
                raise stream_error(obj, text)
            raise ChunkDecodeError(f"{what}: not a JSON object", raw=text)
        kind = obj.get("type")
        if kind is None and obj.get("error") is not None and event in ("message", "error"):
            kind = obj["type"] = "error"  # `{"error": ...}`, as proxies send an error inside any stream
        elif kind is None and event != "message":
            kind = obj["type"] = event  # the data's type wins, but where it has none the SSE type counts
        if kind == "ping":
            return None
        if not isinstance(kind, str):
            raise ChunkDecodeError(f"{what}: no string `type`", raw=text)
        if kind not in self.tags:
            return UnknownEvent(type=kind, raw=text)  # type: ignore[return-value]
        if kind == "error" and isinstance(obj.get("error"), str):
            obj["error"] = {"message": obj["error"]}
        prepared = self.prepare(kind, obj)
        try:
            typed: ItemT = msgspec.convert(prepared, self.events, dec_hook=decode_hook)
        except (msgspec.ValidationError, RecursionError) as exc:
            raise ChunkDecodeError(f"invalid {kind} event: {exc}", raw=text) from exc
        return self.finish(typed, obj)

    def prepare(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """The event's JSON, made fit for `events` on the slow path (where a nested type is unknown, say)."""
        return obj

    def finish(self, event: ItemT, obj: dict[str, Any]) -> ItemT:
        """The typed event, completed from its JSON with what `prepare` took out."""
        return event


def stream_error(body: object, raw: str, default: Callable[[], str] | None = None) -> StreamAPIError:
    """A `StreamAPIError` from an error body in any of the shapes servers send (see `api_error_fields`)."""
    message, type, code, param = api_error_fields(body)
    return StreamAPIError(
        message or (default() if default else raw), raw=raw, body=body, code=code, type=type, param=param
    )
