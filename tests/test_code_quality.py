"""The code stays ruff- and mypy-clean, and each contract between the parts is spelled in one
module: the test command checks it like any behaviour."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_is_clean(command: list[str]) -> None:
    tool = BIN / command[0]
    if not tool.exists():
        pytest.fail(f"{command[0]} is not installed in {BIN}; install the 'test' extra")
    done = subprocess.run([str(tool), *command[1:]], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


#: contract -> (the one module allowed to spell it, the strings it owns)
CONTRACTS = {
    "delivery headers and properties": (
        "taskqueue_backend/headers.py",
        {"delivery_count", "tq_queue", "tq_delivered_at", "tq_delivery_count",
         "tq_published_at", "tq_replays"},
    ),
    "lifecycle event names": (
        "taskqueue_backend/vocabulary.py",
        {"sent", "started", "retried", "succeeded", "replayed", "dead_letter_deleted"},
    ),
    "dead-letter reasons": (
        "taskqueue_backend/vocabulary.py",
        {"poison", "malformed", "undecodable", "unknown_task", "invalid_message",
         "result_store_unavailable"},
    ),
    "bulk actions and signals": (
        "taskqueue_backend/vocabulary.py", {"SIGTERM", "SIGKILL", "SIGQUIT", "SIGUSR1"},
    ),
    "is this app ours": (
        "taskqueue_backend/selection.py",
        {"tq+", "taskqueue_backend.transport:Transport", "redis://127.0.0.1:6379/0"},
    ),
    "message hash fields": ("taskqueue_backend/transport/fields.py", {"recoveries", "leased_at"}),
}  # fmt: skip
#: where words that are also event names are plain English (option choices, table headings)
PRESENTATION = "taskqueue_backend/cli/"


def parse(path: Path) -> ast.Module:
    """``path``'s syntax tree. CPython 3.11's AST converter keeps its recursion depth per
    interpreter, not per thread (python/cpython#106905): a traceback printed by another
    thread meanwhile (3.11's tracebacks parse source lines) can fail a parse with a
    SystemError that says nothing of the file; such a parse is tried again."""
    for _ in range(5):
        try:
            return ast.parse(path.read_text())
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc):
                raise
    return ast.parse(path.read_text())


def string_literals() -> dict[str, set[str]]:
    """Every string constant of the package (docstrings aside) -> the files using it."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in (ROOT / "taskqueue_backend").rglob("*.py"):
        relative = str(path.relative_to(ROOT))
        tree = parse(path)
        docstrings = {
            id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body and isinstance(node.body[0], ast.Expr)
        }  # fmt: skip
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) not in docstrings:
                    found[node.value].add(relative)
    return found


@pytest.mark.parametrize("contract", sorted(CONTRACTS))
def test_each_contract_is_spelled_in_one_module(contract: str) -> None:
    owner, strings = CONTRACTS[contract]
    literals = string_literals()
    elsewhere = {
        text: sorted(p for p in literals.get(text, ()) if p != owner
                     and not (contract == "lifecycle event names" and p.startswith(PRESENTATION)))
        for text in strings
    }  # fmt: skip
    assert {t: p for t, p in elsewhere.items() if p} == {}, f"{contract} belongs in {owner}"
    assert all(owner in literals.get(text, ()) for text in strings), f"{owner} defines them"


def test_no_module_publishes_a_marked_message_for_the_dead_letters() -> None:
    assert "x-tq-dead-letter" not in string_literals()


#: what only ``transport`` (its ``admin`` package for everyone else) knows of the broker's data
BROKER_INTERNALS = {"taskqueue_backend.transport.keys", "taskqueue_backend.transport.fields",
                    "taskqueue_backend.transport.scripts", "taskqueue_backend.transport.recovery",
                    "taskqueue_backend.transport.stats", "taskqueue_backend.transport.scheduled",
                    "taskqueue_backend.transport.retention",
                    "taskqueue_backend.transport.audit_stream"}  # fmt: skip
#: the one module of the operations layer that hands the client to ``transport.admin``
BROKER_DOOR = "taskqueue_backend/operations/broker.py"


def test_only_the_transport_touches_the_broker_data() -> None:
    """The operations layer and the control plane reach the broker's Redis through
    ``transport.admin`` alone: no Redis client call, no key, field or script of their own."""
    imports = {**package_imports("taskqueue_backend"), **package_imports("control_plane")}
    touching = {}
    for package in ("taskqueue_backend/operations", "control_plane"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = str(path.relative_to(ROOT))
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(
                ".__init__"
            )
            if relative == BROKER_DOOR:
                continue
            found = sorted(imports.get(module, set()) & BROKER_INTERNALS)
            for node in ast.walk(parse(path)):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr in ("client", "scripts")
                    and (
                        isinstance(node.value, ast.Attribute)
                        and node.value.attr == "broker"
                        or isinstance(node.value, ast.Name)
                        and node.value.id == "self"
                    )
                ):
                    found.append(f"line {node.lineno}: .{node.attr}")
            if found:
                touching[relative] = found
    assert touching == {}, "call transport.admin instead"


def package_imports(package: str) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports (at any level, lazily too)."""
    root = ROOT / package
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(parse(path)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # ``from pkg import mod`` imports pkg.mod; ``from pkg import name``, pkg
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]  # fmt: skip
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def test_the_control_plane_has_no_import_circle() -> None:
    graph = package_imports("control_plane")
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(graph.get(module, ())):
            if seen.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in seen:
                visit(target, [*path, target])
        seen[module] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
    assert circles == [], f"import circles: {circles}"


def test_the_worker_metrics_server_does_not_import_the_transport() -> None:
    """It reads who the process is from ``worker_info``, which the transport sets."""
    graph = package_imports("taskqueue_backend")
    reached = {name: sorted(t for t in targets if t.startswith("taskqueue_backend.transport"))
               for name, targets in graph.items()
               if name.startswith("taskqueue_backend.worker_metrics")}  # fmt: skip
    assert {name: found for name, found in reached.items() if found} == {}
