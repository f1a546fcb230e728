"""`Client`: the four APIs for synchronous code, with no event loop and no thread.

    with streamkit.Client() as client:                           # OPENAI_API_KEY, OPENAI_BASE_URL
        stream = client.chat.completions.create(model="m", messages=[...], stream=True)
        with stream:
            for text in stream.text_deltas():
                print(text, end="", flush=True)
        final = stream.get_final_completion()

It is `AsyncClient` for a script, a notebook or a command: the same arguments, resources, parameters, keys,
redirects, retries, time limits, errors (with `.partial`) and metrics, from the same code (`_BaseClient`,
`_Retries`, the request builders, `streamkit.protocols` and the SSE decoder). Only the loops that wait on the
network are its own: each read blocks the calling thread, over httpx's `Client`
(`streamkit.transports.httpx_sync`). It works where an event loop runs too (in a notebook, or called from a
coroutine, which it then blocks, as any blocking call does).

A stream is a `SyncStream`: `for item in stream`, `with stream:`, `text_deltas()`, `snapshot`, `metrics`,
`close()`, and its API's final getter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from time import monotonic, perf_counter
from typing import Any, Literal, TypeVar, Unpack, overload

from streamkit.client import (
    ERROR_BODY_LIMIT,
    MAX_MODEL_PAGES,
    MAX_REDIRECTS,
    RAW_PREVIEW,
    REDIRECT_STATUSES,
    ChatParams,
    CompletionParams,
    MessageParams,
    ModelInfo,
    ResponseParams,
    Timeout,
    _BaseClient,
    _chat_body,
    _completion_body,
    _GetOptions,
    _is_event_stream,
    _json_body,
    _message_body,
    _ModelPage,
    _RequestOptions,
    _response_body,
    _Retries,
    _with_local_model,
)
from streamkit.errors import (
    ConnectError,
    ConnectTimeout,
    ProtocolError,
    ReadError,
    StreamkitError,
    TotalTimeout,
)
from streamkit.protocols.base import Api
from streamkit.protocols.chat import CHAT, ChatCompletion
from streamkit.protocols.completions import COMPLETIONS, Completion
from streamkit.protocols.messages import MESSAGES, Message
from streamkit.protocols.responses import RESPONSES, Response
from streamkit.streams import (
    StreamMetrics,
    SyncChatCompletionStream,
    SyncCompletionStream,
    SyncMessageStream,
    SyncResponseStream,
    SyncStream,
)
from streamkit.telemetry import Call
from streamkit.transports.base import DeadlineExpired, Request, SyncResponse, SyncTransport

__all__ = ["Client"]

_StreamT = TypeVar("_StreamT", bound=SyncStream[Any, Any])
_FinalT = TypeVar("_FinalT")


class Client(_BaseClient):
    """A client for OpenAI-compatible and Anthropic APIs, for synchronous code. Use it as a context manager,
    or call `close()`.

    The arguments are `AsyncClient`'s, and so are the environment variables of each provider; `transport` is
    any `streamkit.transports.base.SyncTransport` (default: httpx's blocking client). One client serves any
    number of threads, each with its own streams, over one pool of connections.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: Timeout = Timeout(),
        max_retries: int = 2,
        default_headers: Mapping[str, str] | None = None,
        transport: SyncTransport | None = None,
        telemetry: bool = True,
    ) -> None:
        super().__init__(api_key, base_url, timeout, max_retries, default_headers, telemetry)
        if transport is None:
            from streamkit.transports.httpx_sync import HttpxSyncTransport

            transport = HttpxSyncTransport()
        self._transport = transport
        self.chat = _Chat(self)
        self.completions = Completions(self)
        self.responses = Responses(self)
        self.messages = Messages(self)
        self.models = Models(self)

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r})"

    @classmethod
    def local(
        cls,
        *,
        timeout: Timeout = Timeout(),
        max_retries: int = 2,
        default_headers: Mapping[str, str] | None = None,
        telemetry: bool = True,
    ) -> Client:
        """A client of the embedded model, as `AsyncClient.local()`: llama.cpp's server with SmolLM2, started
        now on a free loopback port and stopped when the client closes. Raises `LocalModelUnavailable`
        without the `local` extra."""
        return _with_local_model(
            lambda base_url: cls(
                api_key="",  # no key of the environment's goes to the local model
                base_url=base_url,
                timeout=timeout,
                max_retries=max_retries,
                default_headers=default_headers,
                telemetry=telemetry,
            )
        )

    def close(self) -> None:
        """Close the pooled connections, and stop the local model of `Client.local()`. Idempotent."""
        try:
            self._transport.close()
        finally:
            local, self._local = self._local, None
            if local is not None:
                local.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # The loops that wait on the network; every decision in them is `_BaseClient`'s or `_Retries`'.

    def _tries(
        self, request: Request, deadline: float | None, call: Call | None = None
    ) -> tuple[SyncResponse, StreamMetrics, float]:
        """Send, with retries, until a 2xx head arrives, within `deadline` (the call's total, on
        `time.monotonic()`'s clock); return it with the call's metrics and when the answering try was sent,
        on that clock. Raises the last try's status or transport error, or `TotalTimeout`."""
        retries = _Retries(self.max_retries, call)
        while True:
            sent, sent_monotonic = perf_counter(), monotonic()
            try:
                response = self._send(request, deadline)
            except (ConnectError, ConnectTimeout, ReadError) as exc:
                wait = retries.after_error(exc)
            except DeadlineExpired:
                raise TotalTimeout("the request took longer than the total timeout") from None
            else:
                if 200 <= response.status < 300:
                    return response, retries.metrics(sent), sent_monotonic
                try:
                    raw = _read_some(response, self._readable(ERROR_BODY_LIMIT), deadline)
                except DeadlineExpired:
                    raise TotalTimeout("the request took longer than the total timeout") from None
                error = self._error_of(response.status, response.headers, raw)
                wait = retries.after_status(response.status, response.headers, error)
            if wait is not None:
                if deadline is not None and monotonic() + wait >= deadline:
                    time.sleep(max(deadline - monotonic(), 0.0))
                    raise TotalTimeout("the request took longer than the total timeout")
                time.sleep(wait)

    def _send(self, request: Request, deadline: float | None) -> SyncResponse:
        """Send the request through the transport, following its redirects (`_BaseClient._redirected`)."""
        redirects = 0
        while True:
            response = self._transport.send(request, deadline)
            location = response.headers.get("location")
            if response.status not in REDIRECT_STATUSES or location is None:
                return response
            try:
                response.release()  # a redirect's body is of no use; its connection may be
            except BaseException:
                response.close()
                raise
            if redirects == MAX_REDIRECTS:
                raise ProtocolError("the server redirected too many times")
            redirects += 1
            request = self._redirected(request, response.status, location)

    def stream(
        self, api: str | Api[Any, Any], body: Mapping[str, object], **options: Unpack[_RequestOptions]
    ) -> SyncStream[Any, Any]:
        """Stream a request of any API from its JSON body as it is; as `AsyncClient.stream`."""
        name = api if isinstance(api, str) else api.name
        stream_types = {t.api.name: t for t in SyncStream.__subclasses__()}  # one per API
        resumable = name == RESPONSES.name and bool(body.get("background"))  # as `responses.create`
        return self._stream(stream_types[name], {**body, "stream": True}, options, resumable)

    def _whole(self, api: Api[Any, _FinalT], body: dict[str, object], options: _RequestOptions) -> _FinalT:
        """Send a request with `stream=False` and return the API's final object."""
        json_body = _json_body(body, options)
        request, timeout = self._build(api.provider, api.path, json_body, options)
        call = self._telemetry.start(api, request.url, json_body, stream=False)
        if call is None:
            return self._body(request, timeout, api.final_from_json)
        try:
            final = self._body(request, timeout, api.final_from_json, call)
        except BaseException as exc:
            call.failed(exc)
            raise
        call.ended(final, None, None)
        return final

    def _body(
        self, request: Request, timeout: Timeout, decode: Callable[[bytes], _FinalT], call: Call | None = None
    ) -> _FinalT:
        """Send a request (with retries), read its whole 2xx answer within `timeout.total`, and decode it."""
        deadline = None if timeout.total is None else monotonic() + timeout.total
        response, _, _ = self._tries(request, deadline, call)
        try:
            body = _read_some(response, None, deadline)
        except DeadlineExpired:
            raise TotalTimeout("the request took longer than the total timeout") from None
        return self._decoded(body, decode)

    def _stream(
        self,
        stream_type: type[_StreamT],
        body: dict[str, object],
        options: _RequestOptions,
        resumable: bool = False,
    ) -> _StreamT:
        """Send a request with `stream=True` and return the API's stream once the response head is in. A
        `resumable` stream (a background response's) picks itself up where its connection breaks."""
        api = stream_type.api
        json_body = _json_body(body, options)
        request, timeout = self._build(api.provider, api.path, json_body, options, stream=True)
        call = self._telemetry.start(api, request.url, json_body, stream=True)
        return self._open_stream(stream_type, request, timeout, options, call, resumable)

    def _open_stream(
        self,
        stream_type: type[_StreamT],
        request: Request,
        timeout: Timeout,
        options: _GetOptions,
        call: Call | None = None,
        resumable: bool = False,
    ) -> _StreamT:
        deadline = None if timeout.total is None else monotonic() + timeout.total
        try:
            response, metrics, sent = self._tries(request, deadline, call)
            content_type = response.headers.get("content-type")
            if content_type is not None and not _is_event_stream(content_type):
                try:
                    raw = _read_some(response, self._readable(RAW_PREVIEW), deadline)
                except DeadlineExpired:
                    raw = b""
                raise self._unexpected(content_type, raw)
        except BaseException as exc:
            if call is not None:
                call.failed(exc)
            raise
        first_token = timeout.first_token
        stream = stream_type(
            response,
            metrics,
            first_token_deadline=None if first_token is None else sent + first_token,
            total_deadline=deadline,
            redact=self._redact,
            call=call,
        )
        if resumable:
            stream._resumable(self._resumer(options, metrics.attempts - 1, deadline))
        return stream

    def _resumer(
        self, options: _GetOptions, retried: int, deadline: float | None
    ) -> Callable[[str, int, StreamkitError], SyncResponse]:
        """How a background stream picks itself up; as `AsyncClient._resumer`, blocking."""
        retries = _Retries(self.max_retries)
        retries.attempt = retried

        def sleep(wait: float) -> None:
            if deadline is not None and monotonic() + wait >= deadline:
                time.sleep(max(deadline - monotonic(), 0.0))
                raise TotalTimeout("the request took longer than the total timeout")
            time.sleep(wait)

        def resume(response_id: str, after: int, broke: StreamkitError) -> SyncResponse:
            request, _ = self._resume_request(response_id, after, options)
            wait = retries.after_break(broke)
            while True:
                sleep(wait)
                try:
                    response = self._send(request, deadline)
                    if 200 <= response.status < 300:
                        content_type = response.headers.get("content-type")
                        if content_type is not None and not _is_event_stream(content_type):
                            raw = _read_some(response, self._readable(RAW_PREVIEW), deadline)
                            raise self._unexpected(content_type, raw)
                        return response
                    raw = _read_some(response, self._readable(ERROR_BODY_LIMIT), deadline)
                except (ConnectError, ConnectTimeout, ReadError) as exc:
                    wait = retries.after_error(exc) or 0.0
                    continue
                except DeadlineExpired:
                    raise TotalTimeout("the request took longer than the total timeout") from None
                error = self._error_of(response.status, response.headers, raw)
                wait = retries.after_status(response.status, response.headers, error)

        return resume


