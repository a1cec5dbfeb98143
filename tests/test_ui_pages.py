"""The admin UI's pages through the real app (Flask test client) on real Redis and a real
result store: who may open and post what (from one table), sign-in and the session cookie,
CSRF, the confirmation of destructive actions, hidden actions, escaping and the page headers.
Browser behaviour (live updates, scripts, layout) is in ``test_ui_browser.py``."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from control_plane.auth import ROLES
from tests.support import StartWorker, wait_for
from tests.support.dead_letters import bury
from tests.support.ui import UiClient
from tests.test_api_tasks import submit

PAGES = {
    ("GET", "/"): "viewer",
    ("GET", "/tasks"): "viewer",
    ("GET", "/tasks/<task_id>"): "viewer",
    ("POST", "/tasks/<task_id>/retry"): "operator",
    ("POST", "/tasks/<task_id>/revoke"): "operator",
    ("GET", "/queues"): "viewer",
    ("POST", "/queues/<name>/pause"): "operator",
    ("POST", "/queues/<name>/resume"): "operator",
    ("POST", "/queues/<name>/purge"): "admin",
    ("GET", "/dlq"): "viewer",
    ("GET", "/dlq/<ident>"): "viewer",
    ("POST", "/dlq/replay"): "operator",
    ("POST", "/dlq/delete"): "admin",
    ("GET", "/workers"): "viewer",
    ("POST", "/workers/<name>/recover"): "operator",
    ("POST", "/workers/<name>/shutdown"): "admin",
    ("POST", "/workers/<name>/forget"): "admin",
    ("GET", "/audit"): "viewer",
    ("GET", "/find"): "viewer",
    ("GET", "/ui/stream"): "viewer",
}  # fmt: skip
#: how a refusal names a role ("this needs an operator; viewer-user is a viewer")
ARTICLE = {"viewer": "a", "operator": "an", "admin": "an"}
OPEN = {("GET", "/login"), ("POST", "/login"), ("POST", "/logout"),
        ("GET", "/ui/static/<path:filename>")}  # fmt: skip


def ui_routes(app: Any) -> dict[tuple[str, str], Any]:
    return {
        (method, rule.rule): app.view_functions[rule.endpoint]
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
        if rule.endpoint.startswith("ui.")
    }


def concrete(rule: str) -> str:
    return rule.replace("<task_id>", "no-such-task").replace("<ident>", "no-such-entry") \
        .replace("<name>", "no-such-name")  # fmt: skip


def test_the_table_names_every_page_and_the_role_each_declares(api: Any) -> None:
    found = ui_routes(api.app)
    assert set(found) == set(PAGES) | OPEN
    assert {route: getattr(found[route], "required_role", None) for route in PAGES} == PAGES


@pytest.mark.parametrize(("method", "rule"), sorted(PAGES), ids=lambda v: str(v))
def test_each_role_on_each_page(api: Any, method: str, rule: str) -> None:
    needed = PAGES[(method, rule)]
    path = concrete(rule)
    anonymous = UiClient.signed_in(api.app, None)
    answer = anonymous.get(path) if method == "GET" else anonymous.post(path, {})
    if rule == "/ui/stream":
        assert answer.status_code == 401
    else:
        assert answer.status_code == 302 and "/login" in answer.headers["Location"]
    for role in ROLES:
        ui = UiClient.signed_in(api.app, api.tokens[role])
        if rule == "/ui/stream":  # the event stream stays open: only its status is read
            answer = ui.get(path, buffered=False)
            answer.close()
        else:
            answer = ui.get(path) if method == "GET" else ui.post(path, {})
        body = answer.get_data(as_text=True) if rule != "/ui/stream" else ""
        if ROLES.index(role) < ROLES.index(needed):
            assert answer.status_code == 403, (role, body[:500])
            assert f"this needs {ARTICLE[needed]} {needed}; {role}-user is {ARTICLE[role]} {role}" \
                in body  # fmt: skip
        else:
            assert answer.status_code not in (302, 401, 403), (role, answer.status_code)
            assert answer.status_code < 500, body[:2000]


def test_a_post_without_the_csrf_token_is_refused_and_audited(api: Any) -> None:
    ui = UiClient.signed_in(api.app, api.tokens["operator"])
    refused = ui.post("/queues/held/pause", {}, csrf=False)
    assert refused.status_code == 400
    assert "security token" in refused.get_data(as_text=True)
    forged = ui.post("/queues/held/pause", {"csrf_token": "forged"}, csrf=False)
    assert forged.status_code == 400
    assert not any(q.paused for q in api.ops.queues.all())
    entries = api.ops.audit.entries().items
    assert [(e.action, e.actor, e.detail["status"]) for e in entries[:2]] == [
        ("request.refused", "operator-user", 400)] * 2  # fmt: skip

    done = ui.post("/queues/held/pause", {"reason": "deploying"})
    assert done.status_code == 303
    assert api.ops.queues.stats("held").paused
    assert "Queue held paused" in ui.text("/queues")
    entry = api.ops.audit.entries().items[0]
    assert (entry.action, entry.actor, entry.reason) == (
        "queue.pause", "operator-user", "deploying")  # fmt: skip
    assert entry.detail["role"] == "operator"


def test_a_viewer_sees_no_action_and_a_forged_post_is_refused(api: Any) -> None:
    api.ops.queues.pause("held")
    viewer = UiClient.signed_in(api.app, api.tokens["viewer"])
    page = viewer.text("/queues")
    assert "held" in page and "Resume" not in page and "Purge" not in page
    forged = viewer.post("/queues/held/resume", {})
    assert forged.status_code == 403
    assert "this needs an operator; viewer-user is a viewer" in forged.get_data(as_text=True)
    assert api.ops.queues.stats("held").paused
    refusal = api.ops.audit.entries().items[0]
    assert (refusal.action, refusal.actor, refusal.detail["status"]) == (
        "request.refused", "viewer-user", 403)  # fmt: skip

    operator = UiClient.signed_in(api.app, api.tokens["operator"]).text("/queues")
    assert "Resume" in operator and "Purge" not in operator
    admin = UiClient.signed_in(api.app, api.tokens["admin"]).text("/queues")
    assert "Resume" in admin and "Purge" in admin


def test_purging_a_queue_shows_the_count_and_needs_its_name_and_a_reason(
    api: Any, api_env: dict[str, str]
) -> None:
    from tests.backend_app import make_app

    client = make_app(api_env)
    try:
        for i in range(3):
            client.send_task("bk.add", (i, i), queue="doomed")
        client.send_task("bk.add", (9, 9), queue="doomed", countdown=600)
    finally:
        client.close()
    admin = UiClient.signed_in(api.app, api.tokens["admin"])
    first = admin.post("/queues/doomed/purge", {})
    page = first.get_data(as_text=True)
    assert first.status_code == 200
    assert re.search(r"<strong>4</strong> items would be affected", page)
    assert 'name="confirmed" value="1"' in page and "Type <strong>doomed</strong>" in page
    untyped = admin.post("/queues/doomed/purge", {"confirmed": "1", "reason": "bad deploy"})
    assert untyped.status_code == 400 and "Type doomed to confirm" in untyped.get_data(as_text=True)
    no_reason = admin.post("/queues/doomed/purge", {"confirmed": "1", "typed": "doomed"})
    assert no_reason.status_code == 400 and "Give a reason" in no_reason.get_data(as_text=True)
    stats = api.ops.queues.stats("doomed")
    assert (stats.ready, stats.delayed) == (3, 1), "nothing was deleted before the confirmation"

    done = admin.post("/queues/doomed/purge",
                      {"confirmed": "1", "typed": "doomed", "reason": "bad deploy"})  # fmt: skip
    assert done.status_code == 303
    assert "4 messages deleted" in admin.text("/queues")
    stats = api.ops.queues.stats("doomed")
    assert (stats.ready, stats.delayed) == (0, 0)
    entry = api.ops.audit.entries().items[0]
    assert (entry.action, entry.actor, entry.reason) == ("queue.purge", "admin-user", "bad deploy")


class TagAudit(HTMLParser):
    """The elements of a page and any inline event-handler attributes (``onerror=``...)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.handlers: list[tuple[str, str]] = []

    @classmethod
    def of(cls, html: str) -> TagAudit:
        audit = cls()
        audit.feed(html)
        return audit

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.handlers += [(tag, name) for name, _ in attrs if name.startswith("on")]


XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>'


def test_user_data_is_escaped_on_every_page_and_no_page_has_inline_script(
    api: Any, api_env: dict[str, str], start_worker: StartWorker
) -> None:
    from tests.backend_app import make_app

    start_worker(app="tests.backend_app", env=api_env).wait_ready()
    client = make_app(api_env)
    try:
        sent = client.send_task("bk.fail", kwargs={"message": XSS})
        named = client.send_task(XSS, (XSS,), {"note": XSS})
    finally:
        client.close()
    for task_id in (sent.id, named.id):
        wait_for(lambda t=task_id: api.ops.dead_letters.find(t), timeout=30,
                 message=f"{task_id} was not dead-lettered")  # fmt: skip
    admin = UiClient.signed_in(api.app, api.tokens["admin"])
    pages = ["/", "/tasks", f"/tasks/{sent.id}", f"/tasks/{named.id}", "/queues",
             "/dlq", "/workers", "/audit", f"/dlq?task={XSS}", f"/tasks?q={XSS}"]  # fmt: skip
    for path in pages:
        answer = admin.get(path)
        assert answer.status_code in (200, 400), (path, answer.status_code)
        html = answer.get_data(as_text=True)
        assert "<img src=x" not in html and "<script>window" not in html, path
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), f"inline script on {path}"
        assert not TagAudit.of(html).handlers, f"inline event handler on {path}"
        assert "img" not in TagAudit.of(html).tags, f"an <img> element on {path}"
        policy = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert answer.headers["X-Frame-Options"] == "DENY"
    assert "&lt;img src=x" in admin.text(f"/tasks/{sent.id}")  # its kwargs and exception
    assert "&lt;img src=x" in admin.text("/dlq")  # the unknown task's name


