"""`AsyncClient`: requests, retries and time limits, over a transport; streams come back as typed iterators.

    async with streamkit.AsyncClient() as client:                 # OPENAI_API_KEY, OPENAI_BASE_URL
        stream = await client.chat.completions.create(model="m", messages=[...], stream=True)
        async for text in stream.text_deltas():
            print(text, end="", flush=True)

One client serves every API: `client.chat.completions`, `client.completions` (legacy), `client.responses`
and `client.messages` (Anthropic). Each resource is a thin, typed front over one `_create`, which sends the
request with the API's path and provider (`streamkit.protocols`) and returns the API's stream class.

Retries happen only before a 2xx response head has arrived: after a connection error, or a 408, 409, 429 or
5xx answer. The wait is full-jitter exponential backoff (0.5 s doubling up to 8 s), or what the server asks in
`retry-after-ms` or `Retry-After`, up to 60 s; a server that asks for longer gets its error raised at once.
A value HTTP does not allow (a sign, an exponent, `nan`; see `_retry_after`) is ignored, and an ignored
`retry-after-ms` gives way to `Retry-After`.
A request that failed on a stale pooled connection (`TransportError.stale`) is sent again at once on a fresh
one, and that is no retry: the metrics count it in `attempts` and in `call_ttft`.

Redirects are followed here, not by the transport (which never follows one), so that no credential crosses
origins: a 301, 302, 303, 307 or 308 with a `Location` (resolved against the request's URL) is followed, up to
20 times, as httpx does (a 303, and a 301 or 302 answering a POST, becomes a GET without a body; a 307 or 308
keeps the method and body). From the first hop to another origin (scheme, host or port) on, the request goes
without `Authorization`, `x-api-key`, `api-key`, `Proxy-Authorization` and `Cookie`, wherever they came from.
A redirect loop, or a `Location` that is not an http(s) URL, raises `ProtocolError`, and is never retried. A
redirect is no retry: a retry sends the request again from its first URL.

`client.models.list()` lists the models an endpoint serves (`/models` of either provider), by the same rules.

The key never shows in an error: where a server echoes it, it becomes `***`. Only a key of at least 8
characters that stands as a whole token is replaced (`_redactor`), so that other text is never mangled.
"""

from __future__ import annotations

import calendar
import math
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from time import perf_counter
from typing import Any, Literal, TypedDict, TypeVar, Unpack, cast, overload
from urllib.parse import quote, urlencode, urljoin, urlsplit

import anyio
import msgspec
import sniffio

from streamkit._version import __version__
from streamkit.errors import (
    APIStatusError,
    ChunkDecodeError,
    ConnectError,
    ConnectTimeout,
    ProtocolError,
    ReadError,
    StreamkitError,
    TotalTimeout,
    TransportError,
    UnexpectedContentType,
    api_error_fields,
    status_error_class,
)
from streamkit.protocols.base import Api, Model
from streamkit.protocols.chat import CHAT, ChatCompletion
from streamkit.protocols.completions import COMPLETIONS, Completion
from streamkit.protocols.messages import MESSAGES, Message
from streamkit.protocols.responses import RESPONSES, Response
from streamkit.server.local import LocalModel
from streamkit.streams import (
    ChatCompletionStream,
    CompletionStream,
    MessageStream,
    ResponseStream,
    Stream,
    StreamMetrics,
)
from streamkit.telemetry import Call, Telemetry
from streamkit.transports.base import Request, Transport
from streamkit.transports.base import Response as HTTPResponse

__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncClient",
    "ChatParams",
    "CompletionParams",
    "MessageParams",
    "ModelInfo",
    "Models",
    "ResponseParams",
    "Timeout",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"

RETRY_STATUSES = frozenset({408, 409, 429})
BACKOFF_START = 0.5  # seconds before the first retry, at most (full jitter)
BACKOFF_CAP = 8.0
RETRY_AFTER_CAP = 60.0  # a server asking for a longer wait gets its error raised instead
# What an error keeps of a body, in characters, as its `.body`, `.raw` or message: the first ERROR_BODY_LIMIT
# of an error answer, enough for any JSON error, and of an answer that is not the JSON it should be; the first
# RAW_PREVIEW of a page sent in place of a stream, enough for its start to say what sent it.
ERROR_BODY_LIMIT = 64 * 1024
RAW_PREVIEW = 1024
# A request that fails on a stale pooled connection is sent again at once, and not counted as a retry (see
# `TransportError.stale`). Each such failure drops one pooled connection, so a run of them ends; this bound
# only keeps a broken transport from looping.
STALE_RESENDS = 64
# Redirects followed for one request before it fails as a loop: httpx's bound (aiohttp's is 10).
MAX_REDIRECTS = 20
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# The headers that authenticate, in lower case: none is sent to an origin other than the request's own.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# A key shorter than this is not redacted: no real secret is so short, while a string so short (`x`, `test`)
# turns up inside ordinary words and names, which replacing it would mangle.
MIN_REDACTED_KEY = 8
# Anthropic lists its models a page at a time; a server that never says it has no more gets cut off here.
MAX_MODEL_PAGES = 100


@dataclass(frozen=True)
class Timeout:
    """Time limits, in seconds; None means no limit.

    - `connect`: opening a connection.
    - `first_token`: from sending a request to its first token-carrying chunk (streams only).
    - `idle`: the longest silence between two reads, the wait for the response head included; comments and
      pings count as activity.
    - `total`: the whole call, retries and the stream's body included.

    Each raises its own subclass of `streamkit.TimeoutError`, itself a `builtins.TimeoutError`.
    """

    connect: float | None = 5.0
    first_token: float | None = None
    idle: float | None = 60.0
    total: float | None = None


