"""Soak: a million tasks through four stock workers while a worker is SIGKILLed every minute
and the broker's primary fails over once.

    python bench/soak.py [--tasks 1000000] [--workers 4] [--kill-every 60] [--failover-at 0.5]

It starts its own servers (``bench/soak_services.py``): a Redis primary, its replica and three
sentinels (the workers and the publisher reach them through the ``sentinel://`` list with
``master_name``), a Redis for the tasks' records, and a fresh PostgreSQL database for the
result backend (on the server of ``TQ_SOAK_DATABASE_URL``, default the test database's; it is
dropped at the end). The load is ``taskqueue loadtest``'s (``taskqueue_backend.loadtest``): one
no-op task recording ``{seq, pid, ...}`` per run, published from threads with at most
``--max-backlog`` tasks waiting, each with ``wait_for_replicas`` (a ``NotReplicated`` publish
is counted, not sent again), consumed by stock ``celery worker`` processes with late
acknowledgements. ``bench/soak_chaos.py`` kills and restarts the workers and fails the primary
over; ``bench/soak_checks.py`` judges the outcome: nothing lost, duplicates only where a killed
worker or the failover explains them, every task run (but a ``NotReplicated`` one the failover
took), worker RSS growth under 10 % after warm-up, the broker's memory back to its baseline
with no leaked key, and it reports the result tables' sizes per million tasks. It prints the
report (``bench/soak_report.py``), writes it as JSON (``--json-report``, default
``bench/results/soak.json``) and exits 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import soak_checks  # noqa: E402
from bench.soak_chaos import Chaos  # noqa: E402
from bench.soak_report import render  # noqa: E402
from bench.soak_services import SoakDatabase, keys_under, redis_memory  # noqa: E402
from taskqueue_backend.embedded import EmbeddedRedis  # noqa: E402
from taskqueue_backend.embedded_sentinel import SentinelSet  # noqa: E402
from taskqueue_backend.loadtest import LoadRun, LoadSpec, LoadtestConfig, plan_tasks  # noqa: E402
from taskqueue_backend.loadtest.rss import MEASURED_WITH  # noqa: E402
from taskqueue_backend.loadtest.stats import summarize  # noqa: E402

MASTER = "tqsoak"
DRAIN_KINDS = ("lease", "queue")  # a dead letter stays: the keys' check names it


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--tasks", type=int, default=1_000_000)
    add("--workers", type=int, default=4)
    add("-c", "--concurrency", type=int, default=1, help="pool processes per worker")
    add("--prefetch-multiplier", type=int, default=4)
    add("--publishers", type=int, default=2, help="publishing threads")
    add("--max-backlog", type=int, default=2000, help="published tasks without a record, at most")
    add("--kill-every", type=float, default=60.0, help="seconds between worker kills (0: none)")
    add("--spare", type=int, default=1,
        help="workers never killed (the last ones): their RSS spans the whole run")  # fmt: skip
    add("--failover-at", type=float, default=0.5,
        help="fail over once this share of the tasks is published (<0: never)")  # fmt: skip
    add("--wait-for-replicas", type=int, default=1)
    add("--replica-timeout", type=float, default=1.0, help="wait_for_replicas_timeout (s)")
    add("--heartbeat-timeout", type=float, default=30.0)
    add("--heartbeat-interval", type=float, default=5.0)
    add("--warmup", type=float, default=60.0, help="seconds after a worker consumed")
    add("--min-span", type=float, default=60.0, help="RSS measured over at least this long")
    add("--sample-every", type=float, default=10.0, help="seconds between RSS samples")
    add("--timeout", type=float, default=4 * 3600.0)
    add("--stall-timeout", type=float, default=180.0,
        help="stop waiting once published and no task finished for this long")  # fmt: skip
    add("--seed", type=int, default=1)
    add("--log-dir", type=Path, default=None, help="keep the servers' and workers' logs here")
    add("--json-report", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    add("--progress-every", type=float, default=30.0)
    return parser.parse_args(argv)


class Progress:
    """A line every ``every`` seconds: published, finished, rate since the last line, backlog."""

    def __init__(self, run: LoadRun, every: float) -> None:
        self.run, self.every = run, every
        self.began = self.last_at = time.monotonic()
        self.last_finished = 0

    def __call__(self, _: int) -> None:
        now = time.monotonic()
        if now - self.last_at < self.every:
            return
        run = self.run
        rate = (run.finished_count - self.last_finished) / (now - self.last_at)
        say(f"+{now - self.began:6.0f} s  published {run.published_count:>9,}  finished "
            f"{run.finished_count:>9,}  {rate:6.0f} tasks/s  backlog "
            f"{run.published_count - run.finished_count:>6,}  NotReplicated "
            f"{len(run.unconfirmed):,}")  # fmt: skip
        self.last_at, self.last_finished = now, run.finished_count


def say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} soak: {line}", flush=True)


def wait_drained(sentinels: SentinelSet, prefix: str, timeout: float) -> float:
    """Wait until no task is ready, delayed or leased under ``prefix``; the seconds."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        keys = keys_under(sentinels.primary_port(), prefix)
        if not any(soak_checks.kind_of(k[len(prefix) :]) in DRAIN_KINDS for k in keys):
            break
        time.sleep(1.0)
    return time.monotonic() - began


