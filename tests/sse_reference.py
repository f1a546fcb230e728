"""A deliberately naive event-stream parser, written line by line from WHATWG HTML §9.2.6.

It decodes the whole input at once and works on str, so it shares no trick with `streamkit.sse`: the property
tests check that the fast decoder agrees with it on any input, in any chunking.
"""

from __future__ import annotations

import re

Event = tuple[str, str, str]  # (type, data, id)


def parse(stream: bytes) -> tuple[list[Event], str, int | None]:
    """The events of a complete stream, the last event ID and the reconnection time it ends with."""
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = re.split(r"\r\n|\r|\n", text)[:-1]  # the last piece has no line end: discarded
    events: list[Event] = []
    data = event_type = id_buffer = last_id = ""
    retry: int | None = None
    for line in lines:
        if line == "":
            last_id = id_buffer
            if data == "":
                event_type = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            events.append((event_type or "message", data, last_id))
            data = event_type = ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            field, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "event":
            event_type = value
        elif field == "data":
            data += value + "\n"
        elif field == "id":
            if "\0" not in value:
                id_buffer = value
        elif field == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
    return events, last_id, retry


def overruns(stream: bytes, bound: int) -> bool:
    """Whether a decoder with `max_event_size=bound` must fail on `stream`: a line (in bytes, the unfinished
    last one included) or an event's data (in characters, each line plus its LF) over the bound."""
    if b"\xef\xbb\xbf".startswith(stream):
        return False  # all of it may yet be the BOM: held, never a line
    if stream.startswith(b"\xef\xbb\xbf"):
        stream = stream[3:]
    lines = re.split(rb"\r\n|\r|\n", stream)
    if any(len(line) > bound for line in lines):
        return True
    size = 0
    for line in lines[:-1]:
        if line == b"":
            size = 0
            continue
        field, _, value = line.decode("utf-8", "replace").partition(":")
        if field == "data":
            size += len(value[1:] if value.startswith(" ") else value) + 1
            if size > bound:
                return True
    return False
