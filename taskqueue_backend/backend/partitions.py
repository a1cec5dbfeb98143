"""The PostgreSQL history's partitions: made ahead of time, rows adopted from the default
partition, whole partitions dropped by retention (``taskqueue db maintain``, the backend).

- **Ahead**: the period holding now and the ``ahead`` next ones (``periods.Period``) each get a
  partition. A new partition is made as a table of its own and then attached (``ATTACH
  PARTITION`` takes a SHARE UPDATE EXCLUSIVE lock on the history table, which writers and
  readers pass; ``CREATE TABLE … PARTITION OF`` would take an exclusive one). Only a range
  that may be receiving rows now also holds writers for the attach (see ``_create``).
- **Default**: a row whose time no partition holds yet (maintenance stopped, a clock far
  ahead) goes to ``<table>_default``: it is never lost and the task's write never fails. The
  next maintenance gives the periods of those rows a partition and moves the rows into it in
  the same transaction (the default partition is normally empty, so this is quick).
- **Retention** (``taskqueue_history_retention``): a partition whose every row is older than
  the cut-off is dropped whole (no row-by-row DELETE, no bloat, no long transaction); rows
  past the cut-off in the default partition are deleted in small batches. A row is kept at
  least the retention and at most one period longer.

Each step is its own short transaction with a short ``lock_timeout`` (0.5 s), so maintenance
never queues behind a long query and then holds up every writer behind it for long: a step
that cannot get its lock in time is tried twice more, then left for the next run and
reported. One process maintains a table set at a time
(an advisory lock); the others skip. On SQLite (a flat table) only retention applies: old
rows are deleted in batches.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, delete, func, select, text
from sqlalchemy.exc import DBAPIError

from ..clock import utcnow
from .periods import Bounds, Period, default_partition_name, partition_name
from .schema import Tables

if TYPE_CHECKING:
    from .settings import BackendSettings

logger = logging.getLogger(__name__)

#: how often a process that writes checks that the partitions ahead exist (seconds)
CHECK_EVERY = 3600.0
_BOUND = re.compile(r"FOR VALUES FROM \((.+?)\) TO \((.+?)\)")
_UNITS = {Period.DAILY: "day", Period.WEEKLY: "week", Period.MONTHLY: "month"}
#: the most periods of default-partition rows adopted by one run
MAX_ADOPTED_PERIODS = 100
#: tries of a step whose lock is not granted within ``lock_timeout`` before it is postponed
LOCK_ATTEMPTS = 3
#: a partition starting sooner than this may be receiving rows (clocks differ): writers
#: are held while it is attached
WRITES_AHEAD = timedelta(hours=1)


@dataclass(frozen=True)
class Policy:
    """How the history is partitioned and kept (``BackendSettings`` or ``db maintain``)."""

    period: Period = Period.DAILY
    ahead: int = 7
    retention: timedelta | None = None
    lock_timeout: float = 0.5
    batch_size: int = 1000

    @classmethod
    def from_settings(cls, settings: BackendSettings) -> Policy:
        retention = settings.history_retention
        return cls(
            period=Period.parse(settings.history_partition),
            ahead=settings.history_partitions_ahead,
            retention=None if retention is None else timedelta(seconds=retention),
            batch_size=settings.cleanup_batch_size,
        )


@dataclass(frozen=True)
class Partition:
    name: str
    bounds: Bounds
    is_default: bool = False


@dataclass
class MaintenanceReport:
    """What one maintenance run did (``taskqueue db maintain`` prints it)."""

    partitioned: bool
    created: list[str] = field(default_factory=list)
    adopted_rows: int = 0  # moved from the default partition into a new partition
    dropped: list[str] = field(default_factory=list)
    deleted_rows: int = 0  # past the cut-off, deleted row by row (default partition, SQLite)
    cutoff: datetime | None = None
    partitions: int = 0
    default_rows: int = 0  # still in the default partition afterwards
    postponed: list[str] = field(default_factory=list)  # steps whose lock was not granted
    skipped: str | None = None  # why nothing was done


class HistoryPartitions:
    """The partitions of one history table (PostgreSQL), or its retention (SQLite)."""

    def __init__(self, engine: Engine, tables: Tables, policy: Policy | None = None) -> None:
        self.engine = engine
        self.tables = tables
        self.policy = policy or Policy()
        events = tables.events
        self.table = events.name
        self.schema = events.schema
        self.default = default_partition_name(self.table)
        # one advisory lock per table set (not the migrations' lock: an upgrade may maintain)
        name = f"taskqueue_backend:partitions:{self.schema or ''}:{self.table}"
        digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
        self._lock_key = int.from_bytes(digest, "big", signed=True)

    def q(self, name: str) -> str:
        return f'"{self.schema}"."{name}"' if self.schema else f'"{name}"'

    # -- reading the catalog ----------------------------------------------------------------

    def is_partitioned(self, conn: Connection) -> bool:
        kind = conn.execute(
            text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"),
            {"t": self.q(self.table)},
        ).scalar()
        return kind == "p"

    def partitions(self, conn: Connection) -> list[Partition]:
        """The history table's partitions, oldest first (the default one last)."""
        conn.execute(text("SET LOCAL TimeZone = 'UTC'"))  # bounds are read back in UTC
        conn.execute(text("SET LOCAL DateStyle = 'ISO'"))
        rows = conn.execute(
            text(
                "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:t)"
            ),
            {"t": self.q(self.table)},
        ).all()
        found = [_partition(str(name), str(bound)) for name, bound in rows]
        return sorted(found, key=_order)

    # -- maintenance ------------------------------------------------------------------------

    def maintain(
        self, now: datetime | None = None, wait: bool = True, retention: bool = True
    ) -> MaintenanceReport:
        """Make the partitions ahead, adopt default rows, then (``retention``) drop what is
        past the cut-off. ``wait``: for another process maintaining the same table set (else
        skip, saying so)."""
        now = now or utcnow()
        if self.engine.dialect.name != "postgresql":
            return self._flat_retention(now) if retention else MaintenanceReport(False)
        with self.engine.connect() as conn:
            if not self._locked(conn, wait):
                return MaintenanceReport(True, skipped="another process is maintaining it")
            try:
                return self._maintain(conn, now, retention)
            finally:
                conn.execute(select(func.pg_advisory_unlock(self._lock_key)))
                conn.commit()

    def _locked(self, conn: Connection, wait: bool) -> bool:
        lock = func.pg_advisory_lock if wait else func.pg_try_advisory_lock
        got = conn.execute(select(lock(self._lock_key))).scalar()
        conn.commit()  # a session lock: it outlives this transaction
        return got is not False

    def _maintain(self, conn: Connection, now: datetime, retention: bool) -> MaintenanceReport:
        with conn.begin():
            if not self.is_partitioned(conn):
                return MaintenanceReport(False, skipped=(
                    "the history table is not partitioned (revision 0003 or older); run "
                    "`taskqueue db upgrade`"))  # fmt: skip
        report = MaintenanceReport(True)
        cutoff = now - self.policy.retention if retention and self.policy.retention else None
        report.cutoff = cutoff
        for lower, upper in self._missing(conn, now, cutoff):
            adopted = report.adopted_rows
            self._step(conn, report, f"making {partition_name(self.table, lower)}",
                       lambda c, lo=lower, up=upper: self._create(c, lo, up, report))  # fmt: skip
            if report.adopted_rows > adopted:
                # a partition that took rows has no statistics yet: without them the planner
                # guesses thousands of rows per task id and plans a parallel scan for a lookup
                with conn.begin():
                    conn.execute(text(f"ANALYZE {self.q(partition_name(self.table, lower))}"))
        if cutoff is not None:
            self._apply_retention(conn, cutoff, report)
        with conn.begin():
            found = self.partitions(conn)
            report.partitions = len(found)
            report.default_rows = int(conn.execute(
                text(f"SELECT count(*) FROM {self.q(self.default)}")).scalar() or 0)  # fmt: skip
        return report

    def _step(self, conn: Connection, report: MaintenanceReport, what: str, run: Any) -> None:
        """One step in a transaction of its own, waiting at most ``lock_timeout`` for a lock
        (while it waits, the writers that come after it wait too), ``LOCK_ATTEMPTS`` times."""
        timeout = max(1, int(self.policy.lock_timeout * 1000))
        for attempt in range(LOCK_ATTEMPTS):
            if attempt:
                time.sleep(self.policy.lock_timeout * 2)  # let the queue behind it drain
            try:
                with conn.begin():
                    conn.execute(text(f"SET LOCAL lock_timeout = {timeout}"))
                    run(conn)
                return
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                    raise
        logger.warning("history maintenance: %s postponed, its lock was not granted within "
                       "%g s, %d times", what, self.policy.lock_timeout, LOCK_ATTEMPTS)  # fmt: skip
        report.postponed.append(what)

    def _missing(
        self, conn: Connection, now: datetime, cutoff: datetime | None
    ) -> list[tuple[datetime, datetime]]:
        """The ranges (on the period grid, cut at existing partitions) still without one:
        now's period, ``ahead`` more, and the periods of rows waiting in the default."""
        period = self.policy.period
        wanted = list(period.starts(now, self.policy.ahead + 1))
        ceiling = wanted[-1][1]
        with conn.begin():
            existing = [p.bounds for p in self.partitions(conn) if not p.is_default]
            # rows past the cut-off are not given a partition: retention deletes them
            floor, params = "", {"ceiling": ceiling}
            if cutoff is not None:
                floor, params = "AND at >= :floor", {**params, "floor": cutoff}
            starts = conn.execute(text(
                f"SELECT DISTINCT date_trunc('{_UNITS[period]}', at AT TIME ZONE 'UTC') AS s "
                f"FROM {self.q(self.default)} WHERE at < :ceiling {floor} ORDER BY s DESC "
                f"LIMIT {MAX_ADOPTED_PERIODS}"), params).scalars().all()  # fmt: skip
        for start in starts:
            begin = period.start_of(start.replace(tzinfo=UTC))
            wanted.append((begin, period.after(begin)))
        missing: list[tuple[datetime, datetime]] = []
        for lower, upper in sorted(set(wanted)):
            missing += _uncovered(lower, upper, existing)
        return missing

    def _create(
        self, conn: Connection, lower: datetime, upper: datetime, report: MaintenanceReport
    ) -> None:
        name = partition_name(self.table, lower)
        table, default = self.q(name), self.q(self.default)
        if lower <= utcnow() + WRITES_AHEAD:
            # rows of this range may be arriving now: writers wait for the attach (a few ms)
            # instead of routing a row to the default partition while it happens
            conn.execute(text(f"LOCK TABLE {self.q(self.table)} IN SHARE ROW EXCLUSIVE MODE"))
        in_range = "at >= :lower AND at < :upper"
        bounds = {"lower": lower, "upper": upper}
        conn.execute(text(f"CREATE TABLE {table} (LIKE {self.q(self.table)})"))
        # rows of this range waiting in the default partition move in the same transaction
        conn.execute(text(f"LOCK TABLE {default} IN SHARE ROW EXCLUSIVE MODE"))
        columns = ", ".join(c.name for c in self.tables.events.columns)
        moved = conn.execute(text(f"WITH moved AS (DELETE FROM {default} WHERE {in_range} "
                                  f"RETURNING {columns}) INSERT INTO {table} ({columns}) "
                                  f"SELECT {columns} FROM moved"), bounds).rowcount  # fmt: skip
        span = f"FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
        conn.execute(text(f"ALTER TABLE {self.q(self.table)} ATTACH PARTITION {table} "
                          f"FOR VALUES {span}"))  # fmt: skip
        report.created.append(name)
        report.adopted_rows += int(moved or 0)

    def _apply_retention(
        self, conn: Connection, cutoff: datetime, report: MaintenanceReport
    ) -> None:
        with conn.begin():
            found = self.partitions(conn)
        for partition in found:
            upper = partition.bounds.upper
            if partition.is_default or upper is None or upper > cutoff:
                continue
            self._step(conn, report, f"dropping {partition.name}",
                       lambda c, p=partition: self._drop(c, p, report))  # fmt: skip
        report.deleted_rows += self._delete_before(conn, self.q(self.default), cutoff)

    def _drop(self, conn: Connection, partition: Partition, report: MaintenanceReport) -> None:
        conn.execute(text(f"DROP TABLE {self.q(partition.name)}"))
        report.dropped.append(partition.name)

    def _delete_before(self, conn: Connection, table: str, cutoff: datetime) -> int:
        """Delete rows older than ``cutoff`` from one (small) table, a batch per transaction."""
        deleted = 0
        statement = text(f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} "
                         f"WHERE at < :cutoff LIMIT {int(self.policy.batch_size)}))")  # fmt: skip
        while True:
            with conn.begin():
                n = int(conn.execute(statement, {"cutoff": cutoff}).rowcount or 0)
            deleted += n
            if n < self.policy.batch_size:
                return deleted

    def _flat_retention(self, now: datetime) -> MaintenanceReport:
        report = MaintenanceReport(False)
        if self.policy.retention is None:
            return report
        report.cutoff = cutoff = now - self.policy.retention
        e = self.tables.events
        oldest = select(e.c.id).where(e.c.at < cutoff).limit(self.policy.batch_size)
        while True:
            with self.engine.begin() as conn:
                n = int(conn.execute(delete(e).where(e.c.id.in_(oldest))).rowcount or 0)
            report.deleted_rows += n
            if n < self.policy.batch_size:
                return report


