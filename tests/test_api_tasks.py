"""Tasks through the REST API, with real workers, Redis and the result store (PostgreSQL when
one is available, else SQLite):

- a task submitted through the API is found at once, runs, fails, is dead-lettered, is retried
  through the API once fixed and succeeds — its history says so, and the audit log and the
  history name the caller, its role and the request id;
- a task with no dead letter is retried from its stored request, under the same id;
- a revoked countdown task never runs, not even on a worker started after the revoke; a
  running one is terminated through remote control;
- identical concurrent submissions with one ``Idempotency-Key`` send one message;
- bulk actions by filter: a dry run counts, a limit refuses a broad match, a real run acts;
- refused changes are audited with their outcome.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import redis

from tests.support import StartWorker, wait_for

BACKEND_APP = "tests.backend_app"


def task_state(api: Any, task_id: str) -> dict[str, Any]:
    found = api.get(f"/api/v1/tasks/{task_id}")
    assert found.status_code == 200, found.json
    return found.json


def wait_place(api: Any, task_id: str, *places: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(lambda: (s := task_state(api, task_id))["place"] in places and s,
                    timeout=timeout,
                    message=lambda: f"task not {places}: {task_state(api, task_id)}")  # fmt: skip


def events_of(api: Any, task_id: str) -> list[str]:
    found = api.get(f"/api/v1/tasks/{task_id}/events")
    assert found.status_code == 200, found.json
    return [e["event"] for e in found.json["events"]]


def submit(api: Any, name: str, *args: Any, **fields: Any) -> str:
    sent = api.post("/api/v1/tasks", {"name": name, "args": list(args), **fields})
    assert sent.status_code == 201, sent.json
    return str(sent.json["task_id"])


def test_submit_fail_dead_letter_retry_succeed_through_the_api(
    api: Any, api_env: dict[str, str], start_worker: StartWorker, redis_url: str,
    keyprefix: str,
) -> None:  # fmt: skip
    flag = f"{keyprefix}fixed"
    task_id = submit(api, "bk.fail_until_fixed", flag, reason="first try")
    found = task_state(api, task_id)
    assert found["place"] == "queued", found
    assert (
        found["result"]["state"] == "PENDING" and found["result"]["name"] == "bk.fail_until_fixed"
    )

    start_worker(app=BACKEND_APP, env=api_env).wait_ready()
    dead = wait_place(api, task_id, "dead-lettered")
    assert dead["dead_letter"]["reason"] == "failed"
    assert dead["dead_letter"]["exc_type"].endswith("ValueError")
    assert dead["result"]["state"] == "FAILURE"

    listed = api.get("/api/v1/dlq", query_string={"task": "bk.fail_until_fixed"}).json
    assert [e["task_id"] for e in listed["items"]] == [task_id]
    entry = api.get(f"/api/v1/dlq/{listed['items'][0]['id']}").json
    assert entry["task_id"] == task_id and "not set yet" in entry["exc_message"]
    grouped = api.get("/api/v1/dlq/stats").json
    assert grouped["by_task"] == {"bk.fail_until_fixed": 1}
    assert grouped["by_reason"] == {"failed": 1}

    redis.Redis.from_url(redis_url).set(flag, "1")
    retried = api.post(f"/api/v1/tasks/{task_id}/retry", {"reason": "fixed the flag"},
                       headers={"X-Request-ID": "req-retry-1"})  # fmt: skip
    assert retried.status_code == 200, retried.json
    assert retried.json == {"task_id": task_id, "source": "dead_letter", "queue": "celery"}
    assert retried.headers["X-Request-ID"] == "req-retry-1"

    done = wait_place(api, task_id, "SUCCESS")
    assert done["result"]["result"] == "fixed" and done["dead_letter"] is None
    timeline = events_of(api, task_id)
    assert timeline[0] == "sent" and timeline.count("started") == 2, timeline
    assert timeline[timeline.index("replayed"):] == ["replayed", "received", "started",
                                                     "succeeded"], timeline  # fmt: skip
    assert "failed" in timeline[: timeline.index("replayed")]
    assert "dead_lettered" in timeline[: timeline.index("replayed")]

    history = api.get(f"/api/v1/tasks/{task_id}/events").json["events"]
    [replayed] = [e for e in history if e["event"] == "replayed"]
    assert {k: replayed["detail"][k] for k in ("actor", "role", "request_id", "reason")} == {
        "actor": "operator-user", "role": "operator", "request_id": "req-retry-1",
        "reason": "fixed the flag"}  # fmt: skip
    [sent] = [e for e in history if e["event"] == "sent"]
    assert (sent["detail"]["actor"], sent["detail"]["role"]) == ("operator-user", "operator")

    audit = api.get("/api/v1/audit", query_string={"target": task_id}).json["items"]
    by_action = {e["action"]: e for e in audit}
    assert set(by_action) == {"task.submit", "dlq.replay"}, audit
    replay = by_action["dlq.replay"]
    assert (replay["actor"], replay["reason"]) == ("operator-user", "fixed the flag")
    assert replay["detail"]["role"] == "operator"
    assert replay["detail"]["request_id"] == "req-retry-1"
    assert replay["detail"]["outcome"] == "done" and replay["detail"]["done"] == 1
    assert by_action["task.submit"]["reason"] == "first try"

    listed = api.get("/api/v1/tasks", query_string={"state": "SUCCESS",
                                                    "name": "bk.fail_until_*"}).json  # fmt: skip
    assert [t["task_id"] for t in listed["items"]] == [task_id]
    counts = api.get("/api/v1/stats").json
    assert counts["states"].get("SUCCESS", 0) >= 1, counts
    # the throughput windows are the last minutes of the per-minute timeline
    timeline = api.get("/api/v1/stats/timeline").json
    hour = {w["minutes"]: w for w in counts["throughput"]}[60]
    for event in ("received", "succeeded", "failed", "dead_lettered"):
        assert hour[event] == sum(timeline["series"][event]), (event, hour, timeline)
    assert hour["succeeded"] >= 1 and hour["failed"] >= 1


def test_a_task_without_a_dead_letter_is_retried_from_its_stored_request(
    api: Any, api_env: dict[str, str], start_worker: StartWorker
) -> None:
    start_worker(app=BACKEND_APP, env=api_env).wait_ready()
    task_id = submit(api, "bk.fail", "always")
    dead = wait_place(api, task_id, "dead-lettered")
    deleted = api.delete(f"/api/v1/dlq/{dead['dead_letter']['id']}",
                         query_string={"reason": "keep only the result"})  # fmt: skip
    assert deleted.status_code == 200, deleted.json
    assert task_state(api, task_id)["place"] == "FAILURE"

    retried = api.post(f"/api/v1/tasks/{task_id}/retry", {"reason": "once more"})
    assert retried.status_code == 200, retried.json
    assert retried.json["source"] == "result" and retried.json["task_id"] == task_id
    wait_for(lambda: events_of(api, task_id).count("failed") == 2, timeout=30,
             message=lambda: f"the retry did not run: {events_of(api, task_id)}")  # fmt: skip
    timeline = events_of(api, task_id)
    assert timeline.index("dead_letter_deleted") < timeline.index("replayed"), timeline
    assert timeline[timeline.index("replayed") + 1:timeline.index("replayed") + 3] == [
        "received", "started"], timeline  # fmt: skip

    succeeded = submit(api, "bk.add", 1, 2)
    wait_place(api, succeeded, "SUCCESS")
    again = api.post(f"/api/v1/tasks/{succeeded}/retry", {})
    assert again.status_code == 409 and "only a failed" in again.json["error"]["message"]
    unknown = api.post(f"/api/v1/tasks/{uuid.uuid4()}/retry", {})
    assert unknown.status_code == 404, unknown.json


def test_a_revoked_countdown_task_never_runs_even_after_a_worker_restart(
    api: Any, api_env: dict[str, str], start_worker: StartWorker
) -> None:
    first = start_worker(app=BACKEND_APP, env=api_env).wait_ready()
    doomed = submit(api, "bk.stamp", countdown=2)
    assert task_state(api, doomed)["place"] == "delayed"
    revoked = api.post(f"/api/v1/tasks/{doomed}/revoke", {"reason": "sent by mistake"})
    assert revoked.status_code == 200, revoked.json
    assert revoked.json["removed"] is True and revoked.json["signalled"] is False
    state = task_state(api, doomed)
    assert (state["place"], state["broker"], state["result"]["state"]) == ("REVOKED", [],
                                                                            "REVOKED")  # fmt: skip
    first.stop()
    start_worker(app=BACKEND_APP, env=api_env).wait_ready()
    control = submit(api, "bk.stamp", countdown=2)  # due after the revoked one was
    wait_place(api, control, "SUCCESS")
    state = task_state(api, doomed)
    assert state["result"]["state"] == "REVOKED"
    assert [e["event"] for e in state["history"]] == ["sent", "revoked"], state["history"]
    [row] = [e for e in state["history"] if e["event"] == "revoked"]
    assert (row["detail"]["actor"], row["detail"]["reason"]) == ("operator-user",
                                                                 "sent by mistake")  # fmt: skip

    twice = api.post(f"/api/v1/tasks/{doomed}/revoke", {})
    assert twice.status_code == 409, twice.json


def test_a_running_task_is_terminated_through_remote_control(
    api: Any, api_env: dict[str, str], start_worker: StartWorker
) -> None:
    start_worker(app=BACKEND_APP, env={**api_env, "TQ_TEST_TRACK_STARTED": "1"}).wait_ready()
    task_id = submit(api, "bk.sleep", 60)
    wait_for(lambda: task_state(api, task_id)["result"]["state"] == "STARTED", timeout=30)
    revoked = api.post(f"/api/v1/tasks/{task_id}/revoke", {"terminate": True, "reason": "stuck"})
    assert revoked.status_code == 200, revoked.json
    assert revoked.json["signalled"] is True and revoked.json["terminate"] is True
    wait_for(lambda: task_state(api, task_id)["result"]["state"] == "REVOKED", timeout=30,
             message=lambda: f"not terminated: {task_state(api, task_id)}")  # fmt: skip
    assert "revoked" in events_of(api, task_id)


def test_concurrent_identical_submissions_with_one_idempotency_key_send_once(
    api: Any, keyprefix: str
) -> None:
    queue = f"{keyprefix}idem"
    body = {"name": "bk.add", "args": [2, 3], "queue": queue}
    key = f"order-{uuid.uuid4()}"
    answers: list[Any] = []
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        answers.append(api.post("/api/v1/tasks", body, headers={"Idempotency-Key": key}))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.json for a in answers]
    assert len({a.json["task_id"] for a in answers}) == 1
    assert [a.json["duplicate"] for a in answers].count(False) == 1
    [queued] = [q for q in api.get("/api/v1/queues").json if q["queue"] == queue]
    assert queued["ready"] == 1, queued

    other = api.post("/api/v1/tasks", {**body, "args": [2, 4]}, headers={"Idempotency-Key": key})
    assert other.status_code == 409, other.json
    assert other.json["error"]["code"] == "conflict"
    fresh = api.post("/api/v1/tasks", body, headers={"Idempotency-Key": f"{key}-2"})
    assert fresh.status_code == 201
    [queued] = [q for q in api.get("/api/v1/queues").json if q["queue"] == queue]
    assert queued["ready"] == 2, queued


def test_bulk_retry_by_filter_counts_refuses_a_broad_match_and_acts(
    api: Any, api_env: dict[str, str], start_worker: StartWorker
) -> None:
    start_worker(app=BACKEND_APP, env=api_env).wait_ready()
    failed = [submit(api, "bk.fail", f"boom {i}") for i in range(3)]
    for task_id in failed:
        wait_place(api, task_id, "dead-lettered")
    selection = {"state": ["FAILURE"], "name": "bk.fail"}
    found = api.get("/api/v1/tasks", query_string={"q": "boom 1"}).json["items"]
    assert [t["task_id"] for t in found] == [failed[1]]  # in its args and its exception
    assert api.get("/api/v1/tasks", query_string={"q": "b%m"}).json["items"] == []
    assert api.get("/api/v1/tasks", query_string={"q": "VALUEERROR"}).json["items"]

    dry = api.post("/api/v1/tasks/bulk", {"action": "retry", "filter": selection,
                                          "dry_run": True, "reason": "count"})  # fmt: skip
    assert dry.status_code == 200, dry.json
    assert (dry.json["matched"], dry.json["done"], dry.json["dry_run"]) == (3, 0, True)
    assert sorted(dry.json["task_ids"]) == sorted(failed)
    assert {task_state(api, t)["place"] for t in failed} == {"dead-lettered"}

    broad = api.post("/api/v1/tasks/bulk", {"action": "retry", "filter": selection, "limit": 2})
    assert broad.status_code == 422 and "limit=2" in broad.json["error"]["message"]

    done = api.post("/api/v1/tasks/bulk", {"action": "retry", "filter": selection,
                                           "reason": "all of them"})  # fmt: skip
    assert (done.json["matched"], done.json["done"], done.json["errors"]) == (3, 3, {})
    for task_id in failed:
        wait_for(lambda t=task_id: events_of(api, t).count("failed") == 2, timeout=30)
    [entry] = [e for e in api.get("/api/v1/audit", query_string={"action": "task.bulk_retry"}
                                  ).json["items"]]  # fmt: skip
    assert (entry["actor"], entry["reason"], entry["detail"]["done"]) == (
        "operator-user",
        "all of them",
        3,
    )


def test_refused_changes_are_audited_with_their_outcome(api: Any) -> None:
    purge = api.post("/api/v1/queues/celery/purge", {"confirm": "celery", "reason": "clean"},
                     role="operator", headers={"X-Request-ID": "req-refused"})  # fmt: skip
    assert purge.status_code == 403
    wrong = api.post("/api/v1/queues/celery/purge", {"confirm": "nope"}, role="admin")
    assert wrong.status_code == 422
    assert wrong.json["error"]["details"]["json"]["confirm"]
    anonymous = api.post("/api/v1/queues/celery/purge", {"confirm": "celery"}, role=None)
    assert anonymous.status_code == 401

    entries = api.get("/api/v1/audit", query_string={"action": "request.refused"}).json["items"]
    assert [(e["actor"], e["detail"]["status"]) for e in entries] == [
        ("admin-user", 422), ("operator-user", 403)]  # fmt: skip
    refused = entries[1]
    assert refused["target"] == "/api/v1/queues/celery/purge" and refused["reason"] == "clean"
    assert refused["detail"]["outcome"] == "refused"
    assert refused["detail"]["request_id"] == "req-refused"
    assert refused["detail"]["code"] == "forbidden"
    assert "admin" in refused["detail"]["message"]
