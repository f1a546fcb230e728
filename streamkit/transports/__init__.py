"""Transports: `aiohttp` (the default), `httpx` (on httpx-sse; also under trio) and `mock` (in-process)."""

from streamkit.transports.base import Request, Response, Transport

__all__ = ["Request", "Response", "Transport"]
