"""The soak run's verdicts, computed from what it recorded; each returns its figures and
whether it passed.

- ``deliveries``: lost tasks (published, no record), split into publishes the broker confirmed
  and the ones it answered ``NotReplicated`` (queued on the primary before it had a replica
  again); duplicates (records beyond a task's first), each attributed to one cause, checked in
  this order: *ran on a killed worker* (one of its runs came from a process of a worker that
  was SIGKILLed, by pid within that worker's life: it ran there and its acknowledgement died
  with it), *leased to a killed worker* (the history holds a ``returned`` event from a
  consumer, ``host:pid:…``, of a worker killed before it: the heartbeat recovery gave it
  back), *failover: a live consumer's heartbeats lapsed* (returned from a live consumer inside
  the failover window: its heartbeats could not reach a primary for longer than
  ``heartbeat_timeout``), *failover: an acknowledgement not replicated* (one of its runs
  finished inside the window: the old primary took the acknowledgement and died before its
  replica had it). The failover window runs from
  ``FAILOVER_MARGIN_S`` before the primary's kill to that long after the replica was in sync
  again. Anything else is *unexplained*, and fails the check.
- ``rss_growth``: per worker incarnation, RSS at the end (its kill or the end of the run)
  against its first sample ``warmup`` seconds after it consumed; measured only when at least
  ``min_span`` seconds lie between the two; fails at ``RSS_LIMIT_PERCENT`` or more.
- ``broker_keys``: every key left under the run's prefix after the drain, by kind; a message,
  a queue's ready/in-flight/delayed/dead entries, a lease or an unknown key fails the check,
  the kinds ``BY_DESIGN`` names are kept and explained (each key with its ``MEMORY USAGE``).
- ``broker_memory``: ``used_memory_dataset`` after the drain against the baseline taken before
  the first publish, role by role (the primary at the end against the primary before, which
  after a failover is the other server: a primary's dataset figure also holds what only a
  primary keeps, such as the script cache, so a server is compared in the role it had);
  fails when it grew by more than ``MEMORY_SLACK_BYTES``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from bench.soak_chaos import Failover, Incarnation

FAILOVER_MARGIN_S = 5.0
#: a killed worker's leases are returned within this long of its kill (heartbeat window + check)
RECOVERY_REACH_S = 600.0
RSS_LIMIT_PERCENT = 10.0
MEMORY_SLACK_BYTES = 1024 * 1024

#: key kind -> why it stays after the queues drained
BY_DESIGN = {
    "consumers": "the registry of consumers online (the workers still running)",
    "consumer": "one hash per consumer, online or offline: a killed or stopped worker's stays "
    "listed as offline for 7 days (OFFLINE_KEEP_MS) with its counts, unless forgotten",
    "offline": "the offline consumers and when they went offline (same retention)",
    "queues": "the names of the queues this broker has seen",
    "audit": "the audit stream: one worker.offline record per recovered consumer",
    "binding": "kombu's exchange bindings: the binding tables, the permanent bindings and "
    "the deadlines of expiring ones (kombu >= 5.7; declared once, as with its own transport)",
    "queue state": "a declared queue's state hash (declared_at, pause, expiry): kept while the "
    "queue is declared",
    "failed": "failure counters of worker processes",
}
#: (kind, pattern of the key's name after the prefix)
KINDS = [
    ("consumers", r"\{tq\}:consumers"),
    ("consumer", r"\{tq\}:consumer:.+"),
    ("offline", r"\{tq\}:offline"),
    ("queues", r"\{tq\}:queues"),
    ("audit", r"\{tq\}:audit"),
    ("failed", r"\{tq\}:failed:.+"),
    ("binding", r"_kombu\.binding(\..+|_deadlines|_permanent\..+)"),
    ("message", r"tq:\{.+\}:m:.+"),
    ("lease", r"tq:\{.+\}:held:.+"),
    ("queue", r"tq:\{.+\}:(ready|delayed|inflight|replaying)"),
    ("dead letters", r"tq:\{.+\}:dead"),
    ("task-id index", r"tq:\{.+\}:ids"),
    ("queue state", r"tq:\{.+\}:(state|signal)"),
]


CAUSES = (
    "ran on a killed worker",
    "leased to a killed worker",
    "failover: a live consumer's heartbeats lapsed",
    "failover: an acknowledgement not replicated",
    "unexplained",
)


def _consumer_pid(consumer: str) -> int | None:
    """The worker's pid in a consumer id (``host:pid:random``)."""
    parts = consumer.split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def _killed_before(lives: Iterable[tuple[float, float]], at: float) -> bool:
    """A life that ended (was killed) before ``at``, within the recovery's reach of it."""
    return any(end <= at <= end + RECOVERY_REACH_S for _, end in lives)


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.fullmatch(pattern, name):
            return kind
    return "unknown"


