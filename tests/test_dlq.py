"""Dead letters through the operations layer (``Operations.dead_letters``) and ``dlq`` commands.

- list/filter/cursor, get, stats over real dead letters made by a real consumer;
- replay: exact body and priority, to the original or another queue, dry run, rate limit;
  two replayers racing on one entry replay it once; a replay restores behaviour once the
  handler is fixed (a real worker runs it);
- delete and purge (filter, age, dry run), retention trims counted and logged;
- every mutating operation leaves an audit entry with actor and reason;
- the same operations from ``taskqueue dlq`` and ``celery -A … dlq``;
- an expired entry is replayed only with a new expiry or none (``--expires``, ``--clear-expiry``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from taskqueue_backend.clock import from_epoch
from taskqueue_backend.operations import AuditQuery, Filter, InvalidRequest, NotFound, Operations
from taskqueue_backend.operations.dead_letters import DeadLetters
from taskqueue_backend.transport.keys import QueueKeys
from tests.app import make_app, read_log
from tests.support import StartWorker, operations_for, wait_for
from tests.support.dead_letters import bury

QUEUE = "celery"
REPO_ROOT = Path(__file__).resolve().parent.parent
TASKQUEUE = Path(sys.executable).parent / "taskqueue"
CELERY = Path(sys.executable).parent / "celery"


@pytest.fixture
def client(redis_url: str, keyprefix: str) -> Iterator[Celery]:
    app = make_app(redis_url, keyprefix)
    yield app
    app.close()


def inspector(redis_url: str, keyprefix: str, **options: Any) -> Operations:
    return operations_for(redis_url, keyprefix, **options)


def dead_letters(
    redis_url: str, keyprefix: str, actor: str = "tests", **options: Any
) -> DeadLetters:
    return inspector(redis_url, keyprefix, **options).acting_as(actor).dead_letters


def stored_body(client: redis.Redis, keyprefix: str, queue: str, task_id: str) -> bytes:
    keys = QueueKeys(keyprefix, queue)
    message_id = client.hget(keys.ids, task_id)
    assert message_id is not None, f"task {task_id} has no message in {queue}"
    body = client.hget(keys.message(message_id.decode()), "body")
    assert body is not None
    return body


# -- reading ----------------------------------------------------------------------------------


def test_list_filters_and_pages_newest_first(
    redis_url: str, keyprefix: str, client: Celery
) -> None:
    ids = [bury(client, "tests.app.record", (f"r{i}",)) for i in range(5)]
    unknown = bury(client, "proj.billing.charge", ("invoice-42",), "unknown_task", "no task named")
    dead = dead_letters(redis_url, keyprefix, "tester")

    everything = dead.page(limit=100).items
    assert [e.task_id for e in everything] == [unknown, *reversed(ids)]
    assert everything[0].task_name == "proj.billing.charge"
    assert everything[0].args == "('invoice-42',)"
    assert everything[0].worker  # who dead-lettered it

    first = dead.page(limit=2)
    assert [e.task_id for e in first.items] == [unknown, ids[4]]
    assert first.next_cursor
    second = dead.page(limit=2, cursor=first.next_cursor)
    assert [e.task_id for e in second.items] == [ids[3], ids[2]]
    rest = dead.page(limit=2, cursor=second.next_cursor)
    assert [e.task_id for e in rest.items] == [ids[1], ids[0]]

    assert [e.task_id for e in dead.matching(Filter(task_name="proj.billing.*"))] == [unknown]
    assert [e.task_id for e in dead.matching(Filter(reason="unknown_task"))] == [unknown]
    assert [e.task_id for e in dead.matching(Filter(text="R3"))] == [ids[3]]
    assert list(dead.matching(Filter(queue="other"))) == []
    assert list(dead.matching(Filter(since=from_epoch(time.time() + 60)))) == []
    assert len(list(dead.matching(Filter(until=from_epoch(time.time() + 1))))) == 6

    shown = dead.get(ids[0])
    assert shown is not None and shown.body is not None
    assert json.loads(shown.body)["headers"]["id"] == ids[0]
    assert dead.find("no-such-id") is None
    with pytest.raises(NotFound):
        dead.get("no-such-id")
    assert dead.get(ids[0][:8]).task_id == ids[0], "a unique prefix of a task id names it"

    stats = dead.stats()
    assert stats.total == 6
    assert stats.by_reason == {"rejected": 5, "unknown_task": 1}
    assert stats.by_task == {"tests.app.record": 5, "proj.billing.charge": 1}
    assert stats.by_queue == {QUEUE: 6}
    assert stats.oldest_age is not None and stats.oldest_age >= 0
    assert stats.scanned == 6
    # a large dead-letter queue is counted by task, reason and exception over its newest
    # entries only; totals, queues and the oldest age stay exact
    newest = dead.stats(scan_limit=2)
    assert (newest.total, newest.by_queue, newest.scanned) == (6, {QUEUE: 6}, 2)
    assert newest.by_task == {"proj.billing.charge": 1, "tests.app.record": 1}
    assert newest.oldest_age is not None and newest.oldest_age >= stats.oldest_age


def test_bad_requests_get_clear_errors(redis_url: str, keyprefix: str, client: Celery) -> None:
    bury(client, "tests.app.record", ("x",))
    dead = dead_letters(redis_url, keyprefix)
    with pytest.raises(InvalidRequest, match="unknown reason"):
        Filter(reason="bogus")
    with pytest.raises(InvalidRequest, match="invalid cursor"):
        dead.page(cursor="!!!")
    with pytest.raises(InvalidRequest, match="limit"):
        dead.page(limit=0)
    with pytest.raises(InvalidRequest, match="exactly one"):
        dead.replay()
    with pytest.raises(NotFound, match="no dead letter"):
        dead.replay(["nope"])
    with pytest.raises(InvalidRequest, match="rate"):
        dead.replay(everything=True, rate=0)
    assert dead.stats().total == 1, "a refused request changed nothing"


# -- replay ---------------------------------------------------------------------------------


def test_replay_puts_the_exact_message_back_with_its_priority(
    redis_url: str, keyprefix: str, client: Celery, redis_client: redis.Redis
) -> None:
    task_id = bury(client, "tests.app.record", ("p",), priority=7)
    before = stored_body(redis_client, keyprefix, QUEUE, task_id)
    broker = inspector(redis_url, keyprefix)
    dead = broker.acting_as("alice").dead_letters

    dry = dead.replay([task_id], dry_run=True)
    assert (dry.matched, dry.done) == (1, 0)
    assert broker.queues.stats(QUEUE).dead == 1

    outcome = dead.replay([task_id], reason="bug 123 fixed")
    assert (outcome.matched, outcome.done, outcome.skipped) == (1, 1, 0)
    stats = broker.queues.stats(QUEUE)
    assert (stats.dead, stats.ready_by_priority) == (0, {7: 1})
    assert stored_body(redis_client, keyprefix, QUEUE, task_id) == before
    [location] = broker.queues.find(task_id)
    assert location.state == "ready"

    [entry] = broker.audit.entries(AuditQuery(action="dlq.replay")).items
    assert (entry.actor, entry.reason, entry.detail["done"]) == ("alice", "bug 123 fixed", 1)
    assert entry.detail["task_ids"] == [task_id]

    again = dead.replay(flt=Filter(task_name="tests.app.record"), dry_run=True)
    assert again.matched == 0, "a replayed entry is no longer a dead letter"


def test_replay_to_another_queue(
    redis_url: str, keyprefix: str, client: Celery, redis_client: redis.Redis
) -> None:
    task_id = bury(client, "tests.app.record", ("moved",))
    before = stored_body(redis_client, keyprefix, QUEUE, task_id)
    broker = inspector(redis_url, keyprefix)
    outcome = broker.dead_letters.replay(everything=True, to_queue="retry-here")
    assert outcome.done == 1
    assert broker.queues.stats(QUEUE).dead == 0
    assert broker.queues.stats("retry-here").ready == 1
    assert [m.queue for m in broker.queues.find(task_id)] == ["retry-here"]
    assert stored_body(redis_client, keyprefix, "retry-here", task_id) == before
    assert "retry-here" in broker.queues.names()


def test_two_replayers_racing_on_one_entry_replay_it_once(
    redis_url: str, keyprefix: str, client: Celery
) -> None:
    task_ids = [bury(client, "tests.app.record", (f"race{i}",)) for i in range(20)]
    broker = inspector(redis_url, keyprefix)
    replayers = [dead_letters(redis_url, keyprefix) for _ in range(4)]
    start = threading.Barrier(len(replayers))
    outcomes: list[Any] = []

    def replay(dead: DeadLetters) -> None:
        start.wait()
        # each selects every entry it still sees, then claims them: the claims race
        outcomes.append(dead.replay(flt=Filter(task_name="tests.app.record")))

    threads = [threading.Thread(target=replay, args=(d,)) for d in replayers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    done = [o.done for o in outcomes]
    assert len(outcomes) == 4 and sum(o.matched for o in outcomes) >= 20
    assert sum(done) == 20, done
    stats = broker.queues.stats(QUEUE)
    assert (stats.ready, stats.dead) == (20, 0)
    assert all([m.state for m in broker.queues.find(t)] == ["ready"] for t in task_ids)


def test_replay_rate_limit_spreads_the_work(redis_url: str, keyprefix: str, client: Celery) -> None:
    for i in range(6):
        bury(client, "tests.app.record", (f"slow{i}",))
    seen: list[int] = []
    started = time.monotonic()
    outcome = dead_letters(redis_url, keyprefix).replay(
        everything=True, rate=4, progress=seen.append
    )
    took = time.monotonic() - started
    assert outcome.done == 6 and sum(seen) == 6
    assert took >= 1.0, f"6 messages at 4/s took only {took:.2f} s"


def test_a_replay_runs_once_the_handler_is_fixed(
    redis_url: str, keyprefix: str, client: Celery, start_worker: StartWorker,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    task_id = client.send_task("tests.app.added_in_a_fix", ("after the fix",)).id
    broker = inspector(redis_url, keyprefix)
    dead = broker.dead_letters
    old = start_worker()
    entry = wait_for(lambda: dead.find(task_id), timeout=30, message="not dead-lettered")
    assert entry.reason == "unknown_task"
    assert old.stop() == 0

    start_worker(env={"TQ_TEST_WITH_FIX": "1"})
    assert dead.replay([task_id], reason="deployed the fix").done == 1
    ran = wait_for(
        lambda: [e for e in read_log(redis_client, keyprefix) if e["label"] == "after the fix"],
        timeout=30,
        message="the replayed task did not run",
    )
    assert len(ran) == 1
    assert wait_for(
        lambda: broker.queues.stats(QUEUE).ready == 0 and broker.queues.find(task_id) == [],
        timeout=10, message="the replayed message was not acknowledged",
    )  # fmt: skip
    assert dead.stats().total == 0


# -- tasks that fail for good (stock workers, configuration only) ------------------------------


def dead_letters_of(dead: DeadLetters, task_id: str) -> list[Any]:
    return [e for e in dead.matching() if e.task_id == task_id]


def test_a_task_that_fails_is_dead_lettered_with_its_exception(
    redis_url: str, keyprefix: str, client: Celery, start_worker: StartWorker
) -> None:
    start_worker(hostname="failing@localhost")
    task_id = client.send_task("tests.app.always_fail", ("boom",), priority=3).id
    dead = dead_letters(redis_url, keyprefix)
    entry = wait_for(lambda: dead.find(task_id), timeout=30, message="not dead-lettered")
    assert entry.reason == "failed"
    assert entry.task_name == "tests.app.always_fail"
    assert entry.exc_type == "builtins.ValueError"
    assert entry.exc_message == "always_fail('boom') fails on purpose"
    assert "ValueError" in (entry.traceback or "") and "always_fail" in (entry.traceback or "")
    assert entry.worker == "failing@localhost"
    assert (entry.priority, entry.retries, entry.args) == (3, 0, "('boom',)")
    envelope = json.loads(entry.body or "{}")
    assert envelope["headers"]["id"] == task_id
    assert "x-tq-dead-letter" not in envelope["headers"]
    assert "delivery_count" not in envelope["headers"]

    # a replay runs it again (it fails again: one new entry, nothing else queued)
    assert dead.replay([task_id]).done == 1
    again = wait_for(lambda: (e := dead.find(task_id)) and e.dead_at != entry.dead_at and e,
                     timeout=30, message="the replayed task did not fail again")  # fmt: skip
    assert again.reason == "failed"
    # the entry of the second failure keeps the first one's history: replayed once, first
    # published when the task was first sent
    assert again.replays == 1
    assert again.published_at == entry.published_at
    assert dead.stats().total == 1
    assert inspector(redis_url, keyprefix).queues.stats(QUEUE).ready == 0


def test_a_late_acked_task_that_fails_is_kept_byte_for_byte(
    redis_url: str, keyprefix: str, client: Celery, start_worker: StartWorker,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    task_id = client.send_task("tests.app.always_fail", ("exact",), priority=5).id
    published = stored_body(redis_client, keyprefix, QUEUE, task_id)
    start_worker(env={"TQ_TEST_ACKS_LATE": "1"})
    dead = dead_letters(redis_url, keyprefix)
    entry = wait_for(lambda: dead.find(task_id), timeout=30, message="not dead-lettered")
    assert (entry.reason, entry.exc_type, entry.priority) == ("failed", "builtins.ValueError", 5)
    assert entry.body == published.decode()
    assert stored_body(redis_client, keyprefix, QUEUE, task_id) == published
    # the worker acknowledged the original: only the dead letter is left
    ops = inspector(redis_url, keyprefix)
    wait_for(lambda: ops.queues.stats(QUEUE).inflight == 0, timeout=10)
    assert [m.state for m in ops.queues.find(task_id)] == ["dead"]


def test_a_task_is_dead_lettered_once_its_retries_are_exhausted(
    redis_url: str, keyprefix: str, client: Celery, start_worker: StartWorker
) -> None:
    start_worker()
    task_id = client.send_task("tests.app.retry_then_fail", ("r",)).id
    dead = dead_letters(redis_url, keyprefix)
    entry = wait_for(lambda: dead.find(task_id), timeout=30, message="not dead-lettered")
    assert (entry.reason, entry.retries, entry.exc_type) == ("failed", 2, "builtins.RuntimeError")
    assert entry.exc_message == "attempt 2 of r"
    time.sleep(0.5)  # no retry is left that could add a second entry
    assert len(dead_letters_of(dead, task_id)) == 1


def test_failures_of_opted_out_tasks_and_queues_are_not_dead_lettered(
    redis_url: str, keyprefix: str, client: Celery, start_worker: StartWorker,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    start_worker(queues=("celery", "noisy"), env={"TQ_TEST_DLQ_EXCLUDE": "noisy"})
    opted_out = client.send_task("tests.app.fail_without_dead_letter", ("o",)).id
    noisy = client.send_task("tests.app.always_fail", ("n",), queue="noisy").id
    kept = client.send_task("tests.app.always_fail", ("k",)).id
    # the worker runs them in order per queue; once the kept one is a dead letter and a
    # marker task after the others ran, nothing else can still arrive
    dead = dead_letters(redis_url, keyprefix)
    wait_for(lambda: dead.find(kept), timeout=30, message="the kept failure was not dead-lettered")
    for queue in ("celery", "noisy"):
        client.send_task("tests.app.record", (f"after-{queue}",), queue=queue)
    wait_for(lambda: len(read_log(redis_client, keyprefix)) == 2, timeout=30,
             message="the marker tasks did not run")  # fmt: skip
    assert dead.find(opted_out) is None
    assert dead.find(noisy) is None
    assert [e.task_id for e in dead.matching()] == [kept]


def test_a_late_ack_failure_rejected_by_the_worker_is_dead_lettered_once(
    redis_url: str, keyprefix: str, client: Celery, start_worker: StartWorker
) -> None:
    start_worker(env={"TQ_TEST_ACKS_LATE": "1", "TQ_TEST_ACKS_ON_FAILURE": "0"})
    task_id = client.send_task("tests.app.always_fail", ("late",)).id
    dead = dead_letters(redis_url, keyprefix)
    entry = wait_for(lambda: dead.find(task_id), timeout=30, message="not dead-lettered")
    assert entry.reason == "rejected" and entry.deliveries == 1
    time.sleep(0.5)
    assert len(dead_letters_of(dead, task_id)) == 1, "buried by the broker and again"


# -- delete, purge, retention ----------------------------------------------------------------------


def test_delete_and_purge_with_dry_runs(redis_url: str, keyprefix: str, client: Celery) -> None:
    keep = bury(client, "tests.app.record", ("keep",), "unknown_task", "no task named")
    victims = [bury(client, "tests.app.record", (f"v{i}",)) for i in range(3)]
    broker = inspector(redis_url, keyprefix)
    dead = broker.acting_as("bob").dead_letters

    assert dead.delete([victims[0]], reason="duplicate").done == 1
    assert dead.find(victims[0]) is None
    assert broker.queues.find(victims[0]) == [], "the task id no longer points anywhere"

    dry = dead.purge(Filter(reason="rejected"), dry_run=True)
    assert (dry.matched, dry.done) == (2, 0)
    assert dead.stats().total == 3

    assert dead.purge(older_than=3600, dry_run=True).matched == 0, "nothing is an hour old"
    purged = dead.purge(Filter(reason="rejected"), reason="cleanup")
    assert (purged.matched, purged.done) == (2, 2)
    assert [e.task_id for e in dead.matching()] == [keep]

    actions = [(e.action, e.actor, e.reason) for e in broker.audit.entries().items]
    assert actions == [("dlq.purge", "bob", "cleanup"), ("dlq.delete", "bob", "duplicate")]
    with pytest.raises(InvalidRequest):
        dead.purge()


def test_retention_trims_are_counted_and_logged(
    redis_url: str, keyprefix: str, client: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [bury(client, "tests.app.record", (f"t{i}",)) for i in range(5)]
    unlimited = dead_letters(redis_url, keyprefix)
    assert unlimited.trim() == {}, "without a retention setting nothing is ever trimmed"

    limited = dead_letters(redis_url, keyprefix, dead_letter_max_count=3)
    with caplog.at_level(logging.WARNING, logger="taskqueue_backend.transport.retention"):
        assert limited.trim() == {QUEUE: 2}
    assert [e.task_id for e in limited.matching()] == list(reversed(ids[2:]))
    assert limited.stats().trimmed == {QUEUE: 2}
    assert "removed 2 entries" in caplog.text and ids[0] in caplog.text

    aged = dead_letters(redis_url, keyprefix, dead_letter_max_age=0.001)
    time.sleep(0.01)  # older than one millisecond
    assert aged.trim() == {QUEUE: 3}
    assert aged.stats().trimmed == {QUEUE: 5}


def test_workers_apply_the_retention_on_their_heartbeat(
    redis_url: str, keyprefix: str, client: Celery, start_worker: StartWorker
) -> None:
    options = {"dead_letter_max_count": 2, "heartbeat_interval": 0.2, "heartbeat_timeout": 2}
    start_worker(env={"TQ_TEST_TRANSPORT_OPTIONS": json.dumps(options)})
    for i in range(4):
        client.send_task("no.such.task", (i,))
    dead = dead_letters(redis_url, keyprefix)
    # (a stats call reads the entries, then the trim counts: wait for a settled view)
    stats = wait_for(
        lambda: (s := dead.stats()).trimmed == {QUEUE: 2} and s.total == 2 and s,
        timeout=30, message=lambda: f"not trimmed to 2: {dead.stats()}",
    )  # fmt: skip
    assert stats.by_reason == {"unknown_task": 2}


# -- the commands -------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*args], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
    )  # fmt: skip


def test_taskqueue_dlq_commands(redis_url: str, keyprefix: str, client: Celery) -> None:
    ids = [bury(client, "tests.app.record", (f"c{i}",)) for i in range(3)]
    base = [str(TASKQUEUE), "--broker-url", redis_url, "--keyprefix", keyprefix]

    listed = run_cli(*base, "--json", "dlq", "list", "--limit", "2")
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert [e["task_id"] for e in page["items"]] == [ids[2], ids[1]] and page["next_cursor"]

    table = run_cli(*base, "dlq", "list")
    assert table.returncode == 0 and "TASK" in table.stdout and ids[0] in table.stdout

    shown = run_cli(*base, "dlq", "show", ids[0], "--json")
    assert json.loads(shown.stdout)["task_id"] == ids[0]
    missing = run_cli(*base, "dlq", "show", "nope")
    assert missing.returncode != 0 and "no dead letter" in missing.stderr

    stats = run_cli(*base, "dlq", "stats")
    assert "dead letters: 3" in stats.stdout

    dry = run_cli(*base, "dlq", "replay", "--all", "--dry-run")
    assert "3 dead letter(s) would be replayed" in dry.stdout
    replayed = run_cli(*base, "dlq", "replay", ids[0], "--note", "cli test")
    assert replayed.returncode == 0 and "replayed 1 of 1" in replayed.stdout

    bad = run_cli(*base, "dlq", "purge")
    assert bad.returncode == 2 and "exactly one" in bad.stderr
    purged = run_cli(*base, "dlq", "purge", "--all", "--yes", "--json")
    assert json.loads(purged.stdout)["done"] == 2
    assert dead_letters(redis_url, keyprefix).stats().total == 0


def test_celery_dlq_command_uses_the_apps_settings(
    redis_url: str, keyprefix: str, client: Celery
) -> None:
    task_id = bury(client, "tests.app.record", ("via celery",))
    env = {"TQ_TEST_REDIS_URL": redis_url, "TQ_TEST_KEYPREFIX": keyprefix}
    listed = run_cli(str(CELERY), "-A", "tests.app", "dlq", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [e["task_id"] for e in json.loads(listed.stdout)["items"]] == [task_id]


def expire(client: Celery, label: str) -> str:
    """A task whose ``expires`` passes before any worker takes it: the fetch that finds it
    keeps it in the dead letters (reason expired); its task id."""
    task_id = str(client.send_task("tests.app.record", (label,), expires=0.5).id)
    time.sleep(0.6)
    with client.connection_for_read() as conn:
        assert conn.default_channel.basic_get(QUEUE) is None  # expired, not delivered
    return task_id


def test_an_expired_dead_letter_is_replayed_only_with_a_new_expiry_or_none(
    redis_url: str, keyprefix: str, client: Celery, redis_client: redis.Redis,
    start_worker: StartWorker,
) -> None:  # fmt: skip
    first, second, third = (expire(client, label) for label in ("first", "second", "third"))
    dead = dead_letters(redis_url, keyprefix, "operator")
    entry = dead.get(first)
    assert entry.reason == "expired" and entry.expires_at is not None
    for dry_run in (True, False):
        with pytest.raises(InvalidRequest, match="have expired.*--expires.*--clear-expiry"):
            dead.replay([first], dry_run=dry_run)
    with pytest.raises(InvalidRequest, match="not both"):
        dead.replay([first], expires=3600, clear_expiry=True)
    with pytest.raises(InvalidRequest, match="later than now"):
        dead.replay([first], expires=-5)
    assert dead.stats().total == 3, "a refused replay moves nothing"

    base = [str(TASKQUEUE), "--broker-url", redis_url, "--keyprefix", keyprefix]
    refused = run_cli(*base, "dlq", "replay", first)
    assert refused.returncode == 2 and "--expires" in refused.stderr, refused.stderr
    replayed = run_cli(*base, "dlq", "replay", first, "--expires", "1h")
    assert replayed.returncode == 0 and "replayed 1 of 1" in replayed.stdout, replayed.stderr
    [moved] = inspector(redis_url, keyprefix).queues.find(first)
    assert moved.state == "ready"
    headers = json.loads(stored_body(redis_client, keyprefix, QUEUE, first))["headers"]
    assert 3500 < (datetime.fromisoformat(headers["expires"]).timestamp() - time.time()) <= 3600
    assert dead.replay([second], clear_expiry=True).done == 1
    headers = json.loads(stored_body(redis_client, keyprefix, QUEUE, second))["headers"]
    assert headers["expires"] is None
    [entry] = dead.page().items
    assert entry.task_id == third
    [audit] = inspector(redis_url, keyprefix).audit.entries(AuditQuery(action="dlq."),
                                                            limit=1).items  # fmt: skip
    assert audit.detail["expires"] is None  # the last replay cleared it

    start_worker().wait_ready()
    wait_for(lambda: {e["label"] for e in read_log(redis_client, keyprefix)} == {"first",
                                                                                 "second"},
             timeout=30, message=lambda: str(read_log(redis_client, keyprefix)))  # fmt: skip


def test_the_worker_log_names_the_reason_a_dead_letter_is_kept_under(
    redis_url: str, keyprefix: str, client: Celery, start_worker: StartWorker
) -> None:
    unknown = client.send_task("tests.app.added_in_a_fix", ("no such task here",)).id
    refused = client.send_task("tests.app.reject_without_requeue", ("refused",)).id
    worker = start_worker()
    dead = dead_letters(redis_url, keyprefix)
    entries = wait_for(lambda: (found := [dead.find(unknown), dead.find(refused)]) and all(
        found) and found[0].reason == "unknown_task" and found, timeout=30,
        message="not dead-lettered")  # fmt: skip

    def lines_of(message_id: str) -> list[str]:
        return [line for line in worker.log_text().splitlines() if message_id in line]

    unknown_lines = wait_for(lambda: lines_of(entries[0].id), timeout=10,
                             message=lambda: worker.log_tail())  # fmt: skip
    refused_lines = wait_for(lambda: lines_of(entries[1].id), timeout=10,
                             message=lambda: worker.log_tail())  # fmt: skip
    assert len(unknown_lines) == 1, unknown_lines
    assert "dead-lettered: unknown_task (no task named 'tests.app.added_in_a_fix'" in \
        unknown_lines[0]  # fmt: skip
    assert "rejected" not in unknown_lines[0]
    assert entries[1].reason == "rejected"  # a task's own refusal is logged as it is kept
    assert [line for line in refused_lines if "dead-lettered: rejected" in line], refused_lines
