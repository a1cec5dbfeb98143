"""Redis Cluster (three masters, three replicas, on loopback): stock workers consuming queues
that live on different nodes, remote control, events and the operations layer on the
cluster, and a master SIGKILLed under load — its replica promoted, the worker, the publisher
and the control plane going on by themselves, nothing lost that publishing confirmed
(``wait_for_replicas``).

kombu's own integration classes run on a cluster in ``test_kombu_integration.py``; the
project's broker tests run on one through ``REDIS_URL`` (the last test here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import kombu.exceptions
import pytest
import redis

from taskqueue_backend.embedded_cluster import RedisClusterSet
from taskqueue_backend.operations import Filter, Operations
from tests.app import make_app, read_log
from tests.support import REPO_ROOT, StartWorker, wait_for
from tests.support.control_plane import ServeControlPlane
from tests.support.events import EventCollector
from tests.support.failover import check_what_ran, publish_through_a_kill


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterSet]:
    """A cluster of this test's own (the failover test kills one of its masters)."""
    found = RedisClusterSet(tmp_path / "cluster").start()
    yield found
    found.stop()


def queues_on_each_master(cluster: RedisClusterSet, keyprefix: str) -> list[str]:
    """One queue name per master: their keys live on three different nodes."""
    chosen: dict[int, str] = {}
    for i in range(200):
        name = f"q{i}"
        port = cluster.master_of(f"{keyprefix}tq:{{{name}}}:ready").port
        chosen.setdefault(port, name)
        if len(chosen) == 3:
            return list(chosen.values())
    raise AssertionError("no queue names found on every master")


def commands_served(cluster: RedisClusterSet) -> Counter[str]:
    """Commands the masters ran, by name (replicas only repeat the writes; this test's own
    INFO and CLUSTER calls left out)."""
    total: Counter[str] = Counter()
    for node in cluster.nodes:
        client = redis.Redis(port=node.port)
        if client.info("replication")["role"] != "master":
            continue
        for name, stats in client.info("commandstats").items():
            if name not in ("cmdstat_info", "cmdstat_cluster|info", "cmdstat_cluster|slots",
                            "cmdstat_cluster|shards", "cmdstat_cluster|nodes"):  # fmt: skip
                total[name.removeprefix("cmdstat_")] += int(stats["calls"])
    return total


