"""Errors of the operations layer, each with a message an operator can act on.

The REST API maps them to status codes (``NotFound`` 404, ``InvalidRequest`` 400 or 422,
``Conflict`` 409); the command line prints them.
"""

from __future__ import annotations


class OperationError(Exception):
    """An operation could not be done as asked; the message says why and what to do."""


class NotFound(OperationError, LookupError):
    """Nothing of that name or id exists (a task nobody knows, a queue never seen...)."""


class InvalidRequest(OperationError, ValueError):
    """Arguments the operation cannot honour (a bad filter, limit, duration...)."""


class Conflict(OperationError):
    """The request is valid, but the current state forbids it (an online worker cannot be
    forgotten; an id prefix matches several tasks...)."""
