"""``Operations``: the one Python API behind the CLI, the REST API and the admin UI.

Build it from a Celery app (its broker settings, and its result store when the app uses this
package's backend) or from URLs, with the acting operator's name for the audit log::

    ops = Operations.from_app(app, actor="alice")
    ops.tasks.status("5b1c")          # broker place + result + history + dead letter
    ops.dead_letters.replay(flt=Filter(reason="failed"), reason="API back up")
    ops.queues.remove(task_id, reason="sent twice")   # a durable revoke, audited
    ops.workers.all("stale"); ops.audit.entries()

One instance holds one broker connection pool and one database engine and may serve many
threads; ``acting_as(name, role=..., request_id=...)`` gives a view for another operator
sharing them (its audit entries carry that context). Publishing and Celery's remote control
(submit, revoke of a running task, worker shutdown) go through the app the layer was built
from, or a client app made from the same broker settings. Every data object is a dataclass
with one JSON shape (``to_json``), and failures are ``NotFound``, ``InvalidRequest`` or
``Conflict``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ..backend.queries import Store
from ..selection import result_database_url
from .audit import AuditLog, default_actor
from .broker import BrokerAccess
from .dead_letters import DeadLetters
from .errors import InvalidRequest
from .feed import ChangeFeed
from .metrics import BrokerCollector
from .queues import Queues
from .stats import TaskStats, Timeline, task_stats, task_timeline
from .tasks import Tasks
from .workers import Workers


def open_results(
    url: str, conf: Any = None, *, table_prefix: str | None = None, schema: str | None = None,
    pool_size: int | None = None,
) -> Store:  # fmt: skip
    """The result store at ``url`` with an app's ``taskqueue_*`` settings (or the defaults);
    ``pool_size`` (connections kept, and as many more at most) for a many-threaded server."""
    from ..backend.opening import open_store
    from ..backend.settings import BackendSettings

    settings = BackendSettings.from_conf(conf or {})
    changed: dict[str, Any] = {}
    if table_prefix is not None:
        changed["table_prefix"] = table_prefix
    if schema is not None:
        changed["schema"] = schema or None
    if pool_size is not None:
        changed.update(pool_size=pool_size, max_overflow=pool_size)
    if changed:
        settings = BackendSettings(**{**settings.__dict__, **changed})
    return open_store(url, settings)


_listener_lock = threading.Lock()


class Operations:
    """Tasks, queues, dead letters, workers and the audit log of one broker (and result store)."""

    def __init__(
        self, broker: BrokerAccess | None, results: Store | None = None, actor: str | None = None,
        *, app: Any = None, context: dict[str, Any] | None = None,
        shared: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        if broker is None and results is None:
            raise InvalidRequest("give a broker, a result store, or both")
        self._broker = broker
        self.results = results
        self.actor = actor or default_actor()
        #: recorded with every audit entry of this view (role, request id...)
        self.context = dict(context or {})
        self._shared = shared if shared is not None else {"app": app}
        self.queues = Queues(self)
        self.tasks = Tasks(self)
        self.dead_letters = DeadLetters(self)
        self.workers = Workers(self)

    @property
    def broker(self) -> BrokerAccess:
        if self._broker is None:
            raise InvalidRequest("no broker was given: this needs one (pass -A proj, a broker "
                                 "URL or set REDIS_URL)")  # fmt: skip
        return self._broker

    @property
    def has_broker(self) -> bool:
        return self._broker is not None

    @property
    def audit(self) -> AuditLog:
        return AuditLog(self.broker, self.context)

    @property
    def celery(self) -> Any:
        """The Celery app that publishes and sends remote control commands for this layer."""
        app = self._shared.get("app")
        if app is None:
            from celery import Celery

            app = Celery("taskqueue-operations", set_as_current=False)
            app.conf.update(self.broker.celery_settings, task_ignore_result=True,
                            broker_connection_retry_on_startup=True)  # fmt: skip
            self._shared["app"] = app
        return app

    @property
    def knows_tasks(self) -> bool:
        """Whether this layer has the app's task registry (built from the app itself)."""
        return bool(self._shared.get("from_app"))

    @classmethod
    def from_app(
        cls, app: Any, actor: str | None = None, *, pool_size: int | None = None
    ) -> Operations:
        """The app's broker (this package's transport) and, when its ``result_backend`` is this
        package's, its result store. The app's task modules are imported as a worker imports
        them (``include``, ``imports``, autodiscovery), so its tasks are known."""
        app.loader.import_default_modules()
        broker = BrokerAccess.from_app(app)
        url = result_database_url(app)
        results = open_results(url, app.conf, pool_size=pool_size) if url else None
        return cls(broker, results, actor, shared={"app": app, "from_app": True})

    @classmethod
    def from_urls(
        cls,
        broker_url: str | None,
        database_url: str | None = None,
        *,
        transport_options: Mapping[str, Any] | None = None,
        ssl: Any = None,
        table_prefix: str | None = None,
        schema: str | None = None,
        actor: str | None = None,
        pool_size: int | None = None,
    ) -> Operations:
        """A broker URL (any kombu Redis URL of this transport) and/or the result store's
        SQLAlchemy URL (``tq+`` prefix allowed)."""
        broker = BrokerAccess.from_url(broker_url, transport_options, ssl) if broker_url else None
        results = None
        if database_url:
            from ..selection import plain_database_url

            results = open_results(plain_database_url(database_url), table_prefix=table_prefix,
                                   schema=schema, pool_size=pool_size)  # fmt: skip
        return cls(broker, results, actor)

    def acting_as(self, actor: str, **context: Any) -> Operations:
        """The same broker, result store and app, for another operator (``context`` goes into
        each of its audit entries)."""
        return Operations(self._broker, self.results, actor, context=context,
                          shared=self._shared)  # fmt: skip

    def stats(self, timeline: Timeline | None = None) -> TaskStats:
        """Counts, throughput, rates and percentiles from the history (``stats``); pass the
        hour's ``timeline()`` when you have it, so the history is read once."""
        return task_stats(self, timeline)

    def timeline(self, minutes: int = 60, width_seconds: int = 60) -> Timeline:
        """Received, succeeded, failed, retried and dead-lettered tasks per interval
        (``stats``)."""
        return task_timeline(self, minutes, width_seconds)

    def feed(self, after: int | None = None) -> ChangeFeed:
        """Changes since history id ``after`` (or from now on), for live views (``feed``)."""
        return ChangeFeed(self, after)

    def collector(self) -> BrokerCollector:
        """A ``prometheus_client`` collector of the broker's queues and workers."""
        return BrokerCollector(self)

    def collectors(self) -> list[Any]:
        """Every ``prometheus_client`` collector this layer can feed: the broker's, and the
        history's counters (kept in the broker, so they need both)."""
        from .history_metrics import HistoryCollector

        found: list[Any] = [BrokerCollector(self)] if self.has_broker else []
        if self.results is not None and self.has_broker:
            found.append(HistoryCollector(self))
        return found

    def describe_results(self) -> str:
        if self.results is None:
            return "(none)"
        return self.results.engine.url.render_as_string(hide_password=True)

    def describe_broker(self) -> str:
        return "(none)" if self._broker is None else self._broker.describe()

    def describe(self) -> str:
        return f"broker {self.describe_broker()}, results {self.describe_results()}"

    def notifications(self) -> Any:
        """The result store's history listener (``backend.notifications``), started on first
        use and shared by every view of this layer; None where the store has none (SQLite)."""
        if self.results is None:
            return None
        with _listener_lock:
            if "notifications" not in self._shared:
                from ..backend.notifications import for_store

                self._shared["notifications"] = for_store(self.results)
            return self._shared["notifications"]

    def close(self) -> None:
        listener = self._shared.pop("notifications", None)
        if listener is not None:
            listener.stop()
        if self._broker is not None:
            self._broker.close()
        app = self._shared.get("app")
        if app is not None and not self._shared.get("from_app"):
            app.close()

    def __enter__(self) -> Operations:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
