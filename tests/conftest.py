"""Fixtures backed by real services: a Redis (found or embedded), per-test key isolation, workers.

- ``redis_url`` (session): ``REDIS_URL`` or redis://127.0.0.1:6379/0; when nothing answers at
  the default address an embedded redis-server is started for the session.
- ``keyprefix``: a random prefix per test; its keys are deleted afterwards (and only those).
- ``redis_client``: a plain ``redis.Redis`` on ``redis_url``.
- ``start_worker``: starts real ``celery worker`` subprocesses, stopped at teardown; a failing
  test's report carries each worker's log tail.
- ``serve_control_plane`` / ``control_plane_server``: the production server (gunicorn) on the
  test's broker prefix and result store, stopped at teardown; a failing test's report carries
  its log tail.
- ``exported_metrics``: the sample names the control plane's and a worker's exporters serve,
  scraped from real processes once per session (see ``tests.support.exported_metrics``).
- ``browser`` (session), ``browser_page``, ``open_browser_page``: Debian's headless Chromium
  driven by Playwright (see ``tests.support.browser``); skipped, saying how to install it,
  without it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
import warnings
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

from taskqueue_backend.embedded import EmbeddedRedis
from tests.support import (
    DEFAULT_REDIS_URL,
    REPO_ROOT,
    BrowserPage,
    OpenBrowserPage,
    StartWorker,
    WorkerProcess,
    client_for,
    delete_keys_containing,
    ping_error,
    worker_command,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser

    from taskqueue_backend.embedded_cluster import RedisClusterSet
    from tests.support.control_plane import ServeControlPlane, ServedControlPlane
    from tests.support.exported_metrics import ExportedMetrics

WORKERS_KEY = pytest.StashKey[list[WorkerProcess]]()
SERVERS_KEY = pytest.StashKey[list["ServedControlPlane"]]()
EXPORTED_METRICS_KEY = pytest.StashKey["ExportedMetrics"]()


def _announce(config: pytest.Config, text: str) -> None:
    """Show ``text`` on the terminal even while output capturing is active."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        warnings.warn(text, stacklevel=2)
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(text, yellow=True)


@pytest.fixture(scope="session")
def redis_url(pytestconfig: pytest.Config) -> Iterator[str]:
    """URL of the Redis for this session: REDIS_URL, the default address, or an embedded one."""
    configured = os.environ.get("REDIS_URL")
    url = configured or DEFAULT_REDIS_URL
    error = ping_error(url)
    if error is None:
        yield url
        return
    if configured:
        # An explicitly chosen server being down is an error, not a reason to test elsewhere.
        pytest.exit(
            f"REDIS_URL={configured} does not answer PING ({error}). Start that server, "
            f"or unset REDIS_URL to use {DEFAULT_REDIS_URL} or an embedded redis-server.",
            returncode=1,
        )
    try:
        server = EmbeddedRedis().start()
    except RuntimeError as exc:
        pytest.exit(
            f"No Redis answered at {url} ({error}) and an embedded redis-server could not be "
            f"started: {exc}\nSet REDIS_URL=redis://host:port/db to run the tests against a "
            "running Redis.",
            returncode=1,
        )
    _announce(
        pytestconfig,
        f"No Redis was reachable at {url} ({error}); started an embedded redis-server on port "
        f"{server.port} for this session. Set REDIS_URL=redis://host:port/db to point the tests "
        "at another server.",
    )
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterSet]:
    """A Redis Cluster of this session's own: 3 masters, 3 replicas, on loopback."""
    from taskqueue_backend.embedded_cluster import RedisClusterSet

    found = RedisClusterSet(tmp_path_factory.mktemp("redis-cluster")).start()
    yield found
    found.stop()


