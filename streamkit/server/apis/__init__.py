"""The built-in server's side of each API, one module per API, apart from the client's side
(`streamkit.protocols`).

| API | module | `ServerApi` |
| --- | --- | --- |
| Chat Completions | `streamkit.server.apis.chat` | `CHAT` |
| legacy Completions | `streamkit.server.apis.completions` | `COMPLETIONS` |
| Responses | `streamkit.server.apis.responses` | `RESPONSES` |
| Anthropic Messages | `streamkit.server.apis.messages` | `MESSAGES` |

`SERVER_APIS` maps each API's name to its `ServerApi`. Adding an API to the server is one module here.
"""

from streamkit.server.apis.base import ServerApi
from streamkit.server.apis.chat import CHAT
from streamkit.server.apis.completions import COMPLETIONS
from streamkit.server.apis.messages import MESSAGES
from streamkit.server.apis.responses import RESPONSES

__all__ = ["SERVER_APIS", "ServerApi"]

SERVER_APIS: dict[str, ServerApi] = {api.name: api for api in (CHAT, COMPLETIONS, RESPONSES, MESSAGES)}
