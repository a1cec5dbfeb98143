"""docker-compose.yml, checked without a Docker engine: valid against the Compose
Specification's JSON schema (and `docker compose config` where a Compose binary exists), read
with Compose's interpolation, then its properties — the services and their images, health
checks and the conditions that wait on them, Redis's append-only file, named volumes, two
workers that stop gracefully, the URLs and tokens the services get, the published ports.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
from celery import Celery

from taskqueue_backend.worker_metrics import PORT_ENV as WORKER_METRICS_PORT_ENV
from tests.support import REPO_ROOT
from tests.support.deploy_files import (
    IMAGE_SERVICES,
    command,
    compose,
    compose_raw,
    environment,
    healthcheck_text,
    interpolate,
    is_bind,
    mounts,
    seconds,
    service,
)

COMPOSE_SCHEMA = REPO_ROOT / "tests" / "data" / "compose-spec.json"


def test_docker_compose_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(compose_raw())]  # fmt: skip
    assert not errors, "\n".join(errors)
    assert not list(validator.iter_errors(compose()))
    # the schema has teeth: a misspelt key is refused
    misspelt = compose_raw()
    misspelt["services"]["redis"]["healthchek"] = misspelt["services"]["redis"].pop("healthcheck")
    assert list(validator.iter_errors(misspelt))


def test_docker_compose_config_accepts_it_where_compose_is_installed(tmp_path: Path) -> None:
    """`docker compose config` needs no engine; it is run where a Compose binary exists."""
    given = os.environ.get("DOCKER_COMPOSE")
    if given:
        compose_command = shlex.split(given)
    elif shutil.which("docker-compose"):
        compose_command = ["docker-compose"]
    elif (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        compose_command = ["docker", "compose"]
    else:
        pytest.skip("no Docker Compose here (set DOCKER_COMPOSE to its command to run this)")
    done = subprocess.run([*compose_command, "-f", str(REPO_ROOT / "docker-compose.yml"),
                           "config", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "COMPOSE_PROJECT_NAME": "taskqueue-check"},
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_interpolation_is_read_as_compose_reads_it() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d} ${EMPTY-d} ${UNSET-d}", env) == (
        "x d d  d")  # fmt: skip
    assert interpolate({"a": ["$SET", "$$SET", "${UNSET}"]}, env) == {"a": ["x", "$SET", ""]}
    with pytest.raises(ValueError, match="UNSET"):
        interpolate("${UNSET:?set it}", env)


def test_the_stack_has_its_services() -> None:
    assert set(compose()["services"]) == {"redis", "postgres", "migrate", "worker",
                                          "control-plane", "prometheus", "grafana"}  # fmt: skip
    assert service("redis")["image"] == "redis:7"
    assert service("postgres")["image"] == "postgres:16"
    assert service("prometheus")["image"].startswith("prom/prometheus")
    assert service("grafana")["image"].startswith("grafana/grafana")


def test_migrate_worker_and_control_plane_run_the_image_this_repository_builds() -> None:
    images = {service(name)["image"] for name in IMAGE_SERVICES}
    assert len(images) == 1, images
    for name in IMAGE_SERVICES:
        build = service(name)["build"]
        context = build if isinstance(build, str) else build["context"]
        dockerfile_name = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (REPO_ROOT / context / dockerfile_name).resolve() == REPO_ROOT / "Dockerfile"


@pytest.mark.parametrize(
    ("name", "needle"),
    [("redis", "redis-cli ping"), ("postgres", "pg_isready"),
     ("worker", "urllib.request.urlopen('http://localhost:9808/healthz'"),
     ("control-plane", "urllib.request.urlopen('http://localhost:8080/readyz'"),
     ("prometheus", "http://localhost:9090/-/ready"), ("grafana", "http://localhost:3000/api/health")],
)  # fmt: skip
def test_long_running_services_have_healthchecks(name: str, needle: str) -> None:
    text = healthcheck_text(name)
    assert needle in text, text
    assert "curl" not in text  # none of these images has it


def test_the_worker_healthcheck_probes_its_exporter_port() -> None:
    env = environment("worker")
    port = env[WORKER_METRICS_PORT_ENV]
    assert port == "9808"
    assert f"http://localhost:{port}/healthz" in healthcheck_text("worker")


def test_every_depends_on_condition_can_be_met() -> None:
    """service_healthy needs a healthcheck there; service_completed_successfully a one-off."""
    conditions = {}
    for name, spec in compose()["services"].items():
        depends = spec.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for other, rule in depends.items():
            conditions[(name, other)] = rule["condition"]
            if rule["condition"] == "service_healthy":
                assert healthcheck_text(other)
            if rule["condition"] == "service_completed_successfully":
                assert service(other).get("restart", "no") == "no", f"{other} must run once"
    for name in ("worker", "control-plane"):
        assert conditions[(name, "redis")] == "service_healthy"
        assert conditions[(name, "postgres")] == "service_healthy"
        assert conditions[(name, "migrate")] == "service_completed_successfully"
    assert conditions[("migrate", "postgres")] == "service_healthy"
    assert conditions[("grafana", "prometheus")] == "service_healthy"


def test_redis_appends_every_write_and_fsyncs_every_second_to_a_named_volume() -> None:
    words = command("redis")
    options = dict(zip(words[1::2], words[2::2], strict=False))
    assert words[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options.get("--maxmemory-policy", "noeviction") == "noeviction"
    assert ("redis-data", "/data") in mounts("redis")


def test_data_lives_in_named_volumes_that_are_declared() -> None:
    declared = set(compose().get("volumes", {}))
    used = {source for name in compose()["services"] for source, _ in mounts(name)
            if not is_bind(source)}  # fmt: skip
    assert used == declared
    assert ("postgres-data", "/var/lib/postgresql/data") in mounts("postgres")
    for name in ("prometheus", "grafana"):
        assert any(not is_bind(source) for source, _ in mounts(name)), name


def test_two_workers_stop_gracefully() -> None:
    worker = service("worker")
    assert worker["deploy"]["replicas"] == 2
    assert seconds(worker["stop_grace_period"]) >= 60
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    # replicas cannot share a container name or a published port
    assert "container_name" not in worker and "ports" not in worker
    assert environment("worker")["CELERY_APP"] == "examples.proj"
    assert command("worker")[:1] == ["worker"]


def test_the_services_urls_point_at_the_stacks_redis_and_postgres() -> None:
    postgres = environment("postgres")
    for name in IMAGE_SERVICES:
        env = environment(name)
        database = urlsplit(env["DATABASE_URL"])
        assert database.scheme == "postgresql+psycopg"  # a SQLAlchemy URL, psycopg 3
        assert (database.hostname, database.port) == ("postgres", 5432)
        assert database.username == postgres["POSTGRES_USER"]
        assert database.password == postgres["POSTGRES_PASSWORD"]
        assert database.path == "/" + postgres["POSTGRES_DB"]
        redis = urlsplit(env["REDIS_URL"])
        assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)


def test_the_control_plane_serves_the_example_app_with_tokens_from_the_environment() -> None:
    env = environment("control-plane")
    assert env["TQ_CELERY_APP"] == "examples.proj.celery:app"
    module, _, attribute = env["TQ_CELERY_APP"].partition(":")
    # the image copies examples/ to /app, on its PYTHONPATH, as the repository root is here
    assert isinstance(getattr(importlib.import_module(module), attribute), Celery)
    assert isinstance(importlib.import_module(environment("worker")["CELERY_APP"]).app, Celery)
    raw = compose_raw()["services"]["control-plane"]["environment"]
    assert raw["TQ_API_TOKENS"].startswith("${TQ_API_TOKENS")
    assert raw["TQ_SECRET_KEY"].startswith("${TQ_SECRET_KEY")
    assert "8080:8080" in [str(p) for p in service("control-plane")["ports"]]
    assert env.get("PORT", "8080") == "8080"


def test_prometheus_and_grafana_are_published_on_their_ports() -> None:
    assert "9090:9090" in [str(p) for p in service("prometheus")["ports"]]
    assert "3000:3000" in [str(p) for p in service("grafana")["ports"]]