@pytest.fixture
def keyprefix(redis_url: str) -> Iterator[str]:
    """A random key prefix for this test; keys containing it are deleted afterwards."""
    prefix = f"tqtest-{uuid.uuid4().hex[:10]}:"
    yield prefix
    # a client channel the test left open would re-register itself after the cleanup
    from taskqueue_backend.transport.heartbeat import Heartbeat

    for thread in threading.enumerate():
        if isinstance(thread, Heartbeat) and thread.prefix == prefix:
            thread.stop()
    client = client_for(redis_url)
    try:
        delete_keys_containing(client, prefix)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client (bytes replies) on ``redis_url`` (a cluster client on a cluster)."""
    client = client_for(redis_url)
    yield client
    client.close()


@pytest.fixture
def start_worker(
    request: pytest.FixtureRequest, redis_url: str, keyprefix: str, tmp_path: Path
) -> Iterator[StartWorker]:
    """Start real ``celery worker`` subprocesses (see ``StartWorker``); all stop at teardown."""
    workers = request.node.stash.setdefault(WORKERS_KEY, [])

    def start(
        app: str = "tests.app",
        queues: Sequence[str] = ("celery",),
        concurrency: int = 2,
        pool: str = "prefork",
        env: Mapping[str, str] | None = None,
        hostname: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> WorkerProcess:
        number = len(workers) + 1
        name = hostname or f"w{number}-{uuid.uuid4().hex[:6]}@%h"
        pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        worker_env = {
            **os.environ,
            "PYTHONPATH": pythonpath,
            "TQ_TEST_REDIS_URL": redis_url,
            "TQ_TEST_KEYPREFIX": keyprefix,
            **(env or {}),
        }
        command = worker_command(app, queues, concurrency, pool, name, extra_args)
        worker = WorkerProcess(command, worker_env, tmp_path / f"worker-{number}.log", name)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for worker in item.stash.get(WORKERS_KEY, []):
            report.sections.append(
                (f"worker {worker.hostname} log tail ({worker.log_path})", worker.log_tail())
            )
        for server in item.stash.get(SERVERS_KEY, []):
            report.sections.append(
                (f"control plane {server.url} log tail ({server.log_path})", server.log_tail())
            )
    return report


# -- databases for the result backend ------------------------------------------------------

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _database_error(url: str) -> str | None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect is reported the same way
        return str(exc).splitlines()[0]
    return None


@pytest.fixture(scope="session")
def database_url(pytestconfig: pytest.Config) -> Iterator[str | None]:
    """PostgreSQL for this session: DATABASE_URL, the default address, or one started from
    the installed binaries; None (PostgreSQL tests skip, saying why) when none can be had."""
    configured = os.environ.get("DATABASE_URL")
    url = configured or DEFAULT_DATABASE_URL
    error = _database_error(url)
    if error is None:
        yield url
        return
    if configured:
        pytest.exit(f"DATABASE_URL={configured} does not answer ({error}).", returncode=1)
    from tests.support.postgres import EmbeddedPostgres

    try:
        server = EmbeddedPostgres().start()
    except Exception as exc:
        _announce(
            pytestconfig,
            f"No PostgreSQL answered at {url} ({error}) and none could be started from its "
            f"binaries ({exc}); PostgreSQL tests are skipped. Set "
            "DATABASE_URL=postgresql+psycopg://user@host:port/db to run them.",
        )
        yield None
        return
    _announce(pytestconfig, f"No PostgreSQL answered at {url}; started one on port "
              f"{server.port} for this session. Set DATABASE_URL to use another.")  # fmt: skip
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def pg_schema(database_url: str | None) -> Iterator[str]:
    """A PostgreSQL schema of this test's own, dropped (CASCADE) afterwards."""
    if database_url is None:
        pytest.skip("no PostgreSQL available (set DATABASE_URL)")
    import sqlalchemy

    schema = f"tqtest_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    yield schema
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def backend_env(
    request: pytest.FixtureRequest, redis_url: str, keyprefix: str, tmp_path: Path
) -> dict[str, str]:
    """Environment for ``tests.backend_app`` (workers and client) on PostgreSQL or SQLite."""
    env = {"TQ_TEST_REDIS_URL": redis_url, "TQ_TEST_KEYPREFIX": keyprefix,
           "TQ_TEST_TABLE_PREFIX": "tq_"}  # fmt: skip
    if request.param == "postgresql":
        database_url = request.getfixturevalue("database_url")
        schema = request.getfixturevalue("pg_schema")
        env.update(TQ_TEST_RESULT_BACKEND=f"tq+{database_url}", TQ_TEST_DB_SCHEMA=schema)
    else:
        env.update(TQ_TEST_RESULT_BACKEND=f"tq+sqlite:///{tmp_path / 'results.db'}")
    return env


# -- the control plane ------------------------------------------------------------------------