def _read_some(response: SyncResponse, limit: int | None, deadline: float | None) -> bytes:
    """The body, or its first `limit` bytes, by `deadline`; the response is closed either way. Raises
    `DeadlineExpired` past the deadline."""
    parts: list[bytes] = []
    size = 0
    try:
        while limit is None or size < limit:
            data = response.read(deadline)
            if not data:
                break
            parts.append(data)
            size += len(data)
    except StreamkitError:
        if limit is None:
            raise
    finally:
        response.close()
    body = b"".join(parts)
    return body if limit is None else body[:limit]


class ChatCompletions:
    """`client.chat.completions`: `/v1/chat/completions`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, object]],
        stream: Literal[True],
        **params: Unpack[ChatParams],
    ) -> SyncChatCompletionStream: ...

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, object]],
        stream: Literal[False] = False,
        **params: Unpack[ChatParams],
    ) -> ChatCompletion: ...

    def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, object]],
        stream: bool = False,
        **params: Unpack[ChatParams],
    ) -> SyncChatCompletionStream | ChatCompletion:
        """Create a chat completion: a `SyncChatCompletionStream` with `stream=True`, else a
        `ChatCompletion`. Raises as `AsyncClient`'s does."""
        body, options = _chat_body(model, messages, stream, params)
        if stream:
            return self._client._stream(SyncChatCompletionStream, body, options)
        return self._client._whole(CHAT, body, options)


