"""Every SQL statement of the result backend, named, in one place.

A state write is one statement on PostgreSQL (the upsert of the result row, the history rows
and the completion NOTIFY in data-modifying CTEs: one round trip, one transaction) and one
transaction on SQLite. The upsert never lets a late event overwrite a terminal state, and
among running states only a newer event moves the state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Engine,
    and_,
    case,
    delete,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError

from .schema import Tables

TERMINAL_STATES = ("SUCCESS", "FAILURE", "REVOKED")
NOTIFY_CHANNEL = "tq_result_ready"

T = TypeVar("T")

#: result columns that follow the state (they change together, or not at all)
STATE_COLUMNS = (
    "state", "result", "children", "content_type", "content_encoding", "traceback",
    "exception_type", "exception_message", "finished_at", "retries",
)  # fmt: skip
#: columns a later event fills in but never clears
LATEST_COLUMNS = ("worker", "received_at", "started_at")
#: columns set once (what the task is, where it came from)
FIRST_COLUMNS = ("name", "args", "kwargs", "queue", "parent_id", "root_id", "group_id", "sent_at")


class Store:
    """The backend's reads and writes over one engine and one set of tables."""

    def __init__(self, engine: Engine, tables: Tables) -> None:
        self.engine = engine
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.tables = tables
        self.dialect = engine.dialect.name
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        self._insert = insert

    # -- retries on a dropped connection (database restart) ------------------------------

    def _retrying(self, operation: Callable[[], T], attempts: int = 3) -> T:
        for attempt in range(attempts):
            try:
                return operation()
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    # -- results ---------------------------------------------------------------------------

    def _upsert(self, row: dict[str, Any]) -> Any:
        r = self.tables.results
        stmt = self._insert(r).values(**row)
        new = stmt.excluded
        applies = and_(
            not_(r.c.state.in_(TERMINAL_STATES)),
            or_(new.state.in_(TERMINAL_STATES), new.updated_at >= r.c.updated_at),
        )
        set_: dict[str, Any] = {c: case((applies, new[c]), else_=r.c[c]) for c in STATE_COLUMNS}
        set_.update({c: func.coalesce(new[c], r.c[c]) for c in LATEST_COLUMNS})
        set_.update({c: func.coalesce(r.c[c], new[c]) for c in FIRST_COLUMNS})
        set_["updated_at"] = case(
            (new.updated_at > r.c.updated_at, new.updated_at), else_=r.c.updated_at
        )
        return stmt.on_conflict_do_update(index_elements=[r.c.task_id], set_=set_)

    def write(self, row: dict[str, Any] | None, events: Sequence[dict[str, Any]] = ()) -> None:
        """Upsert a result row (if any) and append history rows, atomically."""
        if row is None and not events:
            return
        if self.dialect == "postgresql":
            self._retrying(lambda: self._write_postgresql(row, events))
        else:
            self._retrying(lambda: self._write_in_transaction(row, events))

    def _write_postgresql(
        self, row: dict[str, Any] | None, events: Sequence[dict[str, Any]]
    ) -> None:
        parts = []
        if row is not None:
            up = self._upsert(row).returning(self.tables.results.c.state).cte("up")
            parts.append(select(func.count()).select_from(up).scalar_subquery())
            counted = self._count_for_worker(row)
            if counted is not None:
                done = counted.returning(self.tables.workers.c.hostname).cte("counted")
                parts.append(select(func.count()).select_from(done).scalar_subquery())
            if row.get("state") in TERMINAL_STATES:
                notified = (
                    select(func.pg_notify(NOTIFY_CHANNEL, literal(row["task_id"])).label("n"))
                    .where(exists(select(up.c.state).where(up.c.state.in_(TERMINAL_STATES))))
                    .cte("notified")
                )
                parts.append(select(func.count()).select_from(notified).scalar_subquery())
        if events:
            ev = (
                self._insert(self.tables.events)
                .values(list(events))
                .returning(self.tables.events.c.id)
                .cte("ev")
            )
            parts.append(select(func.count()).select_from(ev).scalar_subquery())
        with self.autocommit.connect() as conn:
            conn.execute(select(*parts))

    def _count_for_worker(self, row: dict[str, Any]) -> Any:
        """Count a finished task on its worker's row (in the same statement/transaction)."""
        if row.get("state") not in TERMINAL_STATES or not row.get("worker"):
            return None
        w = self.tables.workers
        failed = 1 if row["state"] == "FAILURE" else 0
        return (
            update(w)
            .where(w.c.hostname == row["worker"])
            .values(processed=w.c.processed + 1, failed=w.c.failed + failed)
        )

    def _write_in_transaction(
        self, row: dict[str, Any] | None, events: Sequence[dict[str, Any]]
    ) -> None:
        with self.engine.begin() as conn:
            if row is not None:
                conn.execute(self._upsert(row))
                counted = self._count_for_worker(row)
                if counted is not None:
                    conn.execute(counted)
            if events:
                conn.execute(self._insert(self.tables.events), list(events))

    def write_many(self, rows: Iterable[dict[str, Any]], events: Sequence[dict[str, Any]]) -> None:
        """A batch of (non-terminal) row upserts and history rows in one transaction."""
        rows = list(rows)

        def run() -> None:
            with self.engine.begin() as conn:
                for row in rows:
                    conn.execute(self._upsert(row))
                if events:
                    conn.execute(self._insert(self.tables.events), list(events))

        self._retrying(run)

    def read(self, task_id: str) -> Row[Any] | None:
        r = self.tables.results

        def run() -> Row[Any] | None:
            with self.engine.connect() as conn:
                return conn.execute(select(r).where(r.c.task_id == task_id)).first()

        return self._retrying(run)

    def read_many(self, task_ids: Sequence[str]) -> list[Row[Any]]:
        r = self.tables.results

        def run() -> list[Row[Any]]:
            with self.engine.connect() as conn:
                return list(conn.execute(select(r).where(r.c.task_id.in_(list(task_ids)))))

        return self._retrying(run)

    def history(self, task_id: str) -> list[Row[Any]]:
        e = self.tables.events

        def run() -> list[Row[Any]]:
            with self.engine.connect() as conn:
                query = select(e).where(e.c.task_id == task_id).order_by(e.c.at, e.c.id)
                return list(conn.execute(query))

        return self._retrying(run)

    def forget(self, task_id: str) -> None:
        r = self.tables.results

        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(delete(r).where(r.c.task_id == task_id))

        self._retrying(run)

    def cleanup(self, finished_before: datetime) -> int:
        """Delete results finished, and groups created, before the cut-off; history stays."""
        r, g = self.tables.results, self.tables.groups

        def run() -> int:
            with self.engine.begin() as conn:
                gone = conn.execute(delete(r).where(r.c.finished_at < finished_before)).rowcount
                conn.execute(delete(g).where(g.c.created_at < finished_before))
                return int(gone or 0)

        return self._retrying(run)

    # -- groups and chords -----------------------------------------------------------------

    def save_group(
        self, group_id: str, payload: bytes, content_type: str, encoding: str, now: datetime
    ) -> None:
        g = self.tables.groups
        stmt = self._insert(g).values(
            group_id=group_id, result=payload, content_type=content_type,
            content_encoding=encoding, created_at=now, chord_done=0,
        )  # fmt: skip
        stmt = stmt.on_conflict_do_update(
            index_elements=[g.c.group_id],
            set_={"result": stmt.excluded.result, "content_type": stmt.excluded.content_type,
                  "content_encoding": stmt.excluded.content_encoding},
        )  # fmt: skip

        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(stmt)

        self._retrying(run)

    def set_chord_size(self, group_id: str, size: int, now: datetime) -> None:
        g = self.tables.groups
        stmt = self._insert(g).values(group_id=group_id, chord_size=size, chord_done=0,
                                      created_at=now)  # fmt: skip
        stmt = stmt.on_conflict_do_update(index_elements=[g.c.group_id],
                                          set_={"chord_size": size})  # fmt: skip

        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(stmt)

        self._retrying(run)

    def restore_group(self, group_id: str) -> Row[Any] | None:
        g = self.tables.groups

        def run() -> Row[Any] | None:
            with self.engine.connect() as conn:
                return conn.execute(select(g).where(g.c.group_id == group_id)).first()

        return self._retrying(run)

    def delete_group(self, group_id: str) -> None:
        g = self.tables.groups

        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(delete(g).where(g.c.group_id == group_id))

        self._retrying(run)

    def chord_part_done(self, group_id: str) -> tuple[int, int | None] | None:
        """Count one finished chord member atomically: (done so far, chord size)."""
        g = self.tables.groups
        stmt = (
            update(g)
            .where(g.c.group_id == group_id)
            .values(chord_done=g.c.chord_done + 1)
            .returning(g.c.chord_done, g.c.chord_size)
        )

        def run() -> tuple[int, int | None] | None:
            with self.engine.begin() as conn:
                found = conn.execute(stmt).first()
                return None if found is None else (int(found[0]), found[1])

        return self._retrying(run)

    # -- workers ---------------------------------------------------------------------------

    def upsert_worker(self, row: dict[str, Any]) -> None:
        w = self.tables.workers
        stmt = self._insert(w).values(**row)
        keep_first = {"first_seen"}
        stmt = stmt.on_conflict_do_update(
            index_elements=[w.c.hostname],
            set_={c: stmt.excluded[c] for c in row if c not in keep_first | {"hostname"}},
        )

        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(stmt)

        self._retrying(run)

    def workers(self) -> list[Row[Any]]:
        w = self.tables.workers

        def run() -> list[Row[Any]]:
            with self.engine.connect() as conn:
                return list(conn.execute(select(w).order_by(w.c.hostname)))

        return self._retrying(run)