class PartitionKeeper:
    """Makes the partitions ahead from a process that writes history: once when the store
    opens, then every ``CHECK_EVERY`` seconds in a thread of its own (never on the writer's
    time). A failure (no right to create tables, a lock not granted) is logged, never
    raised: rows then wait in the default partition."""

    def __init__(self, partitions: HistoryPartitions, checked: bool = False) -> None:
        """``checked``: the partitions were just made (the first check is due in an hour)."""
        self.partitions = partitions
        self._due = time.monotonic() + CHECK_EVERY if checked else 0.0
        self._lock = threading.Lock()

    def ensure(self) -> None:
        self._due = time.monotonic() + CHECK_EVERY
        try:
            report = self.partitions.maintain(wait=False, retention=False)
        except Exception as exc:
            logger.warning("could not make the history partitions ahead (%s); rows without "
                           "one wait in the default partition until `taskqueue db maintain` "
                           "runs", str(exc).splitlines()[0])  # fmt: skip
            return
        if report.created:
            logger.info("made history partitions %s", ", ".join(report.created))

    def tick(self) -> None:
        """Cheap when not due: one clock read."""
        if time.monotonic() < self._due or not self._lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() < self._due:
                return
            self._due = time.monotonic() + CHECK_EVERY
            threading.Thread(target=self.ensure, name="tq-history-partitions",
                             daemon=True).start()  # fmt: skip
        finally:
            self._lock.release()


