"""Celery's own integration tests, on stock Celery and on this broker and result backend.

The tests come from ``t/integration`` of the sdist of the installed Celery version, which the
test command's install step (``python3 dev.py test``) fetches from the package registry and
unpacks into ``.venv`` (nothing of it is in this repository). They run unchanged, as Celery runs
them: ``python -m pytest`` in a directory of their own holding Celery's pytest settings, the
``integration-tests-config.json`` Celery's ``conftest.py`` reads its overrides from, and ``t``;
``TEST_BROKER``/``TEST_BACKEND`` choose the services and ``WORKER_LOGLEVEL=INFO`` is set as
Celery's ``tox.ini`` sets it (at the default, ERROR, the session worker logs no task's
"received" line, and ``test_trace_log_arguments`` fails on stock too). The session worker runs
inside that pytest process (``celery_session_worker``, prefork pool).

The same tests run twice, at the same time: on stock (kombu's Redis transport and Celery's Redis
result backend, on a redis-server of this test's own) and on ours (this transport on the test's
key prefix, ``tq+postgresql+psycopg`` in the test's own schema). Every test that passes on stock
must pass on ours, and so must the chord error test, which Celery expects to fail (hang) on its
Redis result backend and which fails on its database backend too: here a failed task fails the
group its chain would have started (``taskqueue_backend.backend.canvas``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import celery
import pytest

from taskqueue_backend.embedded import EmbeddedRedis
from tests.app import TRANSPORT
from tests.support import REPO_ROOT

CELERY_SOURCE = REPO_ROOT / ".venv" / "celery-tests" / f"celery-{celery.__version__}"
if not (CELERY_SOURCE / "t" / "integration" / "conftest.py").exists():
    pytest.skip(
        f"Celery's integration tests for celery {celery.__version__} are not in "
        f"{CELERY_SOURCE}: run the suite with `python3 dev.py test`, whose install step fetches "
        "Celery's sdist",
        allow_module_level=True,
    )

#: in this order: the trace-log tests ask for no worker and use the session worker that
#: ``test_scheduled`` (through Celery's ``manager`` fixture) starts
CELERY_TESTS = (
    "t/integration/test_inspect.py::test_Inspect::test_scheduled",
    "t/integration/test_canvas.py::test_chord::test_error_propagates_from_chord",
    "t/integration/test_tasks.py::test_trace_log_arguments",
)
#: tests that must pass on ours whatever stock does
MUST_PASS_ON_OURS = ("t/integration/test_canvas.py::test_chord::test_error_propagates_from_chord",)
#: Celery's pytest settings (its pyproject.toml): test classes are named ``test_*``, an xfail
#: that passes is a failure, and its marks are declared
PYTEST_INI = """\
[pytest]
python_classes = test_*
xfail_strict = true
addopts = --strict-markers
markers =
    flaky
    timeout
    amqp
timeout = {timeout}
"""
#: for Celery's tests without a ``timeout`` mark of their own (its ``flaky`` ones carry 300 s):
#: Celery's canvas tests wait up to 60 s for a result, and on its Redis result backend Celery
#: expects the chord error test to fail (xfail, "Issue #6437") by waiting all of that
UNMARKED_TEST_TIMEOUT = 5
RUN_DEADLINE_SECONDS = 120.0
OUTPUT_TAIL_LINES = 40
REPORT_LINES = 60
#: ``pytest -v`` reports each test as ``<node id> <OUTCOME>``; a teardown error comes after
OUTCOME_LINE = re.compile(r"^(t/\S+::\S+) (PASSED|FAILED|ERROR|XFAIL|XPASS|SKIPPED)\b", re.M)


@dataclass
class CeleryRun:
    """One ``python -m pytest`` of Celery's tests in a directory of its own."""

    name: str
    folder: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    seconds: float = 0.0

    @property
    def log_path(self) -> Path:
        return self.folder / "pytest.log"

    def start(self, config: Mapping[str, Any]) -> CeleryRun:
        self.folder.mkdir(parents=True)
        (self.folder / "t").symlink_to(CELERY_SOURCE / "t", target_is_directory=True)
        (self.folder / "pytest.ini").write_text(PYTEST_INI.format(timeout=UNMARKED_TEST_TIMEOUT))
        (self.folder / "integration-tests-config.json").write_text(json.dumps(config))
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-ra",
                   "--tb=short", *CELERY_TESTS]  # fmt: skip
        self.started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.folder,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: the pool's children too
            )
        return self

    def wait(self) -> CeleryRun:
        """Wait for pytest to finish; past the deadline its whole process group is killed."""
        assert self.process is not None
        remaining = RUN_DEADLINE_SECONDS - (time.monotonic() - self.started)
        try:
            self.process.wait(timeout=max(remaining, 0.0))
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.seconds = time.monotonic() - self.started
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self) -> str:
        return "\n".join(self.output().splitlines()[-OUTPUT_TAIL_LINES:])

    def outcomes(self) -> dict[str, str]:
        """Each test's outcome, by node id (a teardown error replaces the call's outcome)."""
        return dict(OUTCOME_LINE.findall(self.output()))

    def report_of(self, node: str) -> str:
        """pytest's failure (or error) sections of one test, or a note that there are none."""
        title = re.escape(".".join(node.split("::")[1:]))  # pytest titles "Class.test"
        header = rf"^_+ (?:ERROR at \w+ of )?{title} _+$"
        sections = re.findall(
            rf"{header}\n(.*?)(?=^_{{3,}} |^={{3,}} )", self.output(), re.M | re.S
        )
        if not sections:
            return f"(pytest reported nothing more on {node})"
        lines = "".join(sections).splitlines()
        return "\n".join(lines[:REPORT_LINES] + ["..."] * (len(lines) > REPORT_LINES))


