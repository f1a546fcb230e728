"""Any JSON, anywhere: whatever value a server puts in any field of any event of any API, a stream ends with
the API's final object or a `StreamkitError` that keeps `.partial`, never with another exception, and never
waits.

Each example starts from real shapes (the built-in server's plans, the recorded fixtures, and hand-written
events of every type the server never sends), puts arbitrary JSON at drawn paths of drawn events (any key at
any depth, existing or new, `type` and the index fields included), and runs the bytes through a real `Stream`,
and the events one by one through the API's accumulator, with a snapshot after each.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamkit import ChunkDecodeError, SSEDecoder, StreamAPIError, StreamkitError
from streamkit.protocols import APIS, ERROR, Api, UnknownObject
from streamkit.protocols import messages as m
from streamkit.protocols import responses as r
from streamkit.server.apis import SERVER_APIS
from streamkit.server.scripted import Script, Tool, answer
from streamkit.streams import (
    ChatCompletionStream,
    CompletionStream,
    MessageStream,
    ResponseStream,
    Stream,
    StreamMetrics,
)
from streamkit.transports.mock import MockResponse
from tests.conftest import FIXTURES, OPENAI_STREAMS

T = TypeVar("T")

Frame = tuple[str, Any]
"""One event: its SSE type (`message` sends no `event:` line) and its data (JSON, or bytes as they are)."""

STREAMS: dict[str, type[Stream[Any, Any]]] = {
    "chat": ChatCompletionStream,
    "completions": CompletionStream,
    "responses": ResponseStream,
    "messages": MessageStream,
}
NAMES = sorted(STREAMS)


# Real shapes


def planned(name: str, script: Script) -> list[Frame]:
    """Every event of the built-in server's plan for `script`."""
    plan = SERVER_APIS[name].render(script, answer(script, 8), 2)
    return [(frame.event or "message", frame.data) for frame in plan.frames + plan.end]


def recorded(body: bytes) -> list[Frame]:
    decoder = SSEDecoder()
    events = decoder.feed(body) + decoder.close()
    return [
        (event.event, event.data.encode() if event.data == "[DONE]" else json.loads(event.data))
        for event in events
    ]