class _GetOptions(TypedDict, total=False):
    extra_headers: Mapping[str, str]
    extra_query: Mapping[str, str]
    timeout: Timeout
    """Time limits for this request, in place of the client's."""


class _RequestOptions(_GetOptions, total=False):
    extra_body: Mapping[str, object]
    """Fields added to the JSON body, over the named parameters."""


class _SamplingParams(_RequestOptions, total=False):
    temperature: float | None
    top_p: float | None
    n: int | None
    stop: str | Sequence[str] | None
    max_tokens: int | None
    presence_penalty: float | None
    frequency_penalty: float | None
    logit_bias: Mapping[str, float] | None
    seed: int | None
    stream_options: Mapping[str, object] | None
    user: str | None


class ChatParams(_SamplingParams, total=False):
    """The parameters of `chat.completions.create` beside `model`, `messages` and `stream`. None leaves a
    parameter out of the request."""

    max_completion_tokens: int | None
    logprobs: bool | None
    top_logprobs: int | None
    tools: Sequence[Mapping[str, object]] | None
    tool_choice: str | Mapping[str, object] | None
    parallel_tool_calls: bool | None
    response_format: Mapping[str, object] | None
    reasoning_effort: str | None
    service_tier: str | None
    metadata: Mapping[str, str] | None
    store: bool | None


class CompletionParams(_SamplingParams, total=False):
    """The parameters of `completions.create` beside `model`, `prompt` and `stream`. None leaves a parameter
    out of the request."""

    suffix: str | None
    echo: bool | None
    best_of: int | None
    logprobs: int | None


class ResponseParams(_RequestOptions, total=False):
    """The parameters of `responses.create` beside `model`, `input` and `stream`. None leaves a parameter out
    of the request."""

    instructions: str | None
    tools: Sequence[Mapping[str, object]] | None
    tool_choice: str | Mapping[str, object] | None
    parallel_tool_calls: bool | None
    max_output_tokens: int | None
    max_tool_calls: int | None
    temperature: float | None
    top_p: float | None
    top_logprobs: int | None
    reasoning: Mapping[str, object] | None
    text: Mapping[str, object] | None
    include: Sequence[str] | None
    previous_response_id: str | None
    conversation: str | Mapping[str, object] | None
    prompt: Mapping[str, object] | None
    prompt_cache_key: str | None
    safety_identifier: str | None
    store: bool | None
    background: bool | None
    metadata: Mapping[str, str] | None
    truncation: str | None
    service_tier: str | None
    stream_options: Mapping[str, object] | None
    user: str | None


class MessageParams(_RequestOptions, total=False):
    """The parameters of `messages.create` beside `model`, `messages`, `max_tokens` and `stream`. None leaves
    a parameter out of the request."""

    system: str | Sequence[Mapping[str, object]] | None
    stop_sequences: Sequence[str] | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    tools: Sequence[Mapping[str, object]] | None
    tool_choice: Mapping[str, object] | None
    thinking: Mapping[str, object] | None
    metadata: Mapping[str, object] | None
    service_tier: str | None
    container: str | None
    mcp_servers: Sequence[Mapping[str, object]] | None


_OPTION_NAMES = frozenset(_RequestOptions.__annotations__)


ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True)
class _Provider:
    """Where one provider's requests go and how they authenticate: `url(path)` and the headers."""

    base_url: str
    prefix: str  # between the base URL and an API's path: "/v1" for Anthropic's own base URLs
    headers: Mapping[str, str]
    key: str | None

    def __repr__(self) -> str:  # the headers hold the key
        return f"_Provider({self.base_url!r})"


def _openai_provider(api_key: str | None, base_url: str | None) -> _Provider:
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY") or None
    base = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    return _Provider(base, "", {"Authorization": f"Bearer {key}"} if key else {}, key)


def _anthropic_provider(api_key: str | None, base_url: str | None) -> _Provider:
    # A base URL given to the client serves every API, as an OpenAI-style `.../v1` base does on vLLM,
    # llama.cpp and streamkit's own server. Anthropic's base URLs have no `/v1`: the anthropic SDK adds it.
    key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY") or None
    if base_url:
        base, prefix = base_url.rstrip("/"), ""
    else:
        base, prefix = (os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_BASE_URL).rstrip("/"), "/v1"
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    if key:
        headers["x-api-key"] = key
    return _Provider(base, prefix, headers, key)


_StreamT = TypeVar("_StreamT", bound=Stream[Any, Any])
_FinalT = TypeVar("_FinalT")


