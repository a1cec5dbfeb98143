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
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "strict priority order: lowest number first" in output
    assert "add(2, 3) = 5" in output
    assert "succeeded" in output, "the demo prints the task's history from the result backend"
    assert "dead letter: examples.proj.tasks.charge reason=failed builtins.RuntimeError" in output
    assert "charge('INV-42') after the replay: charged INV-42" in output
    assert " online " in output, "the demo lists the worker from the registry"
