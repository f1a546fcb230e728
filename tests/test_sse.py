"""The SSE decoder against every rule of shared/SSE.md, in every chunking."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit import ServerSentEvent, SSEDecoder, SSEProtocolError
from tests import sse_reference

Events = list[tuple[str, str, str]]


def chunkings(stream: bytes) -> Iterator[list[bytes]]:
    """The input whole, one byte at a time, and split in two at every position."""
    yield [stream]
    yield [stream[i : i + 1] for i in range(len(stream))]
    yield split_after_blank_lines(stream)
    for i in range(len(stream) + 1):
        yield [stream[:i], stream[i:]]


def split_after_blank_lines(stream: bytes) -> list[bytes]:
    """One event per read, as a live stream arrives: cut after every pair of line ends."""
    cuts = [m.end() for m in re.finditer(rb"(\r\n|\r|\n)(\r\n|\r|\n)", stream)]
    return [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]


def decode(chunks: list[bytes], **kwargs: int) -> tuple[Events, SSEDecoder]:
    decoder = SSEDecoder(**kwargs)
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    events += decoder.close()
    return [(e.event, e.data, e.id) for e in events], decoder


def assert_all_chunkings(stream: bytes, expected: Events) -> SSEDecoder:
    decoder = None
    for chunks in chunkings(stream):
        events, decoder = decode(chunks)
        assert events == expected, chunks
    assert decoder is not None
    return decoder


def msgs(*data: str) -> Events:
    return [("message", d, "") for d in data]


# The examples table of shared/SSE.md, and the WHATWG spec's own examples.
EXAMPLES: list[tuple[bytes, Events]] = [
    (b"data: a\r\r", msgs("a")),
    (b"data: A\r\ndata: B\r\ndata: C\r\n\n", msgs("A\nB\nC")),
    (b"\xef\xbb\xbfdata:1\n\n\xef\xbb\xbfdata:2\n\ndata:3\n\n", msgs("1", "3")),
    (b"data: a\xffb\n\n", msgs("a\ufffdb")),
    (b"data:test\n\ndata: test\n\ndata:  test\n\n", msgs("test", "test", " test")),
    (b"data:\n\ndata\ndata\n\ndata:test\n\n", msgs("", "\n", "test")),
    (b"id: 1\ndata: a\n\n: keep-alive\n\n", [("message", "a", "1")]),
    (b"event: ping\n\ndata: x\n\n", msgs("x")),
    (b"data: a\ndata:\n\n", msgs("a\n")),
    (b"id: 123\nid: bad\x00id\ndata: hello\n\n", [("message", "hello", "123")]),
    (b"data: YHOO\ndata: +2\ndata: 10\n\n", msgs("YHOO\n+2\n10")),
    (b"data: a\r\n\r\ndata: b\r\n\ndata: c\n\r\ndata: d\r\rdata: e\r\n\r\n", msgs("a", "b", "c", "d", "e")),
    (
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
        [("message", "first event", "1"), ("message", "second event", ""), ("message", " third event", "")],
    ),
    (
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\n",
        [("add", "73857293", ""), ("remove", "2153", "")],
    ),
]


@pytest.mark.parametrize(("stream", "expected"), EXAMPLES)
def test_examples_in_every_chunking(stream: bytes, expected: Events) -> None:
    assert_all_chunkings(stream, expected)
    assert sse_reference.parse(stream)[0] == expected


def test_sse_md_chunked_crlf_example() -> None:
    chunks = [b"data: A\r\n", b"data: B\r", b"\n", b"data: C\r\n", b"\n"]
    assert decode(chunks)[0] == msgs("A\nB\nC")


def test_retry_and_unterminated_event_at_end() -> None:
    decoder = assert_all_chunkings(b"retry:1000\ndata:test1\n\nid:test\ndata:test2", msgs("test1"))
    assert decoder.retry == 1000
    assert decoder.last_event_id == ""


@pytest.mark.parametrize(
    "value", [b"1_000", b"-1", b"+5", b" 7", b"\xd9\xa1", b"", b"1000x", b"1.5", b"\xef\xbc\x91"]
)
def test_retry_ignores_anything_but_ascii_digits(value: bytes) -> None:
    decoder = assert_all_chunkings(b"retry: 02000\nretry: " + value + b"\ndata: x\n\n", msgs("x"))
    assert decoder.retry == 2000


def test_retry_is_none_until_set() -> None:
    assert decode([b"data: x\n\n"])[1].retry is None


def test_bom_is_stripped_once_even_when_split() -> None:
    stream = b"\xef\xbb\xbfdata: x\n\n"
    assert_all_chunkings(stream, msgs("x"))
    # A second BOM is part of the first line, which is then no "data" field.
    assert_all_chunkings(b"\xef\xbb\xbf" + stream, [])
    # A BOM later in the stream is data.
    assert_all_chunkings(b"data: \xef\xbb\xbfx\n\n", msgs("\ufeffx"))


def test_incomplete_bom_is_data() -> None:
    assert_all_chunkings(b"\xef\xbbdata: x\n\ndata: y\n\n", msgs("y"))
    assert decode([b"\xef", b"\xbb"])[0] == []


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1e"])
def test_only_cr_and_lf_end_lines(char: str) -> None:
    stream = f"data: a{char}b\n\n".encode()
    assert_all_chunkings(stream, msgs(f"a{char}b"))


def test_line_ends_mixed() -> None:
    assert_all_chunkings(b"data: a\r\ndata: b\rdata: c\n\r\n\rdata: d\n\n", msgs("a\nb\nc", "d"))


def test_multibyte_characters_split_across_chunks() -> None:
    text = "data: é€😀 ok\n\n"
    assert_all_chunkings(text.encode(), msgs("é€😀 ok"))


def test_invalid_utf8_everywhere_is_replaced() -> None:
    assert_all_chunkings(b"event: a\xc3\ndata: \xe2\x82\n\n", [("a\ufffd", "\ufffd", "")])
    assert_all_chunkings(b"id: \xff\ndata: x\n\n", [("message", "x", "\ufffd")])


def test_field_names_are_case_sensitive_and_unknown_ones_ignored() -> None:
    assert_all_chunkings(b"Data: x\nDATA: y\nfoo: z\ndata: w\n\n", msgs("w"))


def test_field_without_colon_has_empty_value() -> None:
    assert_all_chunkings(b"event\ndata\n\n", msgs(""))
    decoder = assert_all_chunkings(
        b"id: 5\ndata: x\n\nid\ndata: y\n\n", [("message", "x", "5"), ("message", "y", "")]
    )
    assert decoder.last_event_id == ""


def test_only_one_space_is_removed_and_only_after_the_colon() -> None:
    assert_all_chunkings(b"data:   x \n\n", msgs("  x "))
    assert_all_chunkings(b"data :x\n\n", [])
    assert_all_chunkings(b"data:\tx\n\n", msgs("\tx"))


def test_colon_in_value_is_kept() -> None:
    assert_all_chunkings(b'data: {"a": "b:c"}\n\n', msgs('{"a": "b:c"}'))


def test_event_only_and_id_only_blocks_dispatch_nothing() -> None:
    decoder = assert_all_chunkings(b"event: x\n\nid: 7\n\n", [])
    assert decoder.last_event_id == "7"


def test_event_type_buffer_resets_after_empty_block() -> None:
    assert_all_chunkings(b"event: x\n\ndata: y\n\n", msgs("y"))


def test_last_event_id_persists_and_is_set_even_without_dispatch() -> None:
    stream = b"id: a\ndata: 1\n\ndata: 2\n\nid: b\n\ndata: 3\n\n"
    decoder = assert_all_chunkings(
        stream, [("message", "1", "a"), ("message", "2", "a"), ("message", "3", "b")]
    )
    assert decoder.last_event_id == "b"


def test_id_with_nul_is_ignored_but_other_controls_kept() -> None:
    assert_all_chunkings(b"id: \x01\ndata: x\n\n", [("message", "x", "\x01")])


def test_comments_are_ignored() -> None:
    assert_all_chunkings(b": ping\n:\n:: x\ndata: a\n: in the middle\ndata: b\n\n", msgs("a\nb"))


def test_blank_lines_alone_dispatch_nothing() -> None:
    assert_all_chunkings(b"\n\n\r\n\r\r", [])


def test_llm_stream_with_done() -> None:
    stream = b'data: {"a":1}\n\ndata: {"a":2}\n\ndata: [DONE]\n\n'
    assert_all_chunkings(stream, msgs('{"a":1}', '{"a":2}', "[DONE]"))


def test_event_dispatched_by_the_feed_that_completes_it() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent("a")]
    assert decoder.feed(b"data: b\r") == []
    # A CR at the end of a read ends its line at once: the blank line needs no further read.
    assert decoder.feed(b"\r") == [ServerSentEvent("b")]
    assert decoder.feed(b"\ndata: c\r\n\r") == [ServerSentEvent("c")]


def test_empty_read_between_cr_and_lf_keeps_the_pair() -> None:
    assert decode([b"data: a\r", b"", b"\n", b"\n"])[0] == msgs("a")


def test_close_discards_the_unterminated_event_and_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\ndata: b") == []
    assert decoder.close() == []


def test_event_defaults() -> None:
    event = ServerSentEvent(data="x")
    assert (event.event, event.data, event.id) == ("message", "x", "")


# Size bounds


def test_line_over_the_bound_raises_in_every_chunking() -> None:
    stream = b"data: " + b"x" * 100 + b"\n\n"
    for chunks in chunkings(stream):
        with pytest.raises(SSEProtocolError):
            decode(chunks, max_event_size=50)


def test_unterminated_line_over_the_bound_raises_before_its_end() -> None:
    decoder = SSEDecoder(max_event_size=64)
    with pytest.raises(SSEProtocolError):
        for _ in range(100):
            decoder.feed(b": comment that never ends ")


def test_event_over_the_bound_raises_even_when_each_line_fits() -> None:
    stream = b"data: 0123456789\n" * 10 + b"\n"
    for chunks in chunkings(stream):
        with pytest.raises(SSEProtocolError):
            decode(chunks, max_event_size=64)
    assert decode([stream], max_event_size=200)[0] == msgs("\n".join(["0123456789"] * 10))


def test_bound_counts_each_event_separately() -> None:
    stream = b"data: 0123456789\n\n" * 50
    assert len(decode([stream], max_event_size=32)[0]) == 50


def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SSEDecoder(max_event_size=0)


def test_default_bound_is_16_mib() -> None:
    assert SSEDecoder().max_event_size == 16 * 1024 * 1024


def test_large_event_fed_in_pieces() -> None:
    payload = b"y" * (1 << 20)
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for i in range(0, len(payload), 1000):
        events += decoder.feed(b"data: " + payload[i : i + 1000] + b"\n")
    events += decoder.feed(b"\n")
    assert len(events) == 1
    assert len(events[0].data) == len(payload) + len(payload) // 1000


# Properties

# Streams built from lines of real and near-miss fields, with values full of the bytes the rules are about
# (a field name alone, space and colon handling, BOMs, invalid and split UTF-8, NUL, digits and Unicode line
# separators), joined by any of the three line ends; or plain random bytes.
FIELDS = [
    b"data",
    b"data:",
    b"data: ",
    b"event:",
    b"event: ",
    b"id:",
    b"id: ",
    b"retry:",
    b"retry: ",
    b":",
    b"Data:",
    b"foo:",
]
VALUES = [
    b"x",
    b" ",
    b":",
    b"1",
    b"02",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
    b"\xa9",
    b"\x00",
    b"[DONE]",
    b'{"a": 1}',
]
VALUES += [s.encode() for s in ("é€", "\u2028", "\x85", "\x0b", "\x0c", "\t", "-")]
lines = st.one_of(
    st.just(b""),
    st.builds(
        lambda f, v: f + b"".join(v), st.sampled_from(FIELDS), st.lists(st.sampled_from(VALUES), max_size=4)
    ),
)
structured = st.builds(
    lambda bom, body, tail: bom + b"".join(line + end for line, end in body) + tail,
    st.sampled_from([b"", b"\xef\xbb\xbf", b"\xef\xbb"]),
    st.lists(st.tuples(lines, st.sampled_from([b"\n", b"\r", b"\r\n"])), max_size=16),
    st.sampled_from([b"", b"data: tail", b"\r"]),
)
streams = st.one_of(structured, st.binary(max_size=200))


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    stream = draw(streams)
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=12))
    after_cr = [i + 1 for i, byte in enumerate(stream) if byte == 13]
    if after_cr:  # a CRLF split between two reads is the classic bug: cut there often
        cuts += draw(st.lists(st.sampled_from(after_cr), max_size=4))
    if draw(st.booleans()):
        cuts += [m.end() for m in re.finditer(rb"(\r\n|\r|\n)(\r\n|\r|\n)", stream)]
    cuts.sort()
    bounds = [0, *cuts, len(stream)]
    return stream, [stream[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=1500, deadline=None)
@given(chunked())
def test_decoder_equals_reference_model_in_any_chunking(case: tuple[bytes, list[bytes]]) -> None:
    stream, chunks = case
    expected_events, expected_id, expected_retry = sse_reference.parse(stream)
    decoder = SSEDecoder()
    seen = b""
    events: Events = []
    for chunk in chunks:
        seen += chunk
        events += [(e.event, e.data, e.id) for e in decoder.feed(chunk)]
        # No event waits for a later read: after each feed, exactly the events of the bytes so far are out.
        assert events == sse_reference.parse(seen)[0]
    assert decoder.close() == []
    assert events == expected_events
    assert decoder.last_event_id == expected_id
    assert decoder.retry == expected_retry


@settings(max_examples=1000, deadline=None)
@given(chunked(), st.integers(1, 64))
def test_protocol_error_exactly_when_a_line_or_an_event_is_over_the_bound(
    case: tuple[bytes, list[bytes]], bound: int
) -> None:
    stream, chunks = case
    decoder = SSEDecoder(max_event_size=bound)
    try:
        for chunk in chunks:
            decoder.feed(chunk)
        decoder.close()
    except SSEProtocolError:
        assert sse_reference.overruns(stream, bound)
    else:
        assert not sse_reference.overruns(stream, bound)


@settings(max_examples=1000, deadline=None)
@given(chunked(), st.lists(st.booleans(), min_size=1), st.integers(1, 80))
def test_feed_raw_tells_what_feed_would(case: tuple[bytes, list[bytes]], raw: list[bool], bound: int) -> None:
    # A client that takes `feed_raw` (here mixed with `feed`, read by read) sees the same types and data,
    # raises the same errors at the same reads, and keeps the decoder in the same state as `feed` alone.
    _, pieces = case
    plain, mixed = SSEDecoder(max_event_size=bound), SSEDecoder(max_event_size=bound)
    for i, piece in enumerate(pieces):
        try:
            expected: list[tuple[str, str]] | type[SSEProtocolError] = [
                (e.event, e.data) for e in plain.feed(piece)
            ]
        except SSEProtocolError:
            expected = SSEProtocolError
        try:
            if raw[i % len(raw)]:
                got: list[tuple[str, str]] | type[SSEProtocolError] = [
                    (t, d.decode("utf-8", "replace")) for t, d in mixed.feed_raw(piece)
                ]
            else:
                got = [(e.event, e.data) for e in mixed.feed(piece)]
        except SSEProtocolError:
            got = SSEProtocolError
        assert got == expected
        if expected is SSEProtocolError:
            return  # a decoder is not used after its error
        assert (mixed.last_event_id, mixed.retry) == (plain.last_event_id, plain.retry)
    assert mixed.close() == plain.close() == []


def test_feed_raw_takes_plain_events_as_bytes() -> None:
    decoder = SSEDecoder()
    assert decoder.feed_raw(b"data: a\n\n") == [("message", b"a")]  # the first read takes the BOM rules
    assert decoder.feed_raw(b"data: b\n\nevent: t\ndata: \xc3\xa9\xff\n\nda") == [
        ("message", b"b"),
        ("t", b"\xc3\xa9\xff"),
    ]
    assert decoder.feed_raw(b"ta: c\n") == []  # held as bytes
    assert decoder.feed_raw(b"\nid: 7\ndata: d\n\n: hi\n\nevent:\ndata:e\n\n") == [
        ("message", b"c"),
        ("message", b"d"),
        ("message", b"e"),
    ]
    assert decoder.last_event_id == "7"
    assert decoder.feed_raw(b"data: f\r\n\r\n") == [("message", b"f")]


def test_the_first_read_of_plain_events_is_one_array_with_or_without_a_bom() -> None:
    # A stream's first read often holds many events (a client that reads late); it takes the BOM rule, then
    # the fast path, not the line rules for all of it.
    for bom in (b"", b"\xef\xbb\xbf"):
        decoder = SSEDecoder()
        assert decoder.feed_array(bom + b"data: 1\n\ndata: 2\n\nda") == b"[1,2]"
        assert decoder.feed_array(b"ta: 3\n\n") == [("message", b"3")]
    decoder = SSEDecoder()
    assert decoder.feed_array(b"\xef\xbb") == []  # perhaps a BOM: held
    assert decoder.feed_array(b"\xbfdata: 1\n\ndata: 2\n\n") == [("message", b"1"), ("message", b"2")]
    assert decoder.feed_array(b"\xef\xbb\xbfdata: 3\n\n") == []  # a second BOM: the field is not "data"
    assert SSEDecoder().feed_array(b"data: 1\r\n\r\ndata: 2\n\n") == [("message", b"1"), ("message", b"2")]


def test_an_event_held_over_several_reads_is_not_copied_at_each_read() -> None:
    # Held as bytes, an event that comes in many reads would be joined again at every one: quadratic.
    decoder = SSEDecoder()
    assert decoder.feed_raw(b"data: a\n\ndata: b\n") == [("message", b"a")]
    assert decoder._tail == b"data: b\n"  # held as bytes while it may end in the next read
    for _ in range(1000):
        assert decoder.feed_raw(b"data: b\n") == []
        assert decoder._tail == b""  # then the line rules hold it, line by line
    assert decoder.feed_raw(b"\ndata: c\n\n") == [("message", b"\n".join([b"b"] * 1001)), ("message", b"c")]
    # One long line in many reads: the line rules hold it in pieces; as bytes again only once it is short.
    assert decoder.feed_raw(b"data: ") == []
    for _ in range(1000):
        assert decoder.feed_raw(b"x" * 10) == []
        assert decoder._tail == b"" or len(decoder._tail) <= 16
    assert decoder.feed_raw(b"\n\ndata: d") == [("message", b"x" * 10_000)]
    assert decoder._tail == b"data: d"  # the start of the next event: back to the fast path
    assert decoder.feed_raw(b"\n\n") == [("message", b"d")]


@pytest.mark.parametrize("count", [2, 3, 7, 20])
@pytest.mark.parametrize("typed", [False, True])
def test_batched_is_the_number_of_events_in_the_array(count: int, typed: bool) -> None:
    event = (b"event: t\n" if typed else b"") + b"data: {}\n\n"
    decoder = SSEDecoder()
    assert decoder.feed_array(event * count) == b"[" + b",".join([b"{}"] * count) + b"]"
    assert decoder.batched == count


plain_data = st.binary(max_size=12).filter(lambda d: b"\n" not in d and b"\r" not in d)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([None, b"t", b"message", b"a b"]), plain_data), max_size=12),
    st.lists(st.integers(0, 400), max_size=6),
    st.booleans(),
)
def test_feed_array_joins_the_data_of_plain_events_and_unbatch_gives_them(
    events: list[tuple[bytes | None, bytes]], cuts: list[int], typed: bool
) -> None:
    # Whatever a read completes, `feed_array` then `unbatch()` where it gave an array tell what `feed_raw`
    # tells; the array is the data joined by commas inside brackets; with `typed` false, never with types.
    stream = b"".join((b"" if t is None else b"event: " + t + b"\n") + b"data: %s\n\n" % d for t, d in events)
    bounds = sorted({0, len(stream), *(min(c, len(stream)) for c in cuts)})
    raw, arrays = SSEDecoder(), SSEDecoder()
    for a, b in itertools.pairwise(bounds):
        expected = raw.feed_raw(stream[a:b])
        got = arrays.feed_array(stream[a:b], typed)
        if isinstance(got, bytes):
            assert len(expected) > 1 and got == b"[" + b",".join(d for _, d in expected) + b"]"
            assert arrays.batched == len(expected)
            assert typed or arrays._batch[1] is None  # the batch's lines, kept only where it has types
            got = arrays.unbatch()
        assert got == expected
    assert arrays.close() == raw.close() == []