class _BaseClient:
    """What `AsyncClient` and `Client` share, all of it free of I/O: where each provider's requests go and
    with which key, the request of a call (`_build`), the next hop of a redirect (`_redirected`), the error of
    a non-2xx answer (`_error_of`), and the redaction of keys from whatever a server sends back. The retry
    policy is `_Retries`. Each client has only its loops of sends and reads, which wait on the network in its
    own way."""

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        timeout: Timeout,
        max_retries: int,
        default_headers: Mapping[str, str] | None,
        telemetry: bool,
    ) -> None:
        self._telemetry = Telemetry(telemetry)
        self._providers = {
            "openai": _openai_provider(api_key, base_url),
            "anthropic": _anthropic_provider(api_key, base_url),
        }
        keys = [p.key for p in self._providers.values() if p.key]
        self._redactor = _redactor(keys)
        self._longest_key = max(map(len, keys), default=0)
        self.base_url = self._providers["openai"].base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self._headers = {"User-Agent": f"streamkit/{__version__}", "Content-Type": "application/json"}
        self._headers.update(default_headers or {})
        self._local: LocalModel | None = None  # the model that `local()` started, stopped at close

    def _redact(self, text: str) -> str:
        """The text with each of the client's keys that stands in it as a whole token replaced by `***`."""
        redactor = self._redactor
        return text if redactor is None else redactor.sub("***", text)

    def _shown(self, text: str, limit: int) -> str:
        """The first `limit` characters of `text`, redacted (`_redact`), a key that begins within them and
        runs past them replaced whole: cut first, its start would stay as it is, and redacted first, a key cut
        at the end of `text` could move within them. `text` is whole, or runs on for the longest key past
        `limit` (see `_readable`)."""
        redactor = self._redactor
        if redactor is None:
            return text[:limit]
        kept: list[str] = []
        at = 0
        for key in redactor.finditer(text, 0, limit + self._longest_key):
            if key.start() >= limit:
                break
            kept += (text[at : key.start()], "***")
            at = key.end()
        kept.append(text[at:limit])
        return "".join(kept)[:limit]

    def _readable(self, limit: int) -> int:
        """How many bytes of a body to read to show its first `limit` characters (`_shown`): up to four bytes
        a character, as UTF-8 takes, for them and for a key that begins within them."""
        return 4 * (limit + self._longest_key)

    def _build(
        self,
        provider_name: str,
        path: str,
        body: dict[str, object] | None,
        options: _GetOptions,
        stream: bool = False,
    ) -> tuple[Request, Timeout]:
        """A POST of `body` as JSON to the provider's `path` (see `_json_body`), or a GET where `body` is
        None."""
        provider = self._providers[provider_name]
        timeout = options.get("timeout", self.timeout)
        url = f"{provider.base_url}{provider.prefix}{path}"
        if options.get("extra_query"):
            url = f"{url}?{urlencode(options['extra_query'])}"
        headers = {**self._headers, **provider.headers}
        if body is None:
            del headers["Content-Type"]  # a GET has no content
        if stream:
            headers["Accept"] = "text/event-stream"
        headers.update(options.get("extra_headers", {}))
        method, content = ("GET", b"") if body is None else ("POST", msgspec.json.encode(body))
        request = Request(
            method, url, headers, content, stream=stream, connect=timeout.connect, idle=timeout.idle
        )
        return request, timeout

    def _resume_request(
        self, response_id: str, after: int | None, options: _GetOptions, stream: bool = True
    ) -> tuple[Request, Timeout]:
        """`GET /responses/{id}`: the stored response, or with `stream`, its events after `after` (all of
        them for None), as `?stream=true&starting_after=N`."""
        query = dict(options.get("extra_query", {}))
        if stream:
            query["stream"] = "true"
            if after is not None:
                query["starting_after"] = str(after)
        path = f"/responses/{quote(response_id, safe='')}"
        return self._build("openai", path, None, {**options, "extra_query": query}, stream=stream)

    def _cancel_request(self, response_id: str, options: _GetOptions) -> tuple[Request, Timeout]:
        """`POST /responses/{id}/cancel`, with no parameters."""
        return self._build("openai", f"/responses/{quote(response_id, safe='')}/cancel", {}, options)

    def _redirected(self, request: Request, status: int, location: str) -> Request:
        """The request that a redirect to `location` asks for, without credentials if it goes to another
        origin. Raises `ProtocolError` where `location` is not an http(s) URL."""
        shown = self._redact(location[:RAW_PREVIEW])
        try:
            url = urljoin(request.url, location.strip())
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
        except ValueError as exc:
            raise ProtocolError(f"the server redirected to an invalid URL ({exc}): {shown!r}") from None
        if parts.scheme not in DEFAULT_PORTS:
            raise ProtocolError(f"the server redirected to {shown!r}, which is not an http(s) URL")
        if not parts.hostname:
            raise ProtocolError(f"the server redirected to an invalid URL (no host): {shown!r}")
        if not url.isprintable() or any(c.isspace() for c in url):
            raise ProtocolError(
                f"the server redirected to an invalid URL (a space or control character): {shown!r}"
            )
        headers = dict(request.headers)
        if _origin(url) != _origin(request.url):
            headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
        method, content = request.method, request.content
        if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
            # As browsers and httpx do: the answer to the POST is elsewhere, to be fetched with a GET.
            method, content = "GET", b""
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        return replace(request, method=method, url=url, headers=headers, content=content)

    def _error_of(self, status: int, headers: Mapping[str, str], raw: bytes) -> APIStatusError:
        """The `APIStatusError` subclass of a non-2xx answer, from its head and the start of its body (read
        up to `_readable(ERROR_BODY_LIMIT)`), redacted."""
        text = self._shown(raw.decode("utf-8", "replace"), ERROR_BODY_LIMIT)
        try:
            body: object = msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError):
            body = text
        message, type, code, param = api_error_fields(body) if isinstance(body, dict) else (None,) * 4
        return status_error_class(status)(
            message or f"HTTP {status}: {text[:RAW_PREVIEW]}".rstrip(": "),
            status_code=status,
            headers=headers,
            body=body,
            code=code,
            type=type,
            param=param,
        )

    def _unexpected(self, content_type: str, raw: bytes) -> UnexpectedContentType:
        """The error of a 2xx answer to a stream that is not an event stream, from the start of its body."""
        return UnexpectedContentType(
            f"expected a text/event-stream answer, got {content_type!r}",
            content_type=content_type,
            raw=self._shown(raw.decode("utf-8", "replace"), RAW_PREVIEW),
        )

    def _decoded(self, body: bytes, decode: Callable[[bytes], _FinalT]) -> _FinalT:
        """A whole 2xx answer, decoded; a `ChunkDecodeError` keeps its start, redacted, as `.raw`."""
        try:
            return decode(body)
        except ChunkDecodeError as exc:
            exc.raw = self._shown(exc.raw, ERROR_BODY_LIMIT)
            exc.message = self._redact(exc.message)
            exc.args = (exc.message,)
            raise


