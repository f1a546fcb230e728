"""Redirects and keys through the sync client: a redirect to another origin drops every credential, one
within the origin keeps them, and the key shows nowhere: not in the client's repr, nor in an error, even
where a server echoes it back."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

import streamkit
from streamkit.server import ServerConfig, ServerThread
from tests.client.test_redirects import CREDENTIALS, Seen, forwarder, redirect, session
from tests.client.webapp import serving
from tests.sync.conftest import APIS, HI, REQUIRED, SAFE, body_of, planned, text_of


@dataclass
class Origins:
    cross: str  # a base URL whose every request is redirected (307) to another origin (`localhost`)
    same: str  # a base URL whose every request is redirected (307, a relative Location) within its origin
    seen: list[Seen] = field(default_factory=list)


@pytest.fixture(scope="module")
def origins(sync_server: ServerThread) -> Iterator[Origins]:
    """An origin on 127.0.0.1 that redirects, and a recording proxy in front of the suite's server on each
    origin (`tests.client.test_redirects`'s)."""
    seen: list[Seen] = []
    ports: list[int] = []
    origin, other = web.Application(), web.Application()
    for app in (origin, other):
        app.cleanup_ctx.append(session)
    upstream = sync_server.base_url
    origin.router.add_route(
        "*", "/cross/v1/{rest:.*}", redirect(lambda rest: f"http://localhost:{ports[1]}/v1/{rest}")
    )
    origin.router.add_route("*", "/same/v1/{rest:.*}", redirect(lambda rest: f"/served/v1/{rest}"))
    origin.router.add_route("*", "/served/v1/{rest:.*}", forwarder("origin", upstream, seen))
    other.router.add_route("*", "/v1/{rest:.*}", forwarder("other", upstream, seen))
    with serving(("127.0.0.1", origin), ("localhost", other)) as started:
        ports.extend(started)
        base = f"http://127.0.0.1:{ports[0]}"
        yield Origins(f"{base}/cross/v1", f"{base}/same/v1", seen)


# Each API's call, streamed and whole, and both lists of models: (name, its path, the call, what it gives).
Call = Callable[[streamkit.Client], Any]
STREAMED = [
    ("chat", "/chat/completions"),
    ("completions", "/completions"),
    ("responses", "/responses"),
    ("messages", "/messages"),
]
CALLS: list[tuple[str, str, Call]] = [
    *[(f"{api}-stream", f"/v1{path}", lambda c, api=api: stream_of(c, api)) for api, path in STREAMED],
    ("chat", "/v1/chat/completions", lambda c: text_of(c.chat.completions.create(model="m", messages=HI))),
    ("messages", "/v1/messages", lambda c: text_of(c.messages.create(model="m", messages=HI, max_tokens=8))),
    ("models", "/v1/models", lambda c: [m.id for m in c.models.list()]),
    ("anthropic-models", "/v1/models", lambda c: [m.id for m in c.models.list(provider="anthropic")]),
]
ANTHROPIC = {"messages-stream", "messages", "anthropic-models"}


def stream_of(client: streamkit.Client, api: str) -> str:
    stream = client.stream(api, {**REQUIRED[api], "model": "m"})
    with stream:
        text = "".join(stream.text_deltas())
    assert text == planned(api, body_of(api)).text
    return text


def test_every_api_is_called() -> None:
    assert {name.removesuffix("-stream") for name, _, _ in CALLS} >= set(APIS)


def test_no_credential_crosses_origins(origins: Origins) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    cookie = f"session={uuid.uuid4().hex}"
    with streamkit.Client(
        base_url=origins.cross, api_key=secret, timeout=SAFE, default_headers={"Cookie": cookie}
    ) as client:
        for name, path, call in CALLS:
            origins.seen.clear()
            assert call(client), name
            assert [(s.where, s.method, s.path) for s in origins.seen] == [
                ("other", "GET" if "models" in name else "POST", path)
            ], name
            headers = origins.seen[0].headers
            assert not CREDENTIALS & set(headers), (name, headers)
            assert not any(secret in value or cookie in value for value in headers.values()), name


def test_a_redirect_within_the_origin_keeps_the_credentials(origins: Origins) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    with streamkit.Client(base_url=origins.same, api_key=secret, timeout=SAFE) as client:
        for name, path, call in CALLS:
            origins.seen.clear()
            assert call(client), name
            assert [(s.where, s.path) for s in origins.seen] == [("origin", f"/served{path}")], name
            headers = origins.seen[0].headers
            if name in ANTHROPIC:
                assert headers["x-api-key"] == secret, name
            else:
                assert headers["authorization"] == f"Bearer {secret}", name


def test_the_key_is_not_in_the_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("ANTHROPIC_API_KEY", f"sk-ant-{uuid.uuid4().hex}")
    client = streamkit.Client(base_url="http://127.0.0.1:9/v1", api_key=secret)
    with client:
        assert secret not in repr(client) and secret not in str(client)
        assert secret not in repr(vars(client))  # nor in the repr of anything it holds


def test_a_refused_key_shows_in_no_error() -> None:
    secret = f"sk-secret-{uuid.uuid4().hex}"
    errors: list[streamkit.AuthenticationError] = []
    with (
        ServerThread(ServerConfig(api_key="sk-other")) as server,
        streamkit.Client(base_url=server.base_url, api_key=secret, timeout=SAFE) as client,
    ):
        for stream in (True, False):
            with pytest.raises(streamkit.AuthenticationError) as caught:
                client.chat.completions.create(model="scripted", messages=HI, stream=stream)
            errors.append(caught.value)
        with pytest.raises(streamkit.AuthenticationError) as listed:
            client.models.list()
        errors.append(listed.value)
    for error in errors:
        assert error.status_code == 401 and error.code == "invalid_api_key"
        assert secret not in f"{error!r} {error} {error.body} {error.__dict__} {error.args}"


@pytest.fixture(scope="module")
def echoing() -> Iterator[str]:
    """A server that echoes the key it was sent in whatever it answers: a 400's body, an error event inside
    a stream, a Location that is no http(s) URL."""

    def key_of(request: web.Request) -> str:
        return request.headers.get("Authorization", "").removeprefix("Bearer ")

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": f"bad key {key_of(request)}"}}, status=400)

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = '{"id":"x","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}'
        await response.write(f"data: {chunk}\n\n".encode())
        await response.write(f'data: {{"error": {{"message": "bad key {key_of(request)}"}}}}\n\n'.encode())
        return response

    async def move(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"ftp://{key_of(request)}@example.com/")

    app = web.Application()
    app.router.add_post("/refuse/v1/chat/completions", refuse)
    app.router.add_post("/stream/v1/chat/completions", stream)
    app.router.add_post("/move/v1/chat/completions", move)
    with serving(("127.0.0.1", app)) as (port,):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("path", "error_type"),
    [
        ("refuse", streamkit.BadRequestError),
        ("stream", streamkit.StreamAPIError),
        ("move", streamkit.ProtocolError),
    ],
)
def test_a_key_the_server_echoes_is_redacted(echoing: str, path: str, error_type: type[Exception]) -> None:
    secret = f"sk-secret-{uuid.uuid4().hex}"
    with (
        streamkit.Client(base_url=f"{echoing}/{path}/v1", api_key=secret, timeout=SAFE) as client,
        pytest.raises(error_type) as caught,
    ):
        client.chat.completions.create(model="m", messages=HI, stream=True).get_final()
    error = caught.value
    shown = f"{error!r} {error} {error.__dict__} {error.args}"
    assert secret not in shown and "***" in str(error)
    if isinstance(error, streamkit.StreamAPIError):
        assert text_of(error.partial) == "Hi"
