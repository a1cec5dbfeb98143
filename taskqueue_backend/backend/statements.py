"""The PostgreSQL state write: one hand-written statement, built once per table set.

Data-modifying CTEs run exactly once and commit together: the result upsert, the history rows
(a JSON array expanded by ``jsonb_to_recordset``) and the NOTIFY that wakes ``get()``. The
statement is prepared on the server (``direct.py``), so its text is kept short: psycopg caches
the conversion of statements under 4 kB only.
"""

from __future__ import annotations

from sqlalchemy import Table

from .schema import Tables

TERMINAL_STATES = ("SUCCESS", "FAILURE", "REVOKED")
NOTIFY_CHANNEL = "tq_result_ready"
#: result columns that follow the state (they change together, or not at all)
STATE_COLUMNS = (
    "state", "result", "children", "content_type", "content_encoding", "traceback",
    "exception_type", "exception_message", "finished_at", "retries",
)  # fmt: skip
#: columns a later event fills in but never clears
LATEST_COLUMNS = ("worker", "received_at", "started_at")
#: columns set once (what the task is, where it came from)
FIRST_COLUMNS = ("name", "args", "kwargs", "queue", "parent_id", "root_id", "group_id", "sent_at")


def _name(table: Table) -> str:
    return f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'


class PostgresStatements:
    """The state write as one hand-written statement (built once per table set).

    Data-modifying CTEs run exactly once and commit together: the result upsert, the history
    rows (a JSON array expanded by ``jsonb_to_recordset``), the worker's counters and the
    NOTIFY that wakes ``get()``.
    """

    def __init__(self, tables: Tables) -> None:
        results, events = _name(tables.results), _name(tables.events)
        columns = list(tables.results.columns.keys())
        #: one task's result row, several tasks' rows
        self.read_result = f"SELECT * FROM {results} WHERE task_id = %(task_id)s"
        self.read_results = f"SELECT * FROM {results} WHERE task_id = ANY(%(task_ids)s)"
        #: one task's result row and its history in order, in one statement and one reply
        #: (as JSON: ``queries.from_json`` restores the column types)
        self.read_task = (
            f"SELECT (SELECT to_jsonb(r) FROM {results} r WHERE task_id = %(task_id)s), "
            f"(SELECT jsonb_agg(to_jsonb(e) ORDER BY e.at, e.id) FROM {events} e "
            "WHERE task_id = %(task_id)s)"
        )
        terminal = ", ".join(f"'{s}'" for s in TERMINAL_STATES)
        final = "'{" + ",".join(TERMINAL_STATES) + "}'"
        # kept short: psycopg caches the conversion of statements under 4 kB only, so the
        # condition is computed once and the state columns are set together
        applies = (
            f"r.state<>ALL({final})AND(EXCLUDED.state<>'PENDING'OR r.state='PENDING')"
            f"AND(EXCLUDED.state=ANY({final})OR EXCLUDED.updated_at>=r.updated_at)"
        )
        picked = ",".join(f"CASE WHEN a THEN EXCLUDED.{c} ELSE r.{c} END" for c in STATE_COLUMNS)
        sets = [f"({','.join(STATE_COLUMNS)})=(SELECT {picked} FROM(SELECT {applies} AS a)t)"]
        sets += [f"{c}=COALESCE(EXCLUDED.{c},r.{c})" for c in LATEST_COLUMNS]
        sets += [f"{c}=COALESCE(r.{c},EXCLUDED.{c})" for c in FIRST_COLUMNS]
        sets.append("updated_at=GREATEST(EXCLUDED.updated_at,r.updated_at)")
        insert_events = f"""
            INSERT INTO {events} (task_id, event, state, at, worker, detail)
            SELECT x.task_id, x.event, x.state, x.at, x.worker, x.detail
            FROM jsonb_to_recordset(CAST(%(events)s AS jsonb)) AS x(
                task_id text, event text, state text, at timestamptz, worker text, detail json)
            {{only_new}}RETURNING 1"""
        # a retried write: only the history rows its failed attempt did not commit
        only_new = (f"WHERE NOT EXISTS (SELECT 1 FROM {events} e WHERE e.task_id=x.task_id "
                    "AND e.event=x.event AND e.at=x.at) ")  # fmt: skip
        self.events_only = insert_events.replace("{only_new}", "")
        self.events_only_again = insert_events.replace("{only_new}", only_new)
        state_write = f"""
            WITH up AS (
                INSERT INTO {results} AS r ({", ".join(columns)})
                VALUES ({", ".join(f"%({c})s" for c in columns)})
                ON CONFLICT (task_id) DO UPDATE SET {", ".join(sets)}
                RETURNING r.state
            ), ev AS ({{insert_events}}
            ), notified AS (
                SELECT pg_notify('{NOTIFY_CHANNEL}', %(task_id)s) FROM up
                WHERE %(notify)s AND up.state IN ({terminal})
            )
            SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM ev),
                   (SELECT count(*) FROM notified)"""
        first, again = self.events_only, self.events_only_again
        self.state_write = _compact(state_write.replace("{insert_events}", first))
        self.state_write_again = _compact(state_write.replace("{insert_events}", again))
        self.events_only, self.events_only_again = _compact(first), _compact(again)


def _compact(sql: str) -> str:
    return " ".join(sql.split())