SCRIPTS = [
    Script("m"),
    Script("m", include_usage=True, logprobs=True, top_logprobs=2),
    Script("m", stop=["e"], max_tokens=5),
    Script("m", tools=[Tool("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}})]),
    Script("m", n=2),
]
BASES: dict[str, list[list[Frame]]] = {
    name: [planned(name, s) for s in SCRIPTS if s.n == 1 or name in ("chat", "completions")] for name in NAMES
}
BASES["chat"] += [recorded(path.read_bytes()) for path in OPENAI_STREAMS]
BASES["responses"].append(recorded((FIXTURES / "llamacpp" / "responses.bin").read_bytes()))
BASES["messages"].append(recorded((FIXTURES / "llamacpp" / "messages.bin").read_bytes()))


def skeleton(kind: type[Any], **fields: Any) -> dict[str, Any]:
    """An object of a msgspec type with every field (defaults where not given), as JSON."""
    built: dict[str, Any] = msgspec.to_builtins(kind(**fields))
    return built


CHAT_SAMPLES: list[Frame] = [
    (
        "message",
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "system_fingerprint": "fp",
            "service_tier": "default",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "content": "Hi",
                        "refusal": "no",
                        "reasoning_content": "r",
                        "reasoning": "r",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{"},
                            }
                        ],
                        "function_call": {"name": "f", "arguments": "{}"},
                    },
                    "logprobs": {
                        "content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}],
                        "refusal": None,
                    },
                    "finish_reason": None,
                }
            ],
            "usage": {
                "prompt_tokens": 1,
                "completion_tokens": 2,
                "total_tokens": 3,
                "completion_tokens_details": {"reasoning_tokens": 1},
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        },
    ),
    ("message", {"error": {"message": "boom", "type": "server_error", "code": "x", "param": None}}),
    ("error", {"error": {"message": "boom"}}),
]
COMPLETIONS_SAMPLES: list[Frame] = [
    (
        "message",
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "text": "Hi",
                    "logprobs": {
                        "tokens": ["Hi"],
                        "token_logprobs": [-0.1],
                        "top_logprobs": [{"Hi": -0.1}],
                        "text_offset": [0],
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
    ),
    ("message", {"error": "boom"}),
]
RESPONSES_SAMPLES: list[Frame] = [
    *(("message", skeleton(kind)) for kind in r.ResponseStreamEvent.__args__),
    *(
        ("message", {"type": tag, "output_index": 0, "item": skeleton(item)})
        for tag in ("response.output_item.added", "response.output_item.done")
        for item in r.OutputItem.variants
    ),
    *(
        (
            "message",
            {"type": tag, "output_index": 0, "content_index": 0, "summary_index": 0, "part": skeleton(part)},
        )
        for tag in (
            "response.content_part.added",
            "response.content_part.done",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_part.done",
        )
        for part in r.ContentPart.variants
    ),
    (
        "message",
        {
            "type": "response.completed",
            "response": skeleton(r.Response, status="completed")
            | {
                "output": [
                    {"type": "message", "id": "msg_1", "content": [skeleton(r.OutputText, text="Hi")]},
                    skeleton(r.ReasoningItem),
                ]
            },
        },
    ),
    (
        "message",
        {"type": "error", "code": "server_error", "message": "boom", "param": None, "sequence_number": 3},
    ),
    ("error", {"type": "error", "error": {"type": "too_many_requests", "message": "Slow down."}}),
]
MESSAGES_SAMPLES: list[Frame] = [
    *((str(kind.__struct_config__.tag), skeleton(kind)) for kind in m.MessageStreamEvent.__args__),
    *(
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": skeleton(block)})
        for block in m.ContentBlock.variants
    ),
    *(
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": skeleton(delta)})
        for delta in m.Delta.variants
    ),
    (
        "message_start",
        {
            "type": "message_start",
            "message": skeleton(m.Message)
            | {"content": [skeleton(block) for block in m.ContentBlock.variants]},
        },
    ),
    (
        "error",
        {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": "req_1",
        },
    ),
    ("error", {"type": "error", "message": "boom"}),
    ("error", {"message": "boom", "request_id": "req_1"}),
]
SAMPLES: dict[str, list[Frame]] = {
    "chat": CHAT_SAMPLES,
    "completions": COMPLETIONS_SAMPLES,
    "responses": RESPONSES_SAMPLES,
    "messages": MESSAGES_SAMPLES,
}
POOLS: dict[str, list[Frame]] = {
    name: [f for f in SAMPLES[name] + [f for base in BASES[name] for f in base] if isinstance(f[1], dict)]
    for name in NAMES
}


# Any JSON


def _tags_of(union: Any) -> set[str]:
    return {str(v.__struct_config__.tag) for v in union}


TAGS = sorted(
    r.RESPONSES.tags
    | m.MESSAGES.tags
    | _tags_of(r.OutputItem.variants)
    | _tags_of(r.ContentPart.variants)
    | _tags_of(m.ContentBlock.variants)
    | _tags_of(m.Delta.variants)
    | {"ping", "function", "message", "new_kind"}
)
FOCUS = ["type", "index", "output_index", "content_index", "summary_index", "sequence_number", "item_id"]
"""The fields that pick a type or a place (`test_odd_values_at_every_type_and_index_field` tries each)."""
KEYS = [
    "type", "index", "output_index", "content_index", "summary_index", "item_id", "sequence_number", "id",
    "delta", "text", "content", "choices", "tool_calls", "function", "arguments", "logprobs", "finish_reason",
    "usage", "item", "part", "response", "output", "content_block", "message", "stop_reason", "error",
    "request_id", "partial_json", "input", "citation", "annotation",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**300, -(10**4000)])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(TAGS)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def like(value: Any) -> st.SearchStrategy[Any]:
    """JSON of the same kind as `value` (a number for a number, a string for a string...), which the typed
    decoders take, so that odd values reach the accumulators and not only their decoders' checks."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-(2**70), 2**70) | st.sampled_from([-1, 0, 1, 2**63, 2**64, 10**300])
    if isinstance(value, float):
        return st.floats(allow_nan=False, allow_infinity=False)
    if isinstance(value, str):
        return st.text(max_size=12) | st.sampled_from(TAGS)
    if isinstance(value, list):
        return st.lists(st.sampled_from(value) if value else json_values, max_size=4)
    return json_values


def containers(value: Any) -> list[Any]:
    """Every object and array in a JSON value, outermost first."""
    found: list[Any] = []
    stack = [value]
    while stack:
        each = stack.pop()
        if isinstance(each, dict):
            found.append(each)
            stack.extend(each.values())
        elif isinstance(each, list):
            found.append(each)
            stack.extend(each)
    return found


def mutated(data: st.DataObject, value: Any) -> Any:
    """A copy of an event's data with arbitrary JSON put (or a key taken out) at one to three drawn places."""
    value = copy.deepcopy(value)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        places = containers(value)
        if not places or data.draw(st.integers(0, 30)) == 0:  # now and then, the whole data
            value = data.draw(json_values, label="data")
            continue
        place = data.draw(st.sampled_from(places), label="place")
        if isinstance(place, dict):
            keys = (
                st.just("type")
                | st.sampled_from(FOCUS)
                | st.sampled_from(sorted(place) or KEYS)
                | st.sampled_from(KEYS)
            )
            key = data.draw(keys | st.text(max_size=4), label="key")
            if key in place and data.draw(st.integers(0, 5)) == 0:
                del place[key]
            else:
                kind = like(place[key]) if key in place and data.draw(st.booleans()) else json_values
                place[key] = data.draw(kind, label=f"[{key!r}]")
        else:
            at = data.draw(st.integers(0, len(place)), label="at")
            kind = like(place[at]) if at < len(place) and data.draw(st.booleans()) else json_values
            new = data.draw(kind, label=f"[{at}]")
            if at == len(place):
                place.append(new)
            else:
                place[at] = new
    return value


