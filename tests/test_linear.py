"""Linear time in the accumulators, whatever the server sends.

Items and blocks that come without an index (chat tool calls without `index`, Responses items known only by
`item_id` or by nothing, Messages blocks that never started), and long runs on one part (logprobs, citations),
must cost the same per event however many came before. This is counted, never timed: every dict and list
that an accumulator keeps is swapped for one that counts the entries it hands out, and the count while events
are added must stay within one entry per event, at N and at 2N events. A search over the calls, a `max()` over
the items or a copy of a list per event hands out every entry each time, and fails.

Then the index-less shapes keep their meaning: hypothesis draws such sequences, and the aggregate must equal
what a plain model of the rules (written here, as simply as possible) gives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit import (
    ChatCompletionAccumulator,
    ChatCompletionChunk,
    CompletionAccumulator,
    CompletionChunk,
    MessageAccumulator,
    ResponseAccumulator,
)
from streamkit.protocols import MESSAGES, RESPONSES
from streamkit.protocols import messages as m
from streamkit.protocols import responses as r

_K = TypeVar("_K")
_V = TypeVar("_V")
_T = TypeVar("_T")


# Counting the entries an accumulator looks at


class Tally:
    """How many entries the counted containers handed out while `on`."""

    def __init__(self) -> None:
        self.on = False
        self.entries = 0

    def count(self, n: int = 1) -> None:
        if self.on:
            self.entries += n


class CountingDict(dict[_K, _V]):
    """A dict that counts each key, value or item its iterations hand out (`max(d)`, `d.values()`, ...)."""

    def __init__(self, data: dict[_K, _V], tally: Tally) -> None:
        super().__init__(data)
        self.tally = tally

    def _counted(self, entries: Iterator[_T]) -> Iterator[_T]:
        for entry in entries:
            self.tally.count()
            yield entry

    def __iter__(self) -> Iterator[_K]:
        return self._counted(super().__iter__())

    def keys(self) -> Any:
        return self._counted(iter(super().keys()))

    def values(self) -> Any:
        return self._counted(iter(super().values()))

    def items(self) -> Any:
        return self._counted(iter(super().items()))


class CountingList(list[_T]):
    """A list that counts each element its iterations hand out, and those that `+` copies."""

    def __init__(self, data: list[_T], tally: Tally) -> None:
        super().__init__(data)
        self.tally = tally

    def __iter__(self) -> Iterator[_T]:
        for element in super().__iter__():
            self.tally.count()
            yield element

    def __add__(self, other: Any) -> Any:
        self.tally.count(len(self))
        return list(list.__iter__(self)) + other


def _internal(value: object) -> bool:
    """An accumulator's own state object (not an event, an item or a builtin value)."""
    kind = type(value)
    return (
        hasattr(kind, "__slots__")
        and kind.__module__.startswith("streamkit.protocols")
        and not isinstance(value, msgspec.Struct)
    )


def instrument(obj: object, tally: Tally) -> None:
    """Swap every plain dict and list that `obj` keeps, at any depth, for a counting one."""
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            value = getattr(obj, name, None)
            if type(value) is dict:
                value = CountingDict(value, tally)
                setattr(obj, name, value)
            elif type(value) is list:
                value = CountingList(value, tally)
                setattr(obj, name, value)
            if isinstance(value, dict):
                inner: list[object] = list(dict.values(value))
            elif isinstance(value, list):
                inner = list(list.__iter__(value)) if value and _internal(value[0]) else []
            else:
                inner = [value]
            for each in inner:
                if _internal(each):
                    instrument(each, tally)


def entries_looked_at(acc: Any, items: list[Any]) -> int:
    """How many entries of its dicts and lists `acc` looked at while it added `items`."""
    tally = Tally()
    instrument(acc, tally)
    for item in items:
        tally.on = True
        acc.add(item)
        tally.on = False
        instrument(acc, tally)  # containers made by this event, or put in place of the counted ones
    return tally.entries


# The shapes, as servers may send them


def chat_chunk(*tool_calls: dict[str, Any], index: int = 0) -> ChatCompletionChunk:
    choice = {"index": index, "delta": {"tool_calls": list(tool_calls)}, "finish_reason": None}
    return ChatCompletionChunk.from_json(json.dumps({"id": "c", "model": "m", "choices": [choice]}))


