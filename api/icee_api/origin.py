"""The WebSocket ``Origin`` check: another web site must not drive icee from its
visitors' browsers (WebSockets are not covered by the same-origin policy).

No Origin header (curl, the Python client, other non-browser clients) passes. A
browser's Origin passes when its host[:port] is the Host the request was sent to
(same origin; the UI served by this api) or it is one of the configured origins
(``scheme://host[:port]``, or ``*`` for any).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit


def normalize(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: str | None, host: str | None, allowed: Sequence[str]) -> bool:
    if origin is None:
        return True
    value = normalize(origin)
    if "*" in allowed or value in {normalize(a) for a in allowed}:
        return True
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (sandboxed frames, file:) and the like
    return host is not None and parts.netloc == host.strip().lower()
