"""The metric names the exporters serve, scraped from real processes, for the checks that every
query of the deployment (the Prometheus alert rules, the Grafana dashboard, the Helm chart's
PrometheusRule and KEDA triggers) reads a series that exists.

``scrape_exporters`` makes real data first, so that every family has samples, then scrapes:

- the control plane's ``/metrics`` (the Flask app of the ``api`` fixture): a worker runs a task
  that succeeds and one that fails and is dead-lettered, and a message waits on a queue no
  worker reads (the oldest-ready-age and ready-by-priority gauges need one). The history
  counters count the rows written after their first scrape, so one scrape comes before the
  tasks and one after;
- a prefork worker's own exporter (``TQ_WORKER_METRICS_PORT``): a task succeeds, one fails, one
  is retried, and one is redelivered — taken and requeued before the worker starts, so the
  worker receives it with delivery count 2.

Names are kept as the samples spell them (``_total``, ``_bucket``, ``_sum``, ``_count``,
``_created``): a query must select a series, and a histogram's bare family name selects none.
``up`` is the one name Prometheus writes itself for every target.
"""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from taskqueue_backend.embedded import free_port
from taskqueue_backend.worker_metrics import DIR_ENV, PORT_ENV
from tests.support.promql import metric_names
from tests.support.waiting import wait_for
from tests.support.workers import StartWorker

#: series Prometheus writes itself for every target
PROMETHEUS_GENERATED = frozenset({"up"})
#: a queue no worker reads: its message stays ready
PARKED_QUEUE = "exported-metrics-parked"
#: the queue of the worker whose exporter is scraped
WORKER_QUEUE = "exported-metrics-worker"


@dataclass(frozen=True)
class ExportedMetrics:
    """The sample names each exporter served."""

    control_plane: frozenset[str]
    worker: frozenset[str]

    @property
    def names(self) -> frozenset[str]:
        """Every name a query of this stack may read."""
        return self.control_plane | self.worker | PROMETHEUS_GENERATED

    def unserved(self, queries: Iterable[tuple[str, str]]) -> list[str]:
        """``"<where>: [names]"`` for each ``(where, expr)`` that reads a name no exporter
        served; ``where`` names the file and the rule or panel."""
        return sorted(f"{where}: {sorted(names)}" for where, expr in queries
                      if (names := unexported_names(expr, self.names)))  # fmt: skip


def unexported_names(expr: str, served: AbstractSet[str]) -> set[str]:
    """The metric names in ``expr`` that are not among the ``served`` sample names."""
    return {name for name in metric_names(expr) if name not in served}


def samples(text: str) -> list[Any]:
    """Every sample of a Prometheus text exposition."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def sample_names(text: str) -> frozenset[str]:
    return frozenset(sample.name for sample in samples(text))


def scrape_exporters(
    api: Any, api_env: dict[str, str], start_worker: StartWorker, directory: Path
) -> ExportedMetrics:
    """Make real data for both exporters, then scrape them. ``api`` is the control plane on
    ``api_env``'s broker prefix and result store; ``directory`` holds the worker's
    multiprocess files. Both workers run at once: the control plane's on ``celery``, where
    the API sends, the exporter's on ``WORKER_QUEUE``."""
    from tests.app import make_app
    from tests.test_api_tasks import BACKEND_APP, events_of, submit, wait_place

    control_plane_text(api)  # the history counters count from their first scrape on
    succeeded = submit(api, "bk.add", 1, 2)
    failed = submit(api, "bk.fail", "fails on purpose")
    submit(api, "bk.add", 0, 0, queue=PARKED_QUEUE)

    client = make_app(api_env["TQ_TEST_REDIS_URL"], api_env["TQ_TEST_KEYPREFIX"])
    try:
        client.send_task("tests.app.record", ("redelivered",), queue=WORKER_QUEUE)
        with client.connection_for_write() as connection:
            taken = connection.SimpleQueue(WORKER_QUEUE)
            taken.get(timeout=5).requeue()  # its next delivery is its second
            taken.close()
        client.send_task("tests.app.always_fail", ("failed",), queue=WORKER_QUEUE)
        client.send_task("tests.app.fail_then_record", ("retried", 1, 0.2), queue=WORKER_QUEUE)
    finally:
        client.close()

    port = free_port()
    exporter_env = {PORT_ENV: str(port), DIR_ENV: str(directory)}
    workers = [start_worker(app=BACKEND_APP, env=api_env),
               start_worker(queues=(WORKER_QUEUE,), env=exporter_env)]  # fmt: skip
    for started in workers:
        started.wait_ready()

    wait_place(api, succeeded, "SUCCESS")
    wait_place(api, failed, "dead-lettered")
    wait_for(
        lambda: "dead_lettered" in events_of(api, failed),
        timeout=15,
        message=lambda: f"{failed} has no dead_lettered event: {events_of(api, failed)}",
    )
    control_plane = sample_names(control_plane_text(api))
    worker = wait_for(lambda: worker_text_after_runs(port, 4), timeout=30,
                      message=lambda: f"the worker exporter on port {port} did not count four "
                      f"finished runs; it served:\n{worker_text(port)}")  # fmt: skip
    for started in workers:  # both shut down at once; the fixture's teardown waits for them
        started.process.send_signal(signal.SIGTERM)
    return ExportedMetrics(control_plane, sample_names(worker))


def control_plane_text(api: Any) -> str:
    answer = api.get("/metrics", role=None)
    assert answer.status_code == 200, answer.data[:500]
    return str(answer.data.decode())


def exporter_check(port: int, path: str = "/healthz") -> tuple[int, str]:
    """A worker exporter's answer to ``/healthz`` or ``/readyz``: (status, text); (0, why)
    while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def worker_text(port: int) -> str:
    """The worker exporter's ``/metrics`` ("" while it does not answer yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return str(answer.read().decode())
    except OSError:
        return ""


def worker_text_after_runs(port: int, runs: int) -> str:
    """The exporter's text once it has counted ``runs`` finished task runs ("" until then): the
    counter samples labelled with how a run ended (``state``), whatever the counter is called."""
    text = worker_text(port)
    ended = sum(sample.value for sample in samples(text)
                if sample.name.endswith("_total") and "state" in sample.labels)  # fmt: skip
    return text if ended >= runs else ""
