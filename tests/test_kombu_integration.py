"""kombu's own integration tests, run against this transport.

The classes come from ``t/integration`` of the sdist of the installed kombu version, which the
test command's install step (``python3 dev.py test``) fetches from the package registry like
any test dependency and unpacks into ``.venv`` (nothing of it is in this repository). They run
unchanged; only the ``connection`` fixture differs from kombu's: it selects this transport, on
a redis-server of this module's own (kombu's tests use fixed queue names), plain and with a
``global_keyprefix``, as kombu's Redis tests do.

``flaky`` marks on kombu's classes are inert here (no rerun plugin is installed): a failure is
a failure.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import kombu
import pytest

from taskqueue_backend.embedded import EmbeddedRedis, free_port
from tests.app import TRANSPORT
from tests.support import REPO_ROOT


def _kombu_tests() -> tuple[ModuleType, ModuleType]:
    """kombu's ``t.integration.common`` and ``t.integration.test_redis`` modules."""
    folder = REPO_ROOT / ".venv" / "kombu-tests" / f"kombu-{kombu.__version__}"
    if not (folder / "t" / "integration" / "common.py").exists():
        pytest.fail(
            f"kombu's integration tests for kombu {kombu.__version__} are not in {folder}: run "
            "the suite with `python3 dev.py test`, whose install step fetches kombu's sdist",
            pytrace=False,
        )
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return (
        importlib.import_module("t.integration.common"),
        importlib.import_module("t.integration.test_redis"),
    )


common, kombu_redis = _kombu_tests()


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(dir=str(tmp_path_factory.mktemp("kombu-redis"))).start()
    yield server
    server.stop()


@pytest.fixture(
    params=[(False, None), (False, {"global_keyprefix": "_prefixed_"}),
            (True, None), (True, {"global_keyprefix": "_prefixed_"})],
    ids=["plain", "prefixed", "cluster", "cluster-prefixed"],
)  # fmt: skip
def connection(request: pytest.FixtureRequest, own_redis: EmbeddedRedis) -> kombu.Connection:
    """This transport on a redis-server of this module's, and on a Redis Cluster (3 masters,
    3 replicas) of the session's, whose nodes are all given as startup nodes."""
    on_cluster, options = request.param
    if on_cluster:
        cluster = request.getfixturevalue("redis_cluster")
        return kombu.Connection(cluster.url, transport=TRANSPORT, transport_options=options)
    return kombu.Connection(own_redis.url, transport=TRANSPORT, transport_options=options)


@pytest.fixture
def invalid_connection() -> kombu.Connection:
    return kombu.Connection(f"redis://127.0.0.1:{free_port()}", transport=TRANSPORT)


class TestBasicFunctionality(kombu_redis.test_RedisBasicFunctionality):
    pass


class TestExchangeTypes(kombu_redis.test_RedisBaseExchangeTypes):
    pass


class TestPriority(kombu_redis.test_RedisPriority):
    """kombu's Redis priority tests: lower numbers first, one message per drain_events()."""


class TestMessage(kombu_redis.test_RedisMessage):
    pass


class TestEventLoop(kombu_redis.test_RedisEventLoop):
    pass


class TestTimeToLive(common.BaseTimeToLive):
    """kombu's Redis transport skips these (no per-message TTL); this broker honours them."""


def test_the_classes_come_from_the_installed_kombu() -> None:
    source = Path(common.__file__).resolve()
    assert f"kombu-{kombu.__version__}" in str(source)
    assert REPO_ROOT / ".venv" in source.parents
