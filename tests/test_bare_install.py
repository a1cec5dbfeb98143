"""A bare install (no test extras) runs a worker, a task with a result, the CLI and the control
plane (its API, admin UI pages with their templates and static files, and the API docs).

The test extras can hide a missing run-time dependency (pytest brings ``packaging``, which
kombu's Redis transport imports), so this builds the project's wheel from the current tree and
installs it into a fresh virtualenv with only its declared dependencies, from the wheels the
test command's install step fetched (``.venv/wheelhouse``, no network here). Nothing of the
repository is importable in that virtualenv: everything runs from the installed package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, wait_for

WHEELHOUSE = REPO_ROOT / ".venv" / "wheelhouse"
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "taskqueue_backend", "control_plane")

APP = """
import os
from celery import Celery

app = Celery("bareapp")
app.conf.update(
    broker_url=os.environ["BARE_REDIS_URL"],
    broker_transport="taskqueue_backend.transport:Transport",
    broker_transport_options={"global_keyprefix": os.environ["BARE_KEYPREFIX"]},
    result_backend="tq+sqlite:///" + os.environ["BARE_DATABASE"],
)


@app.task
def add(x, y):
    return x + y
"""


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_bare_install_runs_a_worker_a_task_with_a_result_the_cli_and_the_control_plane(
    redis_url: str, keyprefix: str, tmp_path: Path
) -> None:
    if not (WHEELHOUSE / ".complete").exists():
        pytest.fail(
            f"{WHEELHOUSE} is missing: run the suite with `python3 dev.py test`, whose "
            "install step fetches the run-time dependencies' wheels",
            pytrace=False,
        )
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:  # a copy: building in the tree would leave build/ behind
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        else:
            shutil.copy(REPO_ROOT / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--find-links",
         str(WHEELHOUSE), "-w", str(dist), str(source)], tmp_path, env)  # fmt: skip
    [wheel] = dist.glob("taskqueue_backend-*.whl")

    bare = tmp_path / "bare"
    venv.EnvBuilder(with_pip=True).create(bare)
    python, bin_dir = bare / "bin" / "python", bare / "bin"
    run([str(python), "-m", "pip", "install", "--no-index", "--find-links", str(WHEELHOUSE),
         str(wheel)], tmp_path, env)  # fmt: skip
    installed = run([str(python), "-m", "pip", "list", "--format=json"], tmp_path, env)
    names = {p["name"].lower() for p in json.loads(installed)}
    assert "pytest" not in names and "taskqueue-backend" in names

    project = tmp_path / "project"
    project.mkdir()
    (project / "bareapp.py").write_text(APP)
    app_env = {**env, "BARE_REDIS_URL": redis_url, "BARE_KEYPREFIX": keyprefix,
               "BARE_DATABASE": str(tmp_path / "results.db"),
               "PYTHONPATH": str(project)}  # fmt: skip
    # the installed package, not the repository's, is what runs
    where = run([str(python), "-c", "import taskqueue_backend, taskqueue_backend.operations;"
                 "print(taskqueue_backend.__file__)"], project, app_env)  # fmt: skip
    assert str(bare) in where and str(REPO_ROOT) not in where

    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(bin_dir / "celery"), "-A", "bareapp", "worker", "-c", "1", "-l", "INFO",
             "-n", "bare@localhost", "--without-gossip", "--without-mingle"],
            cwd=project, env=app_env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: "ready." in log.read_text() or worker.poll() is not None, timeout=60)
        assert worker.poll() is None, log.read_text()[-3000:]
        result = run([str(python), "-c", "from bareapp import add; r = add.delay(2, 3); "
                      "print(r.id, r.get(timeout=60))"], project, app_env)  # fmt: skip
        task_id, value = result.split()
        assert value == "5"

        taskqueue = str(bin_dir / "taskqueue")
        status = json.loads(run([taskqueue, "-A", "bareapp", "status", task_id, "--json"],
                                project, app_env))  # fmt: skip
        assert status["result"]["state"] == "SUCCESS"
        assert [e["event"] for e in status["history"]] == ["received", "started", "succeeded"]
        workers = json.loads(run([taskqueue, "-A", "bareapp", "workers", "--json"], project,
                                 app_env))  # fmt: skip
        assert [(w["hostname"], w["state"]) for w in workers] == [("bare@localhost", "online")]
        run([taskqueue, "-A", "bareapp", "dlq", "stats"], project, app_env)
        assert "ModuleNotFoundError" not in log.read_text()
        check_the_control_plane(taskqueue, project, app_env, task_id, tmp_path)
    finally:
        worker.terminate()
        worker.wait(30)


def check_the_control_plane(
    taskqueue: str, project: Path, env: dict[str, str], task_id: str, tmp_path: Path
) -> None:
    """``taskqueue control-plane`` of the bare install answers the API, the admin UI (its
    templates and static files are in the wheel) and the API docs (Swagger UI's files)."""
    import requests

    from control_plane.auth import new_token
    from taskqueue_backend.embedded import free_port
    from tests.support.ui import csrf_of

    token, entry = new_token("bare-viewer", "viewer")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "control-plane.log"
    served = {**env, "TQ_CELERY_APP": "bareapp:app", "TQ_API_TOKENS": entry}
    with log.open("wb") as out:
        server = subprocess.Popen([taskqueue, "control-plane", "--bind", f"127.0.0.1:{port}",
                                   "--workers", "1", "--threads", "4"], cwd=project, env=served,
                                  stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    def ready() -> bool:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            return requests.get(f"{base}/readyz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(ready, timeout=60, message=lambda: log.read_text()[-3000:])
        found = requests.get(f"{base}/api/v1/tasks/{task_id}", timeout=10,
                             headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert found.status_code == 200 and found.json()["result"]["state"] == "SUCCESS"
        browser = requests.Session()
        login = browser.get(f"{base}/login", timeout=10)
        assert login.status_code == 200
        signed = browser.post(f"{base}/login", timeout=10,
                              data={"token": token, "csrf_token": csrf_of(login.text)})  # fmt: skip
        assert signed.status_code == 200 and "bare-viewer" in signed.text
        assert task_id in browser.get(f"{base}/tasks/{task_id}", timeout=10).text
        for asset in ("/ui/static/ui.css", "/ui/static/live.js",
                      "/api/v1/docs/assets/swagger-ui-bundle.js"):  # fmt: skip
            assert requests.get(base + asset, timeout=10).status_code == 200, asset
        assert "ModuleNotFoundError" not in log.read_text()
    finally:
        server.terminate()
        server.wait(30)
