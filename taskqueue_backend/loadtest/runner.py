"""Running one load test against one transport: workers, publishers, waiting, cleaning up.

``LoadRun`` owns everything one run creates and removes all of it on exit, whatever happened:

1. ``start_workers()`` starts ``--workers`` stock ``celery -A
   taskqueue_backend.loadtest.worker_app worker`` subprocesses (own process groups, logs in
   the run's log directory) and waits until each has added its pid to the readiness set (or
   stops, with the log's tail, when one exits first);
2. ``publish_and_wait(progress)`` publishes the plan from ``--publishers`` threads (task
   ``seq`` goes to thread ``seq % publishers``, so every thread publishes the mix of
   priorities), taking each task's publish time just before its publish call, while the
   calling thread reads the records list and reports newly finished tasks to ``progress``
   until every task has a record or the deadline (``--timeout`` from the first publish) passes;
   with ``max_backlog``, a publisher waits while that many published tasks have no record yet
   (a steady load instead of one queue of everything); a publish the broker reports as
   ``NotReplicated`` (queued on the primary, not yet on a replica) is not sent again and is
   listed in ``unconfirmed``; each task's id is ``task_id(seq)``;
   meanwhile ``kill_worker(number)`` and ``start_worker(number)`` crash and replace one worker
   (the soak benchmark does, every minute);
3. on exit: SIGTERM to each worker, SIGKILL to its process group after a grace period; a last
   read of the records (duplicates that arrived meanwhile count); then every key under the
   run's prefix is deleted (SCAN + UNLINK) on the broker's Redis and the records' Redis —
   nothing outside the prefix is touched.

``data()`` then holds the raw outcome for ``stats.summarize``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from ..transport.batch import NotReplicated
from .app import TASK_NAME, LoadtestConfig, make_app, redis_client
from .stats import PlannedTask, RunData

READY_DEADLINE_SECONDS = 60.0
STOP_GRACE_SECONDS = 20.0
POLL_SECONDS = 0.05
WORKER_APP = "taskqueue_backend.loadtest.worker_app"


@dataclass(frozen=True)
class LoadSpec:
    """The load: how many tasks, how they are published and what the workers look like."""

    tasks: int
    publishers: int
    priorities: tuple[int, ...]
    failure_rate: float
    duration: float
    workers: int
    concurrency: int
    pool: str
    prefetch_multiplier: int
    timeout: float
    seed: int | None = None
    #: at most this many published tasks without a record (0: no bound)
    max_backlog: int = 0
    #: once publishing is over, stop waiting when no record came for this long (0: never)
    stall_timeout: float = 0.0


class LoadtestError(Exception):
    """The run could not be carried out (a worker did not start, a publish failed)."""


def plan_tasks(spec: LoadSpec) -> list[PlannedTask]:
    """Draw each task's priority (uniformly from ``spec.priorities``) and failure flag."""
    draw = random.Random(spec.seed)
    return [
        PlannedTask(seq, draw.choice(spec.priorities), draw.random() < spec.failure_rate)
        for seq in range(spec.tasks)
    ]


