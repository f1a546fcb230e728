"""A pytest plugin (entry point `streamkit`) with a `streamkit_server` fixture for your own tests.

    def test_my_app(streamkit_server):
        client = streamkit.AsyncClient(base_url=streamkit_server.base_url, api_key="test")
        ...

The server runs in a thread of its own for the whole test session, so it serves sync tests and async tests on
any backend alike. Per-request timing and faults go in the `x-streamkit-timing` and `x-streamkit-fault`
headers (see `streamkit.server.faults`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streamkit.server.runner import ServerThread


@pytest.fixture(scope="session")
def streamkit_server() -> Iterator[ServerThread]:
    """The built-in OpenAI-compatible server on a free loopback port, serving the `scripted` model."""
    with ServerThread() as server:
        yield server
