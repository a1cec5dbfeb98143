"""The example project (a stock Celery app that only changes configuration) runs its demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT


def test_demo_runs_tasks_in_priority_order_and_delays_the_countdown(
    redis_url: str, keyprefix: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "BROKER_KEYPREFIX": keyprefix,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # the worker's log in its place among the demo's lines
        text=True,
        timeout=180,
    )
    output = done.stdout
    assert done.returncode == 0, output
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
        assert ran.stdout.strip(), command
