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
from typing import TYPE_CHECKING

from flask import current_app

from ..context import backends

if TYPE_CHECKING:
    from taskqueue_backend.transport.admin import BrokerAdmin


class NoBroker(RuntimeError):
    """This control plane has no broker, so there is nowhere to record a sign-in."""

    def __init__(self) -> None:
        super().__init__(
            "Signing in to the admin UI needs the broker's Redis, where sign-ins are recorded "
            "(so that signing out ends them), and this control plane has no broker: set "
            "TQ_BROKER_URL or TQ_CELERY_APP. The API takes its bearer tokens without it."
        )


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _records() -> BrokerAdmin | None:
    """Where sign-ins are recorded: the broker's data (None: this control plane has none)."""
    ops = backends(current_app).ops()
    return ops.broker.admin if ops.has_broker else None


def start(name: str, lifetime: timedelta) -> str:
    """Record a new sign-in of ``name`` for ``lifetime``; its id, for the session cookie."""
    records = _records()
    if records is None:
        raise NoBroker()
    session_id = secrets.token_urlsafe(32)
    records.sign_in_record(_digest(session_id), name, max(int(lifetime.total_seconds() * 1000), 1))
    return session_id


def is_current(session_id: str, name: str) -> bool:
    """Whether the sign-in ``session_id`` of ``name`` is recorded (not ended, not expired)."""
    records = _records()
    recorded = records.signed_in(_digest(session_id)) if records is not None else None
    return recorded is not None and hmac.compare_digest(recorded.encode(), name.encode())


def end(session_id: str) -> None:
    """Forget the sign-in: every copy of its cookie is signed out from now on."""
    records = _records()
    if records is not None:
        records.sign_in_end(_digest(session_id))
