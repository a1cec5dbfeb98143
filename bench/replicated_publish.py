"""What waiting for a replica costs a publish: ``wait_for_replicas`` on and off, beside
kombu's stock transport, in one run.

    python bench/replicated_publish.py [--tasks 3000] [--rounds 3]

A primary and a replica (``redis-server`` on loopback, started for the run) and three
publishers through Celery's ``send_task``: kombu's stock Redis transport, this transport, and
this transport with ``wait_for_replicas=1`` (each publish returns once the replica holds the
message, so a failover to it cannot lose it). Prints publishes per second (median of the
rounds) and the ratios.
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

from bench.common import wait_until  # noqa: E402
from taskqueue_backend.embedded import EmbeddedRedis  # noqa: E402

VARIANTS: dict[str, dict[str, Any] | None] = {
    "stock": None,
    "taskqueue": {},
    "taskqueue, wait_for_replicas=1": {"wait_for_replicas": 1},
}


def publisher(url: str, options: dict[str, Any] | None) -> Any:
    from celery import Celery

    app = Celery("bench.replicated", set_as_current=False)
    app.conf.broker_url = url
    if options is not None:
        app.conf.broker_transport = "taskqueue_backend.transport:Transport"
        app.conf.broker_transport_options = options
    return app


def rate(app: Any, tasks: int, queue: str) -> float:
    app.send_task("bench.noop", queue=queue)  # connect and declare outside the timing
    started = time.perf_counter()
    for _ in range(tasks):
        app.send_task("bench.noop", queue=queue)
    return tasks / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    given = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        primary = EmbeddedRedis(dir=str(Path(folder) / "a"))
        Path(folder, "a").mkdir()
        Path(folder, "b").mkdir()
        primary.start()
        follow = ["--replicaof", "127.0.0.1", str(primary.port)]
        replica = EmbeddedRedis(dir=str(Path(folder) / "b"), extra_args=follow)
        replica.start()
        try:
            wait_until(lambda: redis.Redis(port=replica.port).info("replication")
                       .get("master_link_status") == "up", 20, "the replica to sync")  # fmt: skip
            found: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for round_ in range(given.rounds):
                for number, (name, options) in enumerate(VARIANTS.items()):  # interleaved
                    app = publisher(primary.url, options)
                    try:
                        found[name].append(rate(app, given.tasks, f"bench-{round_}-{number}"))
                    finally:
                        app.close()
                redis.Redis(port=primary.port).flushdb()
            medians = {name: statistics.median(values) for name, values in found.items()}
            print(
                f"publishes/s ({given.tasks} send_task calls, median of {given.rounds} rounds; "
                "a primary with one replica on loopback):"
            )
            for name, value in medians.items():
                print(f"  {name:<34} {value:8.0f}")
            base, ours = medians["stock"], medians["taskqueue"]
            waited = medians["taskqueue, wait_for_replicas=1"]
            print(f"  taskqueue vs stock:                     {ours / base:.2f}x")
            print(f"  wait_for_replicas=1 vs taskqueue:       {waited / ours:.2f}x")
            print(f"  wait_for_replicas=1 vs stock:           {waited / base:.2f}x")
        finally:
            replica.stop()
            primary.stop()


if __name__ == "__main__":
    main()
