"""Whether a Celery app uses this package's broker or result backend: the one place that decides.

Used by the transport's hooks (dead letters only for apps on this broker), by the operations
layer (which broker and result store an app names) and by the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TRANSPORT_PATH = "taskqueue_backend.transport:Transport"
#: the scheme alias kombu needs for failover URLs (``tq://a;tq://b``)
TRANSPORT_ALIAS = "tq"
#: result_backend URLs of this package: ``tq+postgresql+psycopg://…``, ``tq+sqlite:///…``
BACKEND_PREFIX = "tq+"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _conf(app_or_conf: Any) -> Mapping[str, Any]:
    return getattr(app_or_conf, "conf", app_or_conf)


def uses_taskqueue_broker(app_or_conf: Any) -> bool:
    """The app's broker is this package's transport (``broker_transport`` or a ``tq://`` URL)."""
    conf = _conf(app_or_conf)
    selected = conf.get("broker_transport")
    if selected is None:
        url = conf.get("broker_url") or ""
        first = (url[0] if isinstance(url, list | tuple) and url else str(url)).split(";")[0]
        return first.startswith(f"{TRANSPORT_ALIAS}://")
    if isinstance(selected, str):
        return selected == TRANSPORT_ALIAS or selected.startswith("taskqueue_backend.transport")
    return isinstance(selected, type) and selected.__module__.startswith(
        "taskqueue_backend.transport"
    )


def uses_taskqueue_backend(app_or_conf: Any) -> bool:
    """The app's ``result_backend`` is this package's (a ``tq+`` database URL)."""
    backend = _conf(app_or_conf).get("result_backend")
    return isinstance(backend, str) and backend.startswith(BACKEND_PREFIX)


def result_database_url(app_or_conf: Any) -> str | None:
    """The SQLAlchemy URL of the app's result store (``database_url`` wins, as in the backend)."""
    conf = _conf(app_or_conf)
    if not uses_taskqueue_backend(conf):
        return None
    url = conf.get("database_url") or conf.get("result_backend")
    return str(url).removeprefix(BACKEND_PREFIX)


def plain_database_url(url: str) -> str:
    """A SQLAlchemy URL from a plain one or a result-backend one."""
    return url.removeprefix(BACKEND_PREFIX)
