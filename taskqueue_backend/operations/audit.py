"""The operators' audit log: who did what to which task, queue, dead letter or worker, and why.

Entries are kept in the broker's audit stream (``transport.audit_stream``), written by every
mutating operation of this layer and by workers that recover a dead one. Reading filters by
actor, action (exact, or a prefix such as ``dlq.``), target text and time, newest first, with
a cursor that is the last entry's stream id.
"""

from __future__ import annotations

import getpass
import json
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..clock import from_epoch
from ..transport.admin import AuditRecord
from ..transport.replies import as_text
from .broker import BrokerAccess
from .data import Page
from .errors import InvalidRequest

_STREAM_ID = re.compile(r"^\d+-\d+$")


def default_actor() -> str:
    """``user@host`` of the calling process, for tools that have no logged-in user."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass
class AuditEntry:
    id: str
    at: datetime | None
    actor: str
    action: str
    target: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditQuery:
    """Which entries to read; every given criterion must match.

    ``action`` is an exact action (``dlq.replay``) or a prefix ending in a dot (``dlq.``);
    ``target`` is a case-insensitive substring of the target.
    """

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, entry: AuditEntry) -> bool:
        if self.actor and entry.actor != self.actor:
            return False
        if self.action:
            wanted = self.action
            if entry.action != wanted and not (wanted.endswith(".") and
                                               entry.action.startswith(wanted)):  # fmt: skip
                return False
        if self.target and self.target.lower() not in entry.target.lower():
            return False
        if self.until is not None and entry.at is not None and entry.at > self.until:
            return False
        return True


def _text(value: Any) -> str:
    return as_text(value) or ""


class AuditLog:
    """Append to and read the audit log of one broker."""

    def __init__(self, broker: BrokerAccess, context: dict[str, Any] | None = None) -> None:
        self.broker = broker
        self.context = context or {}

    def record(
        self, actor: str, action: str, target: str, reason: str = "", **detail: Any
    ) -> AuditEntry:
        detail = {"outcome": "done", **self.context, **detail}
        entry_id, at = self.broker.admin.audit_append(actor, action, target, reason, **detail)
        return AuditEntry(entry_id, from_epoch(at), actor, action, target, reason,
                          json.loads(json.dumps(detail, default=str)))  # fmt: skip

    def entries(
        self, query: AuditQuery | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[AuditEntry]:
        """Newest first; ``cursor`` is the ``next_cursor`` of the previous page."""
        if not 1 <= limit <= 1000:
            raise InvalidRequest(f"limit must be from 1 to 1000, got {limit}")
        if cursor is not None and not _STREAM_ID.match(cursor):
            raise InvalidRequest(f"invalid cursor {cursor!r}")
        query = query or AuditQuery()
        if query.until is not None and query.until.timestamp() < 0:
            return Page([], None)  # stream ids count milliseconds from 1970
        if cursor:
            high = f"({cursor}"
        elif query.until is not None:
            high = f"{int(query.until.timestamp() * 1000)}-18446744073709551615"
        else:
            high = "+"
        low = "-" if query.since is None or query.since.timestamp() <= 0 else \
            str(int(query.since.timestamp() * 1000))  # fmt: skip
        found: list[AuditEntry] = []
        more = False
        while not more:
            batch = self.broker.admin.audit_newest_first(high, low, 500)
            if not batch:
                break
            for record in batch:
                entry = _entry(record)
                if query.matches(entry):
                    if len(found) == limit:
                        more = True
                        break
                    found.append(entry)
            high = f"({batch[-1].id}"
        return Page(found, found[-1].id if more and found else None)


def _entry(record: AuditRecord) -> AuditEntry:
    return AuditEntry(id=record.id, at=from_epoch(record.at) if record.at else None,
                      actor=record.actor, action=record.action, target=record.target,
                      reason=record.reason, detail=record.detail)  # fmt: skip
