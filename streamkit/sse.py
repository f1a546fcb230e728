"""A sans-I/O decoder for `text/event-stream`, exactly as WHATWG HTML §9.2.6 specifies it.

Feed it bytes as they arrive; it returns the events each read completes:

    decoder = SSEDecoder()
    for chunk in body:
        for event in decoder.feed(chunk):
            ...
    decoder.close()            # end of input: an unterminated event is discarded

The rules, quoted from the spec where the code applies them, are listed in shared/SSE.md. Any chunking of the
same bytes gives the same events, and an event is returned by the `feed` call that delivers its blank line.

The decoder finds line ends in the bytes and decodes the complete lines of each read at once. That is exact
because the bytes it splits on, CR and LF, are ASCII and so never occur inside a multi-byte UTF-8 sequence:
decoding a piece that ends at one of them gives the same characters (and the same U+FFFD replacements) as
decoding the whole stream at once.

A client's hot path takes `feed_raw` instead: it splits the bytes into events at their blank lines and hands
over each plain event's type and data as bytes, never decoding what a JSON parser will read anyway. Anything
but plain events (an `id:` or `retry:` line, a comment, CR line ends, a field without its space) goes through
the rules above, so the events are the same.
"""

from __future__ import annotations

import msgspec

from streamkit.errors import SSEProtocolError

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "MAX_RETRY", "SSEDecoder", "ServerSentEvent"]

# An LLM chunk is well under 1 KiB and even a large tool-call or logprobs chunk stays under 100 KiB, so 16 MiB
# only stops a broken or hostile server from making the client buffer without end.
DEFAULT_MAX_EVENT_SIZE = 16 * 1024 * 1024

# The largest reconnection time `retry` takes, in ms: a signed 64-bit integer's, about 292 million years. A
# longer run of digits is still a number the spec says to take, and the server's meaning (wait at least that
# long) holds at the bound, where ignoring the line would keep an earlier, shorter time. Converting every
# digit would cost time quadratic in their number, which is why Python refuses strings of over 4,300 digits.
MAX_RETRY = 2**63 - 1
# `feed_raw` remembers the type each `event: ` line names, as a stream repeats a few names again and again. A
# server that sends a new one with every event would grow that memory without end, so the names kept are
# bounded in number (forgotten all at once when full, then learnt again) and in length.
TYPES_KEPT = 1024
TYPE_LINE_KEPT = 256

_BOM = b"\xef\xbb\xbf"


class ServerSentEvent(msgspec.Struct, frozen=True, gc=False):
    """One dispatched event: its type, its data, and the last event ID at the time it was dispatched."""

    data: str
    event: str = "message"
    id: str = ""


def _sets_state(held: bytes) -> bool:
    """Whether bytes held of an event hold a whole `id` or `retry` line: those count at once, not when the
    event is complete, so the line rules take them."""
    lines = held[: held.rfind(b"\n") + 1]
    return bool(lines) and (
        lines[:2] == b"id" or lines[:5] == b"retry" or b"\nid" in lines or b"\nretry" in lines
    )