@st.composite
def streams(draw: st.DrawFn, name: str) -> list[Frame]:
    """A real stream of API `name` with some of its events replaced by mutated ones or taken out, and mutated
    events of any type put in."""
    data = draw(st.data())
    frames = list(draw(st.sampled_from(BASES[name])))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(frames)))
        what = draw(st.sampled_from(["mutate", "insert", "insert", "drop"]))
        if what == "drop" and at < len(frames):
            del frames[at]
            continue
        event, value = (
            draw(st.sampled_from(POOLS[name])) if what == "insert" or at == len(frames) else frames[at]
        )
        if not isinstance(value, dict):
            continue
        event = draw(st.sampled_from([event, event, "message", "error", "ping"]))
        frame = (event, mutated(data, value))
        if what == "mutate" and at < len(frames):
            frames[at] = frame
        else:
            frames.insert(at, frame)
    return frames


def data_of(value: Any, escaped: bool) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value, ensure_ascii=escaped).encode()


def body_of(frames: list[Frame], escaped: bool) -> list[bytes]:
    """Each event's bytes, framed as SSE."""
    return [
        (b"" if event == "message" else f"event: {event}\n".encode())
        + b"data: "
        + data_of(value, escaped)
        + b"\n\n"
        for event, value in frames
    ]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a stream's coroutine to its end. A `MockResponse` answers every read at once, so a stream that
    waits for anything (a hang, on a real connection) fails here."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coroutine.close()
    raise AssertionError("the stream waited for something")


async def read(stream: Stream[Any, Any], iterate: bool) -> Any:
    if iterate:
        async for item in stream:
            stream.carries_token(item)
            stream.api.text(item)
    return await stream.get_final()


