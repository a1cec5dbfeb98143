"""The result store's reads for operators: search, pages, id prefixes (the operations layer's).

Workers never run these. Each query is served by an index of ``schema.py``: the equality
filters (state, name, queue, worker) by the ``(column, updated_at)`` indexes, the time ranges
by the ``updated_at``, ``received_at`` and ``finished_at`` indexes, id prefixes by the primary
key. A page is ordered by the chosen time column (newest first) and the task id, and the
cursor carries the last row's pair, so the next page is one index range scan, however deep.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.engine import Row

from .. import lifecycle
from ..clock import as_utc
from .queries import Store

#: the time columns a page can be ordered (and a range bounded) by
SORT_COLUMNS = ("updated_at", "received_at", "finished_at")
#: how far ahead of the timeline's end an event's time may be and still count in its last
#: interval (a worker's clock ahead); the bound lets the history's partitions be pruned
CLOCK_AHEAD = timedelta(hours=1)


class InvalidCursor(ValueError):
    """A cursor that no page of this listing handed out."""


@dataclass(frozen=True)
class ResultQuery:
    """Which results to list: every given criterion must match.

    ``name`` accepts ``*`` wildcards; ``text`` is matched case-insensitively against the
    exception type and message, and byte for byte against the stored (serialized) args and
    kwargs; ``since``/``until`` bound ``sort`` (the time column the page is ordered by).
    """

    states: tuple[str, ...] = ()
    name: str | None = None
    queue: str | None = None
    worker: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None
    sort: str = "updated_at"
    ascending: bool = False


def encode_cursor(moment: datetime | None, task_id: str) -> str:
    raw = json.dumps([moment.isoformat() if moment else None, task_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime | None, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, task_id = json.loads(raw)
        if not isinstance(moment, str) or not isinstance(task_id, str) or "\x00" in task_id:
            raise ValueError("not a cursor this listing handed out")  # every row has its time
        return as_utc(datetime.fromisoformat(moment)), task_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidCursor(f"invalid cursor {cursor[:100]!r}") from None


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _bytes_contain(store: Store, column: Any, raw: bytes) -> Any:
    """``raw`` occurs in the binary ``column`` (``instr`` on SQLite; on PostgreSQL a ``bytea``
    LIKE, its wildcards escaped)."""
    if store.dialect == "sqlite":
        return func.instr(column, raw) > 0
    escaped = raw.replace(b"\\", b"\\\\").replace(b"%", b"\\%").replace(b"_", b"\\_")
    return column.op("LIKE")(b"%" + escaped + b"%")


def search(
    store: Store, query: ResultQuery, limit: int, cursor: str | None = None
) -> tuple[list[Row[Any]], str | None]:
    """One page of result rows (without the stored result payload) and the next cursor."""
    r = store.tables.results
    if query.sort not in SORT_COLUMNS:
        raise ValueError(f"sort must be one of {', '.join(SORT_COLUMNS)}, got {query.sort!r}")
    column = r.c[query.sort]
    conditions: list[Any] = []
    if query.states:
        conditions.append(r.c.state.in_(list(query.states)))
    if query.name:
        if "*" in query.name:
            conditions.append(r.c.name.like(_like(query.name), escape="\\"))
        else:
            conditions.append(r.c.name == query.name)
    if query.queue:
        conditions.append(r.c.queue == query.queue)
    if query.worker:
        conditions.append(r.c.worker == query.worker)
    if query.since is not None:
        conditions.append(column >= query.since)
    if query.until is not None:
        conditions.append(column <= query.until)
    if query.sort != "updated_at":
        conditions.append(column.is_not(None))
    if query.text:
        needle = query.text.lower()
        raw = query.text.encode()
        conditions.append(or_(
            func.lower(r.c.exception_message).contains(needle, autoescape=True),
            func.lower(r.c.exception_type).contains(needle, autoescape=True),
            _bytes_contain(store, r.c.args, raw),
            _bytes_contain(store, r.c.kwargs, raw),
        ))  # fmt: skip
    if cursor:
        moment, task_id = decode_cursor(cursor)
        if query.ascending:
            conditions.append(or_(column > moment, and_(column == moment, r.c.task_id > task_id)))
        else:
            conditions.append(or_(column < moment, and_(column == moment, r.c.task_id < task_id)))
    order = (column.asc(), r.c.task_id.asc()) if query.ascending else (
        column.desc(), r.c.task_id.desc())  # fmt: skip
    columns = [c for c in r.columns if c.name != "result"]
    statement = select(*columns).where(*conditions).order_by(*order).limit(limit + 1)

    def run() -> list[Row[Any]]:
        with store.engine.connect() as conn:
            return list(conn.execute(statement))

    rows = store._retrying(run)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(as_utc(last._mapping[query.sort]), last.task_id)
    return rows, next_cursor


def ids_starting_with(store: Store, prefix: str, limit: int = 2) -> list[str]:
    """Task ids that start with ``prefix`` (a range over the primary key, then an exact check:
    a collation that ignores punctuation can put a few other ids inside the range)."""
    if not prefix:
        return []
    r = store.tables.results
    after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    statement = (
        select(r.c.task_id)
        .where(r.c.task_id >= prefix, r.c.task_id < after)
        .order_by(r.c.task_id)
        .limit(limit + 50)
    )

    def run() -> list[str]:
        with store.engine.connect() as conn:
            return [str(t) for t in conn.execute(statement).scalars()]

    return [t for t in store._retrying(run) if t.startswith(prefix)][:limit]


def history_of(store: Store, task_ids: Sequence[str]) -> dict[str, list[Row[Any]]]:
    """Every history row of these tasks, oldest first, by task id (one query)."""
    e = store.tables.events
    statement = select(e).where(e.c.task_id.in_(list(task_ids))).order_by(e.c.at, e.c.id)

    def run() -> dict[str, list[Row[Any]]]:
        found: dict[str, list[Row[Any]]] = {}
        with store.engine.connect() as conn:
            for row in conn.execute(statement):
                found.setdefault(row.task_id, []).append(row)
        return found

    return store._retrying(run) if task_ids else {}


def event_timeline(
    store: Store, events: Sequence[str], start: datetime, buckets: int, width: float
) -> dict[str, list[int]]:
    """How many of each event happened in each of ``buckets`` consecutive intervals of
    ``width`` seconds from ``start`` (the last one takes up to ``CLOCK_AHEAD`` more: an event
    stamped by a clock slightly ahead counts in it): one index range scan over ``(event, at)``
    in the history partitions of that range only (the partitions made ahead are pruned)."""
    e = store.tables.events
    edges = [start + timedelta(seconds=width * i) for i in range(buckets)]
    cells = [
        func.sum(case((and_(e.c.at >= low, e.c.at < high), 1), else_=0))
        for low, high in zip(edges, edges[1:], strict=False)
    ]
    cells.append(func.sum(case((e.c.at >= edges[-1], 1), else_=0)))
    end = edges[-1] + timedelta(seconds=width) + CLOCK_AHEAD
    statement = (
        select(e.c.event, *cells)
        .where(e.c.event.in_(list(events)), e.c.at >= edges[0], e.c.at < end)
        .group_by(e.c.event)
    )

    def run() -> dict[str, list[int]]:
        with store.engine.connect() as conn:
            found = {row[0]: [int(v or 0) for v in row[1:]] for row in conn.execute(statement)}
        return {event: found.get(event, [0] * buckets) for event in events}

    return store._retrying(run)


def states_since(store: Store, since: datetime) -> dict[str, int]:
    """Results updated since ``since``, by state (the ``updated_at`` index bounds the scan)."""
    r = store.tables.results
    statement = select(r.c.state, func.count()).where(r.c.updated_at >= since).group_by(r.c.state)

    def run() -> dict[str, int]:
        with store.engine.connect() as conn:
            return {str(state): int(n) for state, n in conn.execute(statement)}

    return store._retrying(run)


def recent_stages(
    store: Store, since: datetime, limit: int = 10_000
) -> list[tuple[datetime | None, datetime | None, datetime | None, str | None]]:
    """(sent, started, finished, name) of the newest results finished since ``since``."""
    r = store.tables.results
    statement = (
        select(r.c.sent_at, r.c.started_at, r.c.finished_at, r.c.name)
        .where(r.c.finished_at >= since)
        .order_by(r.c.finished_at.desc())
        .limit(limit)
    )

    def run() -> list[Any]:
        with store.engine.connect() as conn:
            return [(as_utc(a), as_utc(b), as_utc(c), d) for a, b, c, d in conn.execute(statement)]

    return store._retrying(run)


def events_after(store: Store, last_id: int, limit: int = 200) -> list[Row[Any]]:
    """History rows with an id above ``last_id``, in id order (the primary key)."""
    e = store.tables.events
    statement = select(e).where(e.c.id > last_id).order_by(e.c.id).limit(limit)

    def run() -> list[Row[Any]]:
        with store.engine.connect() as conn:
            return list(conn.execute(statement))

    return store._retrying(run)


def events_with_ids(store: Store, ids: Sequence[int]) -> list[Row[Any]]:
    """The history rows with these ids (those that exist), in id order."""
    e = store.tables.events
    statement = select(e).where(e.c.id.in_(list(ids))).order_by(e.c.id)

    def run() -> list[Row[Any]]:
        with store.engine.connect() as conn:
            return list(conn.execute(statement))

    return store._retrying(run) if ids else []


def last_event_id(store: Store) -> int:
    e = store.tables.events

    def run() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(select(func.max(e.c.id))).scalar() or 0)

    return store._retrying(run)


def counted_events(
    store: Store, events: Sequence[str], after: int, upto: int
) -> tuple[dict[tuple[str, str], int], list[tuple[datetime | None, ...]]]:
    """For the history rows with ids in (``after``, ``upto``]: how many of each of ``events``
    each task name had, and (sent, started, finished) of the tasks that finished among them
    — a range of the primary key, joined to the results by theirs."""
    e, r = store.tables.events, store.tables.results
    in_range = (e.c.id > after, e.c.id <= upto)
    name = func.coalesce(r.c.name, "(unknown)")
    joined = e.outerjoin(r, r.c.task_id == e.c.task_id)
    counting = (select(e.c.event, name, func.count()).select_from(joined)
                .where(*in_range, e.c.event.in_(list(events)))
                .group_by(e.c.event, name))  # fmt: skip
    finished = [lifecycle.SUCCEEDED, lifecycle.FAILED]
    finishing = (select(r.c.sent_at, r.c.started_at, r.c.finished_at).select_from(joined)
                 .where(*in_range, e.c.event.in_(finished)))  # fmt: skip

    def run() -> tuple[dict[tuple[str, str], int], list[tuple[datetime | None, ...]]]:
        with store.engine.connect() as conn:
            counts = {(str(ev), str(n)): int(c) for ev, n, c in conn.execute(counting)}
            done: list[tuple[datetime | None, ...]] = [
                (as_utc(a), as_utc(b), as_utc(c)) for a, b, c in conn.execute(finishing)
            ]
        return counts, done

    return store._retrying(run)
