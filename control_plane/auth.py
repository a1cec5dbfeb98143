"""Bearer tokens with roles, from ``TQ_API_TOKENS``: no plaintext token is ever stored.

``TQ_API_TOKENS`` is a comma-separated list of ``name:role:sha256hex`` entries, where
``sha256hex`` is the SHA-256 hex digest of the token a client sends as
``Authorization: Bearer <token>``; ``taskqueue token new NAME ROLE`` prints a fresh token and
its entry. Digests are compared in constant time. Roles are ordered: a ``viewer`` reads, an
``operator`` also retries, replays, revokes, submits, pauses and recovers, an ``admin`` also
purges, deletes, forgets and shuts down.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

ROLES = ("viewer", "operator", "admin")
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-")


class TokenError(ValueError):
    """``TQ_API_TOKENS`` holds an entry that cannot be used (the message says which)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and role."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def allowed(self) -> list[str]:
        return list(ROLES[: ROLES.index(self.role) + 1])


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(name: str, role: str) -> tuple[str, str]:
    """A fresh random token and its ``TQ_API_TOKENS`` entry."""
    check_entry(name, role)
    token = secrets.token_urlsafe(32)
    return token, f"{name}:{role}:{digest(token)}"


def check_entry(name: str, role: str) -> None:
    if not name or not set(name) <= _NAME_CHARS:
        raise TokenError(f"token name {name!r} must be letters, digits or ._@- (no : or ,)")
    if role not in ROLES:
        raise TokenError(f"role {role!r} is not one of {', '.join(ROLES)}")


class TokenRegistry:
    """The configured tokens, by digest."""

    def __init__(self, entries: str) -> None:
        self._by_digest: list[tuple[str, Principal]] = []
        names: set[str] = set()
        for raw in (e.strip() for e in entries.split(",")):
            if not raw:
                continue
            parts = raw.split(":")
            if len(parts) != 3:
                raise TokenError(
                    f"TQ_API_TOKENS entry {raw.split(':')[0]!r} is not name:role:sha256hex"
                )
            name, role, hexdigest = parts
            check_entry(name, role)
            if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest.lower()):
                raise TokenError(f"TQ_API_TOKENS entry {name!r}: the third part must be the "
                                 "SHA-256 hex digest of the token (64 hex characters)")  # fmt: skip
            if name in names:
                raise TokenError(f"TQ_API_TOKENS names {name!r} twice")
            names.add(name)
            self._by_digest.append((hexdigest.lower(), Principal(name, role)))

    def __len__(self) -> int:
        return len(self._by_digest)

    def fingerprint(self, principal: Principal) -> str:
        """What an admin UI session keeps to recognise its token again: derived from the
        token's digest (never the token or the digest itself), so a session ends when its
        token is removed from or replaced in ``TQ_API_TOKENS``."""
        for expected, known in self._by_digest:
            if known == principal:
                return _session_fingerprint(expected)
        raise LookupError(principal.name)

    def recognise(self, name: str, fingerprint: str) -> Principal | None:
        """The principal a session names, if its token is still configured (same role)."""
        for expected, known in self._by_digest:
            if known.name == name:
                found = hmac.compare_digest(_session_fingerprint(expected), fingerprint)
                return known if found else None
        return None

    def identify(self, token: str | None) -> Principal | None:
        """The principal of ``token``, comparing every digest in constant time."""
        if not token:
            return None
        given = digest(token)
        found = None
        for expected, principal in self._by_digest:
            if hmac.compare_digest(given, expected):
                found = principal
        return found


def _session_fingerprint(hexdigest: str) -> str:
    return hashlib.sha256(f"session:{hexdigest}".encode()).hexdigest()[:32]
