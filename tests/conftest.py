from __future__ import annotations

import signal
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
OPENAI_STREAMS = sorted((FIXTURES / "openai").glob("*.bin"))


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_reaches_children() -> None:
    """Tests stop the commands they start with SIGINT, as Ctrl-C does. A suite started with SIGINT ignored
    (a background job of a shell without job control) would hand that on to every child, which would then
    ignore it too and run on: the suite takes SIGINT back first, so that its children start as from a
    terminal."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
