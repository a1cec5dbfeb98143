"""A kombu transport over Redis sorted sets for stock Celery workers.

Select it by configuration only::

    broker_url = "redis://localhost:6379/0"
    broker_transport = "taskqueue_backend.transport:Transport"

Importing this package also registers the ``tq`` URL scheme with kombu, so failover
URLs such as ``tq://a:6379/0;tq://b:6379/0`` keep this transport when kombu switches.
"""

from kombu.transport import TRANSPORT_ALIASES

from . import hooks
from .options import BrokerOptions, InvalidPriority
from .transport import SentinelTransport, Transport

TRANSPORT_ALIASES.setdefault("tq", "taskqueue_backend.transport:Transport")
hooks.install()

__all__ = ["BrokerOptions", "InvalidPriority", "SentinelTransport", "Transport"]
