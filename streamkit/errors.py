"""The exceptions streamkit raises.

```
StreamkitError
├── APIError                     message, body, code, type, param
│   ├── APIStatusError           status_code, headers
│   │   ├── BadRequestError          400
│   │   ├── AuthenticationError      401
│   │   ├── PermissionDeniedError    403
│   │   ├── NotFoundError            404
│   │   ├── RateLimitError           429
│   │   └── InternalServerError      5xx
│   └── StreamAPIError           an error sent inside the stream; .partial, .request_id
├── TransportError               ConnectError, ReadError (.partial)
│   └── TimeoutError             ConnectTimeout, FirstTokenTimeout, IdleTimeout, TotalTimeout
│                                (each also a builtins.TimeoutError)
├── ProtocolError
│   ├── SSEProtocolError         an event or line over the size bound
│   ├── UnexpectedContentType    a 2xx stream answer that is not text/event-stream; .raw
│   ├── ChunkDecodeError         data that is not a valid chunk (also ValueError); .raw, .partial
│   └── IncompleteStreamError    the body ended before the stream was complete; .partial
└── ConversationBusyError        a Conversation's send while its last turn still streams (also RuntimeError)
```

Every error has `.partial`: what was accumulated before it was raised (a `ChatCompletion`, `Completion`,
`Response` or `Message`, as the API's stream builds it), or None when it was raised before the response
started. Errors about one bad event carry `.raw`, the event's text.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamkit.protocols.base import Model as Partial

__all__ = [
    "APIError",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "ChunkDecodeError",
    "ConnectError",
    "ConnectTimeout",
    "ConversationBusyError",
    "FirstTokenTimeout",
    "IdleTimeout",
    "IncompleteStreamError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "ReadError",
    "SSEProtocolError",
    "StreamAPIError",
    "StreamkitError",
    "TimeoutError",
    "TotalTimeout",
    "TransportError",
    "UnexpectedContentType",
    "api_error_fields",
    "status_error_class",
]


class StreamkitError(Exception):
    """The base of every exception streamkit raises."""

    def __init__(self, message: str, *, partial: Partial | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.partial = partial


class APIError(StreamkitError):
    """An error the API reported, with OpenAI's `message`, `type`, `code` and `param`."""

    def __init__(
        self,
        message: str,
        *,
        body: object = None,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
        partial: Partial | None = None,
    ) -> None:
        super().__init__(message, partial=partial)
        self.body = body
        self.code = code
        self.type = type
        self.param = param


class APIStatusError(APIError):
    """The API answered with a non-2xx status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        headers: Mapping[str, str] | None = None,
        body: object = None,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, body=body, code=code, type=type, param=param)
        self.status_code = status_code
        self.headers: Mapping[str, str] = headers if headers is not None else {}


class BadRequestError(APIStatusError):
    """400."""


class AuthenticationError(APIStatusError):
    """401."""


class PermissionDeniedError(APIStatusError):
    """403."""


class NotFoundError(APIStatusError):
    """404."""


class RateLimitError(APIStatusError):
    """429."""


class InternalServerError(APIStatusError):
    """5xx."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The most specific `APIStatusError` subclass for an HTTP status."""
    if 500 <= status_code < 600:
        return InternalServerError
    return _STATUS_CLASSES.get(status_code, APIStatusError)


def api_error_fields(body: object) -> tuple[str | None, str | None, str | None, str | None]:
    """`message`, `type`, `code` and `param` of an error body in any of the shapes servers send:
    `{"error": {...}}`, `{"error": "text"}`, the error object alone, or plain text."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, str):
        return error, None, None, None
    if not isinstance(error, dict):
        return None, None, None, None
    message, type, code, param = (_text(error.get(name)) for name in ("message", "type", "code", "param"))
    return message, type, code, param


def _text(value: object) -> str | None:
    """A field of an error body as text: a string as it came, anything else as `str` writes it."""
    if value is None or isinstance(value, str):
        return value
    try:
        return str(value)
    except RecursionError:  # JSON nested about as deep as a decoder goes, which `str` no longer can
        return None


class StreamAPIError(APIError):
    """The server sent an error inside a stream that had started."""

    def __init__(
        self,
        message: str,
        *,
        raw: str = "",
        body: object = None,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
        partial: Partial | None = None,
    ) -> None:
        super().__init__(message, body=body, code=code, type=type, param=param, partial=partial)
        self.raw = raw

    @property
    def request_id(self) -> str | None:
        """The id of the request, where the error's body gives it (`request_id`, as Anthropic sends it)."""
        body = self.body
        value = body.get("request_id") if isinstance(body, dict) else None
        return value if isinstance(value, str) else None


class TransportError(StreamkitError):
    """The connection failed: it could not be opened, or broke while reading.

    `stale` is true where a request failed on a pooled connection that the server had already closed, before
    any byte of its answer: a keep-alive connection the server gave up on. The request never reached the
    server, so the client sends it again at once, on a fresh connection, and that does not count as a retry.
    """

    stale: bool = False
    # What went wrong at the socket, in a few words (`connection refused`), where the transport could tell.
    reason: str | None = None


class ConnectError(TransportError):
    """The connection could not be opened."""


class ReadError(TransportError):
    """The connection broke while the response was read."""


class TimeoutError(TransportError, builtins.TimeoutError):
    """A time limit of `streamkit.Timeout` passed."""


class ConnectTimeout(TimeoutError):
    """The connection was not open within `Timeout.connect`."""


class FirstTokenTimeout(TimeoutError):
    """No token-carrying chunk arrived within `Timeout.first_token` of sending the request."""


class IdleTimeout(TimeoutError):
    """Nothing arrived for `Timeout.idle` seconds."""


class TotalTimeout(TimeoutError):
    """The whole call, retries included, took longer than `Timeout.total`."""


class ProtocolError(StreamkitError):
    """The server broke the protocol."""


class SSEProtocolError(ProtocolError):
    """A line or event of the event stream exceeded the decoder's size bound."""


class UnexpectedContentType(ProtocolError):
    """A 2xx stream answer was not `text/event-stream`; `.raw` holds the start of its body."""

    def __init__(self, message: str, *, content_type: str, raw: str = "") -> None:
        super().__init__(message)
        self.content_type = content_type
        self.raw = raw


class ChunkDecodeError(ProtocolError, ValueError):
    """An event's data is not a valid chunk; `.raw` holds the data."""

    def __init__(self, message: str, *, raw: str = "", partial: Partial | None = None) -> None:
        super().__init__(message, partial=partial)
        self.raw = raw


class IncompleteStreamError(ProtocolError):
    """The stream ended, or was closed, before it was complete."""


class ConversationBusyError(StreamkitError, RuntimeError):
    """`Conversation.send` came while the conversation's last turn was still streaming: its stream not yet
    read to its end, nor closed. Each turn is sent after the history it follows, so a turn sent alongside
    another would leave one of them out of the history; read or close the first stream, then send."""