def test_revoking_a_waiting_task_from_its_page_removes_it_for_good(
    api: Any, api_env: dict[str, str]
) -> None:
    from tests.backend_app import make_app

    client = make_app(api_env)
    try:
        task_id = client.send_task("bk.add", (1, 2), countdown=600).id
    finally:
        client.close()
    operator = UiClient.signed_in(api.app, api.tokens["operator"])
    short = operator.get(f"/tasks/{task_id[:8]}")  # a prefix is enough
    assert short.status_code == 302 and short.headers["Location"] == f"/tasks/{task_id}"
    page = operator.text(f"/tasks/{task_id}")
    assert "delayed" in page and "Revoke…" in page and ">Retry<" not in page
    asked = operator.post(f"/tasks/{task_id}/revoke", {})
    assert asked.status_code == 200 and "can never run" in asked.get_data(as_text=True)
    assert api.ops.queues.find(task_id), "nothing happens before the confirmation"
    done = operator.post(f"/tasks/{task_id}/revoke", {"confirmed": "1", "reason": "sent twice"})
    assert done.status_code == 303
    page = operator.text(f"/tasks/{task_id}")
    assert "its waiting message was deleted" in page and "REVOKED" in page
    assert api.ops.queues.find(task_id) == []
    assert "Revoke…" not in page and ">Retry<" in page


