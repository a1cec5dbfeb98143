"""The image, checked without a Docker engine: the Dockerfile's stages (a wheel built into a
virtualenv at /opt/venv, a slim final stage with no build tools that runs as uid 10001),
.dockerignore (what reaches the build context, and that the context builds the whole wheel),
and the entrypoint: a POSIX shell script that execs the program each command names, says what
is missing, and takes every service's command of docker-compose.yml to a program that accepts
its arguments. Then the long-running services run on this host as Compose runs their
containers — migrations, the command through the entrypoint, the Compose health check, SIGTERM
as `docker compose stop` sends it: a worker shuts down warm, the control plane cleanly.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from taskqueue_backend.embedded import free_port
from taskqueue_backend.worker_metrics import PORT_ENV as WORKER_METRICS_PORT_ENV
from tests.support import REPO_ROOT, wait_for
from tests.support.deploy_files import (
    BIN,
    ENTRYPOINT,
    IMAGE_SERVICES,
    command,
    dockerfile,
    dockerignore_rules,
    dockerignored,
    environment,
    repository_files,
    repository_rules,
    service,
    under,
)

WHEELHOUSE = REPO_ROOT / ".venv" / "wheelhouse"


# --- Dockerfile, .dockerignore and the wheel they build ---------------------------------------


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    rules, files = repository_rules(), repository_files()
    sources = [source for stage in dockerfile() for source in stage.local_sources()]
    assert sources, "the Dockerfile copies nothing"
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
        inside = [f for f in files if under(f, source)]
        assert inside, f"COPY {source}: no file of a fresh checkout is there"
        left_out = [f for f in inside if dockerignored(f, rules)]
        assert not left_out, f"COPY {source}: .dockerignore leaves out {left_out[:5]}"


def test_dockerignore_leaves_out_environments_history_artifacts_and_data() -> None:
    rules = repository_rules()
    for path in (".venv/bin/python", ".git/config", ".env", "test-artifacts/screenshots/a.png",
                 "bench/results/run.json", "taskqueue-demo.db", "examples/proj/results.db",
                 "control_plane/__pycache__/app.cpython-311.pyc", ".pytest_cache/v/x",
                 ".mypy_cache/3.11/x.json", ".ruff_cache/x", ".hypothesis/examples/x",
                 "taskqueue_backend.egg-info/PKG-INFO", "dump.rdb"):  # fmt: skip
        assert dockerignored(path, rules), f".dockerignore lets {path} into the build context"
    for path in ("pyproject.toml", "README.md", "taskqueue_backend/transport/lua/ack.lua",
                 "control_plane/ui/static/app.js", "deploy/docker/entrypoint.sh"):  # fmt: skip
        assert not dockerignored(path, rules), f".dockerignore leaves out {path}"


def test_the_dockerignore_reader_follows_docker_rules() -> None:
    rules = dockerignore_rules("# comment\n**/*.db\nbuild\n!build/keep\n/docs/*.md\n")
    assert dockerignored("a/b/c.db", rules) and dockerignored("c.db", rules)
    assert dockerignored("build/x/y", rules) and not dockerignored("build/keep", rules)
    assert dockerignored("docs/a.md", rules) and not dockerignored("docs/sub/a.md", rules)
    assert not dockerignored("builder/x", rules)


def test_the_build_stage_builds_the_wheel_into_a_virtualenv_at_opt_venv() -> None:
    build, *_ = dockerfile()
    runs = " ".join(i.arguments for i in build.all("RUN"))
    assert "python -m venv /opt/venv" in runs
    assert "pip wheel" in runs and "pip install /wheels/" in runs
    assert build.env().get("PATH", "").startswith("/opt/venv/bin:"), "pip of the virtualenv"


def test_the_final_stage_has_only_the_virtualenv_the_example_app_and_the_entrypoint() -> None:
    stages = dockerfile()
    assert len(stages) >= 2, "a multi-stage build"
    final = stages[-1]
    assert final.image == "python:3.11-slim"
    copies = [i.flags_and_words() for i in final.all("COPY")]
    from_stages = [(flags["from"], words) for flags, words in copies if "from" in flags]
    assert from_stages == [(stages[0].name, ["/opt/venv", "/opt/venv"])]
    assert sorted(final.local_sources()) == [
        "deploy/docker/entrypoint.sh", "examples/__init__.py", "examples/proj"]  # fmt: skip
    assert not final.all("ADD")


BUILD_TOOLS = re.compile(r"\b(apt-get|apt|apk|build-essential|gcc|g\+\+|make|cc|clang|"
                         r"pip(3)? wheel|python3?-dev|libc6?-dev)\b")  # fmt: skip


def test_the_final_stage_installs_no_build_tools_and_runs_as_a_non_root_user() -> None:
    final = dockerfile()[-1]
    for instruction in final.all("RUN"):
        assert not BUILD_TOOLS.search(instruction.arguments), instruction.arguments
    users = final.all("USER")
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].arguments.strip().split(":")[0]
    assert user == "10001", f"USER {user}"
    runs = " ".join(i.arguments for i in final.all("RUN"))
    assert re.search(r"useradd\b.*--uid 10001\b", runs), "uid 10001 has a passwd entry"
    assert [i.arguments for i in final.all("WORKDIR")][-1] == "/app"


def test_the_final_stage_environment_signal_and_entrypoint() -> None:
    final = dockerfile()[-1]
    env = final.env()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    # `celery -A examples.proj` and TQ_CELERY_APP=examples.proj.celery:app import from /app
    assert "/app" in env.get("PYTHONPATH", "").split(":")
    assert [i.arguments.strip() for i in final.all("STOPSIGNAL")] == ["SIGTERM"]
    [entrypoint] = final.all("ENTRYPOINT")
    program = json.loads(entrypoint.arguments)  # exec form: no shell between Docker and it
    [copied] = [words for flags, words in (i.flags_and_words() for i in final.all("COPY"))
                if words[0] == "deploy/docker/entrypoint.sh"]  # fmt: skip
    assert program == [copied[-1]]


def test_the_build_context_builds_a_wheel_with_the_package_data_and_the_console_script(
    tmp_path: Path,
) -> None:
    """The build stage's inputs, as .dockerignore lets them through, make the whole package."""
    if not (WHEELHOUSE / ".complete").exists():
        pytest.fail(
            f"{WHEELHOUSE} is missing: run the suite with `python3 dev.py test`, whose "
            "install step fetches the wheels that build the project",
            pytrace=False,
        )
    rules, sources = repository_rules(), dockerfile()[0].local_sources()
    context = tmp_path / "context"
    for relative in repository_files():
        if dockerignored(relative, rules):
            continue
        if any(under(relative, source) for source in sources):
            (context / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO_ROOT / relative, context / relative)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
                           "--find-links", str(WHEELHOUSE), "-w", str(tmp_path / "dist"),
                           str(context)], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [wheel] = (tmp_path / "dist").glob("taskqueue_backend-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entries = archive.read(entry_points).decode()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        description = archive.read(metadata).decode().partition("\n\n")[2]
    package_data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"][
        "setuptools"]["package-data"]  # fmt: skip
    for package, patterns in package_data.items():
        base = REPO_ROOT / package.replace(".", "/")
        for pattern in patterns:
            wanted = {str(p.relative_to(REPO_ROOT)) for p in base.glob(pattern) if p.is_file()}
            assert wanted, f"package data {package}:{pattern} matches no file"
            assert wanted <= names, f"the wheel lacks {sorted(wanted - names)[:5]}"
    assert description.startswith("# taskqueue-backend"), "README.md is the description"
    assert "taskqueue = taskqueue_backend.cli:main" in entries
    assert "control-plane = control_plane.commands:control_plane" in entries


