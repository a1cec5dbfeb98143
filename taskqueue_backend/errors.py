"""Errors the shared operations raise for requests they cannot honour."""


class InvalidRequest(ValueError):
    """An operation was asked for with arguments it cannot honour (a clear message)."""
