"""Every closed set of words the parts share, each defined once as an enum.

The operations layer, the API's models (so the OpenAPI document lists the values), the
command line's choices and the admin UI's selects all take their values from here; the broker
and the result backend write them. Members are ``StrEnum``s: they compare equal to, and
serialize as, their plain string. ``parse`` turns what a person typed into members, refusing
an unknown value with the list of the allowed ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


class TaskState(StrEnum):
    """The states Celery stores for a task (``celery.states``)."""

    PENDING = "PENDING"
    RECEIVED = "RECEIVED"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"
    REJECTED = "REJECTED"
    IGNORED = "IGNORED"


class Event(StrEnum):
    """The events of a task's history, in the order a task usually meets them."""

    SENT = "sent"
    RECEIVED = "received"
    STARTED = "started"
    RETRIED = "retried"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVOKED = "revoked"
    REJECTED = "rejected"
    DEAD_LETTERED = "dead_lettered"
    RETURNED = "returned"
    REPLAYED = "replayed"
    DEAD_LETTER_DELETED = "dead_letter_deleted"


class DeadLetterReason(StrEnum):
    """Why a message is in the dead letters."""

    FAILED = "failed"  # a task that raised after its last retry
    REJECTED = "rejected"  # Reject(requeue=False), or a rejecting failure
    POISON = "poison"  # returned after its worker died more than max_redeliveries times
    MALFORMED = "malformed"  # not a kombu envelope
    UNDECODABLE = "undecodable"  # a body Celery cannot decode
    UNKNOWN_TASK = "unknown_task"  # no task of that name on the worker that got it
    INVALID_MESSAGE = "invalid_message"  # headers Celery cannot use
    EXPIRED = "expired"  # its expires passed before delivery
    RESULT_STORE_UNAVAILABLE = "result_store_unavailable"  # its outcome could not be recorded


class WorkerState(StrEnum):
    """A consumer in the broker's registry."""

    ONLINE = "online"
    STALE = "stale"
    OFFLINE = "offline"


class Signal(StrEnum):
    """The signals a revoke may send to a running task."""

    SIGTERM = "SIGTERM"
    SIGKILL = "SIGKILL"
    SIGINT = "SIGINT"
    SIGQUIT = "SIGQUIT"
    SIGUSR1 = "SIGUSR1"


class BulkAction(StrEnum):
    """What a bulk request does to the tasks it selects."""

    RETRY = "retry"
    REVOKE = "revoke"


class UnknownValue(ValueError):
    """A value outside its vocabulary; the message lists the allowed ones."""


def values(vocabulary: type[StrEnum]) -> tuple[str, ...]:
    return tuple(member.value for member in vocabulary)


def parse(vocabulary: type[E], given: str, what: str, fold_case: bool = True) -> E:
    """The member ``given`` names (case-insensitively unless ``fold_case`` is off)."""
    text = given.strip()
    for member in vocabulary:
        if member.value == text or (fold_case and member.value.lower() == text.lower()):
            return member
    raise UnknownValue(f"unknown {what} {given!r}; one of {', '.join(values(vocabulary))}")


def parse_many(
    vocabulary: type[E], given: str | Iterable[str] | None, what: str, fold_case: bool = True
) -> tuple[E, ...]:
    """Members from a list and/or comma-separated text ("FAILURE,RETRY"); blanks skipped."""
    if given is None:
        return ()
    items = [given] if isinstance(given, str) else list(given)
    found: list[E] = []
    for item in items:
        for part in str(item).split(","):
            if part.strip():
                member = parse(vocabulary, part, what, fold_case)
                if member not in found:
                    found.append(member)
    return tuple(found)


def list_pattern(vocabulary: type[StrEnum]) -> str:
    """A JSON Schema pattern for one or more of the values, comma-separated."""
    one = "(" + "|".join(values(vocabulary)) + ")"
    return f"^{one}(,{one})*$"