def test_deleting_dead_letters_from_the_list_needs_an_admin_and_a_reason(
    api: Any, api_env: dict[str, str], start_worker: StartWorker
) -> None:
    from tests.backend_app import make_app

    start_worker(app="tests.backend_app", env=api_env).wait_ready()
    client = make_app(api_env)
    try:
        ids = [client.send_task("bk.fail", (f"boom {i}",)).id for i in range(3)]
    finally:
        client.close()
    for task_id in ids:
        wait_for(lambda t=task_id: api.ops.dead_letters.find(t), timeout=30)
    operator = UiClient.signed_in(api.app, api.tokens["operator"])
    assert "Delete selected" not in operator.text("/dlq")
    assert operator.post("/dlq/delete", {"ids": ids[0], "scope": "selected"}).status_code == 403
    admin = UiClient.signed_in(api.app, api.tokens["admin"])
    listed = admin.text("/dlq")
    assert "Delete selected" in listed and "Purge all matching" in listed
    chosen = [api.ops.dead_letters.find(t).id for t in ids[:2]]  # type: ignore[union-attr]
    asked = admin.post("/dlq/delete", {"ids": chosen, "scope": "selected"})
    assert re.search(r"<strong>2</strong> items would be affected", asked.get_data(as_text=True))
    done = admin.post("/dlq/delete", {"ids": chosen, "scope": "selected", "confirmed": "1",
                                      "reason": "known bad input"})  # fmt: skip
    assert done.status_code == 303
    assert "Deleted 2 of 2 dead letter(s)." in admin.text("/dlq")
    assert [api.ops.dead_letters.find(t) is None for t in ids] == [True, True, False]
    # every match of a filter: a dry-run count first, then the purge
    matching = {"scope": "matching", "f_exception": "ValueError"}
    asked = admin.post("/dlq/delete", matching)
    assert re.search(r"<strong>1</strong> item would be affected", asked.get_data(as_text=True))
    admin.post("/dlq/delete", {**matching, "confirmed": "1", "reason": "cleanup"})
    assert api.ops.dead_letters.stats().total == 0


def test_the_task_filter_keeps_the_states_a_link_gave(api: Any) -> None:
    ui = UiClient.signed_in(api.app, api.tokens["viewer"])
    one = ui.text("/tasks?state=FAILURE")
    assert re.search(r'<option value="FAILURE" selected>', one), one[:3000]
    several = ui.text("/tasks?state=FAILURE,REVOKED")
    assert re.search(r'<option value="FAILURE,REVOKED" selected>FAILURE, REVOKED</option>',
                     several), several[:3000]  # fmt: skip
    assert "TaskState" not in one + several


#: query strings no list page takes, and what its 400 page must say of each
REFUSED_QUERIES = {
    "state=x%00": "state: holds a NUL character",
    "state=FAILED": "state: ",
    "since=garbage": "since: give an ISO 8601 time",
    "cursor=W251bGwsIngiXQ": "cursor: ",  # base64 of [null,"x"]
    "cursor=W1tdLFtdXQ": "cursor: ",  # base64 of [[],[]]
}


@pytest.mark.parametrize("query", sorted(REFUSED_QUERIES))
@pytest.mark.parametrize("path", ["/tasks", "/dlq", "/audit", "/workers"])
def test_a_list_page_answers_a_bad_query_with_a_400_page_naming_the_field(
    api: Any, path: str, query: str
) -> None:
    ui = UiClient.signed_in(api.app, api.tokens["viewer"])
    answer = ui.get(f"{path}?{query}")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 400, (answer.status_code, page[:2000])
    alert = re.search(r'<div class="flash flash-error" role="alert">(.*?)</div>', page, re.S)
    assert alert, page[:3000]
    said = re.sub(r"\s+", " ", alert.group(1))
    field = query.split("=")[0]
    if path == "/workers" or (path != "/tasks" and field == "state"):
        assert f"{field}: not a filter of this page" in said, said
    else:
        assert REFUSED_QUERIES[query] in said, said
    assert "Value error" not in said and "Extra inputs" not in said, said
    assert "<h1>" in page and 'role="search"' in page, "the page itself, with its filters"


