"""The built-in server's side of one API: what `streamkit.server.app` needs to speak it for the scripted
model.

Each module of `streamkit.server.apis` defines one `ServerApi`: how to check a request and turn it into a
`Script`, how to render the scripted model's answers as a `Plan` (the stream's frames and the whole answer),
and the shapes of its errors. It is the client's oracle, so it shares no code with the client's side of the
API (`streamkit.protocols`): it never decodes a frame and never runs an accumulator.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Literal

from streamkit.server.scripted import Answer, Frame, Plan, RequestError, Script

__all__ = ["ServerApi"]


class ServerApi(abc.ABC):
    """One API as the built-in server speaks it. One instance per API.

    - `name`, `path` and `provider` are those of the client's `Api` of the same name (a test checks it).
    - `error_forms`: the forms of an error sent inside a stream (the `error=FORM` fault), the default first.
    - `malformed`: event data that is not valid JSON (the `malformed=K` fault).
    """

    name: ClassVar[str]
    path: ClassVar[str]
    provider: ClassVar[Literal["openai", "anthropic"]] = "openai"
    error_forms: ClassVar[tuple[str, ...]] = ()
    malformed: ClassVar[bytes] = b'{"broken": "tru'

    @abc.abstractmethod
    def parse_request(self, body: dict[str, Any], model: str | None) -> Script:
        """Check a request as the API would, for the scripted model serving `model` (None: any name, the
        script then carrying the name asked). Raises `RequestError`."""

    @abc.abstractmethod
    def render(self, script: Script, answers: list[Answer], tokens_per_chunk: int) -> Plan:
        """The answer in the API's own shapes: the events of its stream, and its whole form."""

    @abc.abstractmethod
    def error_body(self, error: RequestError) -> dict[str, Any]:
        """The JSON body of an error answer, in the API's shape."""

    @abc.abstractmethod
    def error_frames(self, form: str, plan: Plan, sent: int) -> list[Frame]:
        """An error sent in the stream of `plan` after its first `sent` events, in one of `error_forms`."""

    @abc.abstractmethod
    def fault_error(self, status: int) -> RequestError:
        """What the API says with an error status that a fault injects (a rate limit, an overload...)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
