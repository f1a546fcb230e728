"""A plain HTTP/1.1 client over a socket, for checking the server's exact bytes on the wire.

It parses the chunked transfer coding itself, so a test sees each write of the server as one piece, and it
says whether the body ended properly (the last, empty chunk) or the connection was cut.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    pieces: list[bytes] = field(default_factory=list)  # the body as the server wrote it, piece by piece
    complete: bool = False  # the body ended with the last, empty chunk (or its full Content-Length)
    seconds: float = 0.0

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)

    def json(self) -> Any:
        return json.loads(self.body)


def post(
    url: str,
    path: str,
    body: dict[str, Any] | bytes,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> RawResponse:
    """Send `body` (a JSON object, or bytes as they are) and read the whole response."""
    parts = urlsplit(url)
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    start = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    response = RawResponse(int(status_line.split()[1]), {}, seconds=time.monotonic() - start)
    for line in header_lines:
        name, _, value = line.partition(":")
        response.headers[name.strip().lower()] = value.strip()
    if response.headers.get("transfer-encoding") == "chunked":
        while rest:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line, 16)
            if size == 0:
                response.complete = True
                break
            if len(rest) < size + 2:
                response.pieces.append(rest[:size])
                break
            response.pieces.append(rest[:size])
            rest = rest[size + 2 :]
    else:
        response.pieces = [rest]
        response.complete = len(rest) == int(response.headers.get("content-length", len(rest)))
    return response
