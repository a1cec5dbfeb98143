"""Publishing through a failover, and what ran afterwards: the common part of the Sentinel and
Redis Cluster fault tests."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from taskqueue_backend.transport.batch import NotReplicated
from tests.app import read_log
from tests.support.waiting import wait_for

#: long enough for a publisher to ride out a failover of a few seconds
RETRY_POLICY = {"max_retries": 60, "interval_start": 0.2, "interval_step": 0.2,
                "interval_max": 0.5}  # fmt: skip


@dataclass
class PublishedThroughFailover:
    sent: list[str] = field(default_factory=list)  # publishes that returned: confirmed
    unconfirmed: list[str] = field(default_factory=list)  # NotReplicated
    refused: list[str] = field(default_factory=list)  # failed with a tolerated error
    killed_at: float = 0.0
    kill_at: int = 0  # the publish the kill came before


def publish_through_a_kill(
    app: Any, kill: Callable[[], None], bring_back: Callable[[], None],
    tolerate: tuple[type[BaseException], ...] = (), tasks: int = 400, kill_at: int = 150,
) -> PublishedThroughFailover:  # fmt: skip
    """Send ``tasks`` record tasks, calling ``kill`` before the ``kill_at``-th; the first
    ``NotReplicated`` (the promoted node has no replica yet) calls ``bring_back``."""
    run = PublishedThroughFailover(kill_at=kill_at)
    for i in range(tasks):
        if i == kill_at:  # mid-run: the node dies without a word
            kill()
            run.killed_at = time.time()
        label = f"t{i}"
        try:
            app.send_task("tests.app.record", (label,), retry=True, retry_policy=RETRY_POLICY)
            run.sent.append(label)
        except NotReplicated:
            run.unconfirmed.append(label)
            if len(run.unconfirmed) == 1:
                bring_back()
        except tolerate:
            run.refused.append(label)
        time.sleep(0.01)
    return run


def check_what_ran(
    run: PublishedThroughFailover, redis_client: Any, keyprefix: str, worker: Any
) -> tuple[list[str], float]:
    """A confirmed publish after the kill ran within 30 s and every one within 60 s (else
    fail with the worker's log); returns the labels that ran twice and how long after the
    kill the first task ran."""

    def ran() -> set[str]:
        return {e["label"] for e in read_log(redis_client, keyprefix)}

    after = next(label for label in run.sent if int(label[1:]) > run.kill_at)
    wait_for(lambda: after in ran(), timeout=30, interval=0.1,
             message=lambda: f"nothing sent after the kill ran: {worker.log_tail()}")  # fmt: skip
    wait_for(lambda: set(run.sent) <= ran(), timeout=60, interval=0.5, message=lambda: (
        f"{len(set(run.sent) - ran())} of {len(run.sent)} sent tasks never ran: "
        f"{worker.log_tail()}"))  # fmt: skip
    log = read_log(redis_client, keyprefix)
    counts = Counter(e["label"] for e in log)
    back_after = min(e["t"] for e in log if e["t"] > run.killed_at) - run.killed_at
    return sorted(label for label, n in counts.items() if n > 1), back_after
