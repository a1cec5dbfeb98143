"""A throwaway PostgreSQL server from the installed binaries (initdb + postgres).

Used when nothing answers at the default address, and by tests that restart the server.
PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from taskqueue_backend.embedded import free_port


def find_bindir() -> Path | None:
    """A folder holding initdb, postgres, pg_isready and pg_ctl (Debian keeps them off PATH)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    found = shutil.which("postgres")
    if found:
        candidates.insert(0, str(Path(found).parent))
    for folder in candidates:
        tools = ("initdb", "postgres", "pg_isready", "pg_ctl")
        if all((Path(folder) / tool).exists() for tool in tools):
            return Path(folder)
    return None


class EmbeddedPostgres:
    """One ``postgres`` child process with its own data directory on a free port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bindir = find_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL binaries (initdb) are not installed")
        self.dir = Path(tempfile.mkdtemp(prefix="tq-postgres-"))
        self.data = self.dir / "data"
        self.process: subprocess.Popen[bytes] | None = None
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise RuntimeError("running as root and no 'postgres' user exists") from exc
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True)

    def start(self) -> EmbeddedPostgres:
        assert self.bindir is not None
        if not self.data.exists():
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                      "-A", "trust", "--no-sync")  # fmt: skip
        log = (self.dir / "postgres.log").open("ab")
        self.process = subprocess.Popen(
            [*self._as, str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", str(self.dir), "-c", "fsync=off"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            self._wait_until_ready()
        except BaseException:
            self.kill()  # never leave a half-started server behind
            raise
        return self

    def _wait_until_ready(self) -> None:
        assert self.bindir is not None and self.process is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p",
                                    str(self.port)], capture_output=True)  # fmt: skip
            if ready.returncode == 0:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        path = self.dir / "postgres.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, data is kept."""
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def stop_immediately(self) -> None:
        """``pg_ctl -m immediate stop``: the server quits without a checkpoint, cutting every
        connection (clients see a crash); the next start recovers from the WAL."""
        assert self.bindir is not None and self.process is not None
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                  "stop")  # fmt: skip
        self.process.wait(30)
        self.process = None

    def restart(self) -> EmbeddedPostgres:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
