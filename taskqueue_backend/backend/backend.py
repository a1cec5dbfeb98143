"""The Celery result backend: ``result_backend = "tq+postgresql+psycopg://..."`` or
``"tq+sqlite:///path.db"`` (the ``tq`` alias is registered through the
``celery.result_backends`` entry point).

Results carry Celery's extended fields plus a time per stage; each state write also writes
the task's history rows, in the same transaction. Chords complete by an atomic counter;
``AsyncResult.get()`` wakes on PostgreSQL NOTIFY (SQLite polls).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from celery import states
from celery.backends.base import BaseBackend
from celery.exceptions import Retry
from celery.result import result_from_tuple
from celery.utils.time import maybe_timedelta
from kombu.utils.encoding import bytes_to_str, ensure_bytes

from .. import lifecycle
from ..clock import utcnow
from ..selection import BACKEND_PREFIX, plain_database_url
from . import canvas, history, outage, waiting
from .opening import engine_for, open_store
from .queries import Store
from .schema import tables_for
from .settings import BackendSettings
from .state_writes import StateWrites
from .text import clean_text

logger = logging.getLogger(__name__)


EVENT_FOR_STATE = {
    states.STARTED: lifecycle.STARTED,
    states.SUCCESS: lifecycle.SUCCEEDED,
    states.FAILURE: lifecycle.FAILED,
    states.RETRY: lifecycle.RETRIED,
    states.REVOKED: lifecycle.REVOKED,
    states.REJECTED: lifecycle.REJECTED,
    states.RECEIVED: lifecycle.RECEIVED,
    states.PENDING: lifecycle.SENT,
}


class DatabaseBackend(BaseBackend):
    """Results and task history in PostgreSQL (psycopg 3) or SQLite, via SQLAlchemy Core."""

    supports_native_join = True
    supports_autoexpire = False
    persistent = True

    def __init__(self, app: Any = None, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.url = plain_database_url(
            url or self.app.conf.database_url or self.app.conf.result_backend or ""
        )
        if not self.url:
            raise ValueError("the tq result backend needs a database URL, e.g. tq+sqlite:///r.db")
        self.settings = BackendSettings.from_conf(self.app.conf)
        self.tables = tables_for(self.dialect, self.settings.table_prefix, self.settings.schema)
        self._store: Store | None = None
        self.writes = StateWrites(self)
        self.expires = self.prepare_expires(kwargs.get("expires"), type=maybe_timedelta)
        self._warn_if_history_outlived()
        history.install(self)

    # -- plumbing -------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        engine = engine_for(self.url, self.settings)  # this process's (a fork gets its own)
        if self._store is None or self._store.engine is not engine:
            self._store = open_store(self.url, self.settings)
        return self._store

    @cached_property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite`` (from the URL: known without connecting)."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).get_backend_name()

    def store_problem(self) -> str | None:
        """Why the result store cannot be reached now, or None (probed every few seconds)."""
        return outage.probe(lambda: self.store, self.url)

    def exception_safe_to_retry(self, exc: BaseException) -> bool:
        return outage.unreachable(exc)

    def as_uri(self, include_password: bool = False) -> str:
        from sqlalchemy.engine import make_url

        rendered = make_url(self.url).render_as_string(hide_password=not include_password)
        return f"{BACKEND_PREFIX}{rendered}"

    def _warn_if_history_outlived(self) -> None:
        """Retention shorter than result expiry: a result may outlive its history."""
        retention, expires = self.settings.history_retention, self.expires
        if retention is None or not expires:
            return
        kept = expires.total_seconds() if isinstance(expires, timedelta) else float(expires)
        if retention < kept:
            logger.warning("taskqueue_history_retention (%g s) is shorter than result_expires "
                           "(%g s): results kept that long lose their history first",
                           retention, kept)  # fmt: skip

    # -- writing ----------------------------------------------------------------------------

    def _encode_field(self, value: Any) -> bytes | None:
        if value is None:
            return None
        encoded = ensure_bytes(self.encode(value))
        limit = self.settings.max_args_bytes
        if len(encoded) > limit:
            marker = {"truncated": True, "size": len(encoded), "limit": limit}
            return ensure_bytes(self.encode(marker))
        return encoded

    def _request_columns(self, request: Any) -> dict[str, Any]:
        if request is None:
            return {}
        delivery = getattr(request, "delivery_info", None) or {}
        return {
            "name": getattr(request, "task", None) or getattr(request, "name", None),
            "args": self._encode_field(getattr(request, "args", None)),
            "kwargs": self._encode_field(getattr(request, "kwargs", None)),
            "worker": getattr(request, "hostname", None),
            "retries": getattr(request, "retries", None),
            "queue": delivery.get("routing_key"),
            "parent_id": getattr(request, "parent_id", None),
            "root_id": getattr(request, "root_id", None),
            "group_id": getattr(request, "group", None),
        }

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        now = utcnow()
        task_id = bytes_to_str(task_id)
        row: dict[str, Any] = {
            "task_id": task_id,
            "state": state,
            "result": ensure_bytes(self.encode(result)),
            "children": ensure_bytes(self.encode(self.current_task_children(request))),
            "content_type": self.content_type,
            "content_encoding": self.content_encoding,
            "traceback": clean_text(traceback),
            "updated_at": now,
            **self._request_columns(request),
        }
        detail: dict[str, Any] = {}
        if state in states.EXCEPTION_STATES or state == states.RETRY:
            exc = result if isinstance(result, dict) else {}
            row["exception_type"] = clean_text(exc.get("exc_type"))
            row["exception_message"] = clean_text(self._exception_text(exc))
            detail["exception"] = f"{row['exception_type']}: {row['exception_message']}"
            if state == states.REVOKED:  # why: "expired", "terminated", "revoked"
                detail["reason"] = row["exception_message"]
        if state == states.RETRY:
            published = history.retry_eta(task_id)  # the ETA the retry's message was given
            retry = sys.exc_info()[1]  # Celery stores RETRY while handling the Retry
            if published is not None:
                detail["next_eta"] = published
            elif isinstance(retry, Retry) and retry.when is not None:
                when = retry.when
                detail["next_eta"] = (
                    when.isoformat() if isinstance(when, datetime)
                    else (now + timedelta(seconds=float(when))).isoformat()
                )  # fmt: skip
        if state in states.READY_STATES:
            row["finished_at"] = now
        if state == states.STARTED:
            row["started_at"] = now
        event = {
            "task_id": task_id,
            "event": EVENT_FOR_STATE.get(state, state.lower()),
            "state": state,
            "at": now,
            "worker": row.get("worker"),
            "detail": detail or None,
        }
        if self.writes.repeats_outcome(task_id, state, request):
            return result  # Celery's second report of a hard time limit
        # a held event of the same kind (task_prerun's "started" when Celery also stores
        # STARTED) is this one
        held, held_row = history.take_pending(task_id)
        # stages only the held row knows (sent_at: the broker's publish time, when it says)
        for column in ("sent_at", "received_at", "started_at"):
            if held_row and held_row.get(column) and not row.get(column):
                row[column] = held_row[column]
        pending = [e for e in held if e["event"] != event["event"]]
        self.writes.run(task_id, state, row, [*pending, event], (pending, held_row), request,
                        result)  # fmt: skip
        return result

    def _exception_text(self, exc: dict[str, Any]) -> str:
        """The exception's text as the caller of ``get()`` sees it (``str`` of the exception
        Celery rebuilds), or its arguments when it cannot be rebuilt here."""
        try:
            return str(self.exception_to_python(exc))
        except Exception:
            message = exc.get("exc_message", "")
            if isinstance(message, list | tuple):
                return ", ".join(str(part) for part in message)
            return str(message)

    def on_task_call(self, producer: Any, task_id: str) -> dict[str, Any]:
        if self.settings.record_sent:
            history.publishing(task_id, self)
        return dict(super().on_task_call(producer, task_id) or {})

    def write_events(self, rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        """Batched history (received, started, broker events) from the history writer."""
        self.store.write_many(rows, events)

    # -- reading ----------------------------------------------------------------------------

    def _meta_from_row(self, row: Any) -> dict[str, Any]:
        decode = self.decode
        meta: dict[str, Any] = {
            "task_id": row.task_id,
            "status": row.state,
            "result": decode(row.result) if row.result is not None else None,
            "traceback": row.traceback,
            "children": decode(row.children) if row.children is not None else [],
            "date_done": row.finished_at,
            "name": row.name,
            "args": decode(row.args) if row.args is not None else None,
            "kwargs": decode(row.kwargs) if row.kwargs is not None else None,
            "worker": row.worker,
            "retries": row.retries,
            "queue": row.queue,
            "parent_id": row.parent_id,
            "root_id": row.root_id,
            "group_id": row.group_id,
        }
        return self.meta_from_decoded(meta)

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        row = self.store.read(bytes_to_str(task_id))
        if row is None:
            return {"status": states.PENDING, "result": None}
        return self._meta_from_row(row)

    def task_result_exists(self, task_id: str) -> bool:
        return self.store.read(bytes_to_str(task_id)) is not None

    def task_history(self, task_id: str) -> list[dict[str, Any]]:
        """Every recorded event of a task, oldest first."""
        return [dict(r._mapping) for r in self.store.history(task_id)]

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_interval: Any = None,
    ) -> dict[str, Any]:
        self._ensure_not_eager()
        return waiting.wait_for_one(self, task_id, timeout, interval, on_interval)

    def get_many(
        self,
        task_ids: Any,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_message: Any = None,
        on_interval: Any = None,
        max_iterations: int | None = None,
        **kwargs: Any,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        return waiting.wait_for_many(
            self, list(task_ids), timeout, interval, on_message, on_interval, max_iterations
        )

    def get_many_now(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Metas of the given tasks that have a row, in one query."""
        metas = {}
        for row in self.store.read_many(task_ids):
            meta = self._meta_from_row(row)
            metas[row.task_id] = meta
            self._cache[row.task_id] = meta
        return metas

    # -- forget, expiry -----------------------------------------------------------------------

    def _forget(self, task_id: str) -> None:
        self.store.forget(bytes_to_str(task_id))

    def cleanup(self) -> None:
        """Celery's ``backend_cleanup``: expired results go in small batches
        (``result_expires``), then the history's partitions are made ahead and those past
        ``taskqueue_history_retention`` dropped (``partitions``)."""
        store = self.store
        if self.expires:
            expires = self.expires
            cutoff = utcnow() - (expires if isinstance(expires, timedelta)
                                 else timedelta(seconds=expires))  # fmt: skip
            removed = store.cleanup(cutoff)
            logger.info("result backend cleanup removed %d expired result(s)", removed)
        report = store.partitions.maintain(wait=False)
        if report.created or report.dropped or report.deleted_rows:
            logger.info("history maintenance: partitions made %s, dropped %s; %d old row(s) "
                        "deleted", report.created, report.dropped, report.deleted_rows)  # fmt: skip

    # -- groups ---------------------------------------------------------------------------

    def _save_group(self, group_id: str, result: Any) -> Any:
        payload = ensure_bytes(self.encode({"result": result.as_tuple()}))
        self.store.save_group(group_id, payload, self.content_type, self.content_encoding,
                              utcnow())  # fmt: skip
        return result

    def _restore_group(self, group_id: str) -> dict[str, Any] | None:
        row = self.store.restore_group(group_id)
        if row is None or row.result is None:
            return None
        meta = self.decode(row.result)
        meta["result"] = result_from_tuple(meta["result"], self.app)
        return dict(meta)

    def _delete_group(self, group_id: str) -> None:
        self.store.delete_group(group_id)

    def mark_as_failure(
        self,
        task_id: str,
        exc: Any,
        traceback: str | None = None,
        request: Any = None,
        store_result: bool = True,
        call_errbacks: bool = True,
        state: str = states.FAILURE,
    ) -> None:
        """Celery's, and the members of the groups the failed task's chain would have
        started are failed too (``canvas``)."""
        super().mark_as_failure(task_id, exc, traceback, request, store_result, call_errbacks,
                                state)  # fmt: skip
        if request is None or not store_result or state not in states.PROPAGATE_STATES:
            return
        from celery.app.task import Context

        for member_id, name in canvas.group_members(getattr(request, "chain", None)):
            member = Context({"id": member_id, "task": name,
                              "hostname": getattr(request, "hostname", None)})  # fmt: skip
            self.store_result(member_id, exc, state, traceback=traceback, request=member)

    # -- chords: an atomic counter, never chord_unlock polling ------------------------------

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        self.store.set_chord_size(group_id, chord_size, utcnow())

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        self.ensure_chords_allowed()
        header_result = self.app.GroupResult(*header_result_args)
        header_result.save(backend=self)

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        canvas.chord_part_returned(self, request)
