"""The example project (a stock Celery app that only changes configuration) runs its demo."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import REPO_ROOT


def test_demo_runs_tasks_in_priority_order_and_delays_the_countdown(
    redis_url: str, keyprefix: str
) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "BROKER_KEYPREFIX": keyprefix}
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