def ends_well(name: str, reads: list[bytes], iterate: bool) -> None:
    """The stream of these reads ends with its final object, or a `StreamkitError` with the snapshot."""
    stream = STREAMS[name](MockResponse(body=reads), StreamMetrics(0.0, 0.0))
    final_type = stream.api.final_type
    try:
        final = run(read(stream, iterate))
    except StreamkitError as exc:
        assert isinstance(exc.partial, final_type), exc
    else:
        assert isinstance(final, final_type)
    assert isinstance(stream.snapshot, final_type)


def accumulates(api: Api[Any, Any], frames: list[Frame]) -> None:
    """Each event decodes or raises a `StreamkitError`, and the accumulator takes what decodes and builds a
    snapshot after each (past the errors a stream would stop at, so that more sequences are tried)."""
    accumulator = api.accumulator()
    for event, value in frames:
        try:
            item = api.decode(data_of(value, True), event)
        except StreamkitError:
            continue
        if item is None:
            continue
        flags = accumulator.add(item)
        assert flags == api.flags(item)
        api.text(item)
        api.token_count(item)
        if flags & ERROR:
            assert isinstance(api.error(item), StreamAPIError)
        snapshot = accumulator.snapshot
        assert isinstance(snapshot, api.final_type)
        snapshot.to_dict()
    assert isinstance(accumulator.final(), api.final_type)
    accumulator.is_finished()
    accumulator.output_tokens  # noqa: B018 (it must not raise)
    accumulator.input_tokens  # noqa: B018


# Properties


def test_the_pools_hold_every_event_type() -> None:
    for api in (r.RESPONSES, m.MESSAGES):
        assert api.tags <= {value.get("type") for _, value in POOLS[api.name]}


FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@settings(FUZZ, max_examples=800)
@given(
    data=st.data(),
    name=st.sampled_from(NAMES),
    escaped=st.booleans(),
    reads=st.sampled_from(["whole", "events", "cut"]),
    iterate=st.booleans(),
)
def test_any_json_anywhere_ends_in_the_final_or_a_streamkit_error(
    data: st.DataObject, name: str, escaped: bool, reads: str, iterate: bool
) -> None:
    events = body_of(data.draw(streams(name), label="frames"), escaped)
    body = b"".join(events)
    if reads == "whole":
        pieces = [body]
    elif reads == "events":
        pieces = events
    else:
        cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8), label="cuts"))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    ends_well(name, pieces, iterate)


@settings(FUZZ, max_examples=800)
@given(data=st.data(), name=st.sampled_from(NAMES))
def test_any_json_anywhere_decodes_or_raises_and_every_snapshot_builds(
    data: st.DataObject, name: str
) -> None:
    accumulates(APIS[name], data.draw(streams(name), label="frames"))


ODD = [None, True, 0, -1, 2**64, 10**300, 1.5, "", "new_kind", [], ["text"], {}, {"type": "text"}]


def shape(value: Any) -> Any:
    """What a JSON value looks like, without its strings and numbers: events of one shape test alike."""
    if isinstance(value, dict):
        return {key: shape(each) for key, each in value.items()}
    if isinstance(value, list):
        return sorted({json.dumps(shape(each), sort_keys=True) for each in value})
    return type(value).__name__


def shapes(frames: list[Frame]) -> list[Frame]:
    """One event of each shape."""
    seen: dict[str, Frame] = {}
    for frame in frames:
        seen.setdefault(json.dumps([frame[0], shape(frame[1])], sort_keys=True), frame)
    return list(seen.values())


def odd_variants(value: Any) -> list[Any]:
    """`value` with each odd value put at each `FOCUS` field of each object in it (`type` where it is absent,
    too), one at a time."""
    variants = []
    for at in range(len(containers(value))):
        place = containers(value)[at]
        if not isinstance(place, dict):
            continue
        for key in sorted({k for k in place if k in FOCUS} | {"type"}):
            for odd in ODD:
                copied = copy.deepcopy(value)
                containers(copied)[at][key] = odd
                variants.append(copied)
    return variants