# --- The entrypoint ---------------------------------------------------------------------------

STUB = """#!/bin/sh
printf '%s\\n' "$$" "${0##*/}" "$@"
"""


def run_entrypoint(tmp_path: Path, *args: str, **env: str) -> tuple[int, list[str], str]:
    """Run the entrypoint with `celery` and `taskqueue` stubs that print their pid and argv.

    Returns the exit code, the stub's lines — argv[0]'s name and the arguments, after checking
    that the stub ran in the entrypoint's own process (exec) — and stderr."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for program in ("celery", "taskqueue"):
        (stubs / program).write_text(STUB)
        (stubs / program).chmod(0o755)
    process = subprocess.Popen([str(ENTRYPOINT), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={"PATH": f"{stubs}:/usr/bin:/bin", **env})  # fmt: skip
    out, err = process.communicate(timeout=30)
    lines = out.splitlines()
    if process.returncode == 0 and lines:
        assert lines[0] == str(process.pid), "the program did not replace the shell (no exec)"
        lines = lines[1:]
    return process.returncode, lines, err


def test_the_entrypoint_is_an_executable_posix_shell_script() -> None:
    assert ENTRYPOINT.is_file()
    assert os.access(ENTRYPOINT, os.X_OK), f"{ENTRYPOINT} is not executable"
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")  # no bash in python:3.11-slim's sh
    done = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("args", "env", "argv"),
    [
        (["worker", "-Q", "celery", "-c", "4"], {"CELERY_APP": "examples.proj"},
         ["celery", "-A", "examples.proj", "worker", "-Q", "celery", "-c", "4"]),
        (["control-plane", "--workers", "1"], {},
         ["taskqueue", "control-plane", "--bind", "0.0.0.0:8080", "--workers", "1"]),
        (["control-plane"], {"PORT": "9000"},
         ["taskqueue", "control-plane", "--bind", "0.0.0.0:9000"]),
        (["migrate", "--verbose"], {"DATABASE_URL": "postgresql+psycopg://db/x"},
         ["taskqueue", "db", "upgrade", "--verbose"]),
        (["taskqueue", "token", "new", "admin", "admin"], {},
         ["taskqueue", "token", "new", "admin", "admin"]),
        (["celery", "-A", "x", "inspect", "ping", "--timeout", "2 s"], {},
         ["celery", "-A", "x", "inspect", "ping", "--timeout", "2 s"]),
    ],
    ids=["worker", "control-plane", "control-plane-port", "migrate", "token", "anything-else"],
)  # fmt: skip
def test_the_entrypoint_execs_the_program_each_command_names(
    tmp_path: Path, args: list[str], env: dict[str, str], argv: list[str]
) -> None:
    code, lines, err = run_entrypoint(tmp_path, *args, **env)
    assert code == 0, err
    assert lines == argv


def test_the_entrypoint_says_what_is_missing(tmp_path: Path) -> None:
    code, lines, err = run_entrypoint(tmp_path, "worker")
    assert (code, lines) == (64, []) and "CELERY_APP" in err
    code, lines, err = run_entrypoint(tmp_path)
    assert (code, lines) == (64, []) and "usage:" in err
    code, lines, err = run_entrypoint(tmp_path, "help")
    assert code == 0 and "control-plane" in err and "migrate" in err


def test_the_programs_the_entrypoint_runs_are_the_packages_console_scripts() -> None:
    scripts = {e.name: e for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["taskqueue"].value == "taskqueue_backend.cli:main"
    assert scripts["taskqueue"].dist is not None
    assert scripts["taskqueue"].dist.metadata["Name"] == "taskqueue-backend"
    assert (
        scripts["celery"].dist is not None and scripts["celery"].dist.metadata["Name"] == "celery"
    )
    commands = {e.name for e in importlib.metadata.entry_points(group="taskqueue.commands")}
    assert {"control-plane", "token"} <= commands


@pytest.mark.parametrize("name", IMAGE_SERVICES)
def test_each_services_command_reaches_a_program_that_accepts_its_arguments(
    tmp_path: Path, name: str
) -> None:
    """docker-compose.yml's command, through the entrypoint, to the real program (--help)."""
    code, argv, err = run_entrypoint(tmp_path, *command(name), **environment(name))
    assert code == 0, err
    program = BIN / argv[0]
    assert program.exists(), f"{argv[0]} is not installed in {BIN}"
    done = subprocess.run([str(program), *argv[1:], "--help"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Usage:"), done.stdout[:200]


# --- The services' commands and health checks, run on this host as Compose runs them -------


def image_env(name: str, redis_url: str, keyprefix: str, tmp_path: Path) -> dict[str, str]:
    """A service's environment from docker-compose.yml, pointed at this test's Redis (under its
    key prefix) and a SQLite result store, with the image's PATH and PYTHONPATH (/app is the
    repository root here)."""
    return {**environment(name), "PATH": f"{BIN}:/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1", "REDIS_URL": redis_url, "BROKER_KEYPREFIX": keyprefix,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'results.db'}"}  # fmt: skip


def healthy(name: str, env: Mapping[str, str], port: int, published: int) -> bool:
    """Whether the service's Compose health check passes, run against ``port``."""
    check = service(name)["healthcheck"]["test"]
    assert check[0] == "CMD", check
    argv = [word.replace(f":{published}/", f":{port}/") for word in check[1:]]
    return subprocess.run(argv, env=dict(env), capture_output=True, timeout=30).returncode == 0


def start(name: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The service's command through the entrypoint, in a process group of its own."""
    with log.open("wb") as out:
        return subprocess.Popen([str(ENTRYPOINT), *command(name)], env=dict(env), cwd=log.parent,
                                stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM to the entrypoint's process only, as `docker compose stop` sends it to the
    container's main process; its exit code (None if it did not exit within a minute). Whatever
    of its group is left afterwards is killed."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        return None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def running_tasks(port: int) -> float:
    """``taskqueue_worker_running_tasks`` from the worker's exporter."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r"^taskqueue_worker_running_tasks\{[^}]*\} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def run_migrations(env: Mapping[str, str], cwd: Path) -> None:
    """The image's ``migrate`` command, through the entrypoint; it must succeed."""
    migrate = subprocess.run([str(ENTRYPOINT), *command("migrate")], capture_output=True,
                             text=True, env=env, cwd=cwd, timeout=120)  # fmt: skip
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr


def test_a_worker_container_migrates_turns_healthy_and_shuts_down_warm_on_sigterm(
    redis_url: str, keyprefix: str, tmp_path: Path
) -> None:
    env = image_env("worker", redis_url, keyprefix, tmp_path)
    run_migrations(env, tmp_path)
    published = int(env[WORKER_METRICS_PORT_ENV])
    port = free_port()
    env[WORKER_METRICS_PORT_ENV] = str(port)
    log = tmp_path / "worker.log"
    worker = start("worker", env, log)
    try:
        wait_for(lambda: healthy("worker", env, port, published) or worker.poll() is not None,
                 timeout=120, message=log.read_text)  # fmt: skip
        assert worker.poll() is None, log.read_text()
        sent = subprocess.run([str(BIN / "python"), "-c", "from examples.proj.tasks import slow;"
                               " print(slow.delay(3).id)"], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=60)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        task_id = sent.stdout.strip()
        wait_for(lambda: running_tasks(port) >= 1, timeout=60, message=log.read_text)
    finally:
        code = stop(worker)
    output = log.read_text()
    assert code == 0, output
    assert "Warm shutdown" in output  # SIGTERM reached Celery itself: the entrypoint exec'd it
    assert re.search(rf"{task_id}\] succeeded", output), output  # the running task finished


def test_a_control_plane_container_turns_ready_and_stops_on_sigterm(
    redis_url: str, keyprefix: str, tmp_path: Path
) -> None:
    env = image_env("control-plane", redis_url, keyprefix, tmp_path)
    run_migrations(env, tmp_path)
    published, port = int(env["PORT"]), free_port()
    env["PORT"] = str(port)
    log = tmp_path / "control-plane.log"
    server = start("control-plane", env, log)
    try:
        wait_for(
            lambda: healthy("control-plane", env, port, published) or server.poll() is not None,
            timeout=120,
            message=log.read_text,
        )
        assert server.poll() is None, log.read_text()
    finally:
        code = stop(server)
    assert code == 0, log.read_text()
