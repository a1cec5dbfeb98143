"""What a dead letter is, and how the tools pick them: entries, filters, counts, outcomes.

Decoding is forgiving: a stored message that is not a Celery message still lists (with no
task name), and bytes that are not UTF-8 show as escapes, never as an error.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..clock import from_epoch_ms
from ..transport.admin import StoredMessage
from ..transport.messages import expires_at
from ..transport.replies import as_text
from ..vocabulary import DeadLetterReason, values
from .errors import InvalidRequest, one_of

#: the reasons the broker and the worker hooks give (``vocabulary.DeadLetterReason``)
REASONS = values(DeadLetterReason)
#: a claimed entry whose replayer died goes back to the dead letters after this long
STALE_CLAIM_MS = 60_000
BATCH = 500
_EXCEPTION_DETAIL = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.S)


@dataclass
class DeadLetter:
    """One dead letter as the tools show it; ``body`` (the stored envelope) only when asked."""

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
    published_at: datetime | None
    dead_at: datetime | None
    args: str | None
    kwargs: str | None
    #: when the message expires (Celery's ``expires``); a replay after it needs a new expiry
    expires_at: datetime | None = None
    body: str | None = None

    def expired(self, now: datetime) -> bool:
        """Whether a replay as it is would expire at once."""
        if self.reason == DeadLetterReason.EXPIRED and self.expires_at is None:
            return True
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class Filter:
    """Which dead letters an operation applies to; every given criterion must match.

    ``task_name`` and ``queue`` accept shell-style wildcards (``proj.billing.*``);
    ``exc_type`` matches the exception's class name with or without its module; ``text`` is
    a case-insensitive substring of the arguments, the exception message or the detail;
    ``since``/``until`` bound the time the message died.
    """

    queue: str | None = None
    task_name: str | None = None
    reason: str | None = None
    exc_type: str | None = None
    text: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.reason is not None:
            # the frozen dataclass keeps the member, which equals its text
            object.__setattr__(self, "reason", one_of(DeadLetterReason, self.reason, "reason"))
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
class Stats:
    """Dead letters in all: ``total``, ``by_queue``, ``oldest_age`` and ``replaying`` are exact
    (read from each queue's counts); ``by_task``, ``by_reason`` and ``by_exception`` count the
    ``scanned`` newest entries — every entry unless a scan limit was given."""

    total: int = 0
    replaying: int = 0
    oldest_age: float | None = None
    by_queue: dict[str, int] = field(default_factory=dict)
    by_task: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    by_exception: dict[str, int] = field(default_factory=dict)
    trimmed: dict[str, int] = field(default_factory=dict)
    scanned: int = 0


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


def encode_cursor(score: int, message_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score}:{message_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, message_id = raw.split(":", 1)
        return int(score), message_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(f"invalid cursor {cursor!r}") from None


def entry_of(message: StoredMessage, score: int, with_body: bool) -> DeadLetter:
    """A dead letter from its stored message (``score``: when it died, ms)."""
    headers = message.headers
    reason = message.reason or "unknown"
    detail = message.detail or ""
    exc_type, exc_message = message.exc_type, message.exc_message
    if exc_type is None and reason in (DeadLetterReason.UNDECODABLE,
                                       DeadLetterReason.INVALID_MESSAGE):  # fmt: skip
        parsed = _EXCEPTION_DETAIL.match(detail)
        if parsed:
            exc_type, exc_message = parsed.group(1), parsed.group(2)
    task = headers.get("task")
    retries = headers.get("retries")
    return DeadLetter(
        id=message.message_id,
        queue=message.queue,
        task_id=message.task_id,
        task_name=str(task) if task else None,
        reason=reason,
        detail=detail,
        exc_type=exc_type,
        exc_message=exc_message,
        traceback=message.traceback,
        priority=message.priority,
        retries=retries if isinstance(retries, int) else None,
        deliveries=message.deliveries,
        recoveries=message.recoveries,
        replays=message.replays,
        worker=message.worker,
        published_at=message.published_at,
        dead_at=message.dead_at or from_epoch_ms(score),
        args=as_text(headers.get("argsrepr")),
        kwargs=as_text(headers.get("kwargsrepr")),
        expires_at=expires_at(headers, message.expire_at),
        body=as_text(message.body) if with_body else None,
    )
