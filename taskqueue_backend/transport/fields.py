"""The fields of a message's hash (``<prefix>tq:{q}:m:<id>``) and their one reader.

The Lua scripts write these fields (each script's header says which); every Python reader of a
stored message — the operations layer's queue and dead-letter views, the worker's ``inspect
scheduled`` — reads them through :func:`read_record`, so a field is named and parsed in one
place. Times are epoch milliseconds in Redis and UTC datetimes here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..clock import from_epoch_ms
from .replies import as_int, as_text

BODY = "body"  # the envelope exactly as published (JSON)
STATE = "state"  # ready | delayed | inflight | dead | replaying
OWNER = "owner"  # consumer id holding the lease ('' when none)
TASK_ID = "task_id"
PRIORITY = "priority"  # the priority as published
RANK = "rank"  # position class in the sorted set (0 is served first)
SCORE = "score"  # its position in the ready set when it was last leased
DELIVERIES = "deliveries"
RECOVERIES = "recoveries"  # returns after its consumer died (the poison count)
REPLAYS = "replays"
EXPIRE_AT = "expire_at"
PUBLISHED_AT = "published_at"
DUE_AT = "due_at"
LEASED_AT = "leased_at"
DEAD_AT = "dead_at"
REASON = "reason"
DETAIL = "detail"
WORKER = "worker"
EXC_TYPE = "exc_type"
EXC_MESSAGE = "exc_message"
TRACEBACK = "traceback"
RETURNED_FROM = "returned_from"
REPLAYED_AT = "replayed_at"

#: what :func:`read_record` asks for (one HMGET)
RECORD_FIELDS = (
    TASK_ID, STATE, OWNER, PRIORITY, DELIVERIES, RECOVERIES, REPLAYS, PUBLISHED_AT, DUE_AT,
    LEASED_AT, DEAD_AT, REASON, DETAIL, WORKER, EXC_TYPE, EXC_MESSAGE, TRACEBACK, REPLAYED_AT,
    EXPIRE_AT, BODY,
)  # fmt: skip


@dataclass
class StoredMessage:
    """One message as the broker keeps it."""

    message_id: str
    queue: str
    task_id: str
    state: str
    owner: str | None
    priority: int | None
    deliveries: int
    recoveries: int
    replays: int
    published_at: datetime | None
    due_at: datetime | None
    leased_at: datetime | None
    dead_at: datetime | None
    replayed_at: datetime | None
    expire_at: datetime | None  # the broker's own expiry (from the publish's ``expiration``)
    reason: str | None
    detail: str | None
    worker: str | None
    exc_type: str | None
    exc_message: str | None
    traceback: str | None
    body: bytes | None

    @property
    def headers(self) -> dict[str, Any]:
        """The headers of the stored envelope ({} when it is not a kombu message)."""
        return envelope_headers(self.body)


def read_record(
    queue: str, message_id: str, values: Sequence[Any] | Mapping[Any, Any]
) -> StoredMessage | None:
    """Parse an ``HMGET RECORD_FIELDS`` reply (or an ``HGETALL`` mapping); None if gone."""
    if isinstance(values, Mapping):
        by_name = {as_text(k) or "": v for k, v in values.items()}
    else:
        by_name = dict(zip(RECORD_FIELDS, values, strict=True))
    if by_name.get(BODY) is None and by_name.get(STATE) is None:
        return None

    def text(name: str) -> str | None:
        return as_text(by_name.get(name)) or None

    def moment(name: str) -> datetime | None:
        value = as_int(by_name.get(name))
        return from_epoch_ms(value) if value else None

    body = by_name.get(BODY)
    return StoredMessage(
        message_id=message_id,
        queue=queue,
        task_id=text(TASK_ID) or "",
        state=text(STATE) or "unknown",
        owner=text(OWNER),
        priority=as_int(by_name.get(PRIORITY)),
        deliveries=as_int(by_name.get(DELIVERIES)) or 0,
        recoveries=as_int(by_name.get(RECOVERIES)) or 0,
        replays=as_int(by_name.get(REPLAYS)) or 0,
        published_at=moment(PUBLISHED_AT),
        due_at=moment(DUE_AT),
        leased_at=moment(LEASED_AT),
        dead_at=moment(DEAD_AT),
        replayed_at=moment(REPLAYED_AT),
        expire_at=moment(EXPIRE_AT),
        reason=text(REASON),
        detail=text(DETAIL),
        worker=text(WORKER),
        exc_type=text(EXC_TYPE),
        exc_message=text(EXC_MESSAGE),
        traceback=text(TRACEBACK),
        body=body.encode() if isinstance(body, str) else body,
    )


def envelope_headers(body: bytes | None) -> dict[str, Any]:
    """The headers of a stored kombu envelope (empty when it is not one)."""
    if not body:
        return {}
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    headers = payload.get("headers") if isinstance(payload, dict) else None
    return headers if isinstance(headers, dict) else {}