@pytest.mark.parametrize("name", NAMES)
def test_odd_values_at_every_type_and_index_field(name: str) -> None:
    """Every odd value at every field that picks a type or a place, in one event of each shape, as a stream
    reads it (whole, and an event a read) and as the accumulator takes it."""
    base = BASES[name][0]
    api = APIS[name]
    tried = 0
    for event, value in shapes(POOLS[name]):
        for variant in odd_variants(value):
            frames = [base[0], (event, variant), *base[1:]]
            events = body_of(frames, True)
            ends_well(name, events if tried % 2 else [b"".join(events)], iterate=bool(tried % 3))
            accumulates(api, frames)
            tried += 1
    assert tried > 100


# The escapes these found, each on its own

NOT_STRINGS = [["text_delta"], {"type": "text_delta"}, 5, True, 1.5]


@pytest.mark.parametrize("tag", NOT_STRINGS, ids=repr)
def test_a_delta_type_that_is_no_string_is_a_chunk_decode_error_not_a_type_error(tag: Any) -> None:
    """It was a bare TypeError for a list or an object (`MessagesApi.prepare` looked it up in a set) and an
    `UnknownDelta` for a number; now a `type` that is no string is a broken object at every level of every
    API, as an event's own `type` is (see `decode_hook`)."""
    data = {"type": "content_block_delta", "index": 0, "delta": {"type": tag, "text": "x"}}
    with pytest.raises(ChunkDecodeError):
        m.MESSAGES.decode(json.dumps(data).encode(), "content_block_delta")
    base = BASES["messages"][0]
    stream = MessageStream(
        MockResponse(body=body_of([base[0], ("message", data)], True)), StreamMetrics(0.0, 0.0)
    )
    with pytest.raises(ChunkDecodeError) as caught:
        run(stream.get_final())
    assert isinstance(caught.value.partial, m.Message)


@pytest.mark.parametrize("tag", [None, "audio_delta"])
def test_a_delta_type_that_is_new_or_none_is_an_unknown_delta(tag: Any) -> None:
    delta = {"type": tag, "audio": "AAAA"}
    item = m.MESSAGES.decode(json.dumps({"type": "content_block_delta", "index": 0, "delta": delta}).encode())
    assert isinstance(item, m.ContentBlockDeltaEvent) and isinstance(item.delta, m.UnknownDelta)
    assert item.delta.data == delta


NESTED_TYPES: dict[str, tuple[Api[Any, Any], dict[str, Any], Callable[[Any], Any]]] = {
    "content_block": (
        m.MESSAGES,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "T"}},
        lambda event: event.content_block,
    ),
    "message.content": (
        m.MESSAGES,
        {"type": "message_start", "message": {"content": [{"type": "T"}]}},
        lambda event: event.message.content[0],
    ),
    "item": (
        r.RESPONSES,
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "T"}},
        lambda event: event.item,
    ),
    "part": (
        r.RESPONSES,
        {"type": "response.content_part.done", "output_index": 0, "part": {"type": "T"}},
        lambda event: event.part,
    ),
    "response.output.content": (
        r.RESPONSES,
        {
            "type": "response.completed",
            "response": {"output": [{"type": "message", "content": [{"type": "T"}]}]},
        },
        lambda event: event.response.output[0].content[0],
    ),
}


@pytest.mark.parametrize("where", sorted(NESTED_TYPES))
def test_a_nested_type_that_is_no_string_is_a_chunk_decode_error_and_a_null_one_unknown(where: str) -> None:
    """The same rule for every open union of objects (content blocks, output items, content parts): a `type`
    that is no string was an `UnknownObject` for a number and a `ChunkDecodeError` for a list or an object
    only because msgspec wrapped the TypeError of a set lookup; absent or null, the kind is not told."""
    api, data, nested = NESTED_TYPES[where]
    raw = json.dumps(data)
    for tag in NOT_STRINGS:
        with pytest.raises(ChunkDecodeError, match="string `type`"):
            api.decode(raw.replace('"T"', json.dumps(tag)).encode())
    for tag in (None, "new_kind"):
        item = api.decode(raw.replace('"T"', json.dumps(tag)).encode())
        assert isinstance(nested(item), UnknownObject) and nested(item).type == str(tag)


