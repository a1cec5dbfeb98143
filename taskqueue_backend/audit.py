"""The operators' audit log: who did what to which messages or workers, and why.

Every mutating operation of the shared API (replaying, deleting or purging dead letters,
forgetting a worker) records one entry in a Redis stream beside the broker's keys, so the
CLI, the REST API and the admin UI all write to, and read from, the same log. The stream
keeps the newest ``maxlen`` entries (Redis trims approximately, in whole blocks).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis

from .transport.keys import GlobalKeys
from .transport.replies import as_text

DEFAULT_MAXLEN = 100_000


def default_actor() -> str:
    """``user@host`` of the calling process, for tools that have no logged-in user."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass
class AuditEntry:
    at: float
    actor: str
    action: str
    target: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)
    id: str = ""


def _text(value: Any) -> str:
    return as_text(value) or ""


class AuditLog:
    """Append and read audit entries under one broker key prefix."""

    def __init__(self, client: Redis, prefix: str = "", maxlen: int = DEFAULT_MAXLEN) -> None:
        self.client = client
        self.key = GlobalKeys(prefix).audit
        self.maxlen = maxlen

    def record(
        self, actor: str, action: str, target: str, reason: str = "", **detail: Any
    ) -> AuditEntry:
        entry = AuditEntry(time.time(), actor, action, target, reason, detail)
        fields: dict[Any, Any] = {
            "at": repr(entry.at),
            "actor": actor,
            "action": action,
            "target": target,
            "reason": reason,
            "detail": json.dumps(detail, default=str),
        }
        entry.id = _text(self.client.xadd(self.key, fields, maxlen=self.maxlen, approximate=True))
        return entry

    def entries(self, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        """The newest entries first (optionally of one action)."""
        found: list[AuditEntry] = []
        last = "+"
        while len(found) < limit:
            batch = cast(list[Any], self.client.xrevrange(self.key, last, "-", count=500))
            if last != "+":
                batch = batch[1:]  # XREVRANGE includes the boundary entry
            if not batch:
                break
            for entry_id, raw in batch:
                f = {_text(k): _text(v) for k, v in raw.items()}
                if action is None or f.get("action") == action:
                    found.append(
                        AuditEntry(
                            at=float(f.get("at") or 0),
                            actor=f.get("actor", ""),
                            action=f.get("action", ""),
                            target=f.get("target", ""),
                            reason=f.get("reason", ""),
                            detail=json.loads(f.get("detail") or "{}"),
                            id=_text(entry_id),
                        )
                    )
            last = _text(batch[-1][0])
        return found[:limit]
