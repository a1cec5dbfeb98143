"""The server-side record of each sign-in to the admin UI, kept in the broker's Redis.

The session cookie is signed, but it lives in the browser: a copy of it would open the UI
until it expires, whatever its owner did. So each sign-in gets a random id, kept in the cookie
and recorded in Redis (under the broker's global key prefix, shared by every process and
replica of the control plane) for the session's lifetime. Every page checks the record;
signing out deletes it; a cookie whose record is gone — signed out, expired, or lost with
Redis's data — is signed out. Only a digest of the id is stored, so reading Redis yields no
usable session. While Redis does not answer, the check raises (the page says Redis is down):
nobody is let in on the cookie alone.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from flask import current_app
from redis import Redis

from ..context import backends


class NoBroker(RuntimeError):
    """This control plane has no broker, so there is nowhere to record a sign-in."""

    def __init__(self) -> None:
        super().__init__(
            "Signing in to the admin UI needs the broker's Redis, where sign-ins are recorded "
            "(so that signing out ends them), and this control plane has no broker: set "
            "TQ_BROKER_URL or TQ_CELERY_APP. The API takes its bearer tokens without it."
        )


def record_key(prefix: str, session_id: str) -> str:
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    return f"{prefix}{{tq}}:ui-session:{digest}"


def _redis() -> tuple[Redis, str] | None:
    """The broker's client and global key prefix (None: this control plane has no broker)."""
    ops = backends(current_app).ops()
    if not ops.has_broker:
        return None
    return ops.broker.client, ops.broker.prefix


def start(name: str, lifetime: timedelta) -> str:
    """Record a new sign-in of ``name`` for ``lifetime``; its id, for the session cookie."""
    found = _redis()
    if found is None:
        raise NoBroker()
    client, prefix = found
    session_id = secrets.token_urlsafe(32)
    milliseconds = max(int(lifetime.total_seconds() * 1000), 1)
    client.set(record_key(prefix, session_id), name, px=milliseconds)
    return session_id


def is_current(session_id: str, name: str) -> bool:
    """Whether the sign-in ``session_id`` of ``name`` is recorded (not ended, not expired)."""
    found = _redis()
    if found is None:
        return False
    client, prefix = found
    recorded = client.get(record_key(prefix, session_id))
    if recorded is None:
        return False
    text = recorded.decode() if isinstance(recorded, bytes) else str(recorded)
    return hmac.compare_digest(text.encode(), name.encode())


def end(session_id: str) -> None:
    """Forget the sign-in: every copy of its cookie is signed out from now on."""
    found = _redis()
    if found is not None:
        client, prefix = found
        client.delete(record_key(prefix, session_id))
