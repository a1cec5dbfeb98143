"""What a dead letter is, and how the tools pick them: entries, filters, pages, counts.

Decoding is forgiving: a stored message that is not a Celery message still lists (with no
task name), and bytes that are not UTF-8 show as escapes, never as an error.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequest
from ..transport.replies import as_int, as_seconds, as_text

#: the reasons the broker and the worker hooks give (``failed`` comes from stock workers)
REASONS = (
    "failed",
    "rejected",
    "poison",
    "malformed",
    "undecodable",
    "unknown_task",
    "invalid_message",
    "expired",
)
#: a claimed entry whose replayer died goes back to the dead letters after this long
STALE_CLAIM_MS = 60_000
BATCH = 500
FIELDS = (
    "task_id", "reason", "detail", "priority", "deliveries", "recoveries", "replays",
    "worker", "published_at", "dead_at", "exc_type", "exc_message", "traceback", "body",
)  # fmt: skip
_EXCEPTION_DETAIL = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.S)


@dataclass
class DeadLetter:
    """One dead letter as the tools show it; ``body`` only when asked for."""

    id: str
    queue: str
    task_id: str
    task_name: str | None
    reason: str
    detail: str
    exc_type: str | None
    exc_message: str | None
    traceback: str | None
    priority: int | None
    retries: int | None
    deliveries: int
    recoveries: int
    replays: int
    worker: str | None
    published_at: float | None
    dead_at: float
    args: str | None
    kwargs: str | None
    body: str | None = None


@dataclass(frozen=True)
class Filter:
    """Which dead letters an operation applies to; every given criterion must match.

    ``task_name`` and ``queue`` accept shell-style wildcards (``proj.billing.*``);
    ``exc_type`` matches the exception's class name with or without its module; ``text`` is
    a case-insensitive substring of the arguments, the exception message or the detail;
    ``since``/``until`` bound the time the message died (epoch seconds).
    """

    queue: str | None = None
    task_name: str | None = None
    reason: str | None = None
    exc_type: str | None = None
    text: str | None = None
    since: float | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        if self.reason is not None and self.reason not in REASONS:
            raise InvalidRequest(f"unknown reason {self.reason!r}; one of {', '.join(REASONS)}")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise InvalidRequest("since is after until")

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__dataclass_fields__)

    def matches(self, entry: DeadLetter) -> bool:
        if self.task_name and not fnmatch.fnmatchcase(entry.task_name or "", self.task_name):
            return False
        if self.reason and entry.reason != self.reason:
            return False
        if self.exc_type:
            found = entry.exc_type or ""
            if found != self.exc_type and found.rsplit(".", 1)[-1] != self.exc_type:
                return False
        if self.text:
            needle = self.text.lower()
            haystack = (entry.args, entry.kwargs, entry.exc_message, entry.detail)
            if not any(needle in (h or "").lower() for h in haystack):
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k in self.__dataclass_fields__ if (v := getattr(self, k)) is not None}


@dataclass
class Page:
    items: list[DeadLetter]
    next_cursor: str | None


@dataclass
class Stats:
    total: int = 0
    replaying: int = 0
    oldest_age: float | None = None
    by_queue: dict[str, int] = field(default_factory=dict)
    by_task: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    by_exception: dict[str, int] = field(default_factory=dict)
    trimmed: dict[str, int] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a bulk operation did (or, on a dry run, would do)."""

    action: str
    matched: int = 0
    done: int = 0
    skipped: int = 0  # matched, but gone or claimed by someone else when it was its turn
    dry_run: bool = False
    to_queue: str | None = None
    task_ids: list[str] = field(default_factory=list)


Progress = Callable[[int], None]


def reply_pairs(reply: list[Any]) -> list[tuple[str, str]]:
    """A flat ``[a1, b1, a2, b2, ...]`` script reply as ``[(a1, b1), ...]``."""
    return [
        (as_text(reply[i]) or "", as_text(reply[i + 1]) or "") for i in range(0, len(reply) - 1, 2)
    ]


def _envelope(body: bytes | None) -> dict[str, Any]:
    """The headers of a stored Celery message (empty when it is not one)."""
    if not body:
        return {}
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    headers = payload.get("headers") if isinstance(payload, dict) else None
    return headers if isinstance(headers, dict) else {}


def encode_cursor(score: int, message_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score}:{message_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, message_id = raw.split(":", 1)
        return int(score), message_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(f"invalid cursor {cursor!r}") from None


def load_entry(
    queue: str, message_id: str, score: int, f: dict[str, Any], with_body: bool
) -> DeadLetter:
    """A dead letter from the fields of its message hash (``FIELDS``)."""
    headers = _envelope(f["body"])
    reason = as_text(f["reason"]) or "unknown"
    detail = as_text(f["detail"]) or ""
    exc_type, exc_message = as_text(f["exc_type"]), as_text(f["exc_message"])
    if exc_type is None and reason in ("undecodable", "invalid_message"):
        parsed = _EXCEPTION_DETAIL.match(detail)
        if parsed:
            exc_type, exc_message = parsed.group(1), parsed.group(2)
    task = headers.get("task")
    return DeadLetter(
        id=message_id,
        queue=queue,
        task_id=as_text(f["task_id"]) or "",
        task_name=str(task) if task else None,
        reason=reason,
        detail=detail,
        exc_type=exc_type,
        exc_message=exc_message,
        traceback=as_text(f["traceback"]),
        priority=as_int(f["priority"]),
        retries=headers.get("retries") if isinstance(headers.get("retries"), int) else None,
        deliveries=as_int(f["deliveries"]) or 0,
        recoveries=as_int(f["recoveries"]) or 0,
        replays=as_int(f["replays"]) or 0,
        worker=as_text(f["worker"]) or None,
        published_at=as_seconds(f["published_at"]),
        dead_at=as_seconds(f["dead_at"]) or score / 1000,
        args=as_text(headers.get("argsrepr")),
        kwargs=as_text(headers.get("kwargsrepr")),
        body=as_text(f["body"]) if with_body else None,
    )
