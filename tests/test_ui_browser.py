"""The admin UI end to end: Debian's headless Chromium, driven by Playwright, against the app
served by the production server (``taskqueue control-plane``), with a real worker, Redis and
the result store (PostgreSQL when one is available).

- every page renders with no console error and no failed request, on a laptop and at phone
  width with nothing wider than the screen (screenshots of each under
  ``test-artifacts/screenshots``);
- filters (kept in the URL) and cursor pagination;
- a replay from the dead-letter page makes the task succeed, and the audit page says who;
- a viewer sees no operator action, and a forged POST is refused; so is one without the CSRF
  token;
- a task's page updates by itself when its worker finishes it;
- at phone width a long dotted task name shows whole (it wraps only at its dots and
  underscores) and a wide table scrolls inside its own box, not the page;
- the search box in the header opens a task by a prefix of its id, and says when nothing has
  the id;
- script in task names, arguments, exception text and reasons stays text on every page.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
import redis

from tests.support import BrowserPage, OpenBrowserPage, StartWorker, wait_for
from tests.support.control_plane import ServedControlPlane
from tests.test_api_tasks import submit, task_state, wait_place

BACKEND_APP = "tests.backend_app"


def sign_in(page: BrowserPage, server: ServedControlPlane, role: str) -> None:
    page.goto(server.url + "/login")
    page.get_by_label("Token").fill(server.tokens[role])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(server.url + "/")


def visit(page: BrowserPage, url: str) -> None:
    page.goto(url)
    page.locator("main h1").first.wait_for()


def fits(page: BrowserPage) -> bool:
    return page.no_horizontal_overflow()


@pytest.fixture
def populated(api: Any, api_env: dict[str, str], start_worker: StartWorker) -> dict[str, str]:
    """A worker, a few finished tasks, a dead letter, a delayed task and a paused queue."""
    start_worker(app=BACKEND_APP, env=api_env).wait_ready()
    done = [submit(api, "bk.add", i, i) for i in range(3)]
    failed = submit(api, "bk.fail", "card declined")
    for task_id in done:
        wait_place(api, task_id, "SUCCESS")
    wait_place(api, failed, "dead-lettered")
    submit(api, "bk.add", 1, 1, queue="held", countdown=600)
    assert api.post("/api/v1/queues/held/pause", {"reason": "deploying"}).status_code == 200
    return {"done": done[0], "failed": failed}


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_every_page_renders_cleanly_and_fits_the_screen(
    populated: dict[str, str], control_plane_server: ServedControlPlane,
    open_browser_page: OpenBrowserPage, viewport: str,
) -> None:  # fmt: skip
    page = open_browser_page(viewport)
    server = control_plane_server
    page.goto(server.url + "/login")
    page.screenshot("login")
    assert fits(page), "login"
    sign_in(page, server, "admin")
    pages = {
        "overview": "/", "tasks": "/tasks", "task": f"/tasks/{populated['done']}",
        "failed-task": f"/tasks/{populated['failed']}", "queues": "/queues", "dlq": "/dlq",
        "dead-letter": f"/dlq/{populated['failed']}", "workers": "/workers", "audit": "/audit",
    }  # fmt: skip
    for name, path in pages.items():
        visit(page, server.url + path)
        page.screenshot(name)
        assert fits(page), f"{name} is wider than the {viewport} screen"
    # a confirmation page, as a destructive action shows it first
    visit(page, server.url + "/queues")
    page.get_by_role("button", name="Purge queue held").click()
    page.get_by_role("heading", name="Purge queue held").wait_for()
    page.screenshot("confirm-purge")
    assert fits(page), "confirm-purge"
    assert page.locator("#confirm-count").inner_text().startswith("1 item")
    page.assert_clean()


def test_filters_stay_in_the_url_and_pages_follow_the_cursor(
    api: Any, api_env: dict[str, str], start_worker: StartWorker,
    control_plane_server: ServedControlPlane, browser_page: BrowserPage,
) -> None:  # fmt: skip
    start_worker(app=BACKEND_APP, env=api_env).wait_ready()
    added = [submit(api, "bk.add", i, i) for i in range(7)]
    failed = [submit(api, "bk.fail", f"boom {i}") for i in range(2)]
    for task_id in added:
        wait_place(api, task_id, "SUCCESS")
    for task_id in failed:
        wait_place(api, task_id, "dead-lettered")
    page, server = browser_page, control_plane_server
    sign_in(page, server, "viewer")

    visit(page, server.url + "/tasks")
    page.get_by_label("State").select_option("FAILURE")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"state=FAILURE"))
    states = page.locator("table.tasks tbody tr td:nth-child(3)").all_inner_texts()
    assert states == ["FAILURE", "FAILURE"], states
    shared = page.url  # a shareable link: the same filter, opened afresh
    visit(page, shared)
    assert page.get_by_label("State").input_value() == "FAILURE"

    seen: list[str] = []
    visit(page, server.url + "/tasks?name=bk.add&limit=3")
    while True:
        seen += page.locator("table.tasks tbody tr td:first-child a").evaluate_all(
            "links => links.map(a => a.title)")  # fmt: skip
        following = page.get_by_role("link", name="Next page »")
        if not following.count():
            break
        following.click()
        page.wait_for_url(re.compile(r"cursor="))
    assert sorted(seen) == sorted(added) and len(seen) == len(set(seen)), seen

    visit(page, server.url + "/dlq")
    page.get_by_label("Exception").fill("ValueError")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"exception=ValueError"))
    assert page.locator("table.dead-letters tbody tr").count() == 2
    page.assert_clean()


def test_a_replay_from_the_dead_letter_page_succeeds_and_the_audit_names_who(
    api: Any, api_env: dict[str, str], start_worker: StartWorker,
    control_plane_server: ServedControlPlane, browser_page: BrowserPage,
) -> None:  # fmt: skip
    start_worker(app=BACKEND_APP, env=api_env).wait_ready()
    flag = f"{api_env['TQ_TEST_KEYPREFIX']}fixed-{uuid.uuid4().hex[:6]}"
    task_id = submit(api, "bk.fail_until_fixed", flag)
    wait_place(api, task_id, "dead-lettered")
    client = redis.Redis.from_url(api_env["TQ_TEST_REDIS_URL"])
    client.set(flag, "1")  # the "fix" is deployed
    page, server = browser_page, control_plane_server
    sign_in(page, server, "operator")

    visit(page, server.url + "/dlq")
    page.get_by_role("checkbox", name=re.compile(task_id[:8])).check()
    page.get_by_role("button", name="Replay selected…").click()
    page.get_by_role("heading", name="Replay dead letters").wait_for()
    assert page.locator("#confirm-count").inner_text().startswith("1 item")
    page.get_by_label("Reason (kept in the audit log)").fill("fix deployed")
    page.get_by_role("button", name="Replay", exact=True).click()
    page.get_by_text("Replayed 1 of 1 dead letter(s).").wait_for()

    state = wait_place(api, task_id, "SUCCESS")
    assert state["result"]["result"] == "fixed"
    visit(page, server.url + f"/tasks/{task_id}")
    history = [h.lower() for h in page.locator("#task-history .event-name").all_inner_texts()]
    assert history == ["sent", "received", "started", "failed", "dead lettered", "replayed",
                       "received", "started", "succeeded"], history  # fmt: skip
    visit(page, server.url + "/audit?action=dlq.replay")
    row = page.locator("table.audit tbody tr").first
    assert "operator-user" in row.inner_text() and "fix deployed" in row.inner_text()
    page.screenshot("audit")
    page.assert_clean()
    client.delete(flag)
    client.close()


def test_a_viewer_sees_no_action_and_forged_or_tokenless_posts_are_refused(
    populated: dict[str, str], control_plane_server: ServedControlPlane,
    browser_page: BrowserPage,
) -> None:  # fmt: skip
    page, server = browser_page, control_plane_server
    sign_in(page, server, "viewer")
    actions = re.compile(r"^(Retry|Revoke…|Replay.*|Delete.*|Purge.*|Pause|Resume|Recover|"
                         r"Shut down…|Forget…)$")  # fmt: skip
    for path in ("/", "/tasks", f"/tasks/{populated['failed']}", "/queues", "/dlq",
                 f"/dlq/{populated['failed']}", "/workers"):  # fmt: skip
        visit(page, server.url + path)
        buttons = page.get_by_role("button").all_inner_texts()
        assert not [b for b in buttons if actions.match(b.strip())], (path, buttons)
    assert page.locator('input[name="ids"]').count() == 0

    page.expect_status(403, "/queues/held/resume")
    page.expect_status(400, "/queues/held/resume")
    forged = page.evaluate(
        """async () => {
            const token = document.querySelector('input[name=csrf_token]').value;
            const post = (body) => fetch('/queues/held/resume', {method: 'POST', body});
            const withToken = new FormData(); withToken.append('csrf_token', token);
            const without = new FormData(); without.append('reason', 'sneaky');
            return [(await post(withToken)).status, (await post(without)).status];
        }"""
    )
    assert forged == [403, 400]
    visit(page, server.url + "/queues")
    assert page.get_by_text("paused", exact=True).count() >= 1, "the queue is still paused"
    page.assert_clean()


def test_a_task_page_updates_by_itself_when_its_worker_finishes(
    api: Any, api_env: dict[str, str], start_worker: StartWorker,
    control_plane_server: ServedControlPlane, browser_page: BrowserPage,
) -> None:  # fmt: skip
    start_worker(app=BACKEND_APP, env=api_env).wait_ready()
    page, server = browser_page, control_plane_server
    sign_in(page, server, "viewer")
    task_id = submit(api, "bk.sleep", 4.0)
    wait_for(lambda: "started" in [e["event"] for e in task_state(api, task_id)["history"]],
             timeout=30, message="the task never started")  # fmt: skip
    visit(page, server.url + f"/tasks/{task_id}")
    page.get_by_text("Live", exact=True).wait_for()  # the change stream is open
    page.evaluate("window.__notReloaded = true")
    assert "SUCCESS" not in page.locator("#task-in-results").inner_text()

    page.locator("#task-in-results", has_text="SUCCESS").wait_for(timeout=15_000)
    assert page.evaluate("window.__notReloaded") is True, "the page was reloaded"
    assert "succeeded" in page.locator("#task-history").inner_text().lower()
    page.assert_clean()


XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>'


def test_script_in_task_data_stays_text_on_every_page(
    api: Any, api_env: dict[str, str], start_worker: StartWorker,
    control_plane_server: ServedControlPlane, browser_page: BrowserPage,
) -> None:  # fmt: skip
    from tests.backend_app import make_app

    start_worker(app=BACKEND_APP, env=api_env).wait_ready()
    client = make_app(api_env)
    try:
        failed = client.send_task("bk.fail", (XSS,)).id
        named = client.send_task(XSS, (XSS,), {"note": XSS}).id
    finally:
        client.close()
    for task_id in (failed, named):
        wait_for(lambda t=task_id: api.ops.dead_letters.find(t), timeout=30,
                 message=f"{task_id} was not dead-lettered")  # fmt: skip
    page, server = browser_page, control_plane_server
    page.on("dialog", lambda dialog: dialog.dismiss())
    sign_in(page, server, "admin")
    visit(page, server.url + f"/dlq/{failed}")  # a replay whose reason is the payload too
    page.get_by_role("button", name="Replay…").click()
    page.get_by_label("Reason (kept in the audit log)").fill(XSS)
    page.get_by_role("button", name="Replay", exact=True).click()
    page.get_by_text("Replayed 1 of 1").wait_for()
    wait_place(api, failed, "dead-lettered")

    for path in ("/", "/tasks", f"/tasks/{failed}", f"/tasks/{named}", "/dlq",
                 f"/dlq/{failed}", f"/dlq/{named}", "/audit", "/queues", "/workers"):  # fmt: skip
        visit(page, server.url + path)
        assert page.evaluate("window.__xss") is None, f"script ran on {path}"
        assert page.locator("main img").count() == 0, path
    visit(page, server.url + f"/tasks/{failed}")
    assert json.dumps(XSS) in page.locator("#task-args").inner_text()  # shown as JSON
    assert XSS in page.locator("#task-exception").inner_text()
    visit(page, server.url + "/dlq")
    assert XSS in page.locator("table.dead-letters").inner_text()
    visit(page, server.url + "/audit")
    assert XSS in page.locator("table.audit").inner_text()
    page.assert_clean()


LONG_NAME = "tests.billing.reconciliation.reconcile_outstanding_customer_invoices_for_region"
#: where a cell's text wraps: the character before each line break
LINE_BREAKS = """cell => {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    const chars = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.length; i++) {
            const range = document.createRange();
            range.setStart(node, i);
            range.setEnd(node, i + 1);
            const box = range.getClientRects()[0];
            if (box) chars.push([node.data[i], box.top]);
        }
    }
    const breaks = [];
    for (let i = 1; i < chars.length; i++) {
        if (chars[i][1] > chars[i - 1][1] + 2) breaks.push(chars[i - 1][0]);
    }
    return breaks;
}"""


def test_at_phone_width_task_names_show_whole_and_wide_tables_scroll_in_their_box(
    api: Any, control_plane_server: ServedControlPlane, open_browser_page: OpenBrowserPage,
) -> None:  # fmt: skip
    for i in range(3):
        submit(api, LONG_NAME, i, queue="billing-reconciliation-eu-west", countdown=600)
    page, server = open_browser_page("phone"), control_plane_server
    sign_in(page, server, "viewer")
    visit(page, server.url + "/tasks")
    cell = page.locator("table.tasks tbody tr td.name").first
    assert cell.inner_text().replace("\n", "") == LONG_NAME
    breaks = cell.evaluate(LINE_BREAKS)
    assert set(breaks) <= {".", "_"}, f"the name wraps inside a word, after {breaks}"
    assert len(breaks) <= 3, f"the name is squeezed into {len(breaks) + 1} lines"
    box = page.locator("table.tasks").locator("xpath=..")
    assert box.evaluate("e => getComputedStyle(e).overflowX") == "auto"
    assert box.evaluate("e => e.scrollWidth > e.clientWidth"), "the table was squeezed to fit"
    assert fits(page), "the page itself scrolls sideways"
    page.screenshot("tasks-long-name")
    page.assert_clean()


def test_the_search_box_opens_a_task_by_its_id_and_says_when_nothing_has_it(
    api: Any, control_plane_server: ServedControlPlane, open_browser_page: OpenBrowserPage,
) -> None:  # fmt: skip
    task_id = submit(api, "bk.add", 1, 2, countdown=600)
    page, server = open_browser_page("phone"), control_plane_server
    sign_in(page, server, "viewer")
    visit(page, server.url + "/queues")
    search = page.get_by_role("search", name="Find by id")
    search.get_by_label("Task or dead letter id").fill(task_id[:8])
    search.get_by_role("button", name="Find").click()
    page.wait_for_url(server.url + f"/tasks/{task_id}")
    assert task_id in page.locator("main").inner_text()
    assert fits(page), "the header with its search box is wider than the phone"

    page.expect_status(404, "/find")
    search.get_by_label("Task or dead letter id").fill("0000dead-no-such-task")
    search.get_by_label("Task or dead letter id").press("Enter")
    page.wait_for_url(re.compile(r"/find\?id="))
    assert "Nothing has the id" in page.locator("#find-message").inner_text()
    assert search.get_by_label("Task or dead letter id").input_value() == "0000dead-no-such-task"
    page.screenshot("find-nothing")
    assert fits(page)
    page.assert_clean()
