from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
OPENAI_STREAMS = sorted((FIXTURES / "openai").glob("*.bin"))