class AsyncClient(_BaseClient):
    """A client for OpenAI-compatible and Anthropic APIs. Use it as an async context manager, or call
    `aclose()`.

    `api_key` and `base_url`, when given, serve every API. Without them, the OpenAI-dialect resources
    (`chat.completions`, `completions`, `responses`) read `OPENAI_API_KEY` and `OPENAI_BASE_URL` (then the
    OpenAI API), and `messages` reads `ANTHROPIC_API_KEY` and `ANTHROPIC_BASE_URL` (then the Anthropic API):
    a key from one provider's variable is never sent to the other's resource. With no key, no key header is
    sent (local servers need none). `transport` is `"aiohttp"` (asyncio only), `"httpx"` (asyncio or trio),
    or any `streamkit.transports.Transport`. One client serves any number of concurrent requests over one
    pool of connections, with no cap on their number. With `opentelemetry-api` installed, every request
    records OpenTelemetry GenAI metrics and a span (`streamkit.telemetry`); `telemetry=False` turns it off.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        transport: Literal["aiohttp", "httpx"] | Transport = "aiohttp",
        timeout: Timeout = Timeout(),
        max_retries: int = 2,
        default_headers: Mapping[str, str] | None = None,
        telemetry: bool = True,
    ) -> None:
        super().__init__(api_key, base_url, timeout, max_retries, default_headers, telemetry)
        self._transport_name = transport if isinstance(transport, str) else type(transport).__name__
        self._transport = _make_transport(transport)
        self.chat = _Chat(self)
        self.completions = Completions(self)
        self.responses = Responses(self)
        self.messages = Messages(self)
        self.models = Models(self)

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={self.base_url!r}, transport={self._transport_name!r})"

    @classmethod
    def local(
        cls,
        *,
        transport: Literal["aiohttp", "httpx"] | Transport = "aiohttp",
        timeout: Timeout = Timeout(),
        max_retries: int = 2,
        default_headers: Mapping[str, str] | None = None,
        telemetry: bool = True,
    ) -> AsyncClient:
        """A client of the embedded model, which `streamkit chat` answers with when nothing is configured:
        llama.cpp's server with SmolLM2-135M-Instruct, started now in a child process on a free loopback port
        (this call waits for it to load, about a second) and stopped when the client closes. Its model is
        named `smollm2` (`streamkit.LOCAL_MODEL`); no key and no network. Every API is served.

        Raises `LocalModelUnavailable` (a RuntimeError) without the `local` extra and the weights, with the
        command that installs them."""
        return _with_local_model(
            lambda base_url: cls(
                api_key="",  # no key of the environment's goes to the local model
                base_url=base_url,
                transport=transport,
                timeout=timeout,
                max_retries=max_retries,
                default_headers=default_headers,
                telemetry=telemetry,
            )
        )

    async def aclose(self) -> None:
        """Close the pooled connections, and stop the local model of `AsyncClient.local()`. Idempotent."""
        try:
            await self._transport.aclose()
        finally:
            local, self._local = self._local, None
            if local is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(local.stop)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _open(
        self, request: Request, total_deadline: float | None, call: Call | None = None
    ) -> tuple[HTTPResponse, StreamMetrics, float]:
        """Send, with retries, until a 2xx head arrives; return it with the metrics of the call so far (when
        it started, and when the answering attempt was sent) and that send time on anyio's clock. Raises
        the last try's status or transport error."""
        if (
            self._transport_name == "aiohttp" or getattr(self._transport, "asyncio_only", False)
        ) and sniffio.current_async_library() != "asyncio":
            raise RuntimeError("the aiohttp transport runs on asyncio only; use transport='httpx' under trio")
        if total_deadline is None:  # no cancel scope to pay for
            return await self._tries(request, call)
        with anyio.move_on_at(total_deadline):
            return await self._tries(request, call)
        raise TotalTimeout("the request took longer than the total timeout")

    async def _tries(self, request: Request, call: Call | None) -> tuple[HTTPResponse, StreamMetrics, float]:
        retries = _Retries(self.max_retries, call)
        while True:
            sent, sent_loop = perf_counter(), anyio.current_time()
            try:
                response = await self._send(request)
            except (ConnectError, ConnectTimeout, ReadError) as exc:
                wait = retries.after_error(exc)
            else:
                if 200 <= response.status < 300:
                    return response, retries.metrics(sent), sent_loop
                error = await self._status_error(response)
                wait = retries.after_status(response.status, response.headers, error)
            if wait is not None:
                await anyio.sleep(wait)

    async def _send(self, request: Request) -> HTTPResponse:
        """Send the request through the transport, following its redirects: the answer of the last hop.
        Raises what the transport raises, and `ProtocolError` for too many redirects or a `Location` that is
        not an http(s) URL."""
        redirects = 0
        while True:
            response = await self._transport.send(request)
            location = response.headers.get("location")
            if response.status not in REDIRECT_STATUSES or location is None:
                return response
            try:
                await response.release()  # a redirect's body is of no use; its connection may be
            except BaseException:
                await response.aclose()
                raise
            if redirects == MAX_REDIRECTS:
                raise ProtocolError("the server redirected too many times")
            redirects += 1
            request = self._redirected(request, response.status, location)

    async def _status_error(self, response: HTTPResponse) -> APIStatusError:
        raw = await _read_some(response, self._readable(ERROR_BODY_LIMIT))
        return self._error_of(response.status, response.headers, raw)

    async def stream(
        self, api: str | Api[Any, Any], body: Mapping[str, object], **options: Unpack[_RequestOptions]
    ) -> Stream[Any, Any]:
        """Stream a request of any API from its JSON body as it is (`model`, `messages` or `input`, and the
        rest): for tools that send bodies built elsewhere, such as the bench. `api` is a name of
        `streamkit.protocols.APIS` (`chat`, `completions`, `responses`, `messages`) or an `Api`. `stream` is
        set to true. Raises as the typed `create` methods do, and KeyError for an unknown API name."""
        name = api if isinstance(api, str) else api.name
        stream_types = {t.api.name: t for t in Stream.__subclasses__()}  # one per API, in streamkit.streams
        resumable = name == RESPONSES.name and bool(body.get("background"))  # as `responses.create`
        return await self._stream(stream_types[name], {**body, "stream": True}, options, resumable)

    async def _whole(
        self, api: Api[Any, _FinalT], body: dict[str, object], options: _RequestOptions
    ) -> _FinalT:
        """Send a request with `stream=False` and return the API's final object."""
        json_body = _json_body(body, options)
        request, timeout = self._build(api.provider, api.path, json_body, options)
        call = self._telemetry.start(api, request.url, json_body, stream=False)
        if call is None:
            return await self._body(request, timeout, api.final_from_json)
        try:
            final = await self._body(request, timeout, api.final_from_json, call)
        except BaseException as exc:
            call.failed(exc)
            raise
        call.ended(final, None, None)
        return final

    async def _body(
        self, request: Request, timeout: Timeout, decode: Callable[[bytes], _FinalT], call: Call | None = None
    ) -> _FinalT:
        """Send a request (with retries), read its whole 2xx answer within `timeout.total`, and `decode` it.
        A `ChunkDecodeError` from `decode` keeps the start of the answer, redacted, as `.raw` (`_shown`)."""
        total_deadline = None if timeout.total is None else anyio.current_time() + timeout.total
        response, _, _ = await self._open(request, total_deadline, call)
        with anyio.move_on_at(total_deadline if total_deadline is not None else math.inf):
            return self._decoded(await _read_some(response, None), decode)
        raise TotalTimeout("the request took longer than the total timeout")

    async def _stream(
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
        return await self._open_stream(stream_type, request, timeout, options, call, resumable)

    async def _open_stream(
        self,
        stream_type: type[_StreamT],
        request: Request,
        timeout: Timeout,
        options: _GetOptions,
        call: Call | None = None,
        resumable: bool = False,
    ) -> _StreamT:
        total_deadline = None if timeout.total is None else anyio.current_time() + timeout.total
        try:
            response, metrics, sent_loop = await self._open(request, total_deadline, call)
            content_type = response.headers.get("content-type")
            if content_type is not None and not _is_event_stream(content_type):
                raise self._unexpected(content_type, await _read_some(response, self._readable(RAW_PREVIEW)))
        except BaseException as exc:
            if call is not None:
                call.failed(exc)
            raise
        first_token = timeout.first_token
        stream = stream_type(
            response,
            metrics,
            first_token_deadline=None if first_token is None else sent_loop + first_token,
            total_deadline=total_deadline,
            redact=self._redact,
            call=call,
        )
        if resumable:
            stream._resumable(self._resumer(options, metrics.attempts - 1, total_deadline))
        return stream

    def _resumer(
        self, options: _GetOptions, retried: int, total_deadline: float | None
    ) -> Callable[[str, int, StreamkitError], Awaitable[HTTPResponse]]:
        """How a background stream picks itself up: `resume(id, after, broke)` opens the stored response's
        events after `after`, with the backoff and the `max_retries` budget of the call's retries (`retried`
        of them spent before its first byte), within its total deadline. Each break takes a retry. Raises
        `broke` where none is left, the `APIStatusError` of an answer that refuses (404, a 4xx), and what the
        last try raised."""
        retries = _Retries(self.max_retries)
        retries.attempt = retried

        async def resume(response_id: str, after: int, broke: StreamkitError) -> HTTPResponse:
            request, _ = self._resume_request(response_id, after, options)
            with anyio.move_on_at(math.inf if total_deadline is None else total_deadline):
                wait = retries.after_break(broke)
                while True:
                    await anyio.sleep(wait)
                    try:
                        response = await self._send(request)
                    except (ConnectError, ConnectTimeout, ReadError) as exc:
                        wait = retries.after_error(exc) or 0.0
                        continue
                    if 200 <= response.status < 300:
                        content_type = response.headers.get("content-type")
                        if content_type is not None and not _is_event_stream(content_type):
                            raw = await _read_some(response, self._readable(RAW_PREVIEW))
                            raise self._unexpected(content_type, raw)
                        return response
                    error = await self._status_error(response)
                    wait = retries.after_status(response.status, response.headers, error)
            raise TotalTimeout("the request took longer than the total timeout")

        return resume


async def _read_some(response: HTTPResponse, limit: int | None) -> bytes:
    """The body, or its first `limit` bytes; the response is closed either way."""
    parts: list[bytes] = []
    size = 0
    try:
        while limit is None or size < limit:
            data = await response.read()
            if not data:
                break
            parts.append(data)
            size += len(data)
    except StreamkitError:
        if limit is None:
            raise
    finally:
        await response.aclose()
    body = b"".join(parts)
    return body if limit is None else body[:limit]


_ClientT = TypeVar("_ClientT", bound=_BaseClient)


def _with_local_model(make: Callable[[str], _ClientT]) -> _ClientT:
    """The client `make(base_url)` makes for the embedded model, started now, which the client then owns
    (it stops the model when it closes). Raises `LocalModelUnavailable` without the `local` extra."""
    model = LocalModel().start()
    try:
        client = make(model.base_url)
    except BaseException:
        model.stop()
        raise
    client._local = model
    return client


class _Retries:
    """The retry policy of one call, the same for both clients. Each failed try goes to `after_error` or
    `after_status`, which say how long to wait before the next (None: resend at once), or raise the try's
    error where no retry is left or allowed. A stale pooled connection is resent at once, up to
    `STALE_RESENDS` times, and that is no retry."""

    __slots__ = ("attempt", "call", "max_retries", "resent", "started")

    def __init__(self, max_retries: int, call: Call | None = None) -> None:
        self.max_retries = max_retries
        self.call = call  # the request's telemetry, told of each retry
        self.attempt = 0  # retries so far
        self.resent = 0  # resends after a stale connection so far
        self.started = perf_counter()

    def after_error(self, error: TransportError) -> float | None:
        if error.stale and self.resent < STALE_RESENDS:
            self.resent += 1
            if self.call is not None:
                self.call.retried(type(error).__name__, None)
            return None
        if self.attempt >= self.max_retries:
            raise error
        self.attempt += 1
        wait = _backoff(self.attempt - 1)
        if self.call is not None:
            self.call.retried(type(error).__name__, wait)
        return wait

    def after_break(self, broke: StreamkitError) -> float:
        """A background stream broke mid-body (`streams.BROKEN`): the wait before it resumes, or `broke`
        raised where no retry is left."""
        if self.attempt >= self.max_retries:
            raise broke
        self.attempt += 1
        return _backoff(self.attempt - 1)

    def after_status(self, status: int, headers: Mapping[str, str], error: APIStatusError) -> float:
        if status not in RETRY_STATUSES and not 500 <= status < 600:
            raise error
        if self.attempt >= self.max_retries:
            raise error
        asked = _retry_after(headers)
        if asked is not None and asked > RETRY_AFTER_CAP:
            raise error
        self.attempt += 1
        wait = _backoff(self.attempt - 1) if asked is None else asked
        if self.call is not None:
            self.call.retried(f"HTTP {status}", wait)
        return wait

    def metrics(self, sent: float) -> StreamMetrics:
        """The metrics of the call that the try sent at `sent` answered with a 2xx head, now."""
        return StreamMetrics(sent, perf_counter(), self.started, self.attempt + self.resent + 1)


def _is_event_stream(content_type: str) -> bool:
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"


def _json_body(body: Mapping[str, object], options: _RequestOptions) -> dict[str, object]:
    """A request's JSON body: the parameters that are not None, then `extra_body` over them."""
    return {**{k: v for k, v in body.items() if v is not None}, **options.get("extra_body", {})}


def _backoff(attempt: int) -> float:
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_START * 2**attempt))