def chat_tool_calls_without_index(n: int) -> list[ChatCompletionChunk]:
    """n deltas: each call whole but for its last fragment, with a new id, then that fragment, with none."""
    chunks = []
    for i in range(n // 2):
        head = {"id": f"call_{i}", "type": "function", "function": {"name": "f", "arguments": "{"}}
        chunks += [chat_chunk(head), chat_chunk({"function": {"arguments": "}"}})]
    return chunks


def chat_tool_calls_by_known_id(n: int) -> list[ChatCompletionChunk]:
    """n deltas: n/2 calls each opened by its id, then a fragment for each, again by its id."""
    calls = [
        chat_chunk({"id": f"call_{i}", "function": {"name": "f", "arguments": ""}}) for i in range(n // 2)
    ]
    return calls + [chat_chunk({"id": f"call_{i}", "function": {"arguments": "{}"}}) for i in range(n // 2)]


def chat_choices(n: int) -> list[ChatCompletionChunk]:
    """n chunks, each for a new choice."""
    return [
        ChatCompletionChunk.from_json(json.dumps({"choices": [{"index": i, "delta": {"content": "x"}}]}))
        for i in range(n)
    ]


def legacy_choices(n: int) -> list[CompletionChunk]:
    """n chunks, each for a new choice."""
    return [CompletionChunk.from_json(json.dumps({"choices": [{"index": i, "text": "x"}]})) for i in range(n)]


def response_event(**fields: Any) -> r.ResponseEvent:
    event = RESPONSES.decode(json.dumps(fields).encode())
    assert event is not None
    return event


def responses_fresh_item_ids(n: int) -> list[r.ResponseEvent]:
    """n deltas, each to a new item known only by its `item_id`: text, arguments, and both again with
    neither index nor id (the latest item)."""
    events = []
    for i in range(n // 4):
        events += [
            response_event(type="response.output_text.delta", item_id=f"msg_{i}", delta="a"),
            response_event(type="response.output_text.delta", delta="b"),
            response_event(type="response.function_call_arguments.delta", item_id=f"fc_{i}", delta="{"),
            response_event(type="response.function_call_arguments.delta", delta="}"),
        ]
    return events


def responses_items_announced_without_index(n: int) -> list[r.ResponseEvent]:
    """n events: items announced by `output_item.added` without `output_index`, each followed by a delta."""
    events = []
    for i in range(n // 2):
        item = {"type": "message", "id": f"msg_{i}", "role": "assistant", "content": []}
        events += [
            response_event(type="response.output_item.added", item=item),
            response_event(type="response.output_text.delta", item_id=f"msg_{i}", delta="a"),
        ]
    return events


def responses_logprobs(n: int) -> list[r.ResponseEvent]:
    """n text deltas to one part, each with a logprob."""
    logprob = {"token": "w", "logprob": -0.1, "bytes": [119], "top_logprobs": []}
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    return [
        response_event(type="response.output_text.delta", **ids, delta="w", logprobs=[logprob])
        for _ in range(n)
    ]


def message_event(**fields: Any) -> m.MessageEvent:
    event = MESSAGES.decode(json.dumps(fields).encode())
    assert event is not None
    return event


def messages_blocks_never_started(n: int) -> list[m.MessageEvent]:
    """n text deltas, each to a new block that never started."""
    return [
        message_event(type="content_block_delta", index=i, delta={"type": "text_delta", "text": "x"})
        for i in range(n)
    ]


CITATION = {"type": "char_location", "cited_text": "x", "document_index": 0, "start_char_index": 0}


def messages_citations(n: int) -> list[m.MessageEvent]:
    """n citations to one text block."""
    citation = {"type": "citations_delta", "citation": CITATION}
    return [message_event(type="content_block_delta", index=0, delta=citation) for _ in range(n)]


SHAPES: dict[str, tuple[Callable[[], Any], Callable[[int], list[Any]]]] = {
    "chat tool calls without index": (ChatCompletionAccumulator, chat_tool_calls_without_index),
    "chat tool calls by known id": (ChatCompletionAccumulator, chat_tool_calls_by_known_id),
    "chat choices": (ChatCompletionAccumulator, chat_choices),
    "legacy choices": (CompletionAccumulator, legacy_choices),
    "responses fresh item ids": (ResponseAccumulator, responses_fresh_item_ids),
    "responses items announced without index": (ResponseAccumulator, responses_items_announced_without_index),
    "responses logprobs on one part": (ResponseAccumulator, responses_logprobs),
    "messages blocks never started": (MessageAccumulator, messages_blocks_never_started),
    "messages citations on one block": (MessageAccumulator, messages_citations),
}

N = 200


@pytest.mark.parametrize("shape", SHAPES)
def test_each_event_looks_at_a_bounded_number_of_entries(shape: str) -> None:
    make, events = SHAPES[shape]
    small = entries_looked_at(make(), events(N))
    large = entries_looked_at(make(), events(2 * N))
    # At most one entry per event on average, and twice the events is at most twice the work: a scan per
    # event would look at about N * N / 2 entries.
    assert small <= N and large <= 2 * N, (small, large)
    assert large <= 2 * small + 2, (small, large)


def test_the_count_sees_a_scan() -> None:
    """The counting itself: a scan of the items per event, as `max()` over them, is seen."""

    class Scanning(ResponseAccumulator):
        __slots__ = ()

        def add(self, event: r.ResponseEvent) -> int:
            max(self._by_index, default=None)
            return super().add(event)

    assert entries_looked_at(Scanning(), responses_fresh_item_ids(N)) > 10 * N


@pytest.mark.parametrize("shape", SHAPES)
def test_the_counted_aggregate_is_the_plain_one(shape: str) -> None:
    """Counting changes nothing: the instrumented accumulator's final object is the plain one's."""
    make, events = SHAPES[shape]
    items = events(20)
    counted, plain = make(), make()
    entries_looked_at(counted, items)
    for item in items:
        plain.add(item)
    assert counted.final().to_dict() == plain.final().to_dict()


def test_the_shapes_aggregate_as_meant() -> None:
    """The workloads above are what they say: many items, each with its own pieces."""
    chat = ChatCompletionAccumulator()
    for chunk in chat_tool_calls_without_index(N):
        chat.add(chunk)
    calls = chat.final().choices[0].message.tool_calls or []
    assert [(c.index, c.id, c.function and c.function.arguments) for c in calls] == [
        (i, f"call_{i}", "{}") for i in range(N // 2)
    ]

    responses = ResponseAccumulator()
    for event in responses_fresh_item_ids(N):
        responses.add(event)
    output = responses.final().to_dict()["output"]
    assert len(output) == N // 2
    assert [(item["type"], item["id"]) for item in output[:2]] == [
        ("message", "msg_0"),
        ("function_call", "fc_0"),
    ]
    assert output[0]["content"][0]["text"] == "ab" and output[1]["arguments"] == "{}"

    messages = MessageAccumulator()
    for message_event_ in messages_blocks_never_started(N) + messages_citations(3):
        messages.add(message_event_)
    content = messages.final().content
    assert (
        len(content) == N and isinstance(content[0], m.TextBlock) and content[0].citations == [CITATION] * 3
    )


def test_extending_in_place_never_changes_the_events() -> None:
    """Logprobs and citations are kept in the accumulator's own lists: the events' lists stay as they came."""
    events = responses_logprobs(2)
    acc = ResponseAccumulator()
    for event in events:
        acc.add(event)
    assert all(isinstance(e, r.ResponseTextDeltaEvent) and len(e.logprobs or []) == 1 for e in events)
    first = acc.snapshot
    acc.add(responses_logprobs(1)[0])
    item = first.output[0]
    assert isinstance(item, r.OutputMessage)
    part = item.content[0]
    assert isinstance(part, r.OutputText) and len(part.logprobs or []) == 2

    block = message_event(type="content_block_start", index=0, content_block={"type": "text", "text": ""})
    messages = MessageAccumulator()
    for message_event_ in [block, *messages_citations(2)]:
        messages.add(message_event_)
    before = messages.snapshot
    messages.add(messages_citations(1)[0])
    text = before.content[0]
    assert isinstance(text, m.TextBlock) and text.citations == [CITATION] * 2


# The rules, kept: a plain model of each, and hypothesis's index-less sequences


def chat_model(deltas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls by DESIGN's rules, plainly: a delta with an index goes to that call; one without goes to the
    first call (in order of arrival) whose id is its id, else a new id starts a new call (at the number of
    calls so far) and no id continues the call with the highest index; id, type and name are set once, and an
    empty string does not count; arguments are concatenated."""
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        index = delta.get("index")
        if index is None:
            index = next(
                (i for i, c in calls.items() if delta.get("id") and c["id"] == delta.get("id")), None
            )
        if index is None:
            index = len(calls) if delta.get("id") or not calls else max(calls)
        call = calls.setdefault(index, {"id": None, "type": None, "name": None, "arguments": ""})
        function = delta.get("function") or {}
        for key, value in (
            ("id", delta.get("id")),
            ("type", delta.get("type")),
            ("name", function.get("name")),
        ):
            if value and call[key] is None:
                call[key] = value
        call["arguments"] += function.get("arguments") or ""
    return [
        {
            "index": i,
            **({"id": calls[i]["id"]} if calls[i]["id"] else {}),
            **({"type": calls[i]["type"]} if calls[i]["type"] else {}),
            "function": {
                **({"name": calls[i]["name"]} if calls[i]["name"] else {}),
                "arguments": calls[i]["arguments"],
            },
        }
        for i in sorted(calls)
    ]


def _maybe(values: list[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from([None, *values])


tool_call_deltas = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "index": _maybe([None, None, 0, 1, 3, -1]),
            "id": _maybe(["", "a", "b", "c"]),
            "type": _maybe(["", "function"]),
            "function": st.fixed_dictionaries(
                {}, optional={"name": _maybe(["", "f", "g"]), "arguments": _maybe(["", "x", "{", "}"])}
            ),
        },
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(deltas=tool_call_deltas, per_chunk=st.integers(1, 3))
def test_chat_tool_calls_with_and_without_index_follow_the_rules(
    deltas: list[dict[str, Any]], per_chunk: int
) -> None:
    acc = ChatCompletionAccumulator()
    for i in range(0, len(deltas), per_chunk):
        acc.add(chat_chunk(*deltas[i : i + per_chunk]))
    choices = acc.final().to_dict()["choices"]
    assert (choices[0]["message"].get("tool_calls", []) if choices else []) == chat_model(deltas)


def test_a_known_id_goes_to_the_first_call_that_has_it_in_order_of_arrival() -> None:
    """Two calls with one id: a fragment without an index but with that id goes to the call that came first,
    whether it took the id first (calls 2 and 3, id "y") or last (calls 0 and 1, id "x")."""
    deltas: list[dict[str, Any]] = [
        {"index": 0, "function": {"arguments": "a"}},
        {"index": 1, "id": "x", "function": {"arguments": "b"}},
        {"index": 0, "id": "x", "function": {"arguments": "c"}},
        {"id": "x", "function": {"arguments": "d"}},
        {"index": 2, "id": "y", "function": {"arguments": "f"}},
        {"index": 3, "id": "y", "function": {"arguments": "g"}},
        {"id": "y", "function": {"arguments": "h"}},
        {"function": {"arguments": "e"}},  # no id: the highest index
    ]
    acc = ChatCompletionAccumulator()
    for delta in deltas:
        acc.add(chat_chunk(delta))
    calls = acc.final().to_dict()["choices"][0]["message"]["tool_calls"]
    assert [(c["index"], c["function"]["arguments"]) for c in calls] == [
        (0, "acd"),
        (1, "b"),
        (2, "fh"),
        (3, "ge"),
    ]
    assert calls == chat_model(deltas)


def test_a_new_id_starts_a_call_at_the_number_of_calls_even_where_one_has_that_index() -> None:
    """As the rules have it: calls 1 and 5 exist, a new id goes to index 2; then calls 0, 1, 2 and 5, and a
    new id goes to index 4; a fragment without an id continues call 5, the highest."""
    deltas: list[dict[str, Any]] = [
        {"index": 5, "id": "p", "function": {"arguments": "p"}},
        {"index": 1, "id": "q", "function": {"arguments": "q"}},
        {"id": "r", "function": {"arguments": "r"}},
        {"index": 0, "function": {"arguments": "s"}},
        {"id": "t", "function": {"arguments": "t"}},
        {"function": {"arguments": "u"}},
    ]
    acc = ChatCompletionAccumulator()
    for delta in deltas:
        acc.add(chat_chunk(delta))
    calls = acc.final().to_dict()["choices"][0]["message"]["tool_calls"]
    assert [(c["index"], c.get("id"), c["function"]["arguments"]) for c in calls] == [
        (0, None, "s"),
        (1, "q", "q"),
        (2, "r", "r"),
        (4, "t", "t"),
        (5, "p", "pu"),
    ]
    assert calls == chat_model(deltas)


def responses_model(events: list[dict[str, Any]]) -> list[tuple[str, str | None, Any]]:
    """Output items by DESIGN's rules, plainly: an event goes to the item at its `output_index`, else to the
    item its `item_id` names, else (neither) to the item with the highest index; an item that is not there
    is made at that index, or after the highest; text deltas build message parts by `content_index`,
    argument deltas a function call's arguments; `output_item.added` puts its item in place."""
    items: dict[int, dict[str, Any]] = {}
    by_id: dict[str, dict[str, Any]] = {}

    def item(index: int | None, item_id: str | None, kind: str) -> dict[str, Any]:
        found = None
        if index is not None:
            found = items.get(index)
        elif item_id is not None:
            found = by_id.get(item_id)
        elif items:
            found = items[max(items)]
        if found is None:
            if index is None:
                index = max(items, default=-1) + 1
            found = items[index] = {"type": kind, "id": item_id, "parts": {}, "arguments": ""}
            if item_id is not None:
                by_id[item_id] = found
        return found

    for event in events:
        index, item_id = event.get("output_index"), event.get("item_id")
        if event["type"] == "response.output_text.delta":
            parts = item(index, item_id, "message")["parts"]
            key = event.get("content_index") or 0
            parts[key] = parts.get(key, "") + event["delta"]
        elif event["type"] == "response.function_call_arguments.delta":
            item(index, item_id, "function_call")["arguments"] += event["delta"]
        else:
            announced = event["item"]
            found = item(index, announced["id"], "message")
            found.update(type="message", id=announced["id"])
            by_id[announced["id"]] = found
    result: list[tuple[str, str | None, Any]] = []
    for i in sorted(items):
        found = items[i]
        if found["type"] == "message":
            parts = found["parts"]
            result.append(("message", found["id"], [parts[k] for k in sorted(parts)]))
        else:
            result.append(("function_call", found["id"], found["arguments"]))
    return result


def projected(response: r.Response) -> list[tuple[str, str | None, Any]]:
    result: list[tuple[str, str | None, Any]] = []
    for item in response.output:
        if isinstance(item, r.OutputMessage):
            result.append(("message", item.id, [getattr(part, "text", None) for part in item.content]))
        else:
            assert isinstance(item, r.FunctionCallItem)
            result.append(("function_call", item.id, item.arguments))
    return result


_ids = {"output_index": _maybe([0, 1, 4]), "item_id": _maybe(["a", "b", "c"])}
responses_events = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("response.output_text.delta"), "delta": st.sampled_from(["x", "y"])},
            optional={**_ids, "content_index": _maybe([0, 1])},
        ),
        st.fixed_dictionaries(
            {"type": st.just("response.function_call_arguments.delta"), "delta": st.sampled_from(["{", "}"])},
            optional=_ids,
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("response.output_item.added"),
                "item": st.builds(
                    lambda i: {"type": "message", "id": i, "role": "assistant", "content": []},
                    st.sampled_from(["a", "b", "d"]),
                ),
            },
            optional={"output_index": _maybe([0, 2])},
        ),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(events=responses_events)
def test_responses_items_with_and_without_index_follow_the_rules(events: list[dict[str, Any]]) -> None:
    acc = ResponseAccumulator()
    for event in events:
        acc.add(response_event(**event))
    assert projected(acc.final()) == responses_model(events)


def messages_model(events: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]] | None]]:
    """Text blocks by index, plainly: a start (re)opens a block, a delta to a block that never started opens a
    text block; text is concatenated and citations appended, in order."""
    blocks: dict[int, dict[str, Any]] = {}
    for event in events:
        if event["type"] == "content_block_start":
            blocks[event["index"]] = {"text": "", "citations": None}
            continue
        block = blocks.setdefault(event["index"], {"text": "", "citations": None})
        delta = event["delta"]
        if delta["type"] == "text_delta":
            block["text"] += delta["text"]
        else:
            block["citations"] = [*(block["citations"] or []), delta["citation"]]
    return [(blocks[i]["text"], blocks[i]["citations"]) for i in sorted(blocks)]


_block_index = st.sampled_from([0, 1, 2, 7])
messages_events = st.lists(
    st.one_of(
        st.builds(
            lambda i: {
                "type": "content_block_start",
                "index": i,
                "content_block": {"type": "text", "text": ""},
            },
            _block_index,
        ),
        st.builds(
            lambda i, t: {
                "type": "content_block_delta",
                "index": i,
                "delta": {"type": "text_delta", "text": t},
            },
            _block_index,
            st.sampled_from(["x", "y"]),
        ),
        st.builds(
            lambda i, n: {
                "type": "content_block_delta",
                "index": i,
                "delta": {"type": "citations_delta", "citation": {**CITATION, "start_char_index": n}},
            },
            _block_index,
            st.integers(0, 3),
        ),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(events=messages_events)
def test_messages_blocks_with_and_without_start_follow_the_rules(events: list[dict[str, Any]]) -> None:
    acc = MessageAccumulator()
    for event in events:
        acc.add(message_event(**event))
    content = acc.final().content
    assert all(isinstance(block, m.TextBlock) for block in content)
    assert [(b.text, b.citations) for b in content if isinstance(b, m.TextBlock)] == messages_model(events)
