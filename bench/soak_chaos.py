"""What a soak run does to its workers and its broker while the tasks flow, and what it saw.

``Chaos`` is one thread beside the publishers:

- every ``kill_every`` seconds it SIGKILLs one worker's process group (main and pool
  processes, as a crashed host or container would die), round robin over the killable
  workers, and starts it again (``LoadRun.kill_worker`` / ``start_worker``), noting each
  ``Kill``: which worker, the pids that died, when, and when its successor consumed;
- once ``failover_when()`` holds it SIGKILLs the broker's primary, waits until the sentinels
  promote the replica, restarts the old primary (the sentinels make it a replica of the new
  one) and, from a thread of its own while the kills go on, waits until it is in sync: a
  ``Failover`` with those four moments;
- every ``sample_every`` seconds it samples each live worker's RSS (main + pool processes,
  ``taskqueue_backend.loadtest.rss``) into that worker's current ``Incarnation`` (one per start
  of a worker: a worker restarted after a kill starts a new one).

Kills stop once every task is published (the drain runs without them); sampling goes on until
``stop()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskqueue_backend.embedded_sentinel import SentinelSet
from taskqueue_backend.loadtest import LoadRun
from taskqueue_backend.loadtest.rss import tree_rss

#: how long before its readiness a worker's processes may already exist (its start-up)
STARTUP_S = 60.0


@dataclass
class Incarnation:
    """One run of one worker, from its readiness to its kill or the end."""

    number: int
    pid: int
    ready_at: float
    ended_at: float | None = None
    killed: bool = False
    pids: set[int] = field(default_factory=set)
    samples: list[tuple[float, int]] = field(default_factory=list)  # (epoch s, RSS bytes)


@dataclass
class Kill:
    number: int
    pid: int
    pids: list[int]
    at: float
    restarted_at: float = 0.0
    new_pid: int = 0


@dataclass
class Failover:
    old_port: int
    killed_at: float
    promoted_at: float = 0.0
    rejoined_at: float = 0.0
    replica_back_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "old_primary_port": self.old_port,
            "killed_at": self.killed_at,
            "promoted_after_s": self.promoted_at - self.killed_at,
            "old_primary_rejoined_after_s": self.rejoined_at - self.killed_at,
            "replica_in_sync_after_s": self.replica_back_at - self.killed_at,
        }


class Chaos(threading.Thread):
    """Kills, the failover and the RSS samples of one soak run (see the module docstring)."""

    def __init__(
        self,
        run: LoadRun,
        sentinels: SentinelSet,
        killable: Sequence[int],
        kill_every: float,
        failover_when: Callable[[], bool] | None,
        sample_every: float,
        log: Callable[[str], None],
    ) -> None:
        super().__init__(name="soak-chaos", daemon=True)
        self.run_ = run
        self.sentinels = sentinels
        self.killable = list(killable)
        self.kill_every = kill_every
        self.failover_when = failover_when
        self.sample_every = sample_every
        self.log = log
        self.kills: list[Kill] = []
        self.failover: Failover | None = None
        self.incarnations: list[Incarnation] = []
        self.errors: list[BaseException] = []
        self._current: dict[int, Incarnation] = {}
        self._stopping = threading.Event()
        self._resync: threading.Thread | None = None

    def begin(self, numbers: Sequence[int]) -> None:
        """Note the first incarnation of each worker (all ready now) and start."""
        now = time.time()
        for number in numbers:
            self._born(number, self.run_.worker(number).pid, now)
        self.start()

    def stop(self) -> None:
        self._stopping.set()
        self.join()
        if self._resync is not None:
            self._resync.join()
        self.sample()
        for incarnation in self._current.values():
            incarnation.ended_at = time.time()

    def killed_lives(self) -> dict[int, list[tuple[float, float]]]:
        """pid -> the spans (from its incarnation's start to the kill) it lived in a worker
        that was killed: a pid the system gives again later is not taken for the killed one."""
        found: dict[int, list[tuple[float, float]]] = {}
        for life in self.incarnations:
            if life.killed:
                for pid in life.pids:
                    found.setdefault(pid, []).append((life.ready_at - STARTUP_S,
                                                      life.ended_at or life.ready_at))  # fmt: skip
        return found

    def _born(self, number: int, pid: int, at: float) -> None:
        incarnation = Incarnation(number, pid, at, pids={pid})
        self.incarnations.append(incarnation)
        self._current[number] = incarnation

    def sample(self) -> None:
        for incarnation in self._current.values():
            rss, pids = tree_rss(incarnation.pid)
            if pids:
                incarnation.pids.update(pids)
                incarnation.samples.append((time.time(), rss))

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the soak's main thread
            self.errors.append(exc)
            self.log(f"chaos thread failed: {exc!r}")

    def _loop(self) -> None:
        began = time.monotonic()
        next_kill = began + self.kill_every if self.kill_every and self.killable else None
        next_sample = began
        turn = 0
        while not self._stopping.wait(0.1):
            now = time.monotonic()
            if now >= next_sample:
                self.sample()
                next_sample = now + self.sample_every
            if self.failover is None and self.failover_when and self.failover_when():
                self._fail_over()
            publishing = self.run_.published_count < len(self.run_.plan)
            if next_kill is not None and now >= next_kill and publishing:
                self._kill(self.killable[turn % len(self.killable)])
                turn += 1
                next_kill += self.kill_every

    def _kill(self, number: int) -> None:
        incarnation = self._current[number]
        self.sample()  # its last sample, and the pids of its pool as they are now
        _, pids = tree_rss(incarnation.pid)
        incarnation.pids.update(pids)
        at = time.time()
        pid = self.run_.kill_worker(number)
        incarnation.ended_at, incarnation.killed = at, True
        kill = Kill(number, pid, sorted(incarnation.pids), at)
        self.kills.append(kill)
        process = self.run_.start_worker(number)
        kill.restarted_at, kill.new_pid = time.time(), process.pid
        self._born(number, process.pid, kill.restarted_at)
        self.log(f"killed worker {number} (pids {kill.pids}); its successor {process.pid} "
                 f"consumed {kill.restarted_at - at:.1f} s later")  # fmt: skip

    def _fail_over(self) -> None:
        old = self.sentinels.current_primary()
        self.failover = failover = Failover(old.port, time.time())
        self.sentinels.kill_primary()
        self.log(f"failover: SIGKILLed the primary on port {old.port}")
        failover.promoted_at = self.sentinels.wait_for_promotion(old.port)
        self.log(f"failover: the replica was promoted "
                 f"{failover.promoted_at - failover.killed_at:.1f} s after the kill")  # fmt: skip
        self.sentinels.rejoin()
        failover.rejoined_at = time.time()
        # the sentinels take a while to make it a replica: the kills go on meanwhile
        self._resync = threading.Thread(target=self._await_replica, name="soak-resync",
                                        daemon=True)  # fmt: skip
        self._resync.start()

    def _await_replica(self) -> None:
        failover = self.failover
        assert failover is not None
        try:
            failover.replica_back_at = self.sentinels.wait_for_replica()
        except BaseException as exc:
            self.errors.append(exc)
            self.log(f"failover: no replica in sync again: {exc!r}")
            return
        back = failover.replica_back_at - failover.killed_at
        self.log(f"failover: the old primary is a replica in sync {back:.1f} s after the kill")
