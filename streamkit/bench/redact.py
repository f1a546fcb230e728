"""What the bench writes never keeps a URL's credentials: result files, plots, saved requests, the table and
its error lines show the endpoint without them (no I/O).

A base URL may carry a password (`http://user:password@host/v1`, sent as basic auth) or a key in its query
(`?key=...`, `?api_key=...`, a signature). `public` takes out the userinfo, and puts `***` for the value of
each query parameter whose name looks like a credential's. Other text is left as it is.
"""

from __future__ import annotations

import re

__all__ = ["public"]

# `scheme://userinfo@`: the userinfo runs to the last `@` before the host's end (`/`, `?`, `#` or a space),
# so that a password with a bare `@` in it goes too.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@")
# A query parameter, `?name=value` or `&name=value`. The name spans no `?`, so that each match is found in
# one pass however the text goes on (`????...` would take a pattern that allows it quadratic time).
_PARAMETER = re.compile(r"([?&][^=&#?\s]*=)([^&#\s]+)")
# The names of credentials: `key`, `api_key`, `access_token`, `X-Amz-Signature`, `client_secret`, ...
_CREDENTIAL = re.compile(r"(?i)key|token|secret|passw|sig|auth|credential")


def public(text: str) -> str:
    """`text` with every URL in it stripped of its userinfo, and of the values of its query parameters that
    are named like credentials (each becomes `***`)."""
    return _PARAMETER.sub(_hidden, _USERINFO.sub(r"\1", text))


def _hidden(parameter: re.Match[str]) -> str:
    name = parameter[1]
    return f"{name}***" if _CREDENTIAL.search(name) else parameter[0]
