"""The monitoring of the stack, checked without Prometheus or Grafana: Prometheus reads this
config, loads the alert rules and scrapes the control plane and every worker replica; the alert
rules have the shape Prometheus reads and fire on dead letters, stale workers, old ready
messages and queues without consumers; Grafana provisions the data source and the dashboard,
whose panels, variables and worker-exporter row are pinned. Every metric an alert or a panel
reads must be one the exporters served in this session (the ``exported_metrics`` fixture:
the control plane's and a real worker's /metrics, scraped after real tasks ran).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from taskqueue_backend.worker_metrics import PORT_ENV as WORKER_METRICS_PORT_ENV
from tests.support import REPO_ROOT
from tests.support.deploy_files import (
    compose,
    compose_raw,
    environment,
    repo_path_in,
    seconds,
    service,
)
from tests.support.exported_metrics import ExportedMetrics, unexported_names
from tests.support.promql import metric_names

ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = REPO_ROOT / "deploy" / "grafana" / "dashboards"
DASHBOARD = DASHBOARDS / "taskqueue.json"


# --- Reading the files ------------------------------------------------------------------------


@cache
def prometheus_config() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@cache
def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


@cache
def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])  # the panels of a collapsed row


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in panels()
            for target in panel.get("targets", [])]  # fmt: skip


def squeeze(expr: str) -> str:
    """An expression with its whitespace removed, to compare shapes."""
    return re.sub(r"\s+", "", expr)


# --- Prometheus -------------------------------------------------------------------------------


def prometheus_flag(name: str) -> str:
    for word in service("prometheus")["command"]:
        if word.startswith(f"--{name}="):
            return str(word.partition("=")[2])
    raise AssertionError(f"prometheus runs without --{name}")


def test_prometheus_reads_this_config_and_loads_the_alert_rules() -> None:
    config_path = repo_path_in("prometheus", prometheus_flag("config.file"))
    assert config_path == REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
    rule_files = prometheus_config()["rule_files"]
    seen = {repo_path_in("prometheus", path) for path in rule_files}
    assert ALERTS in seen
    assert all(path is not None and path.is_file() for path in seen), rule_files


def scrape_job(predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    jobs = [job for job in prometheus_config()["scrape_configs"] if predicate(job)]
    assert len(jobs) == 1, [job.get("job_name") for job in jobs]
    return jobs[0]


def test_prometheus_scrapes_the_control_plane() -> None:
    job = scrape_job(lambda j: any("control-plane:8080" in s.get("targets", [])
                                   for s in j.get("static_configs", [])))  # fmt: skip
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert "control-plane" in compose()["services"]


def test_prometheus_finds_every_worker_replica_by_dns() -> None:
    job = scrape_job(lambda j: bool(j.get("dns_sd_configs")))
    [discovery] = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and "worker" in compose()["services"]
    assert discovery.get("type", "SRV") == "A"  # compose answers A records, one per replica
    assert str(discovery["port"]) == environment("worker")[WORKER_METRICS_PORT_ENV]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    names = [j["job_name"] for j in prometheus_config()["scrape_configs"]]
    assert len(names) == len(set(names))


DURATION = re.compile(r"^(\d+(ms|[smhdwy]))+$")
SEVERITIES = {"critical", "warning", "info"}


def test_alert_rules_have_the_shape_prometheus_reads() -> None:
    loaded = yaml.safe_load(ALERTS.read_text())
    assert set(loaded) == {"groups"}
    group_names = [group["name"] for group in loaded["groups"]]
    assert len(group_names) == len(set(group_names))
    allowed = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    rules = alert_rules()
    assert rules
    for rule in rules:
        assert set(rule) <= allowed, f"{rule.get('alert')}: {set(rule) - allowed}"
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
        assert isinstance(rule["expr"], str) and metric_names(rule["expr"]), rule["alert"]
        if "for" in rule:
            assert DURATION.match(rule["for"]), rule["for"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
    assert len({rule["alert"] for rule in rules}) == len(rules)


def alert_matching(*shapes: str) -> dict[str, Any]:
    found = [rule for rule in alert_rules() if all(squeeze(s) in squeeze(rule["expr"])
                                                    for s in shapes)]  # fmt: skip
    assert found, f"no alert rule reads {shapes}"
    return found[0]


def test_an_alert_fires_when_tasks_are_dead_lettered() -> None:
    alert_matching('increase(taskqueue_task_events_total{event="dead_lettered"}[15m])', "> 0")
    growing = alert_matching("taskqueue_dead_letters[15m]", "by (queue, reason)", "> 0")
    assert "increase(taskqueue_dead_letters[" not in squeeze(growing["expr"])  # a gauge


def test_an_alert_fires_on_stale_workers_for_two_minutes() -> None:
    rule = alert_matching('taskqueue_workers{state="stale"} > 0')
    assert rule["for"] == "2m"


def test_an_alert_fires_when_a_queues_oldest_ready_message_is_too_old() -> None:
    rule = alert_matching("taskqueue_queue_oldest_ready_age_seconds", "> 300", "by (queue)")
    assert seconds(rule["for"]) > 0


def test_an_alert_fires_when_a_non_empty_queue_has_no_consumers() -> None:
    rule = alert_matching("taskqueue_queue_consumers == 0", "and on (queue)",
                          'taskqueue_queue_messages{state="ready"} > 0')  # fmt: skip
    assert rule["for"] == "5m"


# --- Grafana ----------------------------------------------------------------------------------


def test_grafana_provisions_the_prometheus_datasource_of_the_stack() -> None:
    provisioning = repo_path_in("grafana", "/etc/grafana/provisioning")
    assert provisioning == REPO_ROOT / "deploy" / "grafana" / "provisioning"
    loaded = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert loaded["apiVersion"] == 1
    [source] = loaded["datasources"]
    assert source["type"] == "prometheus" and source.get("isDefault") is True
    url = urlsplit(source["url"])
    assert (url.hostname, url.port) == ("prometheus", 9090)
    current = dashboard()["templating"]["list"][0]["current"]
    assert current["value"] == source["uid"], "the dashboard's default data source"


def test_grafana_loads_the_dashboards_directory() -> None:
    provisioning = REPO_ROOT / "deploy" / "grafana" / "provisioning"
    loaded = yaml.safe_load((provisioning / "dashboards" / "taskqueue.yml").read_text())
    assert loaded["apiVersion"] == 1
    [provider] = loaded["providers"]
    assert provider["type"] == "file"
    assert repo_path_in("grafana", provider["options"]["path"]) == DASHBOARDS
    assert (DASHBOARDS / "taskqueue.json").is_file()
    home = environment("grafana").get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home is None or repo_path_in("grafana", home) == DASHBOARDS / "taskqueue.json"


def test_grafana_can_be_signed_into_or_viewed_anonymously() -> None:
    env = environment("grafana")
    raw = compose_raw()["services"]["grafana"]["environment"]
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "true" or raw.get("GF_SECURITY_ADMIN_PASSWORD")
    assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer") == "Viewer"


def test_the_dashboard_is_addressable_and_takes_its_datasource_from_a_variable() -> None:
    board = dashboard()
    assert board["uid"] == "taskqueue"
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == "${datasource}"


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    return str(query["query"] if isinstance(query, dict) else query)


@pytest.mark.parametrize(("name", "label"), [("queue", "queue"), ("task", "task")])
def test_the_dashboard_has_queue_and_task_variables_from_label_values(
    name: str, label: str, exported_metrics: ExportedMetrics
) -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    variable = variables[name]
    assert variable["type"] == "query"
    assert variable["datasource"]["uid"] == "${datasource}"
    match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable_query(variable))
    assert match and match.group(2) == label, variable_query(variable)
    assert not unexported_names(match.group(1), exported_metrics.names)
    assert variable.get("includeAll") and variable.get("allValue") == ".*"
    used = [expr for _, expr in dashboard_exprs() if f"${name}" in expr]
    assert used, f"no panel filters by ${name}"


def test_the_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def panel_reading(*shapes: str) -> str:
    """The title of the panel whose queries, together, read every one of ``shapes``."""
    for panel in panels():
        exprs = [squeeze(t["expr"]) for t in panel.get("targets", [])]
        if all(any(squeeze(shape) in expr for expr in exprs) for shape in shapes):
            return str(panel["title"])
    raise AssertionError(f"no panel reads {shapes}")


EVENTS = 'rate(taskqueue_task_events_total{{event="{}",task=~"$task"}}'
QUANTILES = ("histogram_quantile(0.5,", "histogram_quantile(0.95,", "histogram_quantile(0.99,")
PANELS = {
    "throughput": [EVENTS.format(e) for e in ("sent", "succeeded", "failed")],
    "queue depth by queue and priority": [
        "by(queue,priority)(taskqueue_queue_ready_messages"],
    "delayed and in flight": ['taskqueue_queue_messages{queue=~"$queue",state=~"delayed|inflight"}',
                              "by(queue,state)"],
    "oldest ready message age": ["taskqueue_queue_oldest_ready_age_seconds"],
    "workers by status": ["by(state)(taskqueue_workers)"],
    "seconds since heartbeat": ["taskqueue_worker_seconds_since_heartbeat"],
    "retry and dead-letter rate": [EVENTS.format("retried"), EVENTS.format("dead_lettered")],
    "task runtime p50/p95/p99": [f"{q}sumby(le)(rate(taskqueue_task_runtime_seconds_bucket"
                                 for q in QUANTILES],
    "queue wait p50/p95/p99": [f"{q}sumby(le)(rate(taskqueue_task_queue_wait_seconds_bucket"
                               for q in QUANTILES],
    "worker tasks by task and state": ["by(task,state)(rate(taskqueue_worker_tasks_total"],
    "worker runtime p95 by task": [
        "histogram_quantile(0.95,sumby(task,le)(rate(taskqueue_worker_task_runtime_seconds_bucket"],
    "worker prefetched and running": ["taskqueue_worker_prefetched_tasks",
                                      "taskqueue_worker_running_tasks"],
    "worker redeliveries": ["rate(taskqueue_worker_task_redeliveries_total"],
}  # fmt: skip


@pytest.mark.parametrize("purpose", sorted(PANELS))
def test_the_dashboard_has_a_panel_for(purpose: str) -> None:
    assert panel_reading(*PANELS[purpose])


def test_the_worker_exporter_panels_sit_in_their_own_row(
    exported_metrics: ExportedMetrics,
) -> None:
    board = dashboard()["panels"]
    rows = [i for i, panel in enumerate(board) if panel["type"] == "row"]
    [row] = [i for i in rows if "worker exporter" in board[i]["title"].lower()]
    end = min([i for i in rows if i > row], default=len(board))
    in_row = board[row + 1 : end] + board[row].get("panels", [])
    worker_metrics = exported_metrics.worker
    for panel in in_row:
        names = {n for t in panel["targets"] for n in metric_names(t["expr"])}
        assert names <= worker_metrics, f"{panel['title']} reads {names - worker_metrics}"
    assert len(in_row) >= 4


# --- Metric names: every query reads what the exporters serve ---------------------------------


def queries() -> list[tuple[str, str]]:
    """(where, expr) of every alert rule and panel query; ``where`` names the file."""
    alerts, board = ALERTS.relative_to(REPO_ROOT), DASHBOARD.relative_to(REPO_ROOT)
    found = [(f"{alerts}, alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    found += [(f"{board}, panel {title!r}", expr) for title, expr in dashboard_exprs()]
    return found


def test_every_alert_and_panel_reads_only_exported_metrics(
    exported_metrics: ExportedMetrics,
) -> None:
    unserved = exported_metrics.unserved(queries())
    assert not unserved, "metrics no exporter served in this session:\n" + "\n".join(unserved)
    assert len(queries()) >= 20
