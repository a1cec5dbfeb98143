"""The demo's last part: the control plane (admin UI, REST API) served by its production server
over the demo's broker and result store, with something to look at, until Ctrl-C.

Left for the UI besides what the demo ran: a task that keeps failing (a dead letter nobody has
replayed), a task of a name no worker knows (a dead letter of another kind), and a paused queue
holding waiting tasks. A fresh admin token is made for the run; only its SHA-256 is given to the
server, as in production.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from taskqueue_backend.operations import Operations

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFERRED_PORT = 8080


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def port_is_free(port: int) -> bool:
    """Whether nothing holds ``port`` on 127.0.0.1 now."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int = PREFERRED_PORT) -> int:
    """``preferred`` when nothing listens there, else any free port."""
    if port_is_free(preferred):
        return preferred
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def populate(app: Any, queue: str, prefix: str = "") -> str:
    """A dead letter that stays, an unknown task's dead letter, and a paused queue with waiting
    tasks; returns the paused queue's name."""
    from examples.proj.tasks import add, charge

    paused = f"{queue}-emails"
    with Operations.from_app(app, actor="demo") as ops:
        ops.queues.pause(paused, reason="waiting for the mail provider's maintenance window")
        for n in range(3):
            add.apply_async((n, n), queue=paused, priority=n)
        stuck = charge.apply_async(("INV-43", f"{prefix}demo:{queue}:never-fixed"), queue=queue)
        unknown = app.send_task("examples.proj.tasks.refund", ("INV-7",), queue=queue)
        deadline = time.monotonic() + 30
        while not (ops.dead_letters.find(stuck.id) and ops.dead_letters.find(unknown.id)):
            if time.monotonic() > deadline:
                raise RuntimeError("the demo's failing tasks did not reach the dead letters")
            time.sleep(0.1)
    say(f"left for the UI: queue {paused} paused with 3 waiting tasks, charge('INV-43') "
        "failing for good and an unknown task, both in the dead letters")  # fmt: skip
    return paused


def serve_until_interrupted(app: Any, port: int | None = None) -> None:
    """Serve the control plane for the demo's app on ``port`` (default: ``free_port()``) until
    Ctrl-C (or the server stops)."""
    from control_plane.auth import new_token

    token, entry = new_token("demo-admin", "admin")
    port = port or free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "TQ_CELERY_APP": "examples.proj.celery:app",
        "TQ_API_TOKENS": entry,
        "TQ_SECRET_KEY": secrets.token_hex(32),
    }
    command = [str(Path(sys.executable).with_name("taskqueue")), "control-plane",
               "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "8",
               "--no-access-log"]  # fmt: skip
    say("starting the control plane: taskqueue control-plane --bind "
        f"127.0.0.1:{port} --workers 1 --threads 8")  # fmt: skip
    server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(server, base)
        say(f"admin UI: {base}/  (API docs: {base}/api/v1/docs)")
        say(f"sign in with this token (role admin, made for this run): {token}")
        say("press Ctrl-C to stop the control plane, the worker and the demo")
        try:
            while server.poll() is None:
                time.sleep(0.5)
            raise RuntimeError(f"the control plane exited with code {server.returncode}")
        except KeyboardInterrupt:
            print(flush=True)
            say("Ctrl-C: stopping")
    finally:
        _stop(server)


def _wait_ready(server: subprocess.Popen[bytes], base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the control plane exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the control plane did not become ready at {base} in {timeout} s")
        time.sleep(0.2)


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
