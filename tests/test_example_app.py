"""The example project (a stock Celery app that only changes configuration) runs its demo, then
serves the admin UI over what it ran until Ctrl-C, on the port asked for. On a Redis it does not
own (``REDIS_URL``) it works under a key prefix of its own and removes every key it made there
at the end; under a prefix it was given it leaves its keys, and says so."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import redis
import requests

from taskqueue_backend.embedded import EmbeddedRedis, free_port
from tests.support import REPO_ROOT, wait_for
from tests.support.ui import csrf_of


def run_demo(env: dict[str, str], *args: str, served: Callable[[str, str], None]) -> str:
    """Run the demo until it serves the UI, call ``served(url, token)``, press Ctrl-C; its
    whole output (it must have exited with 0)."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "examples.demo", *args],
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
        signed_in = wait_for(
            lambda: next((line for line in list(lines) if "sign in with this token" in line),
                         None) or (demo.poll() is not None and "exited"),
            timeout=180, message=lambda: "".join(lines),
        )  # fmt: skip
        assert signed_in != "exited", "".join(lines)
        output = "".join(lines)
        url = re.search(r"admin UI: (http://127\.0\.0\.1:\d+)/", output).group(1)  # type: ignore[union-attr]
        served(url, signed_in.rsplit(": ", 1)[1].strip())
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
    return output


def run_suggested_commands(output: str, env: dict[str, str]) -> list[str]:
    """Every command the demo suggests at its end works after it has exited."""
    suggested = output[output.index("try it yourself") :].splitlines()[1:]
    commands = [line.strip() for line in suggested if line.startswith("    ")]
    for command in commands:
        ran = subprocess.run(command, shell=True, cwd=REPO_ROOT, env=env, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert ran.returncode == 0, (command, ran.stdout, ran.stderr)
        assert ran.stdout.strip() and "no result matches" not in ran.stdout, command
    return commands


def test_demo_runs_tasks_then_serves_a_populated_ui_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    with EmbeddedRedis() as server:  # a Redis the demo is given, as a shared one would be
        env = {k: v for k, v in os.environ.items() if k != "BROKER_KEYPREFIX"}
        env.update(REDIS_URL=server.url, DATABASE_URL=f"sqlite:///{tmp_path / 'demo.db'}")
        served: list[str] = []
        output = run_demo(
            env,
            "--port",
            str(port),
            served=lambda url, token: (check_the_ui(url, token), served.append(url)),
        )
        client = redis.Redis.from_url(server.url)
        left = sorted(k.decode() for k in client.scan_iter(count=1000))
        client.close()
        # the result store stays: its commands work after the demo has exited (the broker's
        # would not, its keys are gone, so it does not suggest them)
        commands = run_suggested_commands(output, env)
    assert served == [f"http://127.0.0.1:{port}"], "the control plane serves on --port"
    assert left == [], f"the demo left keys in a Redis it was given: {left}"
    prefix = re.search(r"key prefix of its own, '([^']+)'", output)
    assert prefix, output
    assert re.search(rf"removed the (\d+) keys it made under '{re.escape(prefix.group(1))}'",
                     output), output  # fmt: skip
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
    assert len(commands) >= 2 and not [c for c in commands if "--broker-url" in c], commands


def test_demo_under_a_given_key_prefix_says_what_it_left(
    redis_url: str, keyprefix: str, tmp_path: Path
) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "BROKER_KEYPREFIX": keyprefix,
           "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}  # fmt: skip
    output = run_demo(env, served=lambda url, token: None)

    client = redis.Redis.from_url(redis_url)
    kept = [k.decode() for k in client.scan_iter(match=f"{keyprefix}*", count=1000)]
    client.close()
    assert kept, "the keys under the prefix it was given stay"
    said = output[output.index("left its keys") :]
    assert keyprefix in said and "BROKER_KEYPREFIX" in said, output
    assert [c for c in run_suggested_commands(output, env) if "--broker-url" in c], output


def test_demo_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "examples.demo", "--port", str(port)]
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {port} on 127.0.0.1 is in use" in done.stdout and "--port" in done.stdout


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
    # a long name may wrap between its parts (<wbr>)
    assert "examples.proj.tasks.report" in page("/tasks").replace("<wbr>", "")
