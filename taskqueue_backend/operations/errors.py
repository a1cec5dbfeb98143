"""Errors of the operations layer, each with a message an operator can act on.

The REST API maps them to status codes (``NotFound`` 404, ``InvalidRequest`` 400 or 422,
``Conflict`` 409, ``Unavailable`` 503); the command line prints them. ``unavailable`` decides,
for every tool, whether an error means that Redis or the result store is down.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from ..vocabulary import UnknownValue, parse

E = TypeVar("E", bound=StrEnum)


class OperationError(Exception):
    """An operation could not be done as asked; the message says why and what to do."""


class NotFound(OperationError, LookupError):
    """Nothing of that name or id exists (a task nobody knows, a queue never seen...)."""


class InvalidRequest(OperationError, ValueError):
    """Arguments the operation cannot honour (a bad filter, limit, duration...)."""


class Conflict(OperationError):
    """The request is valid, but the current state forbids it (an online worker cannot be
    forgotten; an id prefix matches several tasks...)."""


def one_of(vocabulary: type[E], given: str, what: str) -> E:
    """The member of ``vocabulary`` that ``given`` names; ``InvalidRequest`` listing the
    allowed values otherwise."""
    try:
        return parse(vocabulary, given, what)
    except UnknownValue as exc:
        raise InvalidRequest(str(exc)) from None


class Unavailable(OperationError):
    """A dependency the operation needs does not answer: ``dependency`` is ``redis`` or
    ``database``. The message names it and nothing internal (no statement, no address)."""

    def __init__(self, dependency: str) -> None:
        super().__init__(f"{dependency} is unreachable")
        self.dependency = dependency


def unavailable(exc: BaseException) -> Unavailable | None:
    """Whether ``exc`` means that Redis or the result store cannot be reached — the one place
    that decides it, for the command line, the API and the admin UI alike. A database error
    about the request itself (a statement it refused) is not an outage."""
    if isinstance(exc, Unavailable):
        return exc
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout

    if isinstance(exc, RedisConnectionError | RedisTimeout | BrokerError):
        return Unavailable("redis")
    from ..backend.outage import unreachable

    if unreachable(exc):
        return Unavailable("database")
    return None
