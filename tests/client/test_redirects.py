"""Redirects, which the client follows itself (the transports never do): no credential crosses origins.

Over real sockets on every (event loop, transport): an origin on 127.0.0.1 redirects each API's request to a
recording proxy on `localhost` (another host, so another origin) or to itself, and the proxy forwards it to
the built-in server for a real answer. With `MockTransport`: the method, body and URL of each hop, how far
credentials go, and that a redirect is no retry.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import streamkit
from streamkit.server import ServerThread
from streamkit.transports.base import Request
from streamkit.transports.mock import MockResponse, MockTransport
from tests.client.conftest import HI
from tests.client.webapp import serving

pytestmark = pytest.mark.anyio

# The headers that authenticate (lower case); none may reach another origin.
CREDENTIALS = {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"}


@dataclass(frozen=True)
class Seen:
    """A request that reached a server: where (`origin` or `other`), its method, path and headers."""

    where: str
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Origins:
    cross: str  # a base URL whose every request is redirected (307) to the other origin
    same: str  # a base URL whose every request is redirected (307, a relative Location) within its origin
    back: str  # redirected to the other origin, which redirects back to this one
    seen: list[Seen] = field(default_factory=list)


def forwarder(
    where: str, upstream: str, seen: list[Seen]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that records the request, then answers with what the built-in server answers to it."""

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        seen.append(Seen(where, request.method, request.path, headers))
        session = request.app[SESSION]
        sent = {k: v for k, v in request.headers.items() if k.lower() == "content-type"}
        url = f"{upstream}/{request.match_info['rest']}"
        async with session.request(request.method, url, data=await request.read(), headers=sent) as answer:
            response = web.StreamResponse(
                status=answer.status, headers={"Content-Type": answer.headers["Content-Type"]}
            )
            await response.prepare(request)
            async for data in answer.content.iter_any():
                await response.write(data)
            await response.write_eof()
            return response

    return forward


SESSION = web.AppKey("session", aiohttp.ClientSession)


