"""A kombu transport over Redis sorted sets for stock Celery workers.

Select it by configuration only::

    broker_url = "redis://localhost:6379/0"
    broker_transport = "taskqueue_backend.transport:Transport"

Importing this package (or any helper in it) has no side effects. When the transport is
selected — kombu creates it for a connection — it installs its Celery signal handlers in that
process and registers the ``tq`` URL scheme with kombu, so failover URLs such as
``tq://a:6379/0;tq://b:6379/0`` keep this transport when kombu switches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .options import BrokerOptions, InvalidPriority
    from .transport import SentinelTransport, Transport

_EXPORTS = {
    "BrokerOptions": "options",
    "InvalidPriority": "options",
    "SentinelTransport": "transport",
    "Transport": "transport",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


__all__ = ["BrokerOptions", "InvalidPriority", "SentinelTransport", "Transport"]