def test_an_error_nested_too_deep_for_to_dict_is_still_a_stream_api_error() -> None:
    """`ResponsesApi.error` built the error's body with `to_dict`, whose recursion gave out (RecursionError)
    on JSON that msgspec had decoded: the error keeps its body (`to_dict` no longer recurses), and its `raw`
    as it came."""
    deep = "[" * 600 + "]" * 600
    event = b'data: {"type":"error","message":"boom","error":' + deep.encode() + b"}\n\n"
    base = b"".join(body_of(BASES["responses"][0][:2], True))
    stream = ResponseStream(MockResponse(body=[base + event]), StreamMetrics(0.0, 0.0))
    with pytest.raises(StreamAPIError) as caught:
        run(stream.get_final())
    assert caught.value.message == "boom" and deep in caught.value.raw
    assert isinstance(caught.value.body, dict) and caught.value.body["message"] == "boom"
    assert isinstance(caught.value.partial, r.Response)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("chat", '{"error": {"message": "boom", "code": %s}}'),
        ("responses", '{"type": "error", "message": "boom", "error": {"code": %s}}'),
    ],
)
def test_an_error_field_nested_as_deep_as_a_decoder_goes_is_still_a_stream_api_error(
    name: str, data: str
) -> None:
    """`api_error_fields` wrote each field with `str`, whose recursion gave out (RecursionError) on JSON
    nested just within what msgspec decodes (how deep that is depends on the stack: every depth about the
    recursion limit is tried). Such a field is now None; past the limit, msgspec decodes no event."""
    limit = sys.getrecursionlimit()
    base = BASES[name][0]
    raised = set()
    for depth in range(limit - 100, limit + 10):
        event = b"data: " + (data % ("[" * depth + "]" * depth)).encode() + b"\n\n"
        stream = STREAMS[name](
            MockResponse(body=[b"".join(body_of(base[:1], True)) + event]), StreamMetrics(0.0, 0.0)
        )
        with pytest.raises((StreamAPIError, ChunkDecodeError)) as caught:
            run(stream.get_final())
        assert isinstance(caught.value.partial, stream.api.final_type)
        if isinstance(caught.value, StreamAPIError):  # (chat's error as its raw text, where it is too deep)
            assert "boom" in caught.value.message
        raised.add(type(caught.value))
    assert raised == {StreamAPIError, ChunkDecodeError}


@pytest.mark.parametrize(
    ("name", "event"),
    [
        ("responses", '{"type":"response.completed","response":{"status":"completed","instructions":%s}}'),
        (
            "messages",
            '{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t",'
            '"name":"f","input":{"a":%s}}}',
        ),
    ],
)
def test_a_final_nested_as_deep_as_a_decoder_goes_is_still_a_final(name: str, event: str) -> None:
    """A snapshot is a deep copy (`detached`), and `to_dict` drops the None values at every depth: both met
    Python's recursion limit (RecursionError, from `get_final` and from `to_dict`) on JSON that msgspec had
    decoded. Every depth about the limit is tried; past it, msgspec decodes no event."""
    limit = sys.getrecursionlimit()
    for depth in (600, *range(limit - 100, limit + 10)):
        data = (event % ("[" * depth + "]" * depth)).encode()
        stream = STREAMS[name](MockResponse(body=[b"data: " + data + b"\n\n"]), StreamMetrics(0.0, 0.0))
        try:
            final = run(stream.get_final())
        except StreamkitError as error:
            assert isinstance(error.partial, stream.api.final_type)
            continue
        assert isinstance(final, stream.api.final_type)
        assert isinstance(final.to_dict(), dict)
