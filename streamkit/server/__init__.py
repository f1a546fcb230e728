"""The built-in OpenAI-compatible server (aiohttp.web): the scripted model, faults on demand, and runners."""

from streamkit.server.app import FAULT_HEADER, TIMING_HEADER, ServerConfig, ServerStats, create_app
from streamkit.server.faults import Faults, Timing
from streamkit.server.runner import RunningServer, ServerProcess, ServerThread, start_server

__all__ = [
    "FAULT_HEADER",
    "TIMING_HEADER",
    "Faults",
    "RunningServer",
    "ServerConfig",
    "ServerProcess",
    "ServerStats",
    "ServerThread",
    "Timing",
    "create_app",
    "start_server",
]
