"""Real ``celery worker`` subprocesses for end-to-end tests.

Each worker runs in its own process group with its output in a log file, so a test can wait for
it to be ready, crash it (signal the whole group) or shut it down the way a deployment would
(SIGTERM to the main process, SIGKILL after a grace period).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from tests.support.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_SECONDS = 20.0


def worker_command(
    app: str,
    queues: Iterable[str],
    concurrency: int,
    pool: str,
    hostname: str,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``celery worker`` command line used for every test worker."""
    return [
        sys.executable, "-m", "celery", "-A", app, "worker",
        "-l", "INFO",
        "-c", str(concurrency),
        "-P", pool,
        "-Q", ",".join(queues),
        "-n", hostname,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        *extra_args,
    ]  # fmt: skip


class WorkerProcess:
    """One ``celery worker`` subprocess and its log file."""

    def __init__(
        self, command: list[str], env: Mapping[str, str], log_path: Path, hostname: str
    ) -> None:
        self.command = command
        self.env = dict(env)
        self.log_path = log_path
        self.hostname = hostname
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, see kill()
            )
        return self

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError(f"worker {self.hostname} was never started")
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_ready(self, timeout: float = 30.0) -> WorkerProcess:
        """Wait until the worker logs "ready."; fail early, with its log, if it exits first."""

        def ready_or_exited() -> bool:
            return "ready." in self.log_text() or not self.running

        wait_for(
            ready_or_exited,
            timeout=timeout,
            message=lambda: f"worker {self.hostname} not ready; log tail:\n{self.log_tail()}",
        )
        if not self.running:
            raise AssertionError(
                f"worker {self.hostname} exited with code {self.process.returncode} before it "
                f"was ready; log tail:\n{self.log_tail()}"
            )
        return self

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to the worker's whole process group (main process and pool children)."""
        if self.running:
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = STOP_GRACE_SECONDS) -> int:
        """Warm shutdown: SIGTERM to the main process, SIGKILL to the group after ``timeout``."""
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                process.wait()
        self._kill_group()  # pool children that outlived their parent
        return process.returncode

    def _kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class StartWorker(Protocol):
    """Signature of the ``start_worker`` fixture (for type hints in tests)."""

    def __call__(
        self,
        app: str = "tests.app",
        queues: Sequence[str] = ("celery",),
        concurrency: int = 2,
        pool: str = "prefork",
        env: Mapping[str, str] | None = None,
        hostname: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> WorkerProcess: ...
