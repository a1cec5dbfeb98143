"""Broker benchmark: kombu's stock ``redis://`` transport vs this one, in one run.

    python bench/broker.py [--tasks 10000] [--probes 300]

Both run the same no-op workload with the same Celery settings (prefork, 2 processes,
prefetch multiplier 4) against a dedicated redis-server started for the run, and the script
prints for each: publish msg/s (plain ``apply_async`` loop, and a pipelined burst through
``producer.batch()``), end-to-end tasks/s draining a preloaded queue, pickup latency p50/p99
on an idle worker, Redis CPU seconds per 10k tasks, and per task in each phase (publish loop,
burst, consuming: fetch and acknowledgement) the Redis commands run (those a script runs
included, by name, from ``INFO commandstats``) and the Redis CPU microseconds, and the worker's
Python CPU microseconds (main and pool processes), followed by the ratios. The no-op task
itself runs one ``INCR`` on the same server, counted in the consuming phase for both.

It also runs the ``apply_async`` loop through kombu's in-process ``memory://`` transport, where
a publish costs only Celery's and kombu's own work: the fastest any broker could let
``apply_async`` be, printed as a ceiling against stock. (Its ``producer.batch()`` is no such
ceiling: kombu pipelines nothing there, and stock's pipelined burst is as fast.)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import wait_until  # noqa: E402
from bench.costs import (  # noqa: E402
    PhaseCost,
    RedisSnapshot,
    phase_cost,
    redis_cpu_seconds,
    worker_cpu_seconds,
)
from taskqueue_backend.embedded import EmbeddedRedis  # noqa: E402

VARIANTS = ("stock", "taskqueue")


def load_app(variant: str, url: str, expected: int) -> Any:
    os.environ.update(BENCH_TRANSPORT=variant, BENCH_REDIS_URL=url, BENCH_EXPECTED=str(expected))
    sys.modules.pop("bench.app", None)  # re-read the environment on import
    return importlib.import_module("bench.app")


def start_worker(variant: str, url: str, expected: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        BENCH_TRANSPORT=variant,
        BENCH_REDIS_URL=url,
        BENCH_EXPECTED=str(expected),
        PYTHONPATH=str(ROOT),
    )
    command = [
        sys.executable, "-m", "celery", "-A", "bench.app", "worker", "-l", "WARNING",
        "-c", "2", "-P", "prefork", "-Q", "bench", "-n", f"bench-{variant}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def plain_rate(noop: Any, tasks: int) -> float:
    """Messages per second of an ``apply_async`` loop."""
    started = time.perf_counter()
    for _ in range(tasks):
        noop.apply_async()
    return tasks / (time.perf_counter() - started)


def burst_rate(app: Any, noop: Any, tasks: int) -> float:
    """Messages per second of a ``producer.batch()`` burst."""
    started = time.perf_counter()
    with app.producer_or_acquire() as producer, producer.batch():
        for _ in range(tasks):
            noop.apply_async(producer=producer)
    return tasks / (time.perf_counter() - started)


def publish_ceiling(tasks: int) -> dict[str, float]:
    """The ``apply_async`` rate with no broker at all (kombu's ``memory://``)."""
    module = load_app("memory", "memory://", tasks)
    module.noop.apply_async()  # set up before timing, as for the brokers
    found = {"publish_plain": plain_rate(module.noop, tasks)}
    module.app.close()
    return found


def measure(
    variant: str, url: str, tasks: int, probes: int, logdir: Path, costs: dict[str, PhaseCost]
) -> dict[str, float]:
    """The variant's figures; ``costs`` gets what a task cost Redis in each phase."""
    client = redis.Redis.from_url(url)
    client.flushdb()  # the benchmark's own server: nothing else lives here
    module = load_app(variant, url, tasks)
    app, noop, probe = module.app, module.noop, module.probe
    result: dict[str, float] = {}

    noop.apply_async()  # connect and declare before timing
    snapshot = RedisSnapshot.take(client)
    result["publish_plain"] = plain_rate(noop, tasks)
    costs["publish"] = phase_cost(snapshot, RedisSnapshot.take(client), tasks)

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("bench")
    client.delete("bench:done", "bench:first", "bench:last")

    cpu_before = redis_cpu_seconds(client)
    snapshot = RedisSnapshot.take(client)
    result["publish_batch"] = burst_rate(app, noop, tasks)
    drained_from = RedisSnapshot.take(client)
    costs["publish_batch"] = phase_cost(snapshot, drained_from, tasks)

    worker = start_worker(variant, url, tasks, logdir / f"worker-{variant}.log")
    try:
        wait_until(lambda: client.get("bench:first"), 120, f"the first task on {variant}")
        worker_cpu = worker_cpu_seconds(worker.pid)
        wait_until(lambda: client.get("bench:last"), 600, f"{tasks} tasks on {variant}")
        result["worker_cpu_us"] = (worker_cpu_seconds(worker.pid) - worker_cpu) * 1e6 / (tasks - 1)
        costs["consume"] = phase_cost(drained_from, RedisSnapshot.take(client), tasks)
        first, last = float(client.get("bench:first")), float(client.get("bench:last"))
        result["end_to_end"] = (tasks - 1) / (last - first)
        result["redis_cpu_per_10k"] = (redis_cpu_seconds(client) - cpu_before) * 10000 / tasks
        for phase, cost in costs.items():
            result[f"{phase}_commands"] = cost.commands
            result[f"{phase}_redis_cpu_us"] = cost.cpu_usec

        latencies = []
        for _ in range(probes):
            before = client.llen("bench:latency")
            probe.apply_async((time.time(),))
            wait_until(lambda b=before: client.llen("bench:latency") > b, 30, "a probe task")
            time.sleep(0.01)  # let the worker go idle again
        latencies = sorted(float(x) * 1000 for x in client.lrange("bench:latency", 0, -1))
        result["pickup_p50_ms"] = statistics.median(latencies)
        result["pickup_p99_ms"] = latencies[int(len(latencies) * 0.99) - 1]
    finally:
        stop_worker(worker)
    app.close()
    return result


ROWS = [
    ("publish_plain", "publish msg/s, apply_async loop", True),
    ("publish_batch", "publish msg/s, producer.batch() burst", True),
    ("end_to_end", "end-to-end tasks/s (prefork -c 2)", True),
    ("pickup_p50_ms", "pickup latency p50 (ms)", False),
    ("pickup_p99_ms", "pickup latency p99 (ms)", False),
    ("redis_cpu_per_10k", "Redis CPU s per 10k tasks", False),
    ("publish_commands", "Redis commands per publish", False),
    ("publish_redis_cpu_us", "Redis CPU µs per publish", False),
    ("publish_batch_commands", "Redis commands per burst publish", False),
    ("publish_batch_redis_cpu_us", "Redis CPU µs per burst publish", False),
    ("consume_commands", "Redis commands per task consumed (fetch+ack)", False),
    ("consume_redis_cpu_us", "Redis CPU µs per task consumed", False),
    ("worker_cpu_us", "worker Python CPU µs per task", False),
]


def report(results: dict[str, dict[str, float]]) -> str:
    stock, ours = results["stock"], results["taskqueue"]
    lines = [f"{'':42} {'stock redis://':>15} {'taskqueue':>12} {'ratio':>8}"]
    for key, label, higher_is_better in ROWS:
        ratio = ours[key] / stock[key] if higher_is_better else stock[key] / ours[key]
        lines.append(f"{label:42} {stock[key]:15.2f} {ours[key]:12.2f} {ratio:7.2f}x")
    burst = ours["publish_batch"] / stock["publish_plain"]
    lines.append(f"{'taskqueue burst vs stock apply_async loop':42} {'':15} {'':12} {burst:7.2f}x")
    if "no broker" in results:
        ceiling = results["no broker"]["publish_plain"]
        lines.append(f"{'no broker (memory://), apply_async loop':42} {'':15} {ceiling:12.2f} "
                     f"{ceiling / stock['publish_plain']:7.2f}x")  # fmt: skip
    lines.append("ratio > 1 means taskqueue (or no broker) is better (faster, lower latency/CPU)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--probes", type=int, default=300)
    args = parser.parse_args()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    with EmbeddedRedis() as server:
        print(
            f"benchmark: dedicated redis-server on port {server.port}; "
            f"{args.tasks} tasks, {args.probes} latency probes per transport"
        )
        results = {}
        for variant in VARIANTS:
            costs: dict[str, PhaseCost] = {}
            results[variant] = measure(variant, server.url, args.tasks, args.probes, out, costs)
            print(f"  {variant}: " + ", ".join(f"{k}={v:.2f}" for k, v in results[variant].items()))
            for phase, cost in costs.items():
                print(f"    per task, {phase}: {cost.summary()}")
        results["no broker"] = publish_ceiling(args.tasks)
        print("  no broker: " + ", ".join(f"{k}={v:.2f}" for k, v in results["no broker"].items()))
    print(report(results))
    (out / "broker.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
