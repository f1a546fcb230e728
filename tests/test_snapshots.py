"""Snapshots share nothing: on every API, each snapshot and each final object is a new object, and changing
anything in one (a field, a list, a dict, at any depth) never changes the accumulator, a later snapshot or the
final object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from streamkit import SSEDecoder
from streamkit.protocols import APIS, UnknownObject
from streamkit.protocols.base import Api
from streamkit.server.apis import SERVER_APIS
from streamkit.server.scripted import Script, Tool, answer
from tests.conftest import FIXTURES, OPENAI_STREAMS

WEATHER = Tool("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}})


def vandalize(value: Any) -> None:
    """Change everything mutable in `value`, at every depth: every field, list and dict."""
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            field = getattr(value, name)
            vandalize(field)
            if isinstance(field, str | int | float | bool) or field is None:
                setattr(value, name, "vandalized" if not isinstance(field, int | float) else -1)
    elif isinstance(value, UnknownObject):
        vandalize(value.data)
    elif isinstance(value, list):
        for item in value:
            vandalize(item)
        value.append("vandalized")
    elif isinstance(value, dict):
        for item in value.values():
            vandalize(item)
        value["vandalized"] = True


def items_of(api: Api[Any, Any], datas: list[tuple[str, bytes]]) -> list[Any]:
    items = [api.decode(data, event) for event, data in datas if data != b"[DONE]"]
    return [item for item in items if item is not None]


def recorded(path: Path) -> list[tuple[str, bytes]]:
    return SSEDecoder().feed_raw(path.read_bytes())


def scripted(name: str, **script: Any) -> list[tuple[str, bytes]]:
    plan = SERVER_APIS[name].render(Script("m", stream=True, **script), answer(Script("m", **script), 9), 2)
    frames = [frame for frame in plan.frames + plan.end if isinstance(frame.data, dict)]
    return [(frame.event or "message", msgspec.json.encode(frame.data)) for frame in frames]


THINKING = {"request": {"thinking": {"type": "enabled"}}}
SCRIPTS: dict[str, dict[str, Any]] = {
    "text": {"include_usage": True, "logprobs": True, "top_logprobs": 2},
    "tools": {"tools": [WEATHER, Tool("get_time")], "include_usage": True},
    "thinking": THINKING,
}
STREAMS: list[Any] = [
    *(pytest.param("chat", recorded(path), id=f"chat-{path.stem}") for path in OPENAI_STREAMS),
    *(
        pytest.param(name, scripted(name, **script), id=f"{name}-{kind}")
        for name in APIS
        for kind, script in SCRIPTS.items()
    ),
    *(
        pytest.param(name, recorded(FIXTURES / "llamacpp" / f"{name}.bin"), id=f"{name}-llamacpp")
        for name in ("responses", "messages")
    ),
]


@pytest.mark.parametrize(("name", "datas"), STREAMS)
def test_changing_a_snapshot_changes_nothing_else(name: str, datas: list[tuple[str, bytes]]) -> None:
    api: Api[Any, Any] = APIS[name]
    items = items_of(api, datas)
    assert items
    accumulator = api.accumulator()
    for item in items:
        accumulator.add(item)
        truth = accumulator.snapshot.to_dict()
        first = accumulator.snapshot
        assert first is not accumulator.snapshot
        vandalize(first)
        assert accumulator.snapshot.to_dict() == truth
    final = accumulator.final()
    truth = final.to_dict()
    vandalize(final)
    assert accumulator.final().to_dict() == truth == accumulator.snapshot.to_dict()
