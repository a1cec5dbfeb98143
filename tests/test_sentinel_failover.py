"""Sentinel under load: a primary, its replica and three sentinels on loopback, a stock
worker and a publisher reaching them through a ``sentinel://`` URL; the primary is killed
(SIGKILL) in the middle of the run, the sentinels promote the replica, and the worker and the
publisher go on on the new primary by themselves — no catatonic worker, no task lost that the
publisher was told was sent (publishing waits for the replica's copy: ``wait_for_replicas``)
— and the control plane, serving throughout, answers from the new primary.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from taskqueue_backend.embedded_sentinel import SentinelSet
from taskqueue_backend.operations import Operations
from tests.app import make_app
from tests.support import StartWorker, wait_for
from tests.support.control_plane import ServeControlPlane
from tests.support.failover import check_what_ran, publish_through_a_kill

MASTER = "tqfailover"


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    with SentinelSet(tmp_path, MASTER) as found:
        yield found


def test_a_primary_killed_under_load_is_replaced_and_nothing_sent_is_lost(
    sentinels: SentinelSet, start_worker: StartWorker, redis_url: str, keyprefix: str,
    redis_client: redis.Redis, api_env: dict[str, str], serve_control_plane: ServeControlPlane,
    tmp_path: Path,
) -> None:  # fmt: skip
    options = {"master_name": MASTER, "wait_for_replicas": 1}
    env = {"TQ_TEST_REDIS_URL": sentinels.url, "TQ_TEST_RECORD_URL": redis_url,
           "TQ_TEST_TRANSPORT_OPTIONS": json.dumps(options), "TQ_TEST_ACKS_LATE": "1"}  # fmt: skip
    worker = start_worker(env=env, concurrency=2)
    served = serve_control_plane(
        api_env, TQ_BROKER_URL=sentinels.url, TQ_BROKER_KEYPREFIX=keyprefix,
        TQ_BROKER_TRANSPORT_OPTIONS=json.dumps(options), TQ_DB_SCHEMA="",
        TQ_DATABASE_URL=f"sqlite:///{tmp_path / 'control-plane.db'}",
    )  # fmt: skip
    worker.wait_ready()
    app = make_app(sentinels.url, keyprefix, **options)
    ops = Operations.from_urls(
        sentinels.url,
        None,
        actor="test",
        transport_options={**options, "global_keyprefix": keyprefix},
    )
    try:
        run = publish_through_a_kill(app, sentinels.kill_primary, sentinels.primary.restart)
        assert sentinels.primary_port() == sentinels.replica.port, "the replica was not promoted"
        twice, back_after = check_what_ran(run, redis_client, keyprefix, worker)
        # acks_late: a task running at the kill may run again (its ack died with the primary)
        assert len(twice) <= 2, twice
        assert back_after < 15, f"the worker took {back_after:.1f} s to run a task again"
        # the operations layer (CLI, control plane) follows the failover too
        queues = {q.queue: (q.ready, q.inflight, q.dead) for q in ops.queues.all()}
        assert queues["celery"] == (0, 0, 0), queues  # the queue the run used, drained

        def beating() -> bool:  # the reconnected consumer heartbeats to the new primary
            return any(w.state == "online" and w.processed and (w.seconds_since_heartbeat or 99) < 6
                       for w in ops.workers.all())  # fmt: skip

        wait_for(beating, timeout=15, interval=0.5, message=lambda: f"{ops.workers.all()}")
        # and so does the control plane, which was serving before the kill
        wait_for(lambda: served.get("/readyz").status_code == 200, timeout=15,
                 message=lambda: served.get("/readyz").text)  # fmt: skip
        listed = {q["queue"]: q for q in served.get("/api/v1/queues").json()}
        assert (listed["celery"]["ready"], listed["celery"]["inflight"]) == (0, 0), listed
        online = [w for w in served.get("/api/v1/workers").json()
                  if w["state"] == "online" and w["processed"]]  # fmt: skip
        assert online, served.get("/api/v1/workers").json()
        print(
            f"failover: {len(run.sent)} sent and confirmed, all ran, {len(twice)} twice; "
            f"{len(run.unconfirmed)} published before the new primary had a replica again "
            f"(NotReplicated); tasks ran again {back_after:.1f} s after the kill"
        )
    finally:
        ops.close()
        app.close()
