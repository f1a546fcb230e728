"""The SSE decoder against what a hostile server may put in a field: any bytes in any value give events or
`SSEProtocolError`, never another exception, and what the decoder remembers stays bounded."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit import SSEDecoder, SSEProtocolError
from streamkit.sse import MAX_RETRY, ServerSentEvent
from tests.test_sse import assert_all_chunkings, msgs

MiB = 1 << 20
Event = ServerSentEvent | tuple[str, bytes]  # as `feed` gives them, or as `feed_raw` does


def _feed(decoder: SSEDecoder, data: bytes) -> list[Event]:
    return [*decoder.feed(data)]


def _feed_raw(decoder: SSEDecoder, data: bytes) -> list[Event]:
    return [*decoder.feed_raw(data)]


def _feed_array(typed: bool) -> Callable[[SSEDecoder, bytes], list[Event]]:
    def feed(decoder: SSEDecoder, data: bytes) -> list[Event]:
        got = decoder.feed_array(data, typed)
        return [*(decoder.unbatch() if isinstance(got, bytes) else got)]

    return feed


FEEDS = {
    "feed": _feed,
    "feed_raw": _feed_raw,
    "feed_array": _feed_array(True),
    "feed_array-untyped": _feed_array(False),
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"9" * 5000, MAX_RETRY),  # past Python's 4,300-digit limit of int()
        (b"9" * 20, MAX_RETRY),
        (str(MAX_RETRY + 1).encode(), MAX_RETRY),
        (str(MAX_RETRY).encode(), MAX_RETRY),
        (str(MAX_RETRY - 1).encode(), MAX_RETRY - 1),
        (b"0" * 5000 + b"1500", 1500),  # leading zeros are no size: still 1500
        (b"0" * 5000, 0),
        (b"1" + b"0" * 18, 10**18),
    ],
    ids=["5000-nines", "20-nines", "max+1", "max", "max-1", "zeros-then-1500", "zeros", "1e18"],
)
@pytest.mark.parametrize("feed", FEEDS.values(), ids=FEEDS.keys())
def test_a_retry_of_any_length_is_taken_up_to_the_bound(
    value: bytes, expected: int, feed: Callable[[SSEDecoder, bytes], list[Event]]
) -> None:
    stream = b"retry: 2000\nretry: " + value + b"\ndata: x\n\n"
    decoder = SSEDecoder()
    assert feed(decoder, stream) and decoder.retry == expected
    if feed is _feed:  # every chunking: `feed` is the one that `assert_all_chunkings` drives
        assert assert_all_chunkings(stream, msgs("x")).retry == expected


# Any bytes at all in a value, for every field name (and some that are none), over any line end, with a BOM
# or not, cut anywhere; among them the values a naive decoder chokes on: runs of digits past int()'s limit,
# long ids, NUL, lone surrogates (`\xed\xa0\x80`, invalid UTF-8), overlong forms, BOMs and line separators.
NAMES = [b"data", b"event", b"id", b"retry", b"", b"Data", b"x", b"\xff", b"\xed\xa0\x80"]
SEPARATORS = [b"", b":", b": ", b":  "]
awkward = st.sampled_from(
    [
        b"\x00",
        b"\xed\xa0\x80",
        b"\xed\xbf\xbf",
        b"\xc0\x80",
        b"\xf4\x90\x80\x80",
        b"\xef\xbb\xbf",
        b"\xe2\x80\xa8",
    ]
)
values = st.one_of(
    st.binary(max_size=40),
    st.lists(st.one_of(awkward, st.binary(max_size=3)), max_size=8).map(b"".join),
    st.integers(4250, 4400).map(lambda n: b"7" * n),
    st.integers(1, 5000).map(lambda n: b"0" * n + b"12"),
    st.integers(1000, 9000).map(lambda n: b"i" * n),
)
field_lines = st.builds(
    lambda name, separator, value: name + separator + value,
    st.sampled_from(NAMES),
    st.sampled_from(SEPARATORS),
    values,
)
hostile = st.builds(
    lambda bom, lines: bom + b"".join(line + end for line, end in lines),
    st.sampled_from([b"", b"\xef\xbb\xbf"]),
    st.lists(
        st.tuples(st.one_of(st.just(b""), field_lines), st.sampled_from([b"\n", b"\r", b"\r\n"])), max_size=8
    ),
)


@settings(max_examples=600, deadline=None)
@given(
    hostile,
    st.lists(st.integers(0, 20_000), max_size=6),
    st.sampled_from(list(FEEDS)),
    st.sampled_from([8, 64, 4096, 1 << 24]),
)
def test_any_bytes_in_a_field_give_events_or_a_protocol_error(
    stream: bytes, cuts: list[int], feed_name: str, bound: int
) -> None:
    feed = FEEDS[feed_name]
    decoder = SSEDecoder(max_event_size=bound)
    bounds = sorted({0, len(stream), *(min(cut, len(stream)) for cut in cuts)})
    try:
        for a, b in itertools.pairwise(bounds):
            for event in feed(decoder, stream[a:b]):
                if isinstance(event, ServerSentEvent):
                    # Text that is valid Unicode: no lone surrogate came through.
                    (event.data + event.event + event.id).encode()
                else:
                    name, data = event
                    assert isinstance(data, bytes)
                    name.encode()
        decoder.close()
    except SSEProtocolError:
        return
    assert decoder.retry is None or 0 <= decoder.retry <= MAX_RETRY
    decoder.last_event_id.encode()
    assert "\0" not in decoder.last_event_id


def _kept_after(events: Callable[[int], bytes], count: int) -> int:
    """The bytes of Python memory a decoder still holds after `feed_raw` took `count` events, in reads of
    256 each, the events themselves dropped."""
    decoder = SSEDecoder()
    decoder.feed_raw(b"data: start\n\n")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, count, 256):
            decoder.feed_raw(b"".join(events(i) for i in range(start, min(start + 256, count))))
        decoder.feed_raw(b"data: 1\n\ndata: 2\n\n")  # in place of the last read, which the decoder keeps
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_event_types_kept_are_bounded_in_number() -> None:
    # Unbounded, 200,000 distinct names keep about 35 MiB.
    kept = _kept_after(lambda i: b"event: type-%d\ndata: {}\n\n" % i, 200_000)
    assert kept < 4 * MiB


def test_event_types_kept_are_bounded_in_length() -> None:
    # Unbounded, 1,000 distinct names of 16 KiB keep 32 MiB (the line and its text), fewer than the bound
    # on their number.
    kept = _kept_after(lambda i: b"event: %d" % i + b"t" * 16_384 + b"\ndata: {}\n\n", 1000)
    assert kept < 4 * MiB


def test_a_few_types_repeated_are_each_decoded_once() -> None:
    decoder = SSEDecoder()
    decoder.feed_raw(b"data: start\n\n")
    read = b"".join(b"event: %s\ndata: {}\n\n" % name for name in (b"a", b"b", b"c") * 100)
    for _ in range(10):
        assert [name for name, _ in decoder.feed_raw(read)] == ["a", "b", "c"] * 100
    assert set(decoder._types) == {b"event: a", b"event: b", b"event: c"}
