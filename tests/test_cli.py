"""The ``taskqueue`` command line as people use it: one meaning per option, ``--json`` anywhere,
readable tables that name the broker and result store they read, a clear error when nothing is
configured, durable removes that the result store records, task id prefixes, stored text that
cannot drive the terminal (control characters shown escaped), the audit log."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from celery import Celery, states
from celery.app.task import Context

from taskqueue_backend.operations import AuditQuery, Operations
from taskqueue_backend.operations.audit import default_actor
from tests.app import make_app
from tests.support import REPO_ROOT, StartWorker, wait_for
from tests.support.dead_letters import bury

TASKQUEUE = Path(sys.executable).parent / "taskqueue"


@pytest.fixture
def client(redis_url: str, keyprefix: str) -> Iterator[Celery]:
    app = make_app(redis_url, keyprefix)
    yield app
    app.close()


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'results.db'}"


def taskqueue(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    return subprocess.run(
        [str(TASKQUEUE), *args], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
        env={**clean, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
    )  # fmt: skip


def test_nothing_configured_is_a_clear_error_not_a_silent_default() -> None:
    done = taskqueue("queues")

    assert done.returncode == 2
    assert "no broker or result store given" in done.stderr
    assert "REDIS_URL" in done.stderr and "-A proj" in done.stderr


def test_every_command_takes_json_in_any_position(
    redis_url: str, keyprefix: str, client: Celery, database: str
) -> None:
    task_id = client.send_task("tests.app.record", ("json",), countdown=600).id
    bury(client, "tests.app.record", ("dead",))
    base = ["--broker-url", redis_url, "--keyprefix", keyprefix, "--database-url", database]
    commands = [
        ["queues"], ["consumers"], ["workers"], ["workers", "recover"], ["dlq", "list"],
        ["dlq", "stats"], ["tasks"], ["find", task_id], ["status", task_id], ["db", "current"],
        ["db", "maintain"],
    ]  # fmt: skip
    runs = [args for command in commands
            for args in ([*base, "--json", *command], [*base, *command, "--json"])]  # fmt: skip
    taskqueue(*runs[0])  # the first one creates the result store's tables
    with ThreadPoolExecutor(4) as pool:  # each command is a process of its own
        done_all = list(pool.map(lambda args: (args, taskqueue(*args)), runs))
    for args, done in done_all:
        assert done.returncode == 0, (args, done.stderr)
        json.loads(done.stdout)  # the whole output is JSON
        assert "taskqueue:" not in done.stderr, "JSON output carries no announcement"


def test_tables_show_readable_times_and_name_what_they_read(
    redis_url: str, keyprefix: str, client: Celery
) -> None:
    ready = client.send_task("tests.app.record", ("now",), priority=2).id
    client.send_task("tests.app.record", ("later",), countdown=600)
    base = ["--broker-url", redis_url, "--keyprefix", keyprefix]

    queues = taskqueue(*base, "queues")
    found = taskqueue(*base, "find", ready)

    assert queues.returncode == 0, queues.stderr
    assert f"taskqueue: broker {redis_url.replace('redis://', 'redis://:**@')}" in queues.stderr
    assert repr(keyprefix) in queues.stderr
    header, row = queues.stdout.splitlines()
    assert header.split()[:3] == ["QUEUE", "READY", "BY"]
    assert row.split()[:3] == ["celery", "1", "2:1"]
    assert " in 9m5" in row or " in 10m00s" in row, row  # the next due time, not a float
    assert "=" not in queues.stdout
    assert found.returncode == 0, found.stderr
    assert time.strftime("%Y-%m-%d", time.gmtime()) in found.stdout  # published, readable
    assert "ready" in found.stdout and "celery" in found.stdout


def test_dlq_reason_filters_and_note_is_the_audit_text(
    redis_url: str, keyprefix: str, client: Celery
) -> None:
    for i in range(2):
        bury(client, "tests.app.record", (f"r{i}",))
    bury(client, "tests.app.record", ("u",), "unknown_task", "no task named")
    base = ["--broker-url", redis_url, "--keyprefix", keyprefix]

    helped = taskqueue(*base, "dlq", "replay", "--help")
    dry = taskqueue(*base, "dlq", "replay", "--reason", "rejected", "--dry-run")
    done = taskqueue(*base, "dlq", "replay", "--reason", "rejected", "--note", "fixed", "--yes")

    assert helped.returncode == 0 and helped.stderr == "", helped.stderr  # no click warnings
    assert dry.returncode == 0 and dry.stderr.count("Warning") == 0, dry.stderr
    assert "dry run: 2 dead letter(s) would be replayed" in dry.stdout
    assert done.returncode == 0 and "replayed 2 of 2" in done.stdout, done.stderr
    ops = Operations.from_urls(redis_url, transport_options={"global_keyprefix": keyprefix})
    [entry] = ops.audit.entries(AuditQuery(action="dlq.replay")).items
    assert entry.reason == "fixed" and entry.detail["filter"] == {"reason": "rejected"}
    assert ops.dead_letters.stats().by_reason == {"unknown_task": 1}
    ops.close()


def test_remove_records_revoked_and_who_did_it(
    redis_url: str, keyprefix: str, client: Celery, database: str
) -> None:
    task_id = client.send_task("tests.app.record", ("sent twice",), countdown=600).id
    base = ["--broker-url", redis_url, "--keyprefix", keyprefix, "--database-url", database]

    removed = taskqueue(*base, "remove", task_id[:8], "--note", "sent twice")
    status = taskqueue(*base, "status", task_id[:8], "--json")

    assert removed.returncode == 0, removed.stderr
    assert f"removed task {task_id} from queue celery (it was delayed)" in removed.stdout
    assert "REVOKED, with a history row" in removed.stdout
    found = json.loads(status.stdout)
    assert found["place"] == "REVOKED" and found["broker"] == []
    assert found["result"]["state"] == "REVOKED"
    [row] = found["history"]
    assert row["event"] == "revoked"
    assert row["detail"] == {"actor": default_actor(), "reason": "sent twice",
                             "removed_from": "celery", "was": "delayed"}  # fmt: skip


def test_task_ids_can_be_abbreviated_unless_ambiguous(
    redis_url: str, keyprefix: str, client: Celery
) -> None:
    stem = uuid.uuid4().hex[:8]
    one, two = f"{stem}-aaaa", f"{stem}-bbbb"
    for task_id in (one, two):
        client.send_task("tests.app.record", ("p",), task_id=task_id, countdown=600)
    dead = bury(client, "tests.app.record", ("d",))
    base = ["--broker-url", redis_url, "--keyprefix", keyprefix]

    found = taskqueue(*base, "find", f"{stem}-a")
    shortened = taskqueue(*base, "status", f"{stem}-b…")
    shown = taskqueue(*base, "dlq", "show", dead[:10], "--json")
    ambiguous = taskqueue(*base, "find", stem)
    too_short = taskqueue(*base, "find", stem[:3])

    assert found.returncode == 0 and f"task {one}" in found.stdout, found.stderr
    assert shortened.returncode == 0 and f"task {two}: delayed" in shortened.stdout
    assert shown.returncode == 0 and json.loads(shown.stdout)["task_id"] == dead
    assert ambiguous.returncode == 1 and "start of several task ids" in ambiguous.stderr
    assert too_short.returncode == 1 and "at least 4 characters" in too_short.stderr


def test_workers_table_shows_the_consumer_id_forget_needs(
    redis_url: str, keyprefix: str, start_worker: StartWorker
) -> None:
    old = start_worker(hostname="twin@localhost").wait_ready()
    ops = Operations.from_urls(redis_url, transport_options={"global_keyprefix": keyprefix})
    [first] = wait_for(lambda: ops.workers.all("online"), timeout=30)
    assert old.stop() == 0
    start_worker(hostname="twin@localhost").wait_ready()
    wait_for(lambda: len(ops.workers.all("online")) == 1, timeout=30)
    base = ["--broker-url", redis_url, "--keyprefix", keyprefix]

    table = taskqueue(*base, "workers")
    by_name = taskqueue(*base, "workers", "forget", "twin@localhost")
    by_id = taskqueue(*base, "workers", "forget", first.consumer_id, "--note", "old process")

    assert table.returncode == 0 and "CONSUMER ID" in table.stdout
    assert first.consumer_id in table.stdout
    assert by_name.returncode == 1 and first.consumer_id in by_name.stderr, by_name.stderr
    assert by_id.returncode == 0, by_id.stderr
    assert [w.state for w in ops.workers.all()] == ["online"]
    ops.close()


#: what a hostile task name or exception text may hold: an OSC window title ended by BEL, a
#: CSI screen clear, an OSC 8 hyperlink, a backspace, a carriage return, DEL and the C1 CSI
HOSTILE = ("\x1b]0;owned\x07\x1b[2J\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\"
           "\x08\r\x7f\x9b2J")  # fmt: skip
#: the same text as the tables print it
HOSTILE_SHOWN = ("\\x1b]0;owned\\x07\\x1b[2J\\x1b]8;;http://evil.example/\\x1b\\click"
                 "\\x1b]8;;\\x1b\\\\x08\\x0d\\x7f\\u009b2J")  # fmt: skip
CONTROL_CHARACTERS = {chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))} - {"\n"}


def on_a_terminal(*args: str) -> str:
    """What ``taskqueue ARGS`` writes when its output is a terminal (a pseudo-terminal)."""
    leader, follower = pty.openpty()
    clean = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    process = subprocess.Popen(
        [str(TASKQUEUE), *args], stdout=follower, stderr=subprocess.DEVNULL, cwd=REPO_ROOT,
        env={**clean, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the pseudo-terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) == 0
    return b"".join(chunks).decode().replace("\r\n", "\n")  # the terminal's own line ends


def test_stored_text_cannot_drive_the_terminal(
    redis_url: str, keyprefix: str, client: Celery, database: str
) -> None:
    dead = bury(client, f"proj.{HOSTILE}", ("x",), detail=f"refused: {HOSTILE}")
    results = make_app(redis_url, keyprefix)
    results.conf.update(result_backend=f"tq+{database}", result_extended=True)
    failed = str(uuid.uuid4())
    results.backend.store_result(failed, RuntimeError(f"boom {HOSTILE}"), states.FAILURE,
                                 request=Context(task=f"proj.{HOSTILE}", id=failed))  # fmt: skip
    results.close()
    base = ["--broker-url", redis_url, "--keyprefix", keyprefix, "--database-url", database]
    commands = [["dlq", "list"], ["dlq", "show", dead], ["status", dead], ["tasks"]]

    for command in commands:
        piped = taskqueue(*base, *command)
        assert piped.returncode == 0, (command, piped.stderr)
        for shown in (piped.stdout, on_a_terminal(*base, *command)):
            assert set(shown) & CONTROL_CHARACTERS == set(), (command, shown)
            assert HOSTILE_SHOWN[:20] in shown, (command, shown)  # visible, escaped
    assert f"proj.{HOSTILE_SHOWN}\n" in taskqueue(*base, "dlq", "show", dead).stdout  # in full
    as_json = taskqueue(*base, "dlq", "show", dead, "--json")
    assert json.loads(as_json.stdout)["task_name"] == f"proj.{HOSTILE}"  # JSON keeps the text
    [row] = json.loads(taskqueue(*base, "tasks", "--json").stdout)["items"]
    assert row["name"] == f"proj.{HOSTILE}" and HOSTILE in row["exception_message"]


def test_audit_lists_who_did_what_newest_first_with_filters_and_pages(
    redis_url: str, keyprefix: str, client: Celery
) -> None:
    dead = bury(client, "tests.app.record", ("gone",))
    base = ["--broker-url", redis_url, "--keyprefix", keyprefix]
    for args in (["queues", "pause", "mail", "--note", "provider down"],
                 ["queues", "resume", "mail", "--note", "provider back"],
                 ["dlq", "delete", dead, "--note", "sent by mistake"]):  # fmt: skip
        assert taskqueue(*base, *args).returncode == 0, args
    ops = Operations.from_urls(redis_url, transport_options={"global_keyprefix": keyprefix})
    ops.audit.record("ops-bot", "worker.forget", "w9@host", "retired")
    ops.close()

    listed = taskqueue(*base, "audit")
    queue_actions = taskqueue(*base, "audit", "--action", "queue.", "--json")
    exact = taskqueue(*base, "audit", "--action", "queue.pause", "--json")
    by_actor = taskqueue(*base, "audit", "--actor", "ops-bot", "--json")
    by_target = taskqueue(*base, "audit", "--target", "MAIL", "--json")
    recent = taskqueue(*base, "audit", "--since", "1h", "--json")
    before = taskqueue(*base, "audit", "--until", "1h", "--json")
    first = taskqueue(*base, "audit", "--limit", "3")
    wrong_time = taskqueue(*base, "audit", "--since", "yesterday-ish")

    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:4] == ["AT", "(UTC)", "ACTOR", "ACTION"]
    assert [row.split()[3] for row in rows] == ["worker.forget", "dlq.delete", "queue.resume",
                                                "queue.pause"]  # fmt: skip
    assert "provider down" in rows[-1] and default_actor() in rows[-1]
    assert time.strftime("%Y-%m-%d", time.gmtime()) in rows[0]  # readable times

    def actions(done: subprocess.CompletedProcess[str]) -> list[str]:
        assert done.returncode == 0, done.stderr
        return [e["action"] for e in json.loads(done.stdout)["items"]]

    assert actions(queue_actions) == ["queue.resume", "queue.pause"]
    assert actions(exact) == ["queue.pause"]
    assert actions(by_actor) == ["worker.forget"]
    assert actions(by_target) == ["queue.resume", "queue.pause"]
    assert len(actions(recent)) == 4 and actions(before) == []
    assert first.returncode == 0 and len(first.stdout.splitlines()) == 1 + 3 + 1
    cursor = first.stdout.splitlines()[-1].removeprefix("more: --cursor ")
    rest = taskqueue(*base, "audit", "--limit", "3", "--cursor", cursor, "--json")
    assert actions(rest) == ["queue.pause"]
    assert json.loads(rest.stdout)["next_cursor"] is None
    assert wrong_time.returncode == 2 and "--since" in wrong_time.stderr, wrong_time.stderr