def _redactor(keys: Iterable[str]) -> re.Pattern[str] | None:
    """What finds the keys in a text, each only where it stands as a whole token (not inside a longer run of
    letters, digits, `-`, `_` and `.`, where it is some other word), and only keys long enough to be secrets
    (`MIN_REDACTED_KEY`); None when there is none. A `.` only counts where a key character follows it, so a
    key that ends a sentence is still found."""
    secrets = [key for key in dict.fromkeys(keys) if len(key) >= MIN_REDACTED_KEY]
    if not secrets:
        return None
    word = "[A-Za-z0-9_-]"
    alternatives = "|".join(re.escape(key) for key in secrets)
    return re.compile(rf"(?<!{word})(?<!{word}\.)(?:{alternatives})(?!{word})(?!\.+{word})")


def _origin(url: str) -> tuple[str, str | None, int | None] | None:
    """Scheme, host and port (the scheme's default where none is given); None for a URL with a bad port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return None
    return scheme, parts.hostname, DEFAULT_PORTS.get(scheme) if port is None else port


# `Retry-After: 120` is delay-seconds, `1*DIGIT` (RFC 9110 §10.2.3); a fraction (`0.5`), which servers send
# and other clients read, is taken too. `retry-after-ms` (OpenAI's) is a plain decimal of milliseconds. Both
# take ASCII digits only: no sign, exponent, `_` separator, `nan` or `inf`, all of which float() would read.
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_YEAR = 365.2425 * 86400  # seconds in a Gregorian year, on average
# The three forms of an HTTP-date (RFC 9110 §5.6.7), each with its own names of days and months.
_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = f"(?P<month>{'|'.join(_MONTHS)})"
_TIME = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
_HTTP_DATES = (
    # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    re.compile(rf"{_DAY}, (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}}) {_TIME} GMT"),
    # rfc850-date (obsolete): Sunday, 06-Nov-94 08:49:37 GMT
    re.compile(
        r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
        rf"(?P<day>[0-9]{{2}})-{_MONTH}-(?P<year2>[0-9]{{2}}) {_TIME} GMT"
    ),
    # asctime-date (obsolete): Sun Nov  6 08:49:37 1994
    re.compile(rf"{_DAY} {_MONTH} (?P<day>[0-9]{{2}}| [0-9]) {_TIME} (?P<year>[0-9]{{4}})"),
)


def _http_date(value: str, now: float) -> float | None:
    """The POSIX time of an HTTP-date in any of its three forms; None for anything else, or for a date that
    does not exist. A two-digit year is read as the year with those digits nearest to `now` that is not more
    than 50 years after it (RFC 9110 §5.6.7)."""
    for form in _HTTP_DATES:
        match = form.fullmatch(value)
        if match is not None:
            break
    else:
        return None
    fields = match.groupdict()
    month = _MONTHS.index(fields["month"]) + 1
    day, hour, minute, second = (int(fields[name]) for name in ("day", "hour", "minute", "second"))
    if fields.get("year2") is None:
        return _timestamp(int(fields["year"]), month, day, hour, minute, second)
    this_year = time.gmtime(now).tm_year
    year = this_year - this_year % 100 + int(fields["year2"]) + 100
    while calendar.timegm((year, month, day, hour, minute, second)) > now + 50 * _YEAR:
        year -= 100
    return _timestamp(year, month, day, hour, minute, second)


def _timestamp(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float | None:
    """The POSIX time of a UTC date and time; None where there is no such date."""
    valid = (
        year >= 1
        and 1 <= day <= calendar.monthrange(year, month)[1]
        and hour < 24
        and minute < 60
        and second <= 60  # a leap second
    )
    return float(calendar.timegm((year, month, day, hour, minute, second))) if valid else None


def _retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a server asks for, in seconds (`math.inf` for a number too large for a float): a valid
    `retry-after-ms`, else a valid `Retry-After` (seconds or an HTTP-date; a date in the past is no wait).
    None when neither is valid: a sign, an exponent, `nan`, `inf` or garbage makes a value invalid (see
    `_DECIMAL`), and an invalid `retry-after-ms` gives way to `Retry-After`."""
    value = headers.get("retry-after-ms")
    if value is not None and _DECIMAL.fullmatch(value := value.strip(" \t")):
        return float(value) / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip(" \t")
    if _DECIMAL.fullmatch(value):
        return float(value)
    now = time.time() if now is None else now
    when = _http_date(value, now)
    return None if when is None else max(when - now, 0.0)


