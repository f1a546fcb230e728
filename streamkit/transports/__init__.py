"""Transports: `aiohttp` (the default), `httpx` (on httpx-sse; also under trio) and `mock` (in-process) for
`AsyncClient`; `httpx_sync` (httpx's blocking client) for `Client`."""

from streamkit.transports.base import Request, Response, SyncResponse, SyncTransport, Transport

__all__ = ["Request", "Response", "SyncResponse", "SyncTransport", "Transport"]
