"""Redis Cluster: what ``wait_for_replicas`` costs a publish, and what a master's failover
loses without it, in one run.

    python bench/cluster.py [--tasks 3000] [--rounds 3] [--failover-tasks 3000]

A cluster of three masters and three replicas (``redis-server`` on loopback, started for
the run). Publish rates (Celery ``send_task`` loop, median of the rounds): this transport on
one redis-server (the reference: kombu's stock transport has no cluster support), on the
cluster, and on the cluster with ``wait_for_replicas=1``. Failover: a publisher sends
``--failover-tasks`` tasks to a queue nobody consumes and the queue's master is SIGKILLed a
third of the way through, after its replica has been stopped for ``--lag`` seconds (SIGSTOP:
a replica that fell behind); the replica goes on and is promoted; once it is
promoted, the tasks the publisher was told were sent are counted in the queue: without
``wait_for_replicas`` those that had not reached the replica are lost, with it none may be.
Each failover variant runs on a fresh cluster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.replicated_publish import publisher, rate  # noqa: E402
from taskqueue_backend.embedded import EmbeddedRedis  # noqa: E402
from taskqueue_backend.embedded_cluster import RedisClusterSet  # noqa: E402
from taskqueue_backend.transport.batch import NotReplicated  # noqa: E402


def failover_run(
    folder: Path, tasks: int, options: dict[str, Any], lag: float, payload: int
) -> dict[str, Any]:
    """Publish with a kill of the queue's master; count confirmed publishes that survived.

    ``lag``: seconds the master's replica is stopped (SIGSTOP: a replica that fell behind,
    as on a slow link or an overloaded host) before the master is SIGKILLed; then it goes on
    (SIGCONT) and is promoted. What the master acknowledged meanwhile beyond what the
    sockets' buffers hold never reached the replica (``payload`` bytes of argument per task
    make that a few hundred publishes)."""
    cluster = RedisClusterSet(folder).start()
    try:
        app = publisher(cluster.url, options)
        victim = cluster.master_of("tq:{failover}:ready")
        replica = cluster.replica_of(victim)
        body = "x" * payload
        confirmed: list[str] = []
        not_replicated = refused = 0
        killed_at = stopped_at = 0.0
        for i in range(tasks):
            if i == tasks // 3 and lag:
                replica.pause()
                stopped_at = time.monotonic()
            if stopped_at and not killed_at and time.monotonic() - stopped_at >= lag:
                cluster.kill(victim)
                killed_at = time.monotonic()
                replica.resume()
            task_id = f"failover-{i}"
            try:
                app.send_task("bench.noop", (body,), queue="failover", task_id=task_id,
                              retry=True, retry_policy={"max_retries": 60,
                                                        "interval_start": 0.2,
                                                        "interval_step": 0.2,
                                                        "interval_max": 0.5})  # fmt: skip
                confirmed.append(task_id)
            except NotReplicated:
                not_replicated += 1  # published, but no replica confirmed it: not counted
                if killed_at and not victim.running:
                    victim.start()  # back as the new master's replica
            except redis.RedisError:
                refused += 1
        client = cluster.client()
        held = client.hmget("tq:{failover}:ids", confirmed) if confirmed else []
        app.close()
        lost = sum(1 for found in held if found is None)
        return {"confirmed": len(confirmed), "not_replicated": not_replicated,
                "refused": refused, "held": len(confirmed) - lost, "lost": lost}  # fmt: skip
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--failover-tasks", type=int, default=3000)
    parser.add_argument(
        "--lag", type=float, default=1.0,
        help="seconds the master's replica is stopped before the kill (0: not stopped)",
    )  # fmt: skip
    parser.add_argument("--payload", type=int, default=65536,
                        help="bytes of argument per task in the failover runs")  # fmt: skip
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tq-bench-cluster-") as tmp:
        single = EmbeddedRedis(dir=str(Path(tmp) / "single")).start()
        cluster = RedisClusterSet(Path(tmp) / "cluster").start()
        try:
            variants = {
                "one redis-server": publisher(single.url, {}),
                "cluster": publisher(cluster.url, {}),
                "cluster, wait_for_replicas=1": publisher(cluster.url, {"wait_for_replicas": 1}),
            }
            rates: dict[str, list[float]] = {name: [] for name in variants}
            for round_number in range(args.rounds):
                for name, app in variants.items():
                    rates[name].append(rate(app, args.tasks, f"bench{round_number}"))
            for app in variants.values():
                app.close()
        finally:
            cluster.stop()
            single.stop()
        medians = {name: statistics.median(values) for name, values in rates.items()}
        print(f"publish, {args.tasks} send_task calls, median of {args.rounds} rounds")
        base = medians["one redis-server"]
        for name, value in medians.items():
            print(f"  {name:32} {value:8,.0f}/s  {value / base:.2f}x")
        wait_cost = medians["cluster, wait_for_replicas=1"] / medians["cluster"]
        print(f"  wait_for_replicas=1 on the cluster: {wait_cost:.2f}x the publish rate")

        print(f"failover of the queue's master after {args.failover_tasks // 3} of "
              f"{args.failover_tasks} publishes of {args.payload:,} bytes, its replica "
              f"stopped {args.lag:g} s before")  # fmt: skip
        for name, options in (("no wait", {}), ("wait_for_replicas=1", {"wait_for_replicas": 1})):
            found = failover_run(Path(tmp) / name.replace("=", "-"), args.failover_tasks,
                                 options, args.lag, args.payload)  # fmt: skip
            print(f"  {name:20} confirmed {found['confirmed']:5}  NotReplicated "
                  f"{found['not_replicated']:4}  refused {found['refused']:3}  held "
                  f"{found['held']:5}  lost {found['lost']:4}")  # fmt: skip


if __name__ == "__main__":
    main()