@pytest.fixture
def stock_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server for the stock run alone: DB 0 its broker, DB 1 its result backend."""
    server = EmbeddedRedis(dir=str(tmp_path / "stock-redis")).start()
    yield server
    server.stop()


@pytest.fixture
def runs() -> Iterator[list[CeleryRun]]:
    """The runs a test starts; any still going at teardown is killed."""
    started: list[CeleryRun] = []
    yield started
    for run in started:
        run.stop()


def _worker_env(broker: str, backend: str, redis_host: str, redis_port: int) -> dict[str, str]:
    # REDIS_HOST/REDIS_PORT: where Celery's tasks module would open its own Redis client
    return {"TEST_BROKER": broker, "TEST_BACKEND": backend, "WORKER_LOGLEVEL": "INFO",
            "REDIS_HOST": redis_host, "REDIS_PORT": str(redis_port)}  # fmt: skip


def test_celery_tests_that_pass_on_stock_pass_on_this_broker_and_backend(
    tmp_path: Path,
    stock_redis: EmbeddedRedis,
    redis_url: str,
    keyprefix: str,
    database_url: str | None,
    pg_schema: str,
    runs: list[CeleryRun],  # last, so that its teardown stops the runs before the cleanups
) -> None:
    ours_redis = urlsplit(redis_url)
    stock_url = f"redis://127.0.0.1:{stock_redis.port}"
    stock = CeleryRun(
        "stock",
        tmp_path / "stock",
        _worker_env(f"{stock_url}/0", f"{stock_url}/1", "127.0.0.1", stock_redis.port),
    )
    ours = CeleryRun(
        "ours",
        tmp_path / "ours",
        _worker_env(
            redis_url,
            f"tq+{database_url}",
            ours_redis.hostname or "127.0.0.1",
            ours_redis.port or 6379,
        ),
    )
    runs.extend([stock, ours])
    stock.start({})
    ours.start({
        "broker_transport": TRANSPORT,
        "broker_transport_options": {"global_keyprefix": keyprefix},
        "taskqueue_db_schema": pg_schema,
        "taskqueue_table_prefix": "tq_",
    })  # fmt: skip
    stock.wait()
    ours.wait()

    stock_outcomes, ours_outcomes = stock.outcomes(), ours.outcomes()
    for run, found in ((stock, stock_outcomes), (ours, ours_outcomes)):
        missing = [t for t in CELERY_TESTS if not any(n.startswith(t) for n in found)]
        assert not missing, (
            f"the {run.name} run reported no outcome for {missing} (exit code "
            f"{run.process.returncode if run.process else None}, {run.seconds:.1f} s); "
            f"its output ends:\n{run.tail()}"
        )
    table = "\n".join(
        f"  {node}: stock {outcome}, ours {ours_outcomes.get(node, 'not run')}"
        for node, outcome in stock_outcomes.items()
    )
    regressed = [
        node
        for node, outcome in stock_outcomes.items()
        if (outcome == "PASSED" or node in MUST_PASS_ON_OURS)
        and ours_outcomes.get(node) != "PASSED"
    ]
    reports = "\n".join(f"-- {node} on ours:\n{ours.report_of(node)}" for node in regressed)
    assert not regressed, (
        f"Celery's tests that pass on stock fail on this broker and backend: {regressed}\n"
        f"{table}\n(stock {stock.seconds:.1f} s, ours {ours.seconds:.1f} s)\n{reports}\n"
        f"-- the run on ours ends:\n{ours.tail()}"
    )


def test_the_tests_come_from_the_installed_celery() -> None:
    conftest = (CELERY_SOURCE / "t" / "integration" / "conftest.py").resolve()
    assert f"celery-{celery.__version__}" in str(conftest)
    assert REPO_ROOT / ".venv" in conftest.parents