@pytest.fixture
def api_env(
    request: pytest.FixtureRequest, redis_url: str, keyprefix: str, tmp_path: Path
) -> dict[str, str]:
    """Environment for ``tests.backend_app`` workers sharing the control plane's result store:
    PostgreSQL (a schema of this test's own), or SQLite when no PostgreSQL can be had."""
    env = {"TQ_TEST_REDIS_URL": redis_url, "TQ_TEST_KEYPREFIX": keyprefix,
           "TQ_TEST_TABLE_PREFIX": "tq_"}  # fmt: skip
    database_url = request.getfixturevalue("database_url")
    if database_url is not None:
        schema = request.getfixturevalue("pg_schema")
        env.update(TQ_TEST_RESULT_BACKEND=f"tq+{database_url}", TQ_TEST_DB_SCHEMA=schema)
    else:
        env.update(TQ_TEST_RESULT_BACKEND=f"tq+sqlite:///{tmp_path / 'results.db'}")
    return env


@pytest.fixture
def api(api_env: dict[str, str]) -> Iterator[Any]:
    """The control plane app on this test's broker prefix and result store (see
    ``tests.support.control_plane``)."""
    from tests.support.control_plane import make_api

    yield from make_api(
        api_env["TQ_TEST_REDIS_URL"],
        api_env["TQ_TEST_KEYPREFIX"],
        api_env["TQ_TEST_RESULT_BACKEND"],
        api_env.get("TQ_TEST_DB_SCHEMA"),
    )


@pytest.fixture
def serve_control_plane(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ServeControlPlane]:
    """Start ``taskqueue control-plane`` (gunicorn) on an ``api_env``'s broker prefix and
    result store, with further ``TQ_*`` settings; each server is stopped at teardown."""
    from tests.support.control_plane import ServedControlPlane, served_settings

    servers = request.node.stash.setdefault(SERVERS_KEY, [])

    def serve(
        api_env: Mapping[str, str], workers: int = 1, threads: int = 8, **settings: str
    ) -> ServedControlPlane:
        log = tmp_path / f"control-plane-{len(servers) + 1}.log"
        server = ServedControlPlane(served_settings(api_env, **settings), log, workers, threads)
        servers.append(server)
        return server.start()

    yield serve
    for server in servers:
        server.stop()


@pytest.fixture
def control_plane_server(
    api_env: dict[str, str], serve_control_plane: ServeControlPlane
) -> ServedControlPlane:
    """The production server (one process, eight threads) on this test's broker prefix and
    result store; ``.url`` and ``.tokens[role]`` for viewer, operator and admin."""
    return serve_control_plane(api_env)


@pytest.fixture
def exported_metrics(request: pytest.FixtureRequest) -> ExportedMetrics:
    """The sample names the exporters serve (``.control_plane``, ``.worker``; ``.names`` adds
    ``up``). The first test that asks makes the data and scrapes, with its own ``api``, workers
    and key prefix; later tests of the session reuse the names."""
    found = request.config.stash.get(EXPORTED_METRICS_KEY, None)
    if found is None:
        from tests.support.exported_metrics import scrape_exporters

        found = scrape_exporters(
            request.getfixturevalue("api"),
            request.getfixturevalue("api_env"),
            request.getfixturevalue("start_worker"),
            request.getfixturevalue("tmp_path") / "worker-metrics",
        )
        request.config.stash[EXPORTED_METRICS_KEY] = found
    return found


# -- browser tests ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium for the session; tests needing it skip without it."""
    from tests.support.browser import running_chromium

    with running_chromium() as found:
        yield found


@pytest.fixture
def open_browser_page(
    request: pytest.FixtureRequest, browser: Browser
) -> Iterator[OpenBrowserPage]:
    """Open a ``BrowserPage`` (``viewport="desktop"``, 1280x900, or ``"phone"``, 390x844)
    in a fresh context; all are closed at teardown."""
    pages: list[BrowserPage] = []

    def open_page(viewport: str = "desktop", base_url: str | None = None) -> BrowserPage:
        page = BrowserPage(browser, request.node.name, viewport, base_url)
        pages.append(page)
        return page

    yield open_page
    for page in pages:
        page.close()


@pytest.fixture
def browser_page(request: pytest.FixtureRequest, open_browser_page: OpenBrowserPage) -> BrowserPage:
    """A desktop ``BrowserPage``; ``@pytest.mark.parametrize("browser_page", ["phone"],
    indirect=True)`` asks for the phone's width."""
    return open_browser_page(getattr(request, "param", "desktop"))
