"""`client.models.list()`: the models an endpoint lists, by the rules of every other request (keys,
redirects, retries, time limits, typed errors), on every (event loop, transport); and the `streamkit chat`
and `streamkit bench` helper that picks the first of them."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import streamkit
from streamkit.bench.cli import listed_model
from streamkit.server import ServerConfig, ServerThread
from streamkit.transports.base import Request
from streamkit.transports.mock import MockResponse, MockTransport
from tests.client.webapp import serving
from tests.hostile import HostileServer, Script, Stall, no_leaks

pytestmark = pytest.mark.anyio

RIGHT_KEY = "sk-right-key-" + uuid.uuid4().hex
ANTHROPIC_KEY = "sk-ant-" + uuid.uuid4().hex
# The built-in server lists its one model in OpenAI's shape.
SCRIPTED = streamkit.ModelInfo(id="scripted", object="model", created=0, owned_by="streamkit")
# Anthropic's shape, over two pages, with fields streamkit does not know.
ANTHROPIC_PAGES = {
    None: {
        "data": [
            {
                "type": "model",
                "id": "claude-a",
                "display_name": "Claude A",
                "created_at": "2025-01-01T00:00:00Z",
                "capabilities": {"vision": True},
            },
            {
                "type": "model",
                "id": "claude-b",
                "display_name": "Claude B",
                "created_at": "2025-02-01T00:00:00Z",
            },
        ],
        "has_more": True,
        "first_id": "claude-a",
        "last_id": "claude-b",
    },
    "claude-b": {
        "data": [
            {
                "type": "model",
                "id": "claude-c",
                "display_name": "Claude C",
                "created_at": "2025-03-01T00:00:00Z",
            }
        ],
        "has_more": False,
        "first_id": "claude-c",
        "last_id": "claude-c",
    },
}
CLAUDES = [
    streamkit.ModelInfo(
        id="claude-a", type="model", display_name="Claude A", created_at="2025-01-01T00:00:00Z"
    ),
    streamkit.ModelInfo(
        id="claude-b", type="model", display_name="Claude B", created_at="2025-02-01T00:00:00Z"
    ),
    streamkit.ModelInfo(
        id="claude-c", type="model", display_name="Claude C", created_at="2025-03-01T00:00:00Z"
    ),
]


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[ServerThread]:
    with ServerThread(ServerConfig(api_key=RIGHT_KEY)) as server:
        yield server


@pytest.fixture(scope="module")
def anthropic() -> Iterator[str]:
    """An Anthropic-like `/v1/models`, in pages, that asks for Anthropic's headers; and `/empty/v1/models`,
    which lists nothing. Yields its URL, with no `/v1` (as ANTHROPIC_BASE_URL is)."""

    async def models(request: web.Request) -> web.Response:
        headers = request.headers
        if headers.get("x-api-key") != ANTHROPIC_KEY or "Authorization" in headers:
            error = {"type": "authentication_error", "message": "invalid x-api-key"}
            return web.json_response({"type": "error", "error": error}, status=401)
        if headers.get("anthropic-version") != "2023-06-01":
            return web.json_response({"type": "error", "error": {"message": "no version"}}, status=400)
        return web.json_response(ANTHROPIC_PAGES[request.query.get("after_id")])

    async def empty(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/empty/v1/models", empty)
    with serving(("127.0.0.1", app)) as (port,):
        yield f"http://127.0.0.1:{port}"


def without_provider_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


# On every transport, against real servers


async def test_the_built_in_server_lists_its_model(keyed_server: ServerThread, transport: Any) -> None:
    async with streamkit.AsyncClient(
        base_url=keyed_server.base_url, api_key=RIGHT_KEY, transport=transport
    ) as c:
        assert await c.models.list() == [SCRIPTED]
        # The server takes Anthropic's key header as well.
        assert await c.models.list(provider="anthropic") == [SCRIPTED]


async def test_a_wrong_key_is_an_authentication_error(keyed_server: ServerThread, transport: Any) -> None:
    wrong = "sk-wrong-" + uuid.uuid4().hex
    async with streamkit.AsyncClient(base_url=keyed_server.base_url, api_key=wrong, transport=transport) as c:
        for provider in ("openai", "anthropic"):
            with pytest.raises(streamkit.AuthenticationError) as caught:
                await c.models.list(provider=provider)
            assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
            assert wrong not in f"{caught.value} {caught.value.body}"


async def test_anthropic_models_in_pages(
    anthropic: str, transport: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_provider_variables(monkeypatch)
    # A base URL given to the client serves every API as it is (with its /v1).
    async with streamkit.AsyncClient(
        base_url=f"{anthropic}/v1", api_key=ANTHROPIC_KEY, transport=transport
    ) as client:
        assert await client.models.list(provider="anthropic") == CLAUDES
    # ANTHROPIC_BASE_URL gets /v1, and ANTHROPIC_API_KEY is the key; OPENAI_API_KEY is never sent there.
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-" + uuid.uuid4().hex)
    async with streamkit.AsyncClient(transport=transport) as client:
        assert await client.models.list(provider="anthropic") == CLAUDES


async def test_a_stalled_answer_is_an_idle_timeout(
    hostile_server: HostileServer, transport: Any, anyio_backend_name: str
) -> None:
    name = uuid.uuid4().hex
    base_url = hostile_server.add(Script([Stall()]), name)
    async with (
        no_leaks(hostile_server, anyio_backend_name),
        streamkit.AsyncClient(base_url=base_url, transport=transport) as client,
    ):
        with pytest.raises(streamkit.IdleTimeout):
            await client.models.list(timeout=streamkit.Timeout(connect=2, idle=0.2, total=10))
    assert hostile_server.requests[name] == 1  # an idle timeout before the head is not retried


# The requests, exactly, with MockTransport

MOCK = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
JSON = {"content-type": "application/json"}
ONE = b'{"object":"list","data":[{"id":"m","object":"model","created":1,"owned_by":"me","extra":[1]}]}'


def mocked(*responses: MockResponse, **kwargs: Any) -> tuple[streamkit.AsyncClient, MockTransport]:
    queue = list(responses)
    transport = MockTransport(lambda request: queue.pop(0))
    return streamkit.AsyncClient(transport=transport, **kwargs), transport


@MOCK
async def test_the_openai_request(monkeypatch: pytest.MonkeyPatch) -> None:
    without_provider_variables(monkeypatch)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-anthropic-key")
    client, transport = mocked(MockResponse(200, ONE, JSON), base_url="http://api.test/v1")
    limits = streamkit.Timeout(connect=1.5, idle=2.5)
    models = await client.models.list(extra_headers={"X-Trace": "1"}, extra_query={"a": "b"}, timeout=limits)
    assert models == [streamkit.ModelInfo(id="m", object="model", created=1, owned_by="me")]
    (request,) = transport.requests
    assert (request.method, request.url, request.content) == ("GET", "http://api.test/v1/models?a=b", b"")
    assert (request.connect, request.idle, request.stream) == (1.5, 2.5, False)
    assert request.headers["Authorization"] == "Bearer sk-openai-key" and request.headers["X-Trace"] == "1"
    assert "Content-Type" not in request.headers and "x-api-key" not in request.headers


@MOCK
async def test_the_anthropic_request(monkeypatch: pytest.MonkeyPatch) -> None:
    without_provider_variables(monkeypatch)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-anthropic-key")
    client, transport = mocked(MockResponse(200, b'{"data":[]}', JSON))
    assert await client.models.list(provider="anthropic") == []
    (request,) = transport.requests
    assert (request.method, request.url) == ("GET", "https://api.anthropic.com/v1/models")
    assert request.headers["x-api-key"] == "sk-anthropic-key"
    assert request.headers["anthropic-version"] == "2023-06-01" and "Authorization" not in request.headers


@MOCK
async def test_pages_are_followed_by_after_id() -> None:
    def page(ids: list[str], more: bool) -> MockResponse:
        data = ",".join(f'{{"type":"model","id":"{i}"}}' for i in ids)
        last = f'"{ids[-1]}"' if ids else "null"
        return MockResponse(
            200, f'{{"data":[{data}],"has_more":{str(more).lower()},"last_id":{last}}}'.encode()
        )

    client, transport = mocked(page(["a", "b"], True), page(["c"], False), base_url="http://api.test/v1")
    models = await client.models.list(provider="anthropic", extra_query={"limit": "2"})
    assert [m.id for m in models] == ["a", "b", "c"]
    assert [r.url for r in transport.requests] == [
        "http://api.test/v1/models?limit=2",
        "http://api.test/v1/models?limit=2&after_id=b",
    ]


@MOCK
async def test_a_server_that_always_has_more_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streamkit.client.MAX_MODEL_PAGES", 3)
    pages = (
        MockResponse(200, f'{{"data":[{{"id":"m{i}"}}],"has_more":true,"last_id":"m{i}"}}'.encode())
        for i in range(9)
    )

    def next_page(request: Request) -> MockResponse:
        return next(pages)

    transport = MockTransport(next_page)
    client = streamkit.AsyncClient(base_url="http://api.test/v1", transport=transport)
    assert [m.id for m in await client.models.list()] == ["m0", "m1", "m2"]
    assert len(transport.requests) == 3


@MOCK
async def test_a_server_error_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streamkit.client.BACKOFF_START", 0.001)
    client, transport = mocked(
        MockResponse(503, b'{"error":{"message":"busy"}}', JSON),
        MockResponse(200, ONE, JSON),
        base_url="http://x/v1",
    )
    assert [m.id for m in await client.models.list()] == ["m"]
    assert len(transport.requests) == 2


@MOCK
@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (MockResponse(404, b'{"error":{"message":"no such route"}}', JSON), streamkit.NotFoundError),
        (MockResponse(400, b'{"error":{"message":"bad"}}', JSON), streamkit.BadRequestError),
        (
            MockResponse(200, b"<html>a proxy's page</html>", {"content-type": "text/html"}),
            streamkit.ChunkDecodeError,
        ),
        (MockResponse(200, b'{"models":["a"]}', JSON), streamkit.ChunkDecodeError),  # no `data`
        (
            MockResponse(200, b'{"data":[{"name":"a"}]}', JSON),
            streamkit.ChunkDecodeError,
        ),  # a model with no id
    ],
    ids=["404", "400", "html", "no-data", "no-id"],
)
async def test_errors_are_typed(answer: MockResponse, error: type[streamkit.StreamkitError]) -> None:
    client, transport = mocked(answer, base_url="http://x/v1")
    with pytest.raises(error):
        await client.models.list()
    assert len(transport.requests) == 1


# The first listed model, as `streamkit chat` and `streamkit bench` ask it (synchronously)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_listed_model(keyed_server: ServerThread, anthropic: str, transport: Any) -> None:
    assert listed_model(keyed_server.base_url, RIGHT_KEY, "openai", transport) == "scripted"
    assert listed_model(f"{anthropic}/v1", ANTHROPIC_KEY, "anthropic", transport) == "claude-a"
    wrong = "sk-wrong-" + uuid.uuid4().hex
    with pytest.raises(RuntimeError) as caught:
        listed_model(keyed_server.base_url, wrong, "openai", transport)
    assert str(caught.value) == (
        f"could not list the models at {keyed_server.base_url} (AuthenticationError: Incorrect API key "
        "provided.); pass --model"
    )
    with pytest.raises(RuntimeError) as caught:
        listed_model(f"{anthropic}/empty/v1", None, "openai", transport)
    assert str(caught.value) == f"{anthropic}/empty/v1/models lists no model; pass --model"


def test_bench_measures_the_first_listed_model(keyed_server: ServerThread, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    result = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "bench", "--base-url", keyed_server.base_url,
         "--api-key", RIGHT_KEY, "--num-requests", "2", "--no-calibrate", "--quiet", "--output", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = json.loads(out.read_text())
    assert run["model"] == "scripted" and run["completed"] == 2


def test_bench_says_what_to_do_when_it_cannot_list_the_models(keyed_server: ServerThread) -> None:
    wrong = "sk-wrong-" + uuid.uuid4().hex
    result = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "bench", "--base-url", keyed_server.base_url,
         "--api-key", wrong, "--num-requests", "1", "--no-calibrate", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and wrong not in result.stderr
    assert result.stderr == (
        f"streamkit bench: could not list the models at {keyed_server.base_url} (AuthenticationError: "
        "Incorrect API key provided.); pass --model\n"
    )