def _make_transport(transport: str | Transport) -> Transport:
    if transport == "aiohttp":
        from streamkit.transports.aiohttp import AiohttpTransport

        return AiohttpTransport()
    if transport == "httpx":
        from streamkit.transports.httpx import HttpxTransport

        return HttpxTransport()
    if isinstance(transport, str):
        raise ValueError(f"unknown transport {transport!r}: use 'aiohttp', 'httpx' or a Transport")
    return transport


def _split(params: Mapping[str, object]) -> tuple[dict[str, object], _RequestOptions]:
    body = {k: v for k, v in params.items() if k not in _OPTION_NAMES}
    options = cast(_RequestOptions, {k: v for k, v in params.items() if k in _OPTION_NAMES})
    return body, options


# Each API's request from the named arguments of its `create`, for both clients: the body (the parameters,
# None ones included, which `_json_body` leaves out) and the request options.
_Call = tuple[dict[str, object], _RequestOptions]


def _chat_body(
    model: str, messages: Sequence[Mapping[str, object]], stream: bool, params: Mapping[str, object]
) -> _Call:
    body, options = _split(params)
    return {"model": model, "messages": list(messages), "stream": stream, **body}, options


def _completion_body(
    model: str, prompt: str | Sequence[str], stream: bool, params: Mapping[str, object]
) -> _Call:
    body, options = _split(params)
    prompt = prompt if isinstance(prompt, str) else list(prompt)
    return {"model": model, "prompt": prompt, "stream": stream, **body}, options