class SSEDecoder:
    """Turns the bytes of an event stream into `ServerSentEvent`s (no I/O of its own).

    `last_event_id` and `retry` (the reconnection time in ms last set by a valid `retry:` line, else None;
    at most `MAX_RETRY`) follow the spec. A line, or an event's data, longer than `max_event_size` bytes
    raises `SSEProtocolError`, so memory stays bounded whatever the server sends. No other exception comes out
    of a field's value, whatever its bytes.
    """

    __slots__ = (
        "_after_cr",
        "_batch",
        "_between_events",
        "_clean",
        "_data",
        "_data_size",
        "_event",
        "_head",
        "_id",
        "_line",
        "_line_size",
        "_started",
        "_tail",
        "_types",
        "batched",
        "last_event_id",
        "max_event_size",
        "retry",
    )

    def __init__(self, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        if max_event_size < 1:
            raise ValueError("max_event_size must be positive")
        self.max_event_size = max_event_size
        self.last_event_id = ""
        self.retry: int | None = None
        self._started = False  # True once the leading BOM, if any, is stripped
        self._head = b""  # the first bytes, held while they may still be a split BOM
        self._after_cr = False  # the last chunk ended with CR: a leading LF in the next one is its pair
        self._line: list[bytes] = []  # pieces of the line that has no end yet
        self._line_size = 0
        self._data: list[str] = []  # the data buffer, one item per `data` line
        self._data_size = 0
        self._event = ""  # the event type buffer
        self._id = ""  # the last event ID buffer
        self._between_events = True  # the last line was blank: no buffer pending, last_event_id == _id
        self._clean = False  # between events, and no bytes held back (line, CR or BOM): the fastest path
        self._tail = b""  # what `feed_raw` holds of an event whose blank line has not come yet
        self._types: dict[bytes, str] = {}  # event types `feed_raw` has decoded, by their bytes
        # The plain events of the last read: their bytes, their lines where they have types, their data.
        self._batch: tuple[bytes, list[bytes] | None, bytes] = (b"", None, b"")
        self.batched = 0  # how many events the last array of `feed_array` holds

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Take the next bytes of the stream; return the events they complete, in order.

        Raises `SSEProtocolError` when a line or an event's data grows past `max_event_size`.
        """
        fresh = len(data)
        if self._tail:
            data, self._tail = self._tail + data, b""
        elif (
            self._clean
            and data[:6] == b"data: "
            and data.find(b"\n") == len(data) - 2
            and data[-1:] == b"\n"
            and data.find(b"\r") < 0
            and len(data) <= self.max_event_size
        ):
            # The fastest path: a read that holds exactly one event of one `data: ` line, as a live LLM
            # stream delivers them. At an event boundary no buffer is pending and the last event ID already
            # equals the ID buffer, so dispatching needs no other state.
            return [ServerSentEvent(data[6:-2].decode("utf-8", "replace"), "message", self._id)]
        events = self._feed(data)
        self._clean = self._between_events and self._started and not self._after_cr
        if self._clean and self._line:
            if self._line_size <= fresh:
                # At an event boundary, the start of the next event is held as bytes, as `feed_raw` holds
                # it: a stream cut anywhere (64 KiB reads) goes back to the fast path at once.
                self._tail = b"".join(self._line)
                self._line = []
                self._line_size = 0
            else:  # a line longer than the read that brought it stays in pieces, not joined at every read
                self._clean = False
        return events

    def feed_array(self, data: bytes, typed: bool = True) -> bytes | list[tuple[str, bytes]]:
        """As `feed_raw`, except where the read completes several events and every one is plain (one `data: `
        line, after one `event: ` line or not, or never one where `typed` is false): then their data, joined
        as `[data1,data2,...]`, which is a JSON array where each is JSON, for a parser to decode in one call.
        The events themselves are then `unbatch()`'s, and their number `batched`, until the next read: a
        reader checks that the array has that many items, since one event's data may hold a comma."""
        events = self._take(data)
        if events is not None:
            return events
        _, lines, joined = self._batch
        if lines is not None and not typed:  # a reader to whom the event types matter
            return self.unbatch()
        return b"".join((b"[", joined, b"]"))

    def unbatch(self) -> list[tuple[str, bytes]]:
        """The events of the last `feed_array` that gave an array, as `feed_raw` would have given them."""
        complete, lines, _ = self._batch
        if lines is None:
            return [("message", block[6:]) for block in complete.split(b"\n\n")]
        types = self._types
        names = [types.get(line) or self._type(line) for line in lines[0::3]]
        return [(name, line[6:]) for name, line in zip(names, lines[1::3], strict=True)]

    def feed_raw(self, data: bytes) -> list[tuple[str, bytes]]:
        """Take the next bytes of the stream; return the events they complete as (type, data) pairs, the
        data as UTF-8 bytes not yet decoded (its text is `.decode("utf-8", "replace")`).

        The same events as `feed`, for any chunking, without their IDs; `last_event_id` and `retry` are kept
        as `feed` keeps them, and the two may be mixed on one decoder. A read cut anywhere costs no decoding:
        what follows the last blank line is held as bytes until its own blank line arrives. Raises
        `SSEProtocolError` as `feed` does.
        """
        events = self._take(data)
        return self.unbatch() if events is None else events

    def _take(self, data: bytes) -> list[tuple[str, bytes]] | None:
        """The events `data` completes, or None where they are several plain events, kept in `_batch`."""
        if not self._clean or b"\r" in data:
            if self._started or self._head or len(data) < len(_BOM) or b"\r" in data:
                return [(e.event, e.data.encode()) for e in self.feed(data)]
            # The stream's first read, whole enough to tell its BOM: once that is stripped, the decoder is
            # between events with nothing held, and a first read of many events takes the fast path.
            self._started = self._clean = True
            if data[:3] == _BOM:
                data = data[3:]
        kept = self._tail
        if kept:
            data = kept + data
        elif data[:6] == b"data: " and data.find(b"\n") == len(data) - 2 and data[-1:] == b"\n":
            # The fastest path: one event of one `data: ` line, as a live LLM stream's reads bring them.
            if len(data) <= self.max_event_size:
                return [("message", data[6:-2])]
        end = data.rfind(b"\n\n")
        limit = self.max_event_size
        if end < 0:
            self._tail = data
            # An event over more than two reads, one too long, an id: the line rules, which hold an event
            # line by line, where holding it as bytes would copy it again at every read.
            if kept or len(data) > limit or _sets_state(data):
                return [(e.event, e.data.encode()) for e in self.feed(b"")]
            return []
        self._tail = data[end + 2 :]
        if self._tail and _sets_state(self._tail):
            tail, self._tail = self._tail, b""
            taken = self._take(data[: end + 2])
            held = [(e.event, e.data.encode()) for e in self.feed(tail)]  # none: no blank line in it
            return (self.unbatch() if taken is None else taken) + held
        complete = data[:end]
        if (
            len(self._tail) <= limit
            and (len(complete) <= limit or max(map(len, complete.split(b"\n\n"))) <= limit)
            and self._plain(complete)
        ):
            return None
        blocks = complete.split(b"\n\n")
        events: list[tuple[str, bytes]] = []
        append = events.append
        types = self._types
        for block in blocks:
            if len(block) <= limit:
                if block[:6] == b"data: ":
                    if b"\n" not in block:
                        append(("message", block[6:]))
                        continue
                elif block[:7] == b"event: ":
                    line = block.find(b"\n")
                    if line > 0 and block.startswith(b"data: ", line + 1) and block.find(b"\n", line + 1) < 0:
                        name = block[:line]
                        append((types.get(name) or self._type(name), block[line + 7 :]))
                        continue
            elif block:
                events += [(e.event, e.data.encode()) for e in self._feed(block + b"\n\n")]
                continue
            if block:
                # Anything else at an event boundary, a comment or an `id:` line say: the line rules.
                lines = block.decode("utf-8", "replace").split("\n")
                lines.append("")
                events += [(e.event, e.data.encode()) for e in self._process(lines)]
        if len(self._tail) > limit:
            events += [(e.event, e.data.encode()) for e in self.feed(b"")]
        return events

    def _plain(self, complete: bytes) -> bool:
        """Whether `complete` is two plain events or more: one `data: ` line each (chat), or an `event: ` line
        then one `data: ` line each (typed events); if so, keep them in `_batch`. Told from a few passes in C
        over the whole read, and no test per event."""
        if complete[:6] == b"data: ":
            # Where every LF was in a boundary followed by `data: `, none is left once they are replaced.
            joined = complete[6:].replace(b"\n\ndata: ", b",")
            if b"\n" in joined or len(joined) == len(complete) - 6:
                return False
            self._batch = (complete, None, joined)
            self.batched = (len(complete) - 6 - len(joined)) // 7 + 1  # each boundary replaced: 7 bytes off
            return True
        if complete[:7] == b"event: ":
            # As lines: an event line, a data line and a blank one, again and again. The `data: ` lines are
            # told by what joining and replacing them leaves. Then each `\n\nevent: ` is a blank line (data
            # lines are not empty, and none starts with `event: `) before an event line: n - 1 of them are
            # the n - 1 blank lines that 3n - 1 lines have in their places, and the event lines after them.
            lines = complete.split(b"\n")
            n = len(lines) // 3 + 1
            if n < 2 or len(lines) != 3 * n - 1:
                return False
            data = b"\n".join(lines[1::3])
            joined = data[6:].replace(b"\ndata: ", b",")
            if data[:6] != b"data: " or len(joined) != len(data) - 6 * n:
                return False
            if complete.count(b"\n\nevent: ") != n - 1:
                return False
            self._batch = (complete, lines, joined)
            self.batched = n
            return True
        return False

    def _type(self, line: bytes) -> str:
        """The type an `event: ` line sets, remembered by its bytes (within `TYPES_KEPT` and
        `TYPE_LINE_KEPT`)."""
        kind = line[7:].decode("utf-8", "replace") or "message"
        if len(line) <= TYPE_LINE_KEPT:
            types = self._types
            if len(types) >= TYPES_KEPT:
                types.clear()
            types[line] = kind
        return kind

    def _feed(self, data: bytes) -> list[ServerSentEvent]:
        if not data:
            return []
        if not self._started:
            # "The UTF-8 decode algorithm strips one leading UTF-8 Byte Order Mark (BOM), if any."
            head = self._head + data
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._head = head
                return []
            self._started = True
            self._head = b""
            data = head[len(_BOM) :] if head.startswith(_BOM) else head
        if self._after_cr:
            self._after_cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if data.find(b"\r") >= 0:
            # Lines end at "a U+000D CARRIAGE RETURN U+000A LINE FEED (CRLF) character pair, a single U+000A
            # LINE FEED (LF) character not preceded by a U+000D CARRIAGE RETURN (CR) character, and a single
            # U+000D CARRIAGE RETURN (CR) character not followed by a U+000A LINE FEED (LF) character".
            # A CR at the end of the read ends its line now; `_after_cr` swallows the LF that may follow.
            self._after_cr = data[-1:] == b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        limit = self.max_event_size
        end = data.rfind(b"\n") + 1  # what follows the last LF is a line with no end yet
        if self._line:
            if not end:
                self._line.append(data)
                self._line_size += len(data)
                if self._line_size > limit:
                    self._fail("a line")
                return []
            end += self._line_size
            self._line.append(data)
            data = b"".join(self._line)
            self._line = []
        elif not end:
            if len(data) > limit:
                self._fail("a line")
            self._line.append(data)
            self._line_size = len(data)
            return []
        if end < len(data):
            self._line.append(data[end:])
            self._line_size = len(data) - end
            data = data[:end]
        else:
            self._line_size = 0
        if self._line_size > limit or (len(data) > limit and max(map(len, data.split(b"\n"))) > limit):
            self._fail("a line")
        lines = data.decode("utf-8", "replace").split("\n")
        lines.pop()  # the empty string after the last LF
        if self._between_events and not any(lines[1::2]):
            # The fast path, for a read that holds whole events of one `data: ` line each: the shape of nearly
            # every LLM chunk. At an event boundary no buffer is pending and the last event ID already equals
            # the ID buffer, so the lines need no further state.
            id = self._id
            events = [ServerSentEvent(line[6:], "message", id) for line in lines[::2] if line[:6] == "data: "]
            if 2 * len(events) == len(lines):
                return events
        return self._process(lines)

    def close(self) -> list[ServerSentEvent]:
        """Mark the end of the input. Returns no events: per the spec, "if the file ends in the middle of
        an event, before the final empty line, the incomplete event is not dispatched"."""
        self._line = []
        self._line_size = 0
        self._data = []
        self._data_size = 0
        self._event = ""
        self._head = b""
        self._tail = b""
        self._between_events = True
        self._clean = self._started
        return []

    def _process(self, lines: list[str]) -> list[ServerSentEvent]:
        """Apply the line rules to complete lines (without their line ends); return the events dispatched."""
        self._between_events = not lines[-1]
        events: list[ServerSentEvent] = []
        data = self._data
        for line in lines:
            if not line:
                # "If the line is empty (a blank line): Dispatch the event."
                # "Set the last event ID string of the event source to the value of the last event ID
                # buffer. The buffer does not get reset, so the last event ID string of the event source
                # remains set to this value until the next time it is set by the server."
                self.last_event_id = self._id
                if data:
                    text = data[0] if len(data) == 1 else "\n".join(data)
                    events.append(ServerSentEvent(text, self._event or "message", self._id))
                    data.clear()
                    self._data_size = 0
                # "If the data buffer is an empty string, set the data buffer and the event type buffer to
                # the empty string and return."
                self._event = ""
                continue
            # "If the line starts with a U+003A COLON character (:) Ignore the line." A comment lands below
            # as a field with the empty name, which is ignored. "If the line contains a U+003A COLON
            # character (:) Collect the characters on the line before the first U+003A COLON character (:),
            # and let field be that string. Collect the characters on the line after the first U+003A COLON
            # character (:), and let value be that string. If value starts with a U+0020 SPACE character,
            # remove it from value." Without a colon, the whole line is the field name and value is empty.
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                # The data buffer is kept as a list of lines, joined with LF at dispatch: the same as
                # appending value and LF, then removing the last LF.
                self._data_size += len(value) + 1
                if self._data_size > self.max_event_size:
                    self._fail("an event")
                data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id":
                # "If the field value does not contain U+0000 NULL, then set the last event ID buffer to the
                # field value. Otherwise, ignore the field."
                if "\0" not in value:
                    self._id = value
            elif name == "retry":
                # "If the field value consists of only ASCII digits, then interpret the field value as an
                # integer in base ten, and set the event stream's reconnection time to that integer.
                # Otherwise, ignore the field."
                # A value past `MAX_RETRY` is clamped to it: its first 20 digits, past any leading zeros,
                # already say that, and no longer string is converted.
                if value.isascii() and value.isdigit():
                    self.retry = min(int(value.lstrip("0")[:20] or "0"), MAX_RETRY)
            # "Otherwise: The field is ignored."
        return events

    def _fail(self, what: str) -> None:
        size = self.max_event_size
        self.close()
        raise SSEProtocolError(f"{what} of the event stream exceeds max_event_size ({size} bytes)")
