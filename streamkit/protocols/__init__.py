"""One module per streaming API, each sans-I/O: its msgspec models, its accumulator, and its `Api` object.

| API | module | `Api` |
| --- | --- | --- |
| Chat Completions | `streamkit.protocols.chat` | `CHAT` |
| legacy Completions | `streamkit.protocols.completions` | `COMPLETIONS` |
| Responses | `streamkit.protocols.responses` | `RESPONSES` |
| Anthropic Messages | `streamkit.protocols.messages` | `MESSAGES` |

`APIS` maps each API's name (the CLI's `--api`) to its `Api`.
"""

from streamkit.protocols.base import END, ERROR, TOKEN, Accumulator, Api, UnknownEvent, UnknownObject
from streamkit.protocols.chat import CHAT
from streamkit.protocols.completions import COMPLETIONS
from streamkit.protocols.messages import MESSAGES
from streamkit.protocols.responses import RESPONSES

__all__ = [
    "APIS",
    "CHAT",
    "COMPLETIONS",
    "END",
    "ERROR",
    "MESSAGES",
    "RESPONSES",
    "TOKEN",
    "Accumulator",
    "Api",
    "UnknownEvent",
    "UnknownObject",
]

APIS: dict[str, Api[object, object]] = {api.name: api for api in (CHAT, COMPLETIONS, RESPONSES, MESSAGES)}  # type: ignore[misc]