def _response_body(
    model: str, input: str | Sequence[Mapping[str, object]], stream: bool, params: Mapping[str, object]
) -> _Call:
    body, options = _split(params)
    input = input if isinstance(input, str) else list(input)
    return {"model": model, "input": input, "stream": stream, **body}, options


def _message_body(
    model: str,
    messages: Sequence[Mapping[str, object]],
    max_tokens: int,
    stream: bool,
    params: Mapping[str, object],
) -> _Call:
    body, options = _split(params)
    return {
        "model": model,
        "messages": list(messages),
        "max_tokens": max_tokens,
        "stream": stream,
        **body,
    }, options


class ChatCompletions:
    """`client.chat.completions`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, object]],
        stream: Literal[True],
        **params: Unpack[ChatParams],
    ) -> ChatCompletionStream: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, object]],
        stream: Literal[False] = False,
        **params: Unpack[ChatParams],
    ) -> ChatCompletion: ...

    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, object]],
        stream: bool = False,
        **params: Unpack[ChatParams],
    ) -> ChatCompletionStream | ChatCompletion:
        """Create a chat completion: a `ChatCompletionStream` with `stream=True`, else a `ChatCompletion`.

        Raises the `APIStatusError` subclass of a non-2xx answer, `UnexpectedContentType` for a 2xx stream
        answer that is not an event stream, and the transport and timeout errors of `streamkit.errors`.
        """
        body, options = _chat_body(model, messages, stream, params)
        if stream:
            return await self._client._stream(ChatCompletionStream, body, options)
        return await self._client._whole(CHAT, body, options)


class _Chat:
    def __init__(self, client: AsyncClient) -> None:
        self.completions = ChatCompletions(client)


class Completions:
    """`client.completions`: the legacy `/v1/completions`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        model: str,
        prompt: str | Sequence[str],
        stream: Literal[True],
        **params: Unpack[CompletionParams],
    ) -> CompletionStream: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        prompt: str | Sequence[str],
        stream: Literal[False] = False,
        **params: Unpack[CompletionParams],
    ) -> Completion: ...

    async def create(
        self,
        *,
        model: str,
        prompt: str | Sequence[str],
        stream: bool = False,
        **params: Unpack[CompletionParams],
    ) -> CompletionStream | Completion:
        """Create a legacy completion: a `CompletionStream` with `stream=True`, else a `Completion`.

        Raises as `chat.completions.create` does.
        """
        body, options = _completion_body(model, prompt, stream, params)
        if stream:
            return await self._client._stream(CompletionStream, body, options)
        return await self._client._whole(COMPLETIONS, body, options)


