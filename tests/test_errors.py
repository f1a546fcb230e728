"""The exception tree of DESIGN.md, and the public names."""

from __future__ import annotations

import builtins
import types

import pytest

import streamkit
from streamkit import errors


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (errors.APIError, errors.StreamkitError),
        (errors.APIStatusError, errors.APIError),
        (errors.BadRequestError, errors.APIStatusError),
        (errors.AuthenticationError, errors.APIStatusError),
        (errors.PermissionDeniedError, errors.APIStatusError),
        (errors.NotFoundError, errors.APIStatusError),
        (errors.RateLimitError, errors.APIStatusError),
        (errors.InternalServerError, errors.APIStatusError),
        (errors.StreamAPIError, errors.APIError),
        (errors.TransportError, errors.StreamkitError),
        (errors.ConnectError, errors.TransportError),
        (errors.ReadError, errors.TransportError),
        (errors.TimeoutError, errors.TransportError),
        (errors.TimeoutError, builtins.TimeoutError),
        (errors.ConnectTimeout, errors.TimeoutError),
        (errors.FirstTokenTimeout, errors.TimeoutError),
        (errors.IdleTimeout, errors.TimeoutError),
        (errors.TotalTimeout, errors.TimeoutError),
        (errors.ProtocolError, errors.StreamkitError),
        (errors.SSEProtocolError, errors.ProtocolError),
        (errors.UnexpectedContentType, errors.ProtocolError),
        (errors.ChunkDecodeError, errors.ProtocolError),
        (errors.ChunkDecodeError, ValueError),
        (errors.IncompleteStreamError, errors.ProtocolError),
    ],
)
def test_tree(child: type, parent: type) -> None:
    assert issubclass(child, parent)


def test_timeouts_are_caught_as_builtin_timeout_error() -> None:
    with pytest.raises(builtins.TimeoutError):
        raise errors.IdleTimeout("no bytes for 60 s")


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (429, errors.RateLimitError),
        (500, errors.InternalServerError),
        (503, errors.InternalServerError),
        (409, errors.APIStatusError),
    ],
)
def test_status_error_class(status: int, cls: type[errors.APIStatusError]) -> None:
    assert errors.status_error_class(status) is cls


def test_api_status_error_fields() -> None:
    body = {"error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": "x"}}
    err = errors.BadRequestError(
        "bad",
        status_code=400,
        headers={"a": "b"},
        body=body,
        code="x",
        type="invalid_request_error",
        param="n",
    )
    assert (err.message, err.status_code, err.code, err.type, err.param) == (
        "bad",
        400,
        "x",
        "invalid_request_error",
        "n",
    )
    assert err.body is body
    assert err.partial is None
    assert str(err) == "bad"


def test_partial_and_raw() -> None:
    partial = streamkit.ChatCompletion(id="c")
    err = errors.StreamAPIError("boom", raw='{"error": "boom"}', partial=partial)
    assert err.partial is partial
    assert err.raw == '{"error": "boom"}'
    incomplete = errors.IncompleteStreamError("ended early", partial=partial)
    assert incomplete.partial is partial
    content = errors.UnexpectedContentType("html", content_type="text/html", raw="<html>")
    assert (content.content_type, content.raw) == ("text/html", "<html>")


def test_all_is_sorted_and_complete() -> None:
    assert streamkit.__all__ == sorted(streamkit.__all__)
    public = {
        name
        for name in dir(streamkit)
        if not name.startswith("_") and not isinstance(getattr(streamkit, name), types.ModuleType)
    }
    assert public == set(streamkit.__all__) - {"__version__"}
    for name in errors.__all__:
        if name not in ("api_error_fields", "status_error_class"):
            assert getattr(streamkit, name) is getattr(errors, name)


def test_core_imports_no_transport() -> None:
    import ast
    from pathlib import Path

    package = Path(streamkit.__file__).parent
    core = ["sse.py", "errors.py", *(f"protocols/{p.name}" for p in (package / "protocols").glob("*.py"))]
    assert "protocols/base.py" in core and "protocols/responses.py" in core
    for name in core:
        tree = ast.parse((package / name).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        ours = {m for m in imported if m and m.startswith("streamkit")}
        assert all(
            m in ("streamkit.errors", "streamkit.sse") or m.startswith("streamkit.protocols") for m in ours
        )
        io = ("aiohttp", "httpx", "anyio", "httpx_sse", "sniffio")
        assert not {m for m in imported if m and m.split(".")[0] in io}, name
