"""The result backend's reads and writes, named, in one place (the PostgreSQL state write is
spelled out in ``statements.py``, the operators' listings are in ``listing.py``).

A state write is one statement on PostgreSQL (the upsert of the result row, the history rows
and the completion NOTIFY in data-modifying CTEs: one round trip, one transaction) and one
transaction on SQLite. The upsert never lets a late event overwrite a terminal state, and
among running states only a newer event moves the state.

On PostgreSQL the history is partitioned by time (``partitions.py``): a process that writes
checks, at most hourly and in a thread of its own, that the partitions ahead exist. Result
expiry deletes in small batches, one short transaction each (``expiry.py``).

A write that fails may still have committed (the connection dropped after the server
committed, before its reply arrived). Its history rows are then marked unsure, and the write
that retries them (here, in the deferred writer, Celery's retry or the history writer, which
all hand back the same rows) inserts only those not in the table yet: a retried write never
repeats a task's history. The upsert of the result row is idempotent by itself.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    DateTime,
    Engine,
    LargeBinary,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal_column,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row

from .. import lifecycle
from . import expiry
from .outage import unreachable
from .partitions import HistoryPartitions, PartitionKeeper, Policy, routed_before_attach
from .schema import Tables
from .statements import (
    FIRST_COLUMNS,
    LATEST_COLUMNS,
    STATE_COLUMNS,
    TERMINAL_STATES,
    PostgresStatements,
)

T = TypeVar("T")

#: key set on the history rows of a write that failed: it may have committed all the same
UNSURE = "_unsure"


class Store:
    """The backend's reads and writes over one engine and one set of tables."""

    def __init__(
        self,
        engine: Engine,
        tables: Tables,
        connect_options: dict[str, Any] | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.engine = engine
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.tables = tables
        self.dialect = engine.dialect.name
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        self._insert = insert
        self._upsert_stmt = self._build_upsert()
        self._events_insert = insert(tables.events)
        self._sql = PostgresStatements(tables) if self.dialect == "postgresql" else None
        self._direct = None
        if self.dialect == "postgresql":
            from .direct import DirectConnection

            self._direct = DirectConnection(engine, connect_options or {})
        self.policy = policy or Policy()
        #: the history's partitions (PostgreSQL) or its retention (SQLite)
        self.partitions = HistoryPartitions(engine, tables, self.policy)
        #: set by ``opening.open_store`` when this process makes the partitions ahead
        self.keeper: PartitionKeeper | None = None

    def _tick(self) -> None:
        if self.keeper is not None:
            self.keeper.tick()

    # -- retries on a dropped connection (database restart), or a row routed while its
    # partition was being attached (``partitions.routed_before_attach``) -------------------

    def _retrying(self, operation: Callable[[], T], attempts: int = 3) -> T:
        for attempt in range(attempts):
            try:
                return operation()
            except Exception as exc:
                if attempt == attempts - 1 or not (unreachable(exc) or routed_before_attach(exc)):
                    raise
        raise AssertionError("unreachable")

    # -- results ---------------------------------------------------------------------------

    def _full_row(self, row: dict[str, Any]) -> dict[str, Any]:
        return {c: row.get(c) for c in self.tables.results.columns.keys()}

    def _build_upsert(self) -> Any:
        """The result upsert as one reusable construct (compiled once, then cached)."""
        r = self.tables.results
        stmt = self._insert(r).values({c: bindparam(c) for c in r.columns.keys()})
        new = stmt.excluded

        def terminal(column: Any) -> Any:
            # constants, not an expanding IN: the statement also serves executemany batches
            return or_(*(column == literal_column(f"'{state}'") for state in TERMINAL_STATES))

        pending: Any = literal_column("'PENDING'")
        applies = and_(
            not_(terminal(r.c.state)),
            # a PENDING write (the row of a task Celery stored nothing for yet) never moves it
            or_(new.state != pending, r.c.state == pending),
            or_(terminal(new.state), new.updated_at >= r.c.updated_at),
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
        self._tick()
        if self.dialect == "postgresql":
            # one fresh connection, then the error reaches Celery (result_backend_always_retry)
            self._retrying(_marking(events, lambda: self._write_postgresql(row, events)), 2)
        else:
            self._retrying(_marking(events, lambda: self._write_in_transaction(row, events)))

    def write_together(
        self, writes: Sequence[tuple[dict[str, Any] | None, list[dict[str, Any]]]]
    ) -> None:
        """Several state writes (``write``'s arguments) in one transaction and one round trip
        (PostgreSQL: the deferred writer's batches), tried once: the caller retries a failure
        write by write (their history rows are marked unsure, as a failed ``write`` marks
        them)."""
        self._tick()
        assert self._direct is not None
        calls = [self._postgresql_call(row, events) for row, events in writes]
        every = [event for _, events in writes for event in events]
        _marking(every, lambda: self._direct.execute_together(calls))()  # type: ignore[union-attr]

    def _write_postgresql(
        self, row: dict[str, Any] | None, events: Sequence[dict[str, Any]]
    ) -> None:
        assert self._direct is not None
        self._direct.execute(*self._postgresql_call(row, events))

    def _postgresql_call(
        self, row: dict[str, Any] | None, events: Sequence[dict[str, Any]]
    ) -> tuple[str, dict[str, Any]]:
        """The statement of one state write and its parameters."""
        sql = self._sql
        assert sql is not None
        events_json = json.dumps([_event_json(e) for e in events])
        again = _unsure(events)
        if row is None:
            return (sql.events_only_again if again else sql.events_only), {"events": events_json}
        params = {
            **self._full_row(row),
            "events": events_json,
            "notify": row.get("state") in TERMINAL_STATES,
        }
        return (sql.state_write_again if again else sql.state_write), params

    def _write_in_transaction(
        self, row: dict[str, Any] | None, events: Sequence[dict[str, Any]]
    ) -> None:
        with self.engine.begin() as conn:
            if row is not None:
                conn.execute(self._upsert_stmt, self._full_row(row))
            self._insert_events(conn, events)

    def write_many(self, rows: Iterable[dict[str, Any]], events: Sequence[dict[str, Any]]) -> None:
        """A batch of (non-terminal) row upserts and history rows in one transaction."""
        full = [self._full_row(row) for row in rows]
        self._tick()

        def run() -> None:
            with self.engine.begin() as conn:
                # a task that already finished (and may have been forgotten since) is never
                # re-created by a late batch: only its stage times are filled in
                ended = self._ended(conn, [r["task_id"] for r in full])
                fresh = [r for r in full if r["task_id"] not in ended]
                if fresh:
                    conn.execute(self._upsert_stmt, fresh)
                r = self.tables.results
                for row in full:
                    if row["task_id"] in ended:
                        late = {c: func.coalesce(r.c[c], row[c]) for c in LATEST_COLUMNS}
                        conn.execute(update(r).where(r.c.task_id == row["task_id"]).values(late))
                self._insert_events(conn, events)

        self._retrying(_marking(events, run))

    def _insert_events(self, conn: Any, events: Sequence[dict[str, Any]]) -> None:
        if _unsure(events):
            events = self._not_written(conn, events)
        if events:
            conn.execute(self._events_insert, [_event_row(e) for e in events])

    def _not_written(self, conn: Any, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The history rows of a retried write that its failed attempt did not commit."""
        e = self.tables.events
        written = (
            select(e.c.id)
            .where(e.c.task_id == bindparam("t"), e.c.event == bindparam("n"),
                   e.c.at == bindparam("a", type_=e.c.at.type))
            .limit(1)
        )  # fmt: skip
        return [
            event for event in events
            if conn.execute(written, {"t": event["task_id"], "n": event["event"],
                                      "a": event["at"]}).first() is None
        ]  # fmt: skip

    def _ended(self, conn: Any, task_ids: list[str]) -> set[str]:
        if not task_ids:
            return set()
        e = self.tables.events
        query = select(e.c.task_id).where(
            e.c.task_id.in_(task_ids), e.c.event.in_(lifecycle.FINISHED)
        )
        return set(conn.execute(query).scalars())

    def ping(self) -> None:
        """One trivial query: raises when the store cannot be reached."""
        from sqlalchemy import text

        with self.autocommit.connect() as conn:
            conn.execute(text("SELECT 1"))

    def read(self, task_id: str) -> Any:
        """A task's result row (its columns as attributes), or None; on PostgreSQL one
        prepared statement on the direct connection."""
        if self._direct is not None and self._sql is not None:
            direct, sql = self._direct, self._sql.read_result
            found = self._retrying(lambda: direct.read(sql, {"task_id": task_id}))
            return found[0] if found else None
        r = self.tables.results

        def run() -> Row[Any] | None:
            with self.engine.connect() as conn:
                return conn.execute(select(r).where(r.c.task_id == task_id)).first()

        return self._retrying(run)

    def read_many(self, task_ids: Sequence[str]) -> list[Any]:
        """The result rows of these tasks that have one (as ``read``)."""
        if self._direct is not None and self._sql is not None:
            direct, sql = self._direct, self._sql.read_results
            return self._retrying(lambda: direct.read(sql, {"task_ids": list(task_ids)}))
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

    def read_with_history(
        self, task_id: str
    ) -> tuple[Mapping[Any, Any] | None, list[Mapping[Any, Any]]]:
        """A task's result row and its history: on PostgreSQL one statement on the direct
        connection, elsewhere two over one autocommit connection."""
        if self._direct is not None and self._sql is not None:
            direct, sql = self._direct, self._sql.read_task
            [(row, history)] = self._retrying(lambda: direct.read(sql, {"task_id": task_id}))
            results, events = self.tables.results, self.tables.events
            return (None if row is None else from_json(results, row)), [
                from_json(events, event) for event in history or ()]  # fmt: skip
        r, e = self.tables.results, self.tables.events
        query = select(e).where(e.c.task_id == task_id).order_by(e.c.at, e.c.id)

        def run() -> tuple[Mapping[Any, Any] | None, list[Mapping[Any, Any]]]:
            with self.autocommit.connect() as conn:
                row = conn.execute(select(r).where(r.c.task_id == task_id)).first()
                return (row._mapping if row else None), [h._mapping for h in conn.execute(query)]

        return self._retrying(run)

    def reopen(self, events: Sequence[dict[str, Any]], at: datetime) -> None:
        """Replayed tasks: back to PENDING (unless they already succeeded) with their
        history rows, in one transaction, so their next run's states apply."""
        r = self.tables.results
        task_ids = sorted({e["task_id"] for e in events})

        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(
                    update(r)
                    .where(r.c.task_id.in_(task_ids), r.c.state != "SUCCESS")
                    .values(state="PENDING", finished_at=None, updated_at=at)
                )
                self._insert_events(conn, events)

        self._retrying(_marking(events, run))

    def forget(self, task_id: str) -> None:
        r = self.tables.results

        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(delete(r).where(r.c.task_id == task_id))

        self._retrying(run)

    def discard(self, task_id: str) -> None:
        """Delete a task's row and its history: a task whose message could not be sent."""
        r, e = self.tables.results, self.tables.events

        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(delete(e).where(e.c.task_id == task_id))
                conn.execute(delete(r).where(r.c.task_id == task_id))

        self._retrying(run)

    def cleanup(self, finished_before: datetime) -> int:
        """Delete results finished, and groups created, before the cut-off, in batches of
        ``policy.batch_size`` (one short transaction each); the history stays (its retention
        is ``partitions``'). How many results were deleted."""
        return expiry.expire(self, finished_before, self.policy.batch_size)

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


def event_row(
    task_id: str,
    event: str,
    state: str | None,
    worker: str | None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """One history row (``lifecycle`` names the events); text made safe for any database."""
    from ..clock import utcnow
    from .text import clean_json, clean_text

    return {"task_id": task_id, "event": event, "state": state, "at": at or utcnow(),
            "worker": clean_text(worker), "detail": clean_json(detail)}  # fmt: skip


def from_json(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """A row that PostgreSQL sent as JSON (``to_jsonb``) with its column types back: times
    as datetimes, binary columns as bytes (JSON columns stay as they were sent)."""
    times, binary = _typed_columns(table)
    for name in times:
        value = row.get(name)
        if value is not None:
            row[name] = datetime.fromisoformat(value)
    for name in binary:
        value = row.get(name)
        if value is not None:
            row[name] = bytes.fromhex(value[2:])  # "\\x..."
    return row


@functools.cache
def _typed_columns(table: Table) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names of ``table``'s time columns and of its binary columns."""
    columns = table.columns
    return (tuple(c.name for c in columns if isinstance(c.type, DateTime)),
            tuple(c.name for c in columns if isinstance(c.type, LargeBinary)))  # fmt: skip


def _marking(events: Sequence[dict[str, Any]], write: Callable[[], None]) -> Callable[[], None]:
    """``write``, which marks ``events`` unsure when it fails (see the module's docstring)."""

    def run() -> None:
        try:
            write()
        except BaseException:
            for event in events:
                event[UNSURE] = True
            raise

    return run


def _unsure(events: Sequence[dict[str, Any]]) -> bool:
    return any(event.get(UNSURE) for event in events)


def _event_row(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != UNSURE}


def _event_json(event: dict[str, Any]) -> dict[str, Any]:
    at = event["at"]
    return {**_event_row(event), "at": at.isoformat() if isinstance(at, datetime) else at}