class Responses:
    """`client.responses`: the Responses API, `/v1/responses`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        model: str,
        input: str | Sequence[Mapping[str, object]],
        stream: Literal[True],
        **params: Unpack[ResponseParams],
    ) -> ResponseStream: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        input: str | Sequence[Mapping[str, object]],
        stream: Literal[False] = False,
        **params: Unpack[ResponseParams],
    ) -> Response: ...

    async def create(
        self,
        *,
        model: str,
        input: str | Sequence[Mapping[str, object]],
        stream: bool = False,
        **params: Unpack[ResponseParams],
    ) -> ResponseStream | Response:
        """Create a response: a `ResponseStream` of typed events with `stream=True`, else a `Response`.
        `input` is a string or a list of input items (messages, function call outputs, ...).

        Raises as `chat.completions.create` does; in the stream, `response.failed` and `error` events raise
        `StreamAPIError`.
        """
        body, options = _response_body(model, input, stream, params)
        if stream:
            resumable = bool(body.get("background"))  # its events are kept: a broken stream picks up
            return await self._client._stream(ResponseStream, body, options, resumable)
        return await self._client._whole(RESPONSES, body, options)

    @overload
    async def retrieve(
        self,
        response_id: str,
        *,
        stream: Literal[True],
        starting_after: int | None = None,
        **options: Unpack[_GetOptions],
    ) -> ResponseStream: ...

    @overload
    async def retrieve(
        self,
        response_id: str,
        *,
        stream: Literal[False] = False,
        starting_after: None = None,
        **options: Unpack[_GetOptions],
    ) -> Response: ...

    async def retrieve(
        self,
        response_id: str,
        *,
        stream: bool = False,
        starting_after: int | None = None,
        **options: Unpack[_GetOptions],
    ) -> ResponseStream | Response:
        """A stored response (`GET /responses/{id}`): the `Response` as it stands, or with `stream=True`, a
        `ResponseStream` of a background response's events, those after `starting_after` (a
        `sequence_number`), then the rest as they come. That stream resumes by itself where its connection
        breaks, as a background `create` stream does.

        Raises `NotFoundError` for an unknown id, and as `create` does.
        """
        client = self._client
        request, timeout = client._resume_request(response_id, starting_after, options, stream)
        if not stream:
            return await client._body(request, timeout, RESPONSES.final_from_json)
        return await client._open_stream(ResponseStream, request, timeout, options, resumable=True)

    async def cancel(self, response_id: str, **options: Unpack[_GetOptions]) -> Response:
        """Cancel a background response (`POST /responses/{id}/cancel`) and return it as it stands, its
        `status` `cancelled`. Its stream, if one is read, ends. Raises `NotFoundError` for an unknown id and
        the `BadRequestError` of one that is not background, and as `create` does."""
        request, timeout = self._client._cancel_request(response_id, options)
        return await self._client._body(request, timeout, RESPONSES.final_from_json)


class Messages:
    """`client.messages`: Anthropic Messages, `/v1/messages`, with `x-api-key` and `anthropic-version`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, object]],
        max_tokens: int,
        stream: Literal[True],
        **params: Unpack[MessageParams],
    ) -> MessageStream: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, object]],
        max_tokens: int,
        stream: Literal[False] = False,
        **params: Unpack[MessageParams],
    ) -> Message: ...

    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, object]],
        max_tokens: int,
        stream: bool = False,
        **params: Unpack[MessageParams],
    ) -> MessageStream | Message:
        """Create a message: a `MessageStream` of typed events with `stream=True`, else a `Message`.

        Raises as `chat.completions.create` does (a 529 `overloaded_error` is an `InternalServerError`,
        retried before the answer starts); in the stream, an `error` event raises `StreamAPIError` with
        the error's `type`.
        """
        body, options = _message_body(model, messages, max_tokens, stream, params)
        if stream:
            return await self._client._stream(MessageStream, body, options)
        return await self._client._whole(MESSAGES, body, options)


class ModelInfo(Model):
    """A model that an endpoint lists: OpenAI's shape (`id`, `object`, `created`, `owned_by`) or
    Anthropic's (`type`, `id`, `display_name`, `created_at`); a field the endpoint leaves out is None."""

    id: str
    object: str | None = None
    created: int | None = None
    """When the model was made, in seconds since the epoch (OpenAI)."""
    owned_by: str | None = None
    type: str | None = None
    display_name: str | None = None
    created_at: str | None = None
    """When the model was released, as an RFC 3339 time (Anthropic)."""


class _ModelPage(Model):
    """One answer of `/models`: OpenAI's whole list, or one page of Anthropic's."""

    data: list[ModelInfo]
    has_more: bool | None = None
    last_id: str | None = None


_ModelList = list[ModelInfo]  # `list` is a method's name in `Models`


class Models:
    """`client.models`: the models an endpoint serves."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(
        self, *, provider: Literal["openai", "anthropic"] = "openai", **options: Unpack[_GetOptions]
    ) -> _ModelList:
        """The models the provider's endpoint lists: `GET {base_url}/models` of the OpenAI-dialect APIs by
        default; with `provider="anthropic"`, that of `client.messages` (Anthropic's `/v1/models`, with
        its key header and `anthropic-version`), whose pages are all fetched (`after_id`).

        Keys, redirects, retries, timeouts (per request) and errors are those of `create`: the
        `APIStatusError` subclass of a non-2xx answer, `ChunkDecodeError` for an answer that is not a list
        of models, and the transport and timeout errors of `streamkit.errors`.
        """
        client = self._client
        models: _ModelList = []
        query = dict(options.get("extra_query", {}))
        for _ in range(MAX_MODEL_PAGES):
            request, timeout = client._build(provider, "/models", None, {**options, "extra_query": query})
            page = await client._body(request, timeout, _ModelPage.from_json)
            models += page.data
            if not (page.has_more and page.last_id and page.data):
                break
            query["after_id"] = page.last_id
        return models
