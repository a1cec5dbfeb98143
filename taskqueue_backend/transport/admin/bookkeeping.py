"""The control plane's own records in the broker's Redis: the audit stream
(``transport.audit_stream``), the history metrics' tallies (one hash, a set of the labelled
task names and a lock per result store), the API's idempotency claims and the admin UI's
sign-ins."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from .. import audit_stream
from ..replies import as_text
from .base import AdminData


@dataclass
class AuditRecord:
    """One entry of the audit stream as it is kept."""

    id: str
    at: float | None  # epoch seconds
    actor: str = ""
    action: str = ""
    target: str = ""
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class BookkeepingData(AdminData):
    """A part of ``BrokerAdmin``."""

    # -- audit ---------------------------------------------------------------------------------

    def audit_append(self, actor: str, action: str, target: str, reason: str,
                     **detail: Any) -> tuple[str, float]:  # fmt: skip
        """Append an audit entry; its stream id and time."""
        return audit_stream.record(self.client, self.prefix, actor, action, target, reason,
                                   **detail)  # fmt: skip

    def audit_newest_first(self, high: str, low: str, count: int) -> list[AuditRecord]:
        """Up to ``count`` audit entries from stream id ``high`` down to ``low``."""
        key = self._global.audit
        found = cast(list[tuple[Any, Any]], self.client.xrevrange(key, high, low, count=count))
        return [_audit_record(as_text(entry_id) or "", raw) for entry_id, raw in found]

    # -- history metrics -----------------------------------------------------------------------

    def _tally(self, store: str) -> str:
        return self._global.metrics(store)

    def tally_lock(self, store: str, seconds: int) -> bool:
        """Take the store's tally lock for ``seconds`` (False: another process holds it)."""
        return bool(self.client.set(f"{self._tally(store)}:lock", "1", nx=True, ex=seconds))

    def tally_unlock(self, store: str) -> None:
        self.client.delete(f"{self._tally(store)}:lock")

    def tally(self, store: str) -> dict[str, str]:
        """The store's tally: counters by field, and ``last_id``, the last row counted."""
        raw = cast(dict[bytes, bytes], self.client.hgetall(self._tally(store)))
        return {as_text(k) or "": as_text(v) or "" for k, v in raw.items()}

    def tally_names(self, store: str) -> set[str]:
        """The task names the tally labels (the rest count as one)."""
        names = cast(set[bytes], self.client.smembers(f"{self._tally(store)}:names"))
        return {as_text(n) or "" for n in names}

    def tally_add(
        self, store: str, last_id: int, counts: Mapping[str, int] | None = None,
        amounts: Mapping[str, float] | None = None, new_names: Iterable[str] = (),
    ) -> None:  # fmt: skip
        """Add ``counts`` (and float ``amounts``) to the tally, label ``new_names`` and move
        ``last_id`` on, in one transaction."""
        key = self._tally(store)
        pipe = self.client.pipeline(transaction=True)
        for task_name in new_names:
            pipe.sadd(f"{key}:names", task_name)
        for name, n in (counts or {}).items():
            pipe.hincrby(key, name, n)
        for name, amount in (amounts or {}).items():
            pipe.hincrbyfloat(key, name, amount)
        pipe.hset(key, "last_id", last_id)
        pipe.execute()

    # -- idempotency ---------------------------------------------------------------------------

    def claim_once(self, digest: str, claim: str, seconds: int) -> bool:
        """Record ``claim`` under an idempotency key for ``seconds`` unless one is there."""
        key = self._global.idempotency(digest)
        return bool(self.client.set(key, claim, nx=True, ex=seconds))

    def claim_of(self, digest: str) -> str | None:
        return as_text(self.client.get(self._global.idempotency(digest)))

    def unclaim(self, digest: str) -> None:
        self.client.delete(self._global.idempotency(digest))

    # -- admin UI sign-ins ---------------------------------------------------------------------

    def sign_in_record(self, digest: str, name: str, milliseconds: int) -> None:
        """Record a sign-in of ``name`` (by a digest of its session id) for a while."""
        self.client.set(self._global.sign_in(digest), name, px=milliseconds)

    def signed_in(self, digest: str) -> str | None:
        """The principal of a recorded sign-in, or None (ended, expired or never made)."""
        return as_text(self.client.get(self._global.sign_in(digest)))

    def sign_in_end(self, digest: str) -> None:
        self.client.delete(self._global.sign_in(digest))

    def ping(self) -> None:
        """Raise when Redis does not answer."""
        self.client.ping()


def _audit_record(entry_id: str, raw: dict[Any, Any]) -> AuditRecord:
    f = {as_text(k) or "": as_text(v) or "" for k, v in raw.items()}
    at = f.get(audit_stream.AT)
    return AuditRecord(
        id=entry_id,
        at=float(at) if at else None,
        actor=f.get(audit_stream.ACTOR, ""),
        action=f.get(audit_stream.ACTION, ""),
        target=f.get(audit_stream.TARGET, ""),
        reason=f.get(audit_stream.REASON, ""),
        detail=json.loads(f.get(audit_stream.DETAIL) or "{}"),
    )