def test_a_worker_consumes_queues_on_every_node_with_remote_control_and_events(
    redis_cluster: RedisClusterSet, start_worker: StartWorker, redis_url: str, keyprefix: str,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    queues = queues_on_each_master(redis_cluster, keyprefix)
    env = {"TQ_TEST_REDIS_URL": redis_cluster.url, "TQ_TEST_RECORD_URL": redis_url}
    app = make_app(redis_cluster.url, keyprefix)
    collector = EventCollector(app).start()  # subscribed (on one node) before the worker starts
    worker = start_worker(env=env, queues=queues, extra_args=["-E"], concurrency=2)
    worker.wait_ready()
    ops = Operations.from_urls(redis_cluster.url, None, actor="test",
                               transport_options={"global_keyprefix": keyprefix})  # fmt: skip
    try:
        # idle: what the worker asks of the cluster while nothing is published
        time.sleep(2)  # settle after start-up (mingle, gossip, first heartbeats)
        before, started = commands_served(redis_cluster), time.monotonic()
        time.sleep(5)
        spent = commands_served(redis_cluster) - before
        seconds = time.monotonic() - started
        idle = sum(spent.values()) / seconds
        print(f"idle worker on {len(queues)} queues: {idle:.1f} Redis commands/s: "
              + ", ".join(f"{k} {v / seconds:.1f}" for k, v in spent.most_common()))  # fmt: skip
        # per queue and brpop_timeout (1 s): one BLPOP and, when it times out, one fetch
        # (a delayed message may be due) — as on one server, where one BLPOP waits on all
        assert spent["blpop"] / seconds <= 1.5 * len(queues), spent
        assert spent["evalsha"] / seconds <= 1.5 * len(queues) + 1, spent

        labels = [f"{q}-{n}" for q in queues for n in range(10)]
        for label in labels:
            app.send_task("tests.app.record", (label,), queue=label.split("-")[0],
                          priority=int(label.split("-")[1]) % 10)  # fmt: skip
        wait_for(lambda: sorted(e["label"] for e in read_log(redis_client, keyprefix))
                 == sorted(labels), timeout=30, message="not every task ran")  # fmt: skip

        inspect = app.control.inspect(timeout=2.0)
        replies = inspect.active_queues() or {}
        assert {q["name"] for qs in replies.values() for q in qs} == set(queues), replies
        assert list((inspect.ping() or {}).values()) == [{"ok": "pong"}]

        # the worker published its events through whichever node; the cluster forwarded them
        # (the test workers run --without-heartbeat: no worker-heartbeat events to wait for)
        wanted = {"task-received", "task-started", "task-succeeded"}
        wait_for(lambda: wanted <= collector.types_for(), timeout=30,
                 message=lambda: f"events seen: {collector.types_for()} (receiver "
                 f"{'running' if collector.thread.is_alive() else 'stopped'})")  # fmt: skip

        listed = {q.queue: q for q in ops.queues.all()}
        assert set(queues) <= set(listed), listed
        assert all(listed[q].ready == 0 and listed[q].inflight == 0 for q in queues)
        online = [w for w in ops.workers.all() if w.state == "online"]
        assert online and set(online[0].queues) == set(queues), online
    finally:
        collector.stop()
        ops.close()
        app.close()


def test_a_dead_letter_is_replayed_to_a_queue_on_another_node(
    redis_cluster: RedisClusterSet, start_worker: StartWorker, redis_url: str, keyprefix: str,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    source, target, _ = queues_on_each_master(redis_cluster, keyprefix)
    env = {"TQ_TEST_REDIS_URL": redis_cluster.url, "TQ_TEST_RECORD_URL": redis_url}
    app = make_app(redis_cluster.url, keyprefix)
    ops = Operations.from_urls(redis_cluster.url, None, actor="test",
                               transport_options={"global_keyprefix": keyprefix})  # fmt: skip
    try:
        worker = start_worker(env=env, queues=[source])
        worker.wait_ready()
        app.send_task("tests.app.always_fail", ("doomed",), queue=source)

        def dead_in(queue: str) -> int:
            return next((q.dead for q in ops.queues.all() if q.queue == queue), 0)

        wait_for(lambda: dead_in(source) == 1, timeout=20,
                 message="the failure was not dead-lettered")  # fmt: skip
        worker.stop()
        outcome = ops.dead_letters.replay(flt=Filter(queue=source), to_queue=target,
                                          reason="move it")  # fmt: skip
        assert (outcome.matched, outcome.done) == (1, 1), outcome
        counts = {q.queue: q for q in ops.queues.all()}
        assert (counts[target].ready, counts[source].dead) == (1, 0), counts
        start_worker(env=env, queues=[target]).wait_ready()
        wait_for(lambda: [e["label"] for e in read_log(redis_client, keyprefix)] == [],
                 timeout=1, message="always_fail records nothing")  # fmt: skip
        wait_for(lambda: dead_in(target) == 1, timeout=20,
                 message="the replayed task did not run on the target queue")  # fmt: skip
    finally:
        ops.close()
        app.close()


def test_a_master_killed_under_load_is_replaced_and_nothing_confirmed_is_lost(
    own_cluster: RedisClusterSet, start_worker: StartWorker, redis_url: str, keyprefix: str,
    redis_client: redis.Redis, api_env: dict[str, str], serve_control_plane: ServeControlPlane,
    tmp_path: Path,
) -> None:  # fmt: skip
    options = {"wait_for_replicas": 1}
    env = {"TQ_TEST_REDIS_URL": own_cluster.url, "TQ_TEST_RECORD_URL": redis_url,
           "TQ_TEST_TRANSPORT_OPTIONS": json.dumps(options), "TQ_TEST_ACKS_LATE": "1"}  # fmt: skip
    worker = start_worker(env=env, concurrency=2)
    served = serve_control_plane(
        api_env, TQ_BROKER_URL=own_cluster.url, TQ_BROKER_KEYPREFIX=keyprefix,
        TQ_BROKER_TRANSPORT_OPTIONS=json.dumps(options), TQ_DB_SCHEMA="",
        TQ_DATABASE_URL=f"sqlite:///{tmp_path / 'control-plane.db'}",
    )  # fmt: skip
    worker.wait_ready()
    victim = own_cluster.master_of(f"{keyprefix}tq:{{celery}}:ready")
    app = make_app(own_cluster.url, keyprefix, **options)
    ops = Operations.from_urls(
        own_cluster.url, None, actor="test",
        transport_options={**options, "global_keyprefix": keyprefix},
    )  # fmt: skip
    try:
        # A publish may fail while the cluster reconfigures, as a redis error or as kombu's
        # OperationalError: kombu's retries do not wait while connecting succeeds and the
        # slot's dead master refuses, so they can run out before the replica takes over.
        # Either way the publisher is told; what was confirmed must all run.
        refused = (redis.RedisError, kombu.exceptions.OperationalError)
        run = publish_through_a_kill(app, lambda: own_cluster.kill(victim), victim.start,
                                     tolerate=refused)  # fmt: skip
        assert own_cluster.master_of(f"{keyprefix}tq:{{celery}}:ready").port != victim.port
        twice, back_after = check_what_ran(run, redis_client, keyprefix, worker)
        assert len(twice) <= 2, twice  # acks_late: a task running at the kill may run again
        assert back_after < 15, f"the worker took {back_after:.1f} s to run a task again"
        queues = {q.queue: (q.ready, q.inflight, q.dead) for q in ops.queues.all()}
        assert queues["celery"][:2] == (0, 0), queues
        wait_for(lambda: served.get("/readyz").status_code == 200, timeout=15,
                 message=lambda: served.get("/readyz").text)  # fmt: skip
        listed = {q["queue"]: q for q in served.get("/api/v1/queues").json()}
        assert (listed["celery"]["ready"], listed["celery"]["inflight"]) == (0, 0), listed
        print(
            f"cluster failover: {len(run.sent)} sent and confirmed, all ran, {len(twice)} "
            f"twice; {len(run.unconfirmed)} NotReplicated while the promoted replica had no "
            f"replica; {len(run.refused)} refused while the cluster reconfigured; tasks ran again "
            f"{back_after:.1f} s after the kill"
        )
    finally:
        ops.close()
        app.close()


BROKER_TESTS = [
    "tests/test_priority.py", "tests/test_delayed.py", "tests/test_dlq.py",
    "tests/test_control.py", "tests/test_registry.py", "tests/test_flower.py",
]  # fmt: skip


@pytest.mark.timeout(900)
def test_the_broker_tests_pass_on_a_cluster(redis_cluster: RedisClusterSet) -> None:
    """The project's own broker tests, unchanged, with ``REDIS_URL`` naming every node."""
    env = {**os.environ, "REDIS_URL": redis_cluster.url}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "0", "-q", "-p", "no:cacheprovider", *BROKER_TESTS],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    print(f"broker tests on the cluster: {summary}")
    assert done.returncode == 0, done.stdout[-6000:]