def deliveries(
    published: Sequence[int],
    unconfirmed: Iterable[int],
    records: Sequence[Mapping[str, Any]],
    killed: Mapping[int, Sequence[tuple[float, float]]],
    failover: Failover | None,
    returned: Callable[[list[int]], dict[int, list[tuple[str, float]]]],
) -> dict[str, Any]:
    """Lost and duplicated tasks, duplicates attributed (see the module docstring)."""
    runs: dict[int, list[Mapping[str, Any]]] = {}
    for record in records:
        runs.setdefault(int(record["seq"]), []).append(record)
    unsure = set(unconfirmed)
    lost = [seq for seq in published if seq not in runs]
    twice = sorted(seq for seq, found in runs.items() if len(found) > 1)

    def on_killed(pid: int | None, at: float) -> bool:
        return any(start <= at <= end for start, end in killed.get(pid or 0, ()))

    def ran_on_killed(seq: int) -> bool:
        return any(on_killed(int(r["pid"]), float(r["started_at"])) for r in runs[seq])

    recovered = returned([seq for seq in twice if not ran_on_killed(seq)])
    window = None
    if failover is not None:
        window = (failover.killed_at - FAILOVER_MARGIN_S,
                  (failover.replica_back_at or failover.killed_at) + FAILOVER_MARGIN_S)  # fmt: skip

    def in_window(at: float) -> bool:
        return window is not None and window[0] <= at <= window[1]

    causes: dict[str, list[int]] = {cause: [] for cause in CAUSES}
    for seq in twice:
        found = runs[seq]
        taken = recovered.get(seq, [])
        if ran_on_killed(seq):
            causes["ran on a killed worker"].append(seq)
        # the recovery runs after the kill: the consumer's pid was the killed worker's then
        elif any(_killed_before(killed.get(_consumer_pid(c) or 0, ()), at) for c, at in taken):
            causes["leased to a killed worker"].append(seq)
        elif any(in_window(at) for _, at in taken):
            causes["failover: a live consumer's heartbeats lapsed"].append(seq)
        elif any(in_window(float(r["finished_at"])) for r in found):
            causes["failover: an acknowledgement not replicated"].append(seq)
        else:
            causes["unexplained"].append(seq)
    extra = sum(len(runs[seq]) - 1 for seq in twice)
    confirmed_lost = [seq for seq in lost if seq not in unsure]
    return {
        "published": len(published),
        "confirmed": len(published) - len(unsure),
        "unconfirmed_not_replicated": len(unsure),
        "finished": len(runs),
        "lost": len(lost),
        "lost_confirmed": len(confirmed_lost),
        "lost_unconfirmed": len(lost) - len(confirmed_lost),
        "lost_examples": lost[:20],
        "duplicated_tasks": len(twice),
        "duplicate_records": extra,
        "duplicates_by_cause": {cause: len(seqs) for cause, seqs in causes.items()},
        "unexplained_examples": causes["unexplained"][:20],
        "returned_from": {
            str(seq): [consumer for consumer, _ in found] for seq, found in recovered.items()
        },  # fmt: skip
        "runs_per_task": dict(Counter(len(found) for found in runs.values())),
        "passed": not confirmed_lost and not causes["unexplained"],
    }


def rss_growth(incarnations: Sequence[Incarnation], warmup: float,
               min_span: float) -> dict[str, Any]:  # fmt: skip
    """Per incarnation: RSS after warm-up and at the end, and the growth (see above)."""
    rows = []
    for life in incarnations:
        warm = next(((t, rss) for t, rss in life.samples if t >= life.ready_at + warmup), None)
        last = life.samples[-1] if life.samples else None
        row: dict[str, Any] = {
            "worker": life.number, "pid": life.pid, "killed": life.killed,
            "lived_s": round((life.ended_at or life.ready_at) - life.ready_at, 1),
            "samples": len(life.samples),
        }  # fmt: skip
        if warm is not None and last is not None and last[0] - warm[0] >= min_span:
            row.update(
                rss_after_warmup_bytes=warm[1], rss_end_bytes=last[1],
                measured_over_s=round(last[0] - warm[0], 1),
                growth_percent=round((last[1] - warm[1]) * 100 / warm[1], 2),
            )  # fmt: skip
        rows.append(row)
    measured = [row for row in rows if "growth_percent" in row]
    worst = max((row["growth_percent"] for row in measured), default=None)
    return {
        "incarnations": rows,
        "measured": len(measured),
        "worst_growth_percent": worst,
        "limit_percent": RSS_LIMIT_PERCENT,
        "passed": bool(measured) and all(r["growth_percent"] < RSS_LIMIT_PERCENT for r in measured),
    }


def broker_keys(keys: Mapping[str, int], prefix: str) -> dict[str, Any]:
    """The keys left under ``prefix`` (name -> bytes) by kind, the by-design ones explained."""
    kinds: dict[str, list[str]] = {}
    for name in sorted(keys):
        kinds.setdefault(kind_of(name[len(prefix) :]), []).append(name)
    leaked = {kind: names for kind, names in kinds.items() if kind not in BY_DESIGN}
    return {
        "total": len(keys),
        "bytes": sum(keys.values()),
        "by_kind": {kind: len(names) for kind, names in kinds.items()},
        "bytes_by_kind": {kind: sum(keys[n] for n in names) for kind, names in kinds.items()},
        "explained": {kind: BY_DESIGN[kind] for kind in kinds if kind in BY_DESIGN},
        "not_by_design": {kind: names[:20] for kind, names in leaked.items()},
        "names": sorted(keys)[:200],
        "passed": not leaked,
    }


def broker_memory(baseline: Mapping[str, int], after: Mapping[str, int]) -> dict[str, Any]:
    grown = after["used_memory_dataset"] - baseline["used_memory_dataset"]
    return {
        "baseline": dict(baseline),
        "after_drain": dict(after),
        "dataset_growth_bytes": grown,
        "used_memory_growth_bytes": after["used_memory"] - baseline["used_memory"],
        "slack_bytes": MEMORY_SLACK_BYTES,
        "passed": grown <= MEMORY_SLACK_BYTES,
    }
