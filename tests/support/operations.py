"""The operations layer as the tests reach it: from the test's Redis URL and key prefix."""

from __future__ import annotations

from typing import Any

from taskqueue_backend.operations import Operations


def operations_for(redis_url: str, keyprefix: str, **transport_options: Any) -> Operations:
    """Operations on the broker under ``keyprefix`` (no result store), acting as "tests"."""
    return Operations.from_urls(
        redis_url,
        transport_options={"global_keyprefix": keyprefix, **transport_options},
        actor="tests",
    )
