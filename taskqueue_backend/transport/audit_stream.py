"""The operators' audit log as it is kept: one Redis stream beside the broker's keys.

Every mutating operation (replaying, deleting or purging dead letters, removing a waiting task,
purging or pausing a queue, forgetting or recovering a worker) and every recovery a worker
does by itself records one entry here, so the CLI, the REST API and the admin UI all write to,
and read from, the same log (``operations.audit`` reads it). The stream keeps the newest
``maxlen`` entries (Redis trims approximately, in whole blocks).
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis import Redis

from .keys import GlobalKeys

DEFAULT_MAXLEN = 100_000
#: the fields of one entry
AT, ACTOR, ACTION, TARGET, REASON, DETAIL = "at", "actor", "action", "target", "reason", "detail"


def record(
    client: Redis,
    prefix: str,
    actor: str,
    action: str,
    target: str,
    reason: str = "",
    maxlen: int = DEFAULT_MAXLEN,
    **detail: Any,
) -> tuple[str, float]:
    """Append one entry; returns its stream id and time (epoch seconds)."""
    at = time.time()
    fields: dict[Any, Any] = {
        AT: repr(at),
        ACTOR: actor,
        ACTION: action,
        TARGET: target,
        REASON: reason,
        DETAIL: json.dumps(detail, default=str),
    }
    entry_id = client.xadd(GlobalKeys(prefix).audit, fields, maxlen=maxlen, approximate=True)
    return (entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)), at
