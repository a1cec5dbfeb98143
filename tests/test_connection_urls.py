"""Selecting the broker by configuration: the URL forms kombu's Redis transport accepts.

Each test starts its own redis-server (TLS, a password and an ACL user, Sentinel, or two
servers for failover) and round-trips a message through the transport over it.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection, Exchange, Queue

from taskqueue_backend.embedded import EmbeddedRedis, find_redis_server, free_port
from taskqueue_backend.transport.keys import QueueKeys
from tests.support import wait_for

TRANSPORT = "taskqueue_backend.transport:Transport"


def roundtrip(connection: Connection, queue_name: str = "urls") -> dict[str, object]:
    """Publish one message and consume it again over ``connection``."""
    queue = Queue(queue_name, Exchange(queue_name), queue_name)
    marker = uuid.uuid4().hex
    with connection:
        producer = connection.Producer()
        producer.publish({"marker": marker}, exchange=queue.exchange, routing_key=queue_name,
                         declare=[queue], retry=True)  # fmt: skip
        simple = connection.SimpleQueue(queue)
        message = simple.get(timeout=5)
        message.ack()
        simple.close()
    assert message.payload["marker"] == marker
    return message.payload


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as started:
        yield started


def test_db_number_and_global_keyprefix_select_where_keys_live(server: EmbeddedRedis) -> None:
    url = f"redis://127.0.0.1:{server.port}/3"
    roundtrip(Connection(url, transport=TRANSPORT,
                         transport_options={"global_keyprefix": "app1:"}))  # fmt: skip
    db3 = redis.Redis(port=server.port, db=3)
    assert db3.exists("app1:" + QueueKeys("", "urls").state)
    assert redis.Redis(port=server.port, db=0).dbsize() == 0
    assert all(key.startswith(b"app1:") for key in db3.keys("*"))


def test_password_and_acl_user_in_the_url(server: EmbeddedRedis) -> None:
    admin = redis.Redis(port=server.port)
    admin.acl_setuser("tqapp", enabled=True, passwords=["+s3cret"], keys=["*"], channels=["*"],
                      commands=["+@all"])  # fmt: skip
    admin.config_set("requirepass", "rootpw")
    try:
        roundtrip(Connection(f"redis://tqapp:s3cret@127.0.0.1:{server.port}/0",
                             transport=TRANSPORT))  # fmt: skip
        roundtrip(Connection(f"redis://:rootpw@127.0.0.1:{server.port}/0", transport=TRANSPORT))
        with pytest.raises(Exception, match="(?i)auth|password|WRONGPASS|invalid"):
            with Connection(f"redis://tqapp:wrong@127.0.0.1:{server.port}/0",
                            transport=TRANSPORT) as bad:  # fmt: skip
                bad.default_channel  # noqa: B018 - connecting is the point
    finally:
        redis.Redis(port=server.port, password="rootpw").config_set("requirepass", "")


def make_certificates(folder: Path) -> dict[str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    paths = {name: str(folder / name) for name in ("ca.key", "ca.crt", "srv.key", "srv.csr",
                                                   "srv.crt", "ext.cnf")}  # fmt: skip
    Path(paths["ext.cnf"]).write_text("subjectAltName=IP:127.0.0.1\n")
    steps = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=tq-test-ca", "-keyout", paths["ca.key"], "-out", paths["ca.crt"]],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", paths["srv.key"], "-out", paths["srv.csr"]],
        ["openssl", "x509", "-req", "-in", paths["srv.csr"], "-CA", paths["ca.crt"], "-CAkey",
         paths["ca.key"], "-CAcreateserial", "-days", "1", "-extfile", paths["ext.cnf"],
         "-out", paths["srv.crt"]],
    ]  # fmt: skip
    for step in steps:
        subprocess.run(step, check=True, capture_output=True)
    return paths


def test_rediss_url_with_tls_options(tmp_path: Path) -> None:
    try:
        certs = make_certificates(tmp_path)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl could not make test certificates: {exc}")
    tls_port = free_port()
    tls_args = ["--tls-port", str(tls_port), "--tls-cert-file", certs["srv.crt"],
                "--tls-key-file", certs["srv.key"], "--tls-ca-cert-file", certs["ca.crt"],
                "--tls-auth-clients", "no"]  # fmt: skip
    with EmbeddedRedis(extra_args=tls_args):
        url = (
            f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=required&ssl_ca_certs={certs['ca.crt']}"
        )
        roundtrip(Connection(url, transport=TRANSPORT))
        # the same through Celery-style ssl options instead of the query string
        options = {"ssl_cert_reqs": "required", "ssl_ca_certs": certs["ca.crt"]}
        roundtrip(Connection(f"rediss://127.0.0.1:{tls_port}/0", transport=TRANSPORT,
                             ssl=options))  # fmt: skip


def start_sentinel(master_port: int, folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = folder / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
        f"sentinel monitor tqmaster 127.0.0.1 {master_port} 1\n"
        "sentinel down-after-milliseconds tqmaster 5000\n"
    )
    process = subprocess.Popen([find_redis_server(), str(config), "--sentinel"],
                               stdout=(folder / "sentinel.log").open("wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def answers() -> bool:
        try:
            found = redis.Redis(port=port).sentinel_get_master_addr_by_name("tqmaster")
            return bool(found)
        except redis.RedisError:
            return False

    wait_for(answers, timeout=15, message="sentinel did not come up")
    return process, port


def test_sentinel_url_with_master_name(server: EmbeddedRedis, tmp_path: Path) -> None:
    process, sentinel_port = start_sentinel(server.port, tmp_path)
    try:
        url = f"sentinel://127.0.0.1:{sentinel_port};sentinel://127.0.0.1:{free_port()}"
        connection = Connection(url, transport=TRANSPORT,
                                transport_options={"master_name": "tqmaster"})  # fmt: skip
        roundtrip(connection, "via-sentinel")
        assert redis.Redis(port=server.port).exists(QueueKeys("", "via-sentinel").state)
        assert connection.transport.Channel.__name__ == "SentinelChannel"
    finally:
        process.terminate()
        process.wait(10)


def test_tq_failover_urls_keep_this_transport(server: EmbeddedRedis) -> None:
    import taskqueue_backend.transport  # noqa: F401 - registers the tq:// scheme

    dead = f"tq://127.0.0.1:{free_port()}/0"
    live = f"tq://127.0.0.1:{server.port}/0"
    connection = Connection(f"{dead};{live}", transport_options={"max_retries": 3})
    connection.ensure_connection(max_retries=3, interval_start=0, interval_step=0.1)
    assert connection.port == server.port
    assert type(connection.transport).__module__.startswith("taskqueue_backend.transport")
    roundtrip(connection, "failover")
    assert redis.Redis(port=server.port).exists(QueueKeys("", "failover").state)


@pytest.mark.parametrize("scheme", ["redis", "sentinel"])
def test_switching_to_an_alternate_url_keeps_this_transport(scheme: str) -> None:
    """kombu takes an alternate's transport from its scheme when it fails over: a list of
    redis:// or sentinel:// URLs would land on kombu's own transport after the first error."""
    urls = ";".join(f"{scheme}://127.0.0.1:{free_port()}/0" for _ in range(3))
    options = {"master_name": "m"} if scheme == "sentinel" else {}
    connection = Connection(urls, transport=TRANSPORT, transport_options=options)
    try:
        assert type(connection.transport).__module__.startswith("taskqueue_backend.transport")
        for _ in range(4):  # round the list and back
            connection.maybe_switch_next()
            assert type(connection.transport).__module__.startswith(
                "taskqueue_backend.transport"), connection.transport  # fmt: skip
            assert connection.transport.sentinel == (scheme == "sentinel")
        assert connection.alt == urls.split(";"), "the sentinels are still read from the list"
    finally:
        connection.release()


def test_a_tls_alternate_stays_tls_after_a_switch() -> None:
    urls = ";".join(f"rediss://127.0.0.1:{free_port()}/0" for _ in range(2))
    connection = Connection(urls, transport=TRANSPORT)
    try:
        assert connection.transport  # made as a connection attempt makes it, before a switch
        connection.maybe_switch_next()
        assert type(connection.transport).__module__.startswith("taskqueue_backend.transport")
        assert connection.ssl, "the switched-to rediss:// alternate lost TLS"
    finally:
        connection.release()