class _Chat:
    def __init__(self, client: Client) -> None:
        self.completions = ChatCompletions(client)


class Completions:
    """`client.completions`: the legacy `/v1/completions`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @overload
    def create(
        self,
        *,
        model: str,
        prompt: str | Sequence[str],
        stream: Literal[True],
        **params: Unpack[CompletionParams],
    ) -> SyncCompletionStream: ...

    @overload
    def create(
        self,
        *,
        model: str,
        prompt: str | Sequence[str],
        stream: Literal[False] = False,
        **params: Unpack[CompletionParams],
    ) -> Completion: ...

    def create(
        self,
        *,
        model: str,
        prompt: str | Sequence[str],
        stream: bool = False,
        **params: Unpack[CompletionParams],
    ) -> SyncCompletionStream | Completion:
        """Create a legacy completion: a `SyncCompletionStream` with `stream=True`, else a `Completion`."""
        body, options = _completion_body(model, prompt, stream, params)
        if stream:
            return self._client._stream(SyncCompletionStream, body, options)
        return self._client._whole(COMPLETIONS, body, options)


class Responses:
    """`client.responses`: the Responses API, `/v1/responses`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @overload
    def create(
        self,
        *,
        model: str,
        input: str | Sequence[Mapping[str, object]],
        stream: Literal[True],
        **params: Unpack[ResponseParams],
    ) -> SyncResponseStream: ...

    @overload
    def create(
        self,
        *,
        model: str,
        input: str | Sequence[Mapping[str, object]],
        stream: Literal[False] = False,
        **params: Unpack[ResponseParams],
    ) -> Response: ...

    def create(
        self,
        *,
        model: str,
        input: str | Sequence[Mapping[str, object]],
        stream: bool = False,
        **params: Unpack[ResponseParams],
    ) -> SyncResponseStream | Response:
        """Create a response: a `SyncResponseStream` of typed events with `stream=True`, else a `Response`."""
        body, options = _response_body(model, input, stream, params)
        if stream:
            resumable = bool(body.get("background"))  # its events are kept: a broken stream picks up
            return self._client._stream(SyncResponseStream, body, options, resumable)
        return self._client._whole(RESPONSES, body, options)

    @overload
    def retrieve(
        self,
        response_id: str,
        *,
        stream: Literal[True],
        starting_after: int | None = None,
        **options: Unpack[_GetOptions],
    ) -> SyncResponseStream: ...

    @overload
    def retrieve(
        self,
        response_id: str,
        *,
        stream: Literal[False] = False,
        starting_after: None = None,
        **options: Unpack[_GetOptions],
    ) -> Response: ...

    def retrieve(
        self,
        response_id: str,
        *,
        stream: bool = False,
        starting_after: int | None = None,
        **options: Unpack[_GetOptions],
    ) -> SyncResponseStream | Response:
        """A stored response: the `Response`, or with `stream=True` its events after `starting_after`; as
        `AsyncClient.responses.retrieve`."""
        client = self._client
        request, timeout = client._resume_request(response_id, starting_after, options, stream)
        if not stream:
            return client._body(request, timeout, RESPONSES.final_from_json)
        return client._open_stream(SyncResponseStream, request, timeout, options, resumable=True)

    def cancel(self, response_id: str, **options: Unpack[_GetOptions]) -> Response:
        """Cancel a background response and return it; as `AsyncClient.responses.cancel`."""
        request, timeout = self._client._cancel_request(response_id, options)
        return self._client._body(request, timeout, RESPONSES.final_from_json)


