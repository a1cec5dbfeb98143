"""Bad input to the API is a clear 4xx, never a 500 or a silent "nothing found"; the inputs
every tool takes are read the same way; the API's errors say nothing internal.

Each test pins a behaviour an adversary or a new operator found broken: a viewer asking for a
day of one-second intervals, NUL bytes, forged cursors, JSON nested a thousand deep, a
malformed or missing body, a typo in a state, relative times, dry runs that list what they
would do, dead letters found by a message-id prefix, Idempotency-Keys of one caller only,
far-away ETAs, refused typos kept out of the audit log, an app whose tasks come from
``include``.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import requests

from tests.support import StartWorker
from tests.support.control_plane import ServeControlPlane
from tests.support.dead_letters import bury
from tests.test_api_tasks import submit


def error_of(response: Any) -> str:
    body = response.json
    assert set(body) == {"error"}, body
    return str(body["error"]["message"])


def test_a_day_of_one_second_intervals_is_refused_at_once(api: Any) -> None:
    started = time.monotonic()
    answer = api.get("/api/v1/stats/timeline", query_string={"minutes": 1440,
                                                             "width_seconds": 1})  # fmt: skip
    assert time.monotonic() - started < 2
    assert answer.status_code == 422, answer.json
    assert "width_seconds" in error_of(answer)
    assert len(answer.data) < 5000 and b"SELECT" not in answer.data
    fine = api.get("/api/v1/stats/timeline", query_string={"minutes": 1440,
                                                           "width_seconds": 60})  # fmt: skip
    assert fine.status_code == 200, fine.json


def test_nul_bytes_are_refused_or_not_found_never_500(api: Any) -> None:
    for path, query in (("/api/v1/tasks", {"state": "x\x00y"}),
                        ("/api/v1/tasks", {"name": "a\x00b"}),
                        ("/api/v1/dlq", {"task": "a\x00b"}),
                        ("/api/v1/audit", {"actor": "a\x00b"})):  # fmt: skip
        answer = api.get(path, query_string=query)
        assert answer.status_code == 400, (path, query, answer.json)
    for path in ("/api/v1/tasks/abcd%00ef", "/api/v1/tasks/abcd%00ef/events",
                 "/api/v1/dlq/abcd%00ef"):  # fmt: skip
        answer = api.get(path)
        assert answer.status_code == 404, (path, answer.json)
    body = api.post("/api/v1/tasks", {"name": "bk.add", "args": [1, 2], "queue": "q\x00"})
    assert body.status_code == 400, body.json


def test_times_at_the_ends_of_the_calendar_are_read_not_500(api: Any) -> None:
    """The first hour of year 1 east of Greenwich is before the earliest UTC time there is;
    the last hour of 9999 west of it, after the latest: they bound a filter as far as can be.
    A date that is no date is refused, and the document does not allow it."""
    submit(api, "bk.add", 1, 2)
    for query in ({"until": "0001-01-01T00:00:00+01:00"}, {"since": "9999-12-31T23:59:59-01:00"}):
        for path in ("/api/v1/tasks", "/api/v1/dlq", "/api/v1/audit"):
            answer = api.get(path, query_string=query)
            assert answer.status_code == 200, (path, query, answer.json)
            assert answer.json["items"] == [], (path, query)
    ends = {"since": "0001-01-01T00:00:00+01:00", "until": "9999-12-31T23:59:59-01:00"}
    wide = api.get("/api/v1/audit", query_string=ends)
    assert wide.status_code == 200 and wide.json["items"], wide.json
    for bad in ("2023-02-29T10:00", "2024-04-31T10:00", "2024-01-01T24:00"):
        answer = api.get("/api/v1/tasks", query_string={"since": bad})
        assert answer.status_code == 400, (bad, answer.json)
        assert "since" in error_of(answer)


def test_forged_cursors_are_refused(api: Any) -> None:
    submit(api, "bk.add", 1, 2)
    for cursor in ("W251bGwsIngiXQ", "W1tdLFtdXQ", "e30", "bm90IGpzb24", "!!"):
        answer = api.get("/api/v1/tasks", query_string={"cursor": cursor})
        assert 400 <= answer.status_code < 500, (cursor, answer.json)
        assert "cursor" in error_of(answer)


def test_bodies_are_read_with_errors_that_say_what_was_wrong(api: Any) -> None:
    task_id = bury(api.ops.celery, "bk.add", (1, 2))
    path = f"/api/v1/dlq/{task_id}/replay"
    deep = api.call("POST", path, role="operator", data="[" * 1000 + "]" * 1000,
                    content_type="application/json")  # fmt: skip
    assert deep.status_code == 400 and "nested deeper" in error_of(deep)
    broken = api.call("POST", path, role="operator", data='{"reason": ',
                      content_type="application/json")  # fmt: skip
    assert broken.status_code == 400 and "not valid JSON" in error_of(broken)
    form = api.call("POST", path, role="operator", data={"reason": "x"})
    assert form.status_code == 415 and "application/json" in error_of(form)
    empty = api.call("POST", path, role="operator")  # every field is optional
    assert empty.status_code == 200, empty.json
    assert empty.json["done"] == 1
    refused = api.get("/api/v1/audit", query_string={"action": "request.refused"}).json["items"]
    assert refused == [], "a request that could not be read is not an audit entry"


def test_states_are_checked_and_taken_as_lists_or_comma_separated(api: Any) -> None:
    typo = api.get("/api/v1/tasks", query_string={"state": "FAILED"})
    assert typo.status_code == 400
    assert "FAILURE" in str(typo.json), "the refusal lists the states there are"
    bulk_typo = api.post("/api/v1/tasks/bulk", {"action": "retry", "filter": {"state": ["FAILED"]},
                                                "dry_run": True})  # fmt: skip
    assert bulk_typo.status_code == 400, bulk_typo.json
    for state in (["FAILURE", "RETRY"], "FAILURE,RETRY"):
        counted = api.post("/api/v1/tasks/bulk", {"action": "retry", "dry_run": True,
                                                  "filter": {"state": state}})  # fmt: skip
        assert counted.status_code == 200, (state, counted.json)
    listed = api.get("/api/v1/tasks", query_string={"state": "SUCCESS,FAILURE", "since": "2h"})
    assert listed.status_code == 200, listed.json
    assert api.get("/api/v1/dlq", query_string={"since": "7d", "until": "1m"}).status_code == 200
    assert api.get("/api/v1/tasks", query_string={"since": "soon"}).status_code == 400
    # no state at all is no filter that could be meant: leave the field out for every state
    assert api.get("/api/v1/tasks", query_string={"state": ""}).status_code == 400
    for empty in ([], ["FAILURE"] * 40):
        refused = api.post("/api/v1/tasks/bulk", {"action": "retry", "dry_run": True,
                                                  "filter": {"state": empty}})  # fmt: skip
        assert refused.status_code == 400, (empty, refused.json)
    audited = api.get("/api/v1/audit", query_string={"action": "request.refused"}).json["items"]
    assert audited == [], "a typo is answered, not audited"


def test_a_dead_letter_replay_dry_run_lists_its_tasks(api: Any) -> None:
    ids = [bury(api.ops.celery, "bk.add", (i, i)) for i in range(3)]
    dry = api.post("/api/v1/dlq/replay", {"all": True, "dry_run": True})
    assert dry.status_code == 200, dry.json
    assert sorted(dry.json["task_ids"]) == sorted(ids)
    assert dry.json["done"] == 0


def test_a_dead_letter_is_found_by_a_prefix_of_its_message_id(api: Any) -> None:
    task_id = bury(api.ops.celery, "bk.add", (4, 4))
    message_id = api.get(f"/api/v1/dlq/{task_id}").json["id"]
    found = api.get(f"/api/v1/dlq/{message_id[:8]}")
    assert found.status_code == 200, found.json
    assert found.json["task_id"] == task_id
    assert api.get("/api/v1/dlq/ffffffffzz").status_code == 404


def test_idempotency_keys_belong_to_their_caller(api: Any) -> None:
    key = f"same-{uuid.uuid4()}"
    body = {"name": "bk.add", "args": [1, 2]}
    first = api.post("/api/v1/tasks", body, role="admin", headers={"Idempotency-Key": key})
    again = api.post("/api/v1/tasks", body, role="admin", headers={"Idempotency-Key": key})
    other = api.post("/api/v1/tasks", body, role="operator", headers={"Idempotency-Key": key})
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert again.json["task_id"] == first.json["task_id"]
    assert other.json["task_id"] != first.json["task_id"], "another caller got the admin's task"


def test_an_eta_is_held_to_the_same_bound_as_a_countdown(api: Any) -> None:
    far = api.post(
        "/api/v1/tasks", {"name": "bk.add", "args": [1, 2], "eta": "9999-12-31T00:00:00Z"}
    )
    assert far.status_code == 422 and "366 days" in error_of(far)
    near = api.post("/api/v1/tasks", {"name": "bk.add", "args": [1, 2], "countdown": 60})
    assert near.status_code == 201, near.json


def test_the_api_knows_the_tasks_an_app_includes(
    api_env: dict[str, str], serve_control_plane: ServeControlPlane, tmp_path: Path,
    start_worker: StartWorker,
) -> None:  # fmt: skip
    """``examples/proj`` lists its task modules with ``Celery(..., include=[...])``."""
    settings = {"TQ_CELERY_APP": "examples.proj.celery:app",
                "REDIS_URL": api_env["TQ_TEST_REDIS_URL"],
                "BROKER_KEYPREFIX": api_env["TQ_TEST_KEYPREFIX"],
                "DATABASE_URL": f"sqlite:///{tmp_path / 'proj.db'}"}  # fmt: skip
    served = serve_control_plane(api_env, **settings)
    sent = requests.post(served.url + "/api/v1/tasks", json={"name": "examples.proj.tasks.add",
                                                             "args": [2, 3]},
                         headers=served.headers("operator"), timeout=10)  # fmt: skip
    assert sent.status_code == 201, sent.text
    unknown = requests.post(served.url + "/api/v1/tasks", json={"name": "examples.proj.nope"},
                            headers=served.headers("operator"), timeout=10)  # fmt: skip
    assert unknown.status_code == 422 and "no task" in unknown.json()["error"]["message"]
