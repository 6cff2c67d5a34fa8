"""API tokens (optional): bearer tokens read from files, e.g. a mounted Secret.

Each regular file in the tokens directory is one token: the file name is the
token's name (used for quotas and logs, never the token itself), its content the
token. Kubernetes updates a mounted Secret in place; the directory is looked at
again at most every ``reload_seconds`` when a request comes, and re-read when it
changed, so new and revoked tokens take effect within that time without a restart.

A token travels as ``Authorization: Bearer <token>`` (HTTP and WebSocket), or, on
the WebSocket, as the subprotocols ``["icee", "bearer.<token>"]`` because browsers
cannot set headers there; the server then selects ``icee``. So that a token fits
in a subprotocol it may only contain RFC 7230 token characters, and it must be
16 to 512 of them.

Errors: missing or malformed credentials -> 401, a token not in the store -> 403.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SUBPROTOCOL = "icee"
BEARER_SUBPROTOCOL_PREFIX = "bearer."
TOKEN_PATTERN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{16,512}$")


class TokenFileError(ValueError):
    """The tokens directory holds no usable token, or a malformed one."""


@dataclass(frozen=True, slots=True)
class AuthError(Exception):
    status: int
    detail: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def load_tokens(directory: Path) -> dict[bytes, str]:
    """sha256(token) -> name for each file in ``directory`` (dot files skipped)."""
    tokens: dict[bytes, str] = {}
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise TokenFileError(f"cannot read the tokens directory {directory}: {exc}") from None
    for path in entries:
        if path.name.startswith(".") or not path.is_file():
            continue
        token = path.read_text(encoding="utf-8", errors="replace").strip()
        if not TOKEN_PATTERN.match(token):
            raise TokenFileError(
                f"token {path.name!r}: 16 to 512 characters of A-Z a-z 0-9 "
                "and !#$%&'*+-.^_`|~ are allowed (it must fit a WebSocket subprotocol)"
            )
        tokens[_digest(token)] = path.name
    if not tokens:
        raise TokenFileError(f"no token in {directory}")
    return tokens


def _stamp(directory: Path) -> tuple[float, ...]:
    """Changes when a mounted Secret is updated (its ..data link is swapped) or a file is."""
    stamps = []
    for path in (directory, directory / "..data"):
        try:
            stamps.append(path.stat().st_mtime)
        except OSError:
            stamps.append(0.0)
    with contextlib.suppress(OSError):
        stamps.extend(p.stat().st_mtime for p in sorted(directory.iterdir()) if p.is_file())
    return tuple(stamps)


class TokenStore:
    def __init__(
        self,
        directory: Path,
        reload_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._tokens = load_tokens(directory)  # at start-up: a bad directory stops the api
        self._stamp = _stamp(directory)
        self._checked = clock()

    def __len__(self) -> int:
        return len(self._tokens)

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < self._reload_seconds:
            return
        self._checked = now
        stamp = _stamp(self._directory)
        if stamp == self._stamp:
            return
        try:
            self._tokens = load_tokens(self._directory)
        except (TokenFileError, OSError) as exc:
            log.error("tokens not reloaded, keeping the previous ones: %s", exc)
            return
        self._stamp = stamp
        log.info("tokens reloaded: %d", len(self._tokens))

    def name_of(self, token: str) -> str:
        """The token's name; AuthError 403 if it is not one of ours."""
        self._refresh()
        name = self._tokens.get(_digest(token))
        if name is None:
            raise AuthError(403, "the API token was refused")
        return name


_MISSING = (
    "an API token is required: send 'Authorization: Bearer <token>' "
    "(WebSocket: or the subprotocols 'icee', 'bearer.<token>')"
)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header; AuthError 401 if malformed."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "malformed Authorization header: expected 'Bearer <token>'")
    return token.strip()


def subprotocol_token(subprotocols: Sequence[str]) -> str | None:
    for proto in subprotocols:
        if proto.startswith(BEARER_SUBPROTOCOL_PREFIX):
            return proto.removeprefix(BEARER_SUBPROTOCOL_PREFIX)
    return None


def request_token(authorization: str | None, subprotocols: Sequence[str] = ()) -> str:
    """The token a request carries (header first); AuthError 401 if none."""
    token = bearer_token(authorization) or subprotocol_token(subprotocols)
    if not token:
        raise AuthError(401, _MISSING)
    return token


def selected_subprotocol(subprotocols: Sequence[str]) -> str | None:
    """The subprotocol the server answers with: ``icee`` if the client offered it.

    (A ``bearer.*`` entry is never echoed: it carries the secret.)
    """
    return SUBPROTOCOL if SUBPROTOCOL in subprotocols else None