def soak(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    database = SoakDatabase.from_env()
    prefix = f"tqsoak-{uuid.uuid4().hex[:8]}:"
    with ExitStack() as stack:
        (folder / "broker").mkdir(parents=True, exist_ok=True)
        sentinels = stack.enter_context(SentinelSet(
            folder / "broker", MASTER, server_args=["--appendfsync", "everysec"]))  # fmt: skip
        records = stack.enter_context(EmbeddedRedis(dir=str(folder / "records")))
        database.create()
        stack.callback(database.drop)
        options = {"master_name": MASTER, "wait_for_replicas": args.wait_for_replicas,
                   "wait_for_replicas_timeout": args.replica_timeout,
                   "heartbeat_timeout": args.heartbeat_timeout,
                   "heartbeat_interval": args.heartbeat_interval}  # fmt: skip
        priorities = (0,)  # one level: FIFO, so queue waits say how far publishing ran ahead
        config = LoadtestConfig(
            broker_url=sentinels.url, keyprefix=prefix, result_backend=database.result_backend,
            record_url=records.url, prefetch_multiplier=args.prefetch_multiplier,
            max_priority=9, publishers=args.publishers,
            transport_options=options, acks_late=True,
            publish_retry_policy={"max_retries": 300, "interval_start": 0.1,
                                  "interval_step": 0.2, "interval_max": 0.5},
        )  # fmt: skip
        spec = LoadSpec(
            tasks=args.tasks, publishers=args.publishers, priorities=priorities,
            failure_rate=0.0, duration=0.0, workers=args.workers,
            concurrency=args.concurrency, pool="prefork",
            prefetch_multiplier=args.prefetch_multiplier, timeout=args.timeout, seed=args.seed,
            max_backlog=args.max_backlog, stall_timeout=args.stall_timeout,
        )  # fmt: skip
        plan = plan_tasks(spec)
        (folder / "workers").mkdir(exist_ok=True)
        with LoadRun(spec, config, plan, folder / "workers") as run:
            say(f"starting {args.workers} workers (-P prefork -c {args.concurrency}) on "
                f"{sentinels.url} (master {MASTER}), results in {database.name}")  # fmt: skip
            run.start_workers()
            servers = [server.port for server in sentinels.servers]
            roles = {"primary": sentinels.primary_port()}
            roles["replica"] = next(port for port in servers if port != roles["primary"])
            baseline = {role: redis_memory(port) for role, port in roles.items()}
            baseline_keys = keys_under(roles["primary"], prefix)
            numbers = list(range(1, args.workers + 1))
            killable = numbers[: max(0, args.workers - args.spare)]
            failover_when = None
            if args.failover_at >= 0:

                def failover_when() -> bool:
                    return run.published_count >= args.failover_at * args.tasks

            chaos = Chaos(run, sentinels, killable, args.kill_every, failover_when,
                          args.sample_every, say)  # fmt: skip
            say(f"publishing {args.tasks:,} tasks; a kill every {args.kill_every:g} s of "
                f"workers {killable}, failover at {args.failover_at:.0%} published")  # fmt: skip
            chaos.begin(numbers)
            began = time.time()
            complete = run.publish_and_wait(Progress(run, args.progress_every))
            ended = time.time()
            say(f"{run.finished_count:,} of {run.published_count:,} tasks finished in "
                f"{ended - began:.0f} s; waiting for the queues to drain")  # fmt: skip
            drained_in = wait_drained(sentinels, prefix, 120.0)
            time.sleep(2 * args.heartbeat_interval)  # heartbeats and registry writes settle
            chaos.stop()
            ended_as = {"primary": sentinels.primary_port()}
            ended_as["replica"] = next(port for port in servers if port != ended_as["primary"])
            after = {role: redis_memory(port) for role, port in ended_as.items()}
            left = keys_under(ended_as["primary"], prefix)
            workers_alive = sum(run.worker(n).poll() is None for n in numbers)
        # the workers stopped (SIGTERM): their last records are in; the run's keys are gone
        data = run.data()
        published = [t.seq for t in plan if data.published_at[t.seq] is not None]
        killed = chaos.killed_lives()

        def returned(seqs: list[int]) -> dict[int, list[tuple[str, float]]]:
            ids = {run.task_id(seq): seq for seq in seqs}
            return {ids[task_id]: found for task_id, found in database.returned(list(ids)).items()}

        verdicts = {
            "deliveries": soak_checks.deliveries(
                published, run.unconfirmed, data.records, killed, chaos.failover, returned
            ),  # fmt: skip
            "rss_growth": soak_checks.rss_growth(chaos.incarnations, args.warmup, args.min_span),
            "broker_keys": soak_checks.broker_keys(left, prefix),
            "broker_memory": {
                role: {
                    "port_before": roles[role],
                    "port_after": ended_as[role],
                    **soak_checks.broker_memory(baseline[role], after[role]),
                }
                for role in roles
            },  # fmt: skip
        }
        sizes = database.sizes()
    figures = summarize(data)
    memory_passed = all(v["passed"] for v in verdicts["broker_memory"].values())
    # every task was published and ran, but for NotReplicated ones the failover took (their
    # publishers were told: what the broker promises)
    lost_confirmed = verdicts["deliveries"]["lost_confirmed"]
    complete = complete or (len(published) == len(plan) and lost_confirmed == 0)
    checks = {
        "completed": complete and not chaos.errors,
        "nothing lost, duplicates explained": verdicts["deliveries"]["passed"],
        "worker RSS growth < 10 %": verdicts["rss_growth"]["passed"],
        "no leaked broker keys": verdicts["broker_keys"]["passed"],
        "broker memory back to baseline": memory_passed,
        "every worker alive at the end": workers_alive == args.workers,
    }
    return {
        "settings": {
            **vars(args),
            "log_dir": str(folder),
            "json_report": str(args.json_report),
            "key_prefix": prefix,
            "rss_measured_with": MEASURED_WITH,
            "transport_options": options,
            "acks_late": True,
            "database": database.name,
        },  # fmt: skip
        "figures": {
            key: figures[key]
            for key in (
                "published",
                "finished",
                "throughput_tasks_per_s",
                "publish_rate_per_s",
                "wall_seconds",
                "end_to_end_ms",
                "queue_wait_ms",
                "worker_processes",
            )
        },
        "run_seconds": ended - began,
        "drained_after_s": drained_in,
        "kills": [vars(kill) for kill in chaos.kills],
        "failover": chaos.failover.as_dict() if chaos.failover else None,
        "baseline_keys": soak_checks.broker_keys(baseline_keys, prefix),
        **verdicts,
        "postgres": {"tasks": len(published), "tables": sizes},
        "chaos_errors": [repr(exc) for exc in chaos.errors],
        "checks": checks,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    folder = args.log_dir or Path(tempfile.mkdtemp(prefix="tq-soak-"))
    folder.mkdir(parents=True, exist_ok=True)
    report = soak(args, folder)
    args.json_report.parent.mkdir(parents=True, exist_ok=True)
    args.json_report.write_text(json.dumps(report, indent=2, default=str) + "\n")
    for line in render(report):
        print(line)
    print(f"JSON report: {args.json_report}; logs: {folder}")
    failed = [name for name, passed in report["checks"].items() if not passed]
    if failed:
        print("soak: FAILED: " + "; ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