async def session(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = aiohttp.ClientSession()
    yield
    await app[SESSION].close()


def redirect(location: Callable[[str], str]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def answer(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(location(request.match_info["rest"]))

    return answer


@pytest.fixture(scope="module")
def origins(streamkit_server: ServerThread) -> Iterator[Origins]:
    seen: list[Seen] = []
    ports: list[int] = []
    origin, other = web.Application(), web.Application()
    for app in (origin, other):
        app.cleanup_ctx.append(session)
    upstream = streamkit_server.base_url
    origin.router.add_route(
        "*", "/cross/v1/{rest:.*}", redirect(lambda rest: f"http://localhost:{ports[1]}/v1/{rest}")
    )
    origin.router.add_route("*", "/same/v1/{rest:.*}", redirect(lambda rest: f"/served/v1/{rest}"))
    origin.router.add_route(
        "*", "/back/v1/{rest:.*}", redirect(lambda rest: f"http://localhost:{ports[1]}/bounce/v1/{rest}")
    )
    origin.router.add_route("*", "/served/v1/{rest:.*}", forwarder("origin", upstream, seen))
    other.router.add_route(
        "*", "/bounce/v1/{rest:.*}", redirect(lambda rest: f"http://127.0.0.1:{ports[0]}/served/v1/{rest}")
    )
    other.router.add_route("*", "/v1/{rest:.*}", forwarder("other", upstream, seen))
    with serving(("127.0.0.1", origin), ("localhost", other)) as started:
        ports.extend(started)
        base = f"http://127.0.0.1:{ports[0]}"
        yield Origins(f"{base}/cross/v1", f"{base}/same/v1", f"{base}/back/v1", seen)


# Each call of each API, streamed and whole, and both lists of models: (name, the path it asks, the call).
Call = Callable[[streamkit.AsyncClient], Awaitable[object]]


async def streamed(stream: Awaitable[Any]) -> object:
    opened = await stream
    async with opened:
        return await opened.get_final()


CALLS: list[tuple[str, str, Call]] = [
    ("chat", "/v1/chat/completions", lambda c: c.chat.completions.create(model="scripted", messages=HI)),
    (
        "chat-stream",
        "/v1/chat/completions",
        lambda c: streamed(c.chat.completions.create(model="scripted", messages=HI, stream=True)),
    ),
    ("completions", "/v1/completions", lambda c: c.completions.create(model="scripted", prompt="hi")),
    (
        "completions-stream",
        "/v1/completions",
        lambda c: streamed(c.completions.create(model="scripted", prompt="hi", stream=True)),
    ),
    ("responses", "/v1/responses", lambda c: c.responses.create(model="scripted", input="hi")),
    (
        "responses-stream",
        "/v1/responses",
        lambda c: streamed(c.responses.create(model="scripted", input="hi", stream=True)),
    ),
    ("messages", "/v1/messages", lambda c: c.messages.create(model="scripted", messages=HI, max_tokens=8)),
    (
        "messages-stream",
        "/v1/messages",
        lambda c: streamed(c.messages.create(model="scripted", messages=HI, max_tokens=8, stream=True)),
    ),
    ("models", "/v1/models", lambda c: c.models.list()),
    ("anthropic-models", "/v1/models", lambda c: c.models.list(provider="anthropic")),
]
ANTHROPIC_CALLS = {"messages", "messages-stream", "anthropic-models"}


@dataclass(frozen=True)
class Keys:
    """A client's credentials from one source, and the headers each provider's requests carry."""

    client: dict[str, Any]
    secrets: list[str]
    openai: dict[str, str]  # lower-case header names
    anthropic: dict[str, str]


def keys(source: str, monkeypatch: pytest.MonkeyPatch) -> Keys:
    secret = f"sk-{source}-{uuid.uuid4().hex}"
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    if source == "api_key":
        return Keys(
            {"api_key": secret}, [secret], {"authorization": f"Bearer {secret}"}, {"x-api-key": secret}
        )
    if source == "env":
        anthropic = f"sk-ant-{uuid.uuid4().hex}"
        monkeypatch.setenv("OPENAI_API_KEY", secret)
        monkeypatch.setenv("ANTHROPIC_API_KEY", anthropic)
        return Keys({}, [secret, anthropic], {"authorization": f"Bearer {secret}"}, {"x-api-key": anthropic})
    assert source == "default_headers"
    # Names in any case: which headers are credentials does not depend on how they are spelled.
    given = {
        "api-key": secret,
        "Cookie": f"session={secret}",
        "Proxy-Authorization": f"Basic {secret}",
        "AUTHORIZATION": f"Bearer {secret}",
    }
    expected = {name.lower(): value for name, value in given.items()}
    return Keys({"default_headers": given}, [secret], expected, expected)


SOURCES = ["api_key", "env", "default_headers"]


@pytest.mark.parametrize("source", SOURCES)
async def test_no_credential_crosses_origins(
    origins: Origins, transport: Any, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = keys(source, monkeypatch)
    async with streamkit.AsyncClient(
        base_url=origins.cross, transport=transport, **credentials.client
    ) as client:
        for name, path, call in CALLS:
            origins.seen.clear()
            assert await call(client), name
            assert [(s.where, s.method, s.path) for s in origins.seen] == [
                ("other", "GET" if "models" in name else "POST", path)
            ], name
            headers = origins.seen[0].headers
            assert not CREDENTIALS & set(headers), (name, headers)
            assert not any(secret in value for secret in credentials.secrets for value in headers.values())


@pytest.mark.parametrize("source", SOURCES)
async def test_a_redirect_within_the_origin_keeps_the_credentials(
    origins: Origins, transport: Any, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = keys(source, monkeypatch)
    async with streamkit.AsyncClient(
        base_url=origins.same, transport=transport, **credentials.client
    ) as client:
        for name, path, call in CALLS:
            origins.seen.clear()
            assert await call(client), name
            assert [(s.where, s.path) for s in origins.seen] == [("origin", f"/served{path}")], name
            expected = credentials.anthropic if name in ANTHROPIC_CALLS else credentials.openai
            headers = origins.seen[0].headers
            assert {k: headers.get(k) for k in expected} == expected, name


async def test_credentials_once_dropped_stay_dropped(origins: Origins, transport: Any) -> None:
    """Sent to another origin and back: the hop back to the first origin goes without them too."""
    secret = "sk-" + uuid.uuid4().hex
    async with streamkit.AsyncClient(
        base_url=origins.back, api_key=secret, transport=transport, default_headers={"Cookie": secret}
    ) as client:
        origins.seen.clear()
        assert (await client.chat.completions.create(model="scripted", messages=HI)).choices
    assert [(s.where, s.path) for s in origins.seen] == [("origin", "/served/v1/chat/completions")]
    assert not CREDENTIALS & set(origins.seen[0].headers)


# Each hop, exactly, with MockTransport.

BASE = "http://api.test/v1"
CHAT_URL = f"{BASE}/chat/completions"
WHOLE = (
    b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}]}'
)
JSON = {"content-type": "application/json"}


# These tests need no server, so one run on asyncio and one on trio is enough.
MOCK = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


def answered(
    *responses: MockResponse, api_key: str = "sk-" + "k" * 20, **kwargs: Any
) -> tuple[streamkit.AsyncClient, MockTransport, list[MockResponse]]:
    """A client over a MockTransport that gives these responses in order."""
    queue = list(responses)
    transport = MockTransport(lambda request: queue.pop(0))
    client = streamkit.AsyncClient(base_url=BASE, api_key=api_key, transport=transport, **kwargs)
    return client, transport, list(responses)


def moved(status: int, location: str) -> MockResponse:
    return MockResponse(status, b"<p>moved</p>", {"location": location, "content-type": "text/html"})


def hops(transport: MockTransport) -> list[tuple[str, str, bytes]]:
    return [(r.method, r.url, r.content) for r in transport.requests]


@MOCK
@pytest.mark.parametrize(
    ("status", "method"),
    [(301, "GET"), (302, "GET"), (303, "GET"), (307, "POST"), (308, "POST")],
)
async def test_which_redirects_keep_the_method_and_body(status: int, method: str) -> None:
    client, transport, _ = answered(moved(status, "/v2/chat"), MockResponse(200, WHOLE, JSON))
    await client.chat.completions.create(model="m", messages=HI)
    first, second = transport.requests
    assert (first.method, second.method, second.url) == ("POST", method, "http://api.test/v2/chat")
    if method == "POST":
        assert second.content == first.content and second.headers["Content-Type"] == "application/json"
    else:
        assert second.content == b"" and "Content-Type" not in second.headers


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@MOCK
async def test_a_get_stays_a_get(status: int) -> None:
    client, transport, _ = answered(
        moved(status, "https://elsewhere.test/models"), MockResponse(200, b'{"data":[{"id":"a"}]}', JSON)
    )
    assert [m.id for m in await client.models.list()] == ["a"]
    assert [(r.method, r.url) for r in transport.requests] == [
        ("GET", f"{BASE}/models"),
        ("GET", "https://elsewhere.test/models"),
    ]


@MOCK
@pytest.mark.parametrize(
    ("location", "url"),
    [
        ("../x?y=1", "http://api.test/v1/x?y=1"),  # RFC 3986 §5.2: against /v1/chat/
        ("chat2", "http://api.test/v1/chat/chat2"),
        ("//other.test/p", "http://other.test/p"),
        ("http:///p", "http://api.test/p"),  # no host: the request's, as httpx and urllib take it
        ("HTTPS://Other.Test:8443/p", "https://other.test:8443/p"),
    ],
)
async def test_a_location_is_resolved_against_the_request_url(location: str, url: str) -> None:
    client, transport, _ = answered(moved(307, location), MockResponse(200, WHOLE, JSON))
    await client.chat.completions.create(model="m", messages=HI)
    assert transport.requests[1].url.lower() == url.lower()


@MOCK
@pytest.mark.parametrize(
    ("location", "kept"),
    [
        ("http://api.test/v2", True),  # the same origin
        ("http://API.test:80/v2", True),  # hosts are case-insensitive, and 80 is http's port
        ("/v2", True),
        ("http://api.test:8080/v2", False),  # another port
        ("https://api.test/v2", False),  # another scheme
        ("http://other.test/v2", False),  # another host
        ("http://sub.api.test/v2", False),
    ],
)
async def test_what_is_another_origin(location: str, kept: bool) -> None:
    secret = "sk-" + "k" * 20
    client, transport, _ = answered(
        moved(307, location),
        MockResponse(200, WHOLE, JSON),
        default_headers={"Cookie": "c=1", "api-key": secret, "Proxy-Authorization": "Basic x"},
    )
    await client.chat.completions.create(model="m", messages=HI, extra_headers={"X-Api-Key": secret})
    sent = {k.lower(): v for k, v in transport.requests[1].headers.items()}
    assert CREDENTIALS & set(sent) == (CREDENTIALS if kept else set())
    assert sent["user-agent"].startswith("streamkit/")  # only credentials are dropped


@MOCK
async def test_a_redirect_body_is_closed() -> None:
    client, _, (redirect, answer) = answered(moved(302, "/v2"), MockResponse(200, WHOLE, JSON))
    await client.chat.completions.create(model="m", messages=HI)
    assert redirect.closed and answer.closed


@pytest.mark.parametrize("status", [300, 304, 305, 306])
@MOCK
async def test_statuses_that_are_not_redirects_to_follow(status: int) -> None:
    client, transport, _ = answered(moved(status, "/v2"))
    with pytest.raises(streamkit.APIStatusError) as caught:
        await client.chat.completions.create(model="m", messages=HI)
    assert caught.value.status_code == status and len(transport.requests) == 1


@MOCK
async def test_a_redirect_without_a_location_is_a_status_error() -> None:
    client, transport, _ = answered(MockResponse(307, b"", JSON))
    with pytest.raises(streamkit.APIStatusError) as caught:
        await client.chat.completions.create(model="m", messages=HI)
    assert caught.value.status_code == 307 and len(transport.requests) == 1


@MOCK
async def test_a_redirect_is_no_retry() -> None:
    # max_retries=0: the redirects are followed all the same, and a stream's metrics count one attempt.
    sse = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n'
    client, transport, _ = answered(
        moved(307, "/a"), moved(308, "/b"), MockResponse(200, sse + b"data: [DONE]\n\n"), max_retries=0
    )
    stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
    assert (await stream.get_final_completion()).choices[0].message.content == "Hi"
    assert stream.metrics.attempts == 1
    assert [r.url for r in transport.requests] == [CHAT_URL, "http://api.test/a", "http://api.test/b"]


@MOCK
async def test_a_retry_starts_again_from_the_first_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streamkit.client.BACKOFF_START", 0.001)
    client, transport, _ = answered(
        moved(307, "https://other.test/x"),
        MockResponse(503, b"{}", JSON),
        moved(307, "https://other.test/x"),
        MockResponse(200, WHOLE, JSON),
        max_retries=1,
    )
    await client.chat.completions.create(model="m", messages=HI)
    assert [r.url for r in transport.requests] == [CHAT_URL, "https://other.test/x"] * 2
    # Each attempt starts with the credentials, and drops them where it leaves the origin.
    assert ["Authorization" in r.headers for r in transport.requests] == [True, False, True, False]


@MOCK
async def test_a_stale_connection_on_a_hop_is_sent_again_at_once() -> None:
    stale = streamkit.ReadError("the connection broke")
    stale.stale = True
    responses: list[MockResponse | BaseException] = [
        moved(307, "/a"),
        stale,
        moved(307, "/a"),
        MockResponse(200, WHOLE, JSON),
    ]

    def handler(request: Request) -> MockResponse:
        answer = responses.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    transport = MockTransport(handler)
    client = streamkit.AsyncClient(base_url=BASE, transport=transport, max_retries=0)
    await client.chat.completions.create(model="m", messages=HI)
    assert [r.url for r in transport.requests] == [CHAT_URL, "http://api.test/a"] * 2


@MOCK
async def test_twenty_redirects_are_followed_and_no_more() -> None:
    chain = [moved(307, f"/hop/{i}") for i in range(20)]
    client, transport, _ = answered(*chain, MockResponse(200, WHOLE, JSON))
    await client.chat.completions.create(model="m", messages=HI)
    assert len(transport.requests) == 21
    client, transport, _ = answered(*[moved(307, f"/hop/{i}") for i in range(21)])
    with pytest.raises(streamkit.ProtocolError, match="redirected too many times"):
        await client.chat.completions.create(model="m", messages=HI)
    assert len(transport.requests) == 21


@MOCK
@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("ftp://api.test/x", "the server redirected to 'ftp://api.test/x', which is not an http(s) URL"),
        ("http://[::1/x", "the server redirected to an invalid URL (Invalid IPv6 URL): 'http://[::1/x'"),
        ("https:///x", "the server redirected to an invalid URL (no host): 'https:///x'"),
        (
            "http://a b/x",
            "the server redirected to an invalid URL (a space or control character): 'http://a b/x'",
        ),
        # The key, should a server put it in the Location, is not in the error.
        (f"ftp://{'k' * 20}@x/", "the server redirected to 'ftp://***@x/', which is not an http(s) URL"),
    ],
)
async def test_a_location_that_is_not_an_http_url(location: str, message: str) -> None:
    client, transport, _ = answered(moved(307, location), MockResponse(200, WHOLE, JSON), api_key="k" * 20)
    with pytest.raises(streamkit.ProtocolError) as caught:
        await client.chat.completions.create(model="m", messages=HI)
    assert type(caught.value) is streamkit.ProtocolError and caught.value.message == message
    assert len(transport.requests) == 1
