"""``python3 dev.py``: each command installs what it needs into ``.venv`` and no more — ``demo``
the run-time dependencies (``pip install -e .``), ``test`` the test extras too
(``pip install -e '.[test]'``) — and its stamp says which, so a test run after a demo installs
the extras, and a demo after a test run installs nothing.

Run on a small project of its own (this ``dev.py`` beside a ``pyproject.toml`` whose only test
extra is ``iniconfig``), in a fresh virtualenv, with the package index pip is set up with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT

PROBE_PROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "devpy-probe"
version = "0"
dependencies = []

[project.optional-dependencies]
test = ["iniconfig"]

[tool.setuptools]
py-modules = []
"""


def dev(project: Path, *args: str) -> str:
    """Run ``dev.py ARGS`` in ``project``; its output (the command itself may fail: the probe
    project has no demo and no tests)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run([sys.executable, str(project / "dev.py"), *args], cwd=project,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    return done.stdout + done.stderr


def has_test_extras(project: Path) -> bool:
    python = project / ".venv" / "bin" / "python"
    return subprocess.run([str(python), "-c", "import iniconfig"],
                          capture_output=True).returncode == 0  # fmt: skip


def test_demo_installs_the_run_time_dependencies_and_test_adds_the_test_extras(
    tmp_path: Path,
) -> None:
    project = tmp_path / "probe"
    project.mkdir()
    shutil.copy(REPO_ROOT / "dev.py", project / "dev.py")
    (project / "pyproject.toml").write_text(PROBE_PROJECT)

    demo = dev(project, "demo")
    assert "pip install -e .\n" in demo and ".[test]" not in demo, demo
    assert not has_test_extras(project)
    again = dev(project, "demo")
    assert "dependencies up to date" in again and "pip install" not in again, again

    test = dev(project, "test", "--collect-only")
    assert "pip install -e .[test]" in test, test
    assert has_test_extras(project)
    assert "dependencies up to date" in dev(project, "test", "--collect-only")
    after = dev(project, "demo")  # the test extras include everything the demo needs
    assert "dependencies up to date" in after and "pip install" not in after, after