def delete_prefixed(client: redis.Redis, prefix: str) -> int:
    """UNLINK every key that starts with ``prefix`` (glob characters in it taken literally)."""
    pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix) + "*"
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            removed += int(client.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(client.unlink(*batch))
    return removed


class LoadRun:
    """One run of ``spec`` on one transport, under ``config.keyprefix``; a context manager."""

    def __init__(
        self, spec: LoadSpec, config: LoadtestConfig, plan: Sequence[PlannedTask], log_dir: Path
    ) -> None:
        self.spec = spec
        self.config = config
        self.plan = plan
        self.log_dir = log_dir
        self.records: list[dict[str, Any]] = []
        self.published_at: list[float | None] = [None] * len(plan)
        self.publish_began = self.publish_ended = 0.0
        #: seqs whose publish raised NotReplicated (queued, not confirmed on a replica)
        self.unconfirmed: list[int] = []
        self.published_count = self.finished_count = 0
        self._workers: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
        self._publishers: list[threading.Thread] = []
        self._stop_publishing = threading.Event()
        self._publish_lock = threading.Lock()
        self._broker = redis_client(config.broker_url, config.transport_options)
        self._recorder = redis.Redis.from_url(config.records_url)
        self._id_base = uuid.uuid4().int >> 32 << 32  # a random UUID whose last 8 digits are seq
        self._app: Any = None

    def __enter__(self) -> LoadRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self._stop_publishing.set()
            for thread in self._publishers:
                thread.join(timeout=STOP_GRACE_SECONDS)
            self._stop_workers()
            if self._app is not None:
                self._app.close()
            self._read_records()
        finally:
            for client in {id(c): c for c in (self._broker, self._recorder)}.values():
                delete_prefixed(client, self.config.keyprefix)
                client.close()

    # -- workers -------------------------------------------------------------------------------

    def task_id(self, seq: int) -> str:
        """The id task ``seq`` is published with (a UUID of this run ending in ``seq``)."""
        return str(uuid.UUID(int=self._id_base | seq))

    def start_workers(self) -> None:
        for number in range(1, self.spec.workers + 1):
            self._launch(number)
        self._wait_ready(list(self._workers))

    def start_worker(self, number: int) -> subprocess.Popen[bytes]:
        """Start worker ``number`` (again, after ``kill_worker``) and wait until it consumes."""
        self._launch(number)
        self._wait_ready([number])
        return self._workers[number][0]

    def worker(self, number: int) -> subprocess.Popen[bytes]:
        return self._workers[number][0]

    def kill_worker(self, number: int) -> int:
        """SIGKILL worker ``number``'s process group (its pool too), as a crash; its pid."""
        process = self._workers[number][0]
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()
        return process.pid

    def _launch(self, number: int) -> None:
        env = {**os.environ, **self.config.to_env()}
        log_path = self.log_dir / f"worker-{self.config.transport}-{number}.log"
        name = f"loadtest-{self.config.transport}-{number}-{os.getpid()}@%h"
        command = [
            sys.executable, "-m", "celery", "-A", WORKER_APP, "worker", "-l", "WARNING",
            "-c", str(self.spec.concurrency), "-P", self.spec.pool, "-Q", self.config.queue,
            "-n", name, "--prefetch-multiplier", str(self.spec.prefetch_multiplier),
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command, env=env, cwd=self.log_dir, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self._workers[number] = (process, log_path)

    def _wait_ready(self, numbers: Sequence[int]) -> None:
        """Until each of these workers' pids is in the readiness set (or one exits first)."""
        deadline = time.monotonic() + READY_DEADLINE_SECONDS
        waiting = [self._workers[n] for n in numbers]
        while True:
            ready = {int(pid) for pid in self._recorder.smembers(self.config.ready_key)}
            if all(process.pid in ready for process, _ in waiting):
                return
            for process, log_path in waiting:
                if process.poll() is not None:
                    raise LoadtestError(
                        f"a {self.config.transport} worker exited with code "
                        f"{process.returncode} before it was ready; the end of {log_path}:\n"
                        + _tail(log_path)
                    )
            if time.monotonic() > deadline:
                raise LoadtestError(
                    f"the {self.config.transport} workers were not ready within "
                    f"{READY_DEADLINE_SECONDS:.0f} s; the end of {waiting[0][1]}:\n"
                    + _tail(waiting[0][1])
                )
            time.sleep(POLL_SECONDS)

    def _stop_workers(self) -> None:
        for process, _ in self._workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process, _ in self._workers.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group: pool processes that outlived their parent too
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            process.wait()
        self._workers.clear()

    # -- publishing and waiting ----------------------------------------------------------------

    def publish_and_wait(self, progress: Callable[[int], None]) -> bool:
        """Publish the plan and wait for its records; True when all arrived before the deadline."""
        self._app = make_app(self.config)
        errors: list[BaseException] = []
        self._publishers = threads = [
            threading.Thread(target=self._publish, args=(k, errors), daemon=True,
                             name=f"loadtest-publisher-{k}")
            for k in range(self.spec.publishers)
        ]  # fmt: skip
        self.publish_began = time.time()
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + self.spec.timeout
        finished: set[int] = set()
        last_record = time.monotonic()
        while not errors:
            publishing = any(thread.is_alive() for thread in threads)
            before = len(finished)
            finished.update(int(r["seq"]) for r in self._read_records())
            self.finished_count = len(finished)
            progress(len(finished) - before)
            if len(finished) > before or publishing:
                last_record = time.monotonic()
            if not publishing and len(finished) >= len(self.plan):
                break
            if time.monotonic() >= deadline:
                break
            stalled = time.monotonic() - last_record
            if self.spec.stall_timeout and stalled >= self.spec.stall_timeout:
                break
            if all(process.poll() is not None for process, _ in self._workers.values()):
                self._stop_publishing.set()
                log_path = next(iter(self._workers.values()))[1]
                raise LoadtestError(
                    f"every {self.config.transport} worker exited before the tasks finished; "
                    f"the end of {log_path}:\n" + _tail(log_path)
                )
            time.sleep(POLL_SECONDS)
        self._stop_publishing.set()  # past the deadline: what is not published yet stays so
        for thread in threads:
            thread.join()
        self.publish_ended = max(self.publish_ended, self.publish_began)
        if errors:
            raise LoadtestError(f"publishing failed: {errors[0]!r}") from errors[0]
        return len(finished) >= len(self.plan)

    def _publish(self, index: int, errors: list[BaseException]) -> None:
        try:
            with self._app.producer_or_acquire() as producer:
                for task in self.plan[index :: self.spec.publishers]:
                    if errors or not self._room_to_publish():
                        break
                    published_at = time.time()
                    self.published_at[task.seq] = published_at
                    with self._publish_lock:
                        self.published_count += 1
                    try:
                        self._app.send_task(
                            TASK_NAME,
                            args=(task.seq, self.spec.duration, task.fail),
                            kwargs={"priority": task.priority, "published_at": published_at},
                            priority=task.priority,
                            producer=producer,
                            task_id=self.task_id(task.seq),
                        )
                    except NotReplicated:  # queued on the primary: sending it again would
                        with self._publish_lock:  # run it twice
                            self.unconfirmed.append(task.seq)
            ended = time.time()
            with self._publish_lock:
                self.publish_ended = max(self.publish_ended, ended)
        except BaseException as exc:  # reported by the waiting thread
            errors.append(exc)

    def _room_to_publish(self) -> bool:
        """Wait while ``max_backlog`` published tasks have no record; False once stopped."""
        limit = self.spec.max_backlog
        while limit and self.published_count - self.finished_count >= limit:
            if self._stop_publishing.wait(POLL_SECONDS):
                return False
        return not self._stop_publishing.is_set()

    def _read_records(self) -> list[dict[str, Any]]:
        """The records appended since the last read (also kept in ``self.records``)."""
        raw = self._recorder.lrange(self.config.records_key, len(self.records), -1)
        fresh = [json.loads(item) for item in raw]
        self.records.extend(fresh)
        return fresh

    def data(self) -> RunData:
        return RunData(self.plan, self.published_at, self.publish_began, self.publish_ended,
                       self.records)  # fmt: skip


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
