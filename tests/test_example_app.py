"""The example project (a stock Celery app that only changes configuration) runs its demo, then
serves the admin UI over what it ran until Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import requests

from tests.support import REPO_ROOT, wait_for
from tests.support.ui import csrf_of


def test_demo_runs_tasks_then_serves_a_populated_ui_until_ctrl_c(
    redis_url: str, keyprefix: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "BROKER_KEYPREFIX": keyprefix,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
    }
    demo = subprocess.Popen(
        [sys.executable, "-m", "examples.demo"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # the worker's log in its place among the demo's lines
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or []), daemon=True)
    reader.start()
    try:
        served = wait_for(
            lambda: next((line for line in list(lines) if "sign in with this token" in line),
                         None) or (demo.poll() is not None and "exited"),
            timeout=180, message=lambda: "".join(lines),
        )  # fmt: skip
        assert served != "exited", "".join(lines)
        output = "".join(lines)
        url = re.search(r"admin UI: (http://127\.0\.0\.1:\d+)/", output).group(1)  # type: ignore[union-attr]
        token = served.rsplit(": ", 1)[1].strip()
        check_the_ui(url, token)
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            demo.wait(60)
        finally:
            if demo.poll() is None:
                demo.kill()
        reader.join(10)
    output = "".join(lines)
    assert demo.returncode == 0, output
    assert "Ctrl-C: stopping" in output
    assert "strict priority order: lowest number first" in output
    assert "add(2, 3) = 5" in output
    assert "succeeded" in output, "the demo prints the task's history from the result backend"
    assert "dead letter: examples.proj.tasks.charge reason=failed builtins.RuntimeError" in output
    assert "charge('INV-42') after the replay: charged INV-42" in output
    assert " online " in output, "the demo lists the worker from the registry"
    # the failure's traceback is announced as expected before the worker logs it
    warned = output.index("expected: the worker logs this failure with its traceback")
    assert warned < output.index("RuntimeError: payment API rejected invoice INV-42")
    # the replayed task's whole history, in order
    history = output[output.index("its whole history") : output.index("workers, as the")]
    events = [line.split()[1] for line in history.splitlines()[1:] if line.startswith("    ")]
    assert events == ["received", "started", "failed", "dead_lettered", "replayed", "received",
                      "started", "succeeded"], history  # fmt: skip
    # every command it suggests works after it has exited
    suggested = output[output.index("try it yourself") :].splitlines()[1:]
    commands = [line.strip() for line in suggested if line.startswith("    ")]
    assert len(commands) >= 2
    for command in commands:
        ran = subprocess.run(command, shell=True, cwd=REPO_ROOT, env=env, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert ran.returncode == 0, (command, ran.stdout, ran.stderr)
        assert ran.stdout.strip() and "no result matches" not in ran.stdout, command


def check_the_ui(url: str, token: str) -> None:
    """The served UI holds what the demo promises: recent tasks, a replayed and a failed one,
    dead letters, a live worker and a paused queue."""
    browser = requests.Session()
    login = browser.get(f"{url}/login", timeout=10)
    signed = browser.post(f"{url}/login", data={"token": token, "csrf_token": csrf_of(login.text)},
                          headers={"Referer": f"{url}/login"}, timeout=10)  # fmt: skip
    assert signed.status_code == 200 and "demo-admin" in signed.text, signed.text[:2000]

    def page(path: str) -> str:
        answer = browser.get(url + path, timeout=10)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:2000])
        return answer.text

    queues = page("/queues")
    assert re.search(r"-emails <span class=\"badge paused\"", queues), queues
    dead = page("/dlq")
    assert "examples.proj.tasks.charge" in dead and "examples.proj.tasks.refund" in dead
    assert "RuntimeError" in dead
    assert "worker-online" in page("/workers")
    charges = page("/tasks?name=examples.proj.tasks.charge&state=SUCCESS")
    replayed = re.search(r'href="/tasks/([0-9a-f-]{36})"', charges)
    assert replayed, charges
    history = page(f"/tasks/{replayed.group(1)}")
    assert "event-replayed" in history and "event-succeeded" in history
    assert "examples.proj.tasks.report" in page("/tasks")
