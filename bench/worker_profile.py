"""Where a worker's CPU goes per task: a solo worker draining no-op tasks under cProfile.

    python bench/worker_profile.py [--tasks 5000] [--transport taskqueue|stock] [--top 25]

Preloads the tasks on a dedicated redis-server, runs ``celery worker -P solo`` (the task runs in
the consuming process, so one profile holds the whole hot path) under ``cProfile`` until every
task ran, stops it warmly, and prints the CPU per task by package (``kombu``, ``celery``,
``redis``, this package, the rest) and the functions with the most own time.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.broker import load_app  # noqa: E402
from bench.common import wait_until  # noqa: E402
from taskqueue_backend.embedded import EmbeddedRedis  # noqa: E402

PACKAGES = ("taskqueue_backend", "kombu", "celery", "billiard", "redis", "vine", "json")


def package_of(filename: str) -> str:
    for name in PACKAGES:
        if f"/{name}/" in filename:
            return name
    return "python and the rest"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--transport", choices=("taskqueue", "stock"), default="taskqueue")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        module = load_app(args.transport, server.url, args.tasks)
        client = redis.Redis.from_url(server.url)
        with module.app.producer_or_acquire() as producer, producer.batch():
            for _ in range(args.tasks):
                module.noop.apply_async(producer=producer)
        profile = Path(tmp) / "worker.prof"
        env = dict(os.environ, BENCH_TRANSPORT=args.transport, BENCH_REDIS_URL=server.url,
                   BENCH_EXPECTED=str(args.tasks), PYTHONPATH=str(ROOT))  # fmt: skip
        worker = subprocess.Popen(
            [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "celery", "-A",
             "bench.app", "worker", "-l", "WARNING", "-P", "solo", "-Q", "bench",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until(lambda: client.get("bench:last"), 900, f"{args.tasks} tasks")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        module.app.close()
        stats = pstats.Stats(str(profile))
        own: Counter[str] = Counter()
        rows = []
        for (filename, line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            own[package_of(filename)] += tottime
            rows.append((tottime, f"{Path(filename).name}:{line}({name})", filename))
        total = sum(own.values())
        per_task = total / args.tasks * 1e6
        print(f"{args.transport}: {args.tasks} tasks, solo worker, {total:.2f} s CPU in all "
              f"(start-up and shutdown included): {per_task:.0f} µs per task")  # fmt: skip
        for name, seconds in own.most_common():
            print(f"  {name:22} {seconds / args.tasks * 1e6:7.1f} µs per task "
                  f"({seconds / total:5.1%})")  # fmt: skip
        print("functions with the most own time (µs per task):")
        for tottime, where, filename in sorted(rows, reverse=True)[: args.top]:
            print(f"  {tottime / args.tasks * 1e6:7.1f}  {package_of(filename):18} {where}")


if __name__ == "__main__":
    main()