def routed_before_attach(exc: BaseException) -> bool:
    """Whether a write failed because a partition for its row was attached while the write
    was being routed (PostgreSQL sent the row to the default partition, then found it belongs
    to the new one): written again, it goes to the new partition."""
    original = getattr(exc, "orig", None) or exc
    if getattr(original, "sqlstate", None) != "23514":  # check_violation
        return False
    table = getattr(getattr(original, "diag", None), "table_name", None) or ""
    return table.endswith("task_events_default") and "partition constraint" in str(original)


# -- helpers ------------------------------------------------------------------------------------


def _moment(literal: str) -> datetime | None:
    if literal.upper() in ("MINVALUE", "MAXVALUE"):
        return None
    return datetime.fromisoformat(literal.strip("'"))


def _partition(name: str, bound: str) -> Partition:
    if bound.strip().upper() == "DEFAULT":
        return Partition(name, Bounds(None, None), is_default=True)
    found = _BOUND.search(bound)
    if found is None:
        raise ValueError(f"partition {name} has bounds this package does not make: {bound}")
    return Partition(name, Bounds(_moment(found.group(1)), _moment(found.group(2))))


def _order(p: Partition) -> tuple[bool, bool, float]:
    lower = p.bounds.lower
    return (p.is_default, lower is not None, lower.timestamp() if lower else 0.0)


def _uncovered(
    lower: datetime, upper: datetime, existing: list[Bounds]
) -> list[tuple[datetime, datetime]]:
    """The parts of ``[lower, upper)`` no existing partition holds."""
    pieces = [(lower, upper)]
    for b in existing:
        cut: list[tuple[datetime, datetime]] = []
        for lo, up in pieces:
            if not b.overlaps(lo, up):
                cut.append((lo, up))
                continue
            if b.lower is not None and lo < b.lower:
                cut.append((lo, b.lower))
            if b.upper is not None and b.upper < up:
                cut.append((b.upper, up))
        pieces = cut
    return pieces
