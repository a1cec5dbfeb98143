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
        "taskqueue_backend/lifecycle.py",
        {"sent", "started", "retried", "succeeded", "replayed", "dead_letter_deleted"},
    ),
    "is this app ours": (
        "taskqueue_backend/selection.py",
        {"tq+", "taskqueue_backend.transport:Transport", "redis://127.0.0.1:6379/0"},
    ),
    "message hash fields": ("taskqueue_backend/transport/fields.py", {"recoveries", "leased_at"}),
    "tasks the result store could not record": (
        "taskqueue_backend/unrecorded.py", {"result_store_unavailable"},
    ),
}  # fmt: skip
#: where words that are also event names are plain English (option choices, table headings)
PRESENTATION = "taskqueue_backend/cli/"


def string_literals() -> dict[str, set[str]]:
    """Every string constant of the package (docstrings aside) -> the files using it."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in (ROOT / "taskqueue_backend").rglob("*.py"):
        relative = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
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
