"""Recovery and dead-letter benchmark.

    python bench/recovery.py [--kills 10] [--window 5] [--dead-letters 10000]

1. Recovery after SIGKILL: a worker (``-c 1``, ``acks_late``) starts a long task, a second
   worker is told to consume that queue, the first is SIGKILLed; the time until the task
   starts on the second worker is measured over ``--kills`` rounds (p50/p99) and set next to
   the heartbeat window (``heartbeat_timeout``) and to the stock Redis transport's figure,
   its ``visibility_timeout`` (unacked messages of a dead worker come back after it; 3600 s
   by default).
2. Dead-letter replay: ``--dead-letters`` entries are stored, then replayed all at once
   through ``Operations.dead_letters.replay`` (the operation behind ``taskqueue dlq replay``);
   messages/s, plus the time to list a page and to compute the stats over all of them.

Runs against a dedicated redis-server started for the run.
"""

from __future__ import annotations

import argparse
import json
import logging
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
from taskqueue_backend.embedded import EmbeddedRedis  # noqa: E402

STOCK_VISIBILITY_TIMEOUT = 3600.0  # kombu's Redis transport default


def start_worker(
    name: str, queues: str, concurrency: int, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "celery", "-A", "bench.recovery_app", "worker", "-l", "INFO",
        "-c", str(concurrency), "-P", "prefork", "-Q", queues, "-n", name,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def stop(worker: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, sig)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def started(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange("bench:started", 0, -1)]


def measure_recovery(url: str, kills: int, window: float, logdir: Path) -> list[float]:
    interval = max(window / 5, 0.2)
    options = {"heartbeat_interval": interval, "heartbeat_timeout": window}
    env = {"BENCH_REDIS_URL": url, "BENCH_TRANSPORT_OPTIONS": json.dumps(options)}
    os.environ.update(env)
    from bench.recovery_app import app, hold

    client = redis.Redis.from_url(url)
    survivor_name = "survivor@bench"
    survivor = start_worker(survivor_name, "bench", 2, env, logdir / "recovery-survivor.log")
    times = []
    try:
        wait_until(lambda: app.control.ping([survivor_name], timeout=0.5), 60, "the survivor")
        for round_ in range(kills):
            queue, label = f"recovery-{round_}", f"kill-{round_}"
            victim = start_worker(f"victim{round_}@bench", queue, 1, env,
                                  logdir / "recovery-victim.log")  # fmt: skip
            hold.apply_async((label, 300.0), queue=queue)
            wait_until(lambda lb=label: [e for e in started(client) if e["label"] == lb], 60,
                       "the task to start on the victim")  # fmt: skip
            reply = app.control.add_consumer(queue, destination=[survivor_name], reply=True)
            assert reply, "the survivor did not answer add_consumer"
            killed_at = time.time()
            stop(victim, signal.SIGKILL)
            rerun = wait_until(
                lambda lb=label: [e for e in started(client) if e["label"] == lb
                                  and e["redelivered"]],
                window * 4 + 30, "the task to run again on the survivor",
            )  # fmt: skip
            times.append(rerun[0]["t"] - killed_at)
            print(f"  kill {round_ + 1}/{kills}: back in {times[-1]:.2f} s", flush=True)
            app.control.cancel_consumer(queue, destination=[survivor_name], reply=True)
    finally:
        stop(survivor)
        app.close()
    return times


def measure_replay(url: str, count: int) -> dict[str, float]:
    from bench.recovery_app import app, noop
    from taskqueue_backend.operations import Operations

    # one warning per stored entry is right for a worker, noise for this loop
    logging.getLogger("taskqueue_backend.transport.burying").setLevel(logging.ERROR)
    with app.producer_or_acquire() as producer, producer.batch():
        for _ in range(count):
            noop.apply_async(producer=producer, queue="dlq-bench")
    with app.connection_for_read() as connection:  # a consumer buries each, as a worker would
        channel = connection.default_channel
        for _ in range(count):
            message = channel.basic_get("dlq-bench")
            channel.dead_letter(message.delivery_tag, "failed", "RuntimeError: benchmark")
            channel.qos._delivered.pop(message.delivery_tag, None)
    ops = Operations.from_app(app, actor="benchmark")
    dead = ops.dead_letters
    result: dict[str, float] = {}
    started_at = time.perf_counter()
    stats = dead.stats()
    result["stats_s"] = time.perf_counter() - started_at
    assert stats.total == count, f"stored {stats.total} dead letters, expected {count}"
    started_at = time.perf_counter()
    dead.page(limit=50)
    result["page_ms"] = (time.perf_counter() - started_at) * 1000
    started_at = time.perf_counter()
    outcome = dead.replay(everything=True, reason="benchmark")
    took = time.perf_counter() - started_at
    assert outcome.done == count, outcome
    ready = ops.queues.stats("dlq-bench").ready
    assert ready == count, f"{ready} messages ready after the replay, expected {count}"
    result["replay_per_s"] = count / took
    result["replay_s"] = took
    ops.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--window", type=float, default=5.0, help="heartbeat_timeout (s)")
    parser.add_argument("--dead-letters", type=int, default=10000)
    args = parser.parse_args()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    with EmbeddedRedis() as server:
        print(f"benchmark: dedicated redis-server on port {server.port}")
        os.environ["BENCH_REDIS_URL"] = server.url
        replay = measure_replay(server.url, args.dead_letters)
        times = sorted(measure_recovery(server.url, args.kills, args.window, out))
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    lines = [
        f"recovery after SIGKILL ({len(times)} kills, heartbeat_timeout={args.window:g} s):",
        f"  p50 {p50:.2f} s, p99 {p99:.2f} s = {p99 / args.window:.2f}x the window (target <= 2x)",
        f"  stock redis:// transport: visibility_timeout = {STOCK_VISIBILITY_TIMEOUT:.0f} s "
        f"(default) -> taskqueue is {STOCK_VISIBILITY_TIMEOUT / p99:.0f}x faster at p99",
        f"dead letters ({args.dead_letters}):",
        f"  replay all: {replay['replay_per_s']:.0f} msgs/s ({replay['replay_s']:.2f} s; "
        f"target >= 2000)",
        f"  stats over all: {replay['stats_s']:.2f} s; first page of 50: "
        f"{replay['page_ms']:.0f} ms",
    ]
    print("\n".join(lines))
    (out / "recovery.json").write_text(
        json.dumps({"recovery_s": times, "window_s": args.window, **replay}, indent=2)
    )


if __name__ == "__main__":
    main()