def test_the_search_box_opens_a_task_a_prefix_or_a_dead_letter_and_says_what_it_cannot(
    api: Any, api_env: dict[str, str]
) -> None:
    from tests.backend_app import make_app

    client = make_app(api_env)
    try:
        waiting = client.send_task("bk.add", (1, 2), countdown=600).id
        twins = [client.send_task("bk.add", (i, i), countdown=600,
                                  task_id=f"feedbeef-{i}000-4000-8000-000000000000").id
                 for i in range(2)]  # fmt: skip
        buried = bury(client, "bk.add", (3, 4))
    finally:
        client.close()
    entry = api.ops.dead_letters.find(buried)
    assert entry is not None and entry.id != buried
    ui = UiClient.signed_in(api.app, api.tokens["viewer"])
    for path in ("/", "/tasks", "/queues", "/dlq", "/workers", "/audit", f"/tasks/{waiting}"):
        page = ui.text(path)
        assert re.search(r'<form[^>]*action="/find"[^>]*role="search"', page), path
        assert 'name="id"' in page, path

    def found(ident: str) -> str:
        answer = ui.get(f"/find?id={ident}")
        assert answer.status_code == 302, (ident, answer.get_data(as_text=True)[:2000])
        return str(answer.headers["Location"])

    assert found(waiting) == f"/tasks/{waiting}"
    assert found(f"%20{waiting[:8]}%E2%80%A6%20") == f"/tasks/{waiting}"  # as tables shorten it
    assert found(entry.id) == f"/dlq/{entry.id}"
    assert found(buried) == f"/tasks/{buried}"

    def refused(ident: str, status: int) -> str:
        answer = ui.get(f"/find?id={ident}")
        page = answer.get_data(as_text=True)
        assert answer.status_code == status, (ident, answer.status_code, page[:2000])
        message = re.search(r'<p id="find-message"[^>]*>(.*?)</p>', page, re.S)
        assert message, page[:3000]
        assert re.search(r'<input[^>]*id="find-id"[^>]*value="[^"]*"', page)
        return re.sub(r"\s+", " ", message.group(1))

    assert "Nothing has the id" in refused("0123abcd-nothing", 404)
    assert "at least 4 characters" in refused("fe", 404)
    ambiguous = refused("feedbeef", 409)
    assert "several task ids" in ambiguous and twins[0] in ambiguous, ambiguous
    assert "Give a task id" in refused("", 400)
    assert "NUL" in refused("ab%00cd", 400)


def test_a_task_page_says_what_the_broker_and_the_result_store_each_hold(
    api: Any, api_env: dict[str, str]
) -> None:
    from tests.backend_app import make_app

    waiting = submit(api, "bk.add", 1, 2, countdown=600)  # the API records it as sent
    client = make_app(api_env)
    try:
        unrecorded = client.send_task("bk.add", (1, 2), countdown=600).id
        buried = bury(client, "bk.add", (3, 4))
    finally:
        client.close()
    ui = UiClient.signed_in(api.app, api.tokens["viewer"])

    def lines(task_id: str) -> dict[str, str]:
        page = ui.text(f"/tasks/{task_id}")
        found = {}
        for label, key in (("In the broker", "task-in-broker"),
                           ("In the result store", "task-in-results")):  # fmt: skip
            match = re.search(rf"<dt>{label}</dt>\s*<dd id=\"{key}\">(.*?)</dd>", page, re.S)
            assert match, (label, page[:4000])
            found[label] = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", match.group(1))).strip()
        return found

    assert lines(waiting) == {"In the broker": "delayed on queue celery",
                              "In the result store": "PENDING"}  # fmt: skip
    assert lines(unrecorded) == {"In the broker": "delayed on queue celery",
                                 "In the result store": "nothing recorded yet"}  # fmt: skip
    assert lines(buried)["In the broker"] == "dead-lettered on queue celery"
    api.ops.tasks.revoke(waiting, reason="not needed")
    assert lines(waiting) == {
        "In the broker": "no message (it was acknowledged, removed, or never published here)",
        "In the result store": "REVOKED",
    }