class Messages:
    """`client.messages`: Anthropic Messages, `/v1/messages`, with `x-api-key` and `anthropic-version`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, object]],
        max_tokens: int,
        stream: Literal[True],
        **params: Unpack[MessageParams],
    ) -> SyncMessageStream: ...

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, object]],
        max_tokens: int,
        stream: Literal[False] = False,
        **params: Unpack[MessageParams],
    ) -> Message: ...

    def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, object]],
        max_tokens: int,
        stream: bool = False,
        **params: Unpack[MessageParams],
    ) -> SyncMessageStream | Message:
        """Create a message: a `SyncMessageStream` of typed events with `stream=True`, else a `Message`."""
        body, options = _message_body(model, messages, max_tokens, stream, params)
        if stream:
            return self._client._stream(SyncMessageStream, body, options)
        return self._client._whole(MESSAGES, body, options)


_ModelList = list[ModelInfo]  # `list` is a method's name in `Models`


class Models:
    """`client.models`: the models an endpoint serves."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(
        self, *, provider: Literal["openai", "anthropic"] = "openai", **options: Unpack[_GetOptions]
    ) -> _ModelList:
        """The models the provider's endpoint lists; as `AsyncClient.models.list`."""
        client = self._client
        models: _ModelList = []
        query = dict(options.get("extra_query", {}))
        for _ in range(MAX_MODEL_PAGES):
            request, timeout = client._build(provider, "/models", None, {**options, "extra_query": query})
            page = client._body(request, timeout, _ModelPage.from_json)
            models += page.data
            if not (page.has_more and page.last_id and page.data):
                break
            query["after_id"] = page.last_id
        return models
