"""Resident memory of a worker: its main process and every process under it (the pool).

``process_tree(pid)`` lists the process and its descendants, ``tree_rss(pid)`` adds up their
resident set sizes (bytes). psutil answers when it is installed, ``/proc`` otherwise (Linux).
Pool processes share pages with the main process they were forked from, so the sum counts
shared pages once per process: it is the figure ``ps`` and ``top`` show, summed, and what a
container's memory limit is closest to; its growth, not its level, is what a soak watches.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a test extra
    psutil = None

MEASURED_WITH = "psutil" if psutil is not None else "/proc"


def _children_from_proc() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name, in parentheses, may hold spaces: the fields follow the last ")"
        fields = stat.rpartition(")")[2].split()
        found.setdefault(int(fields[1]), []).append(int(entry.name))
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants that are alive now (empty when ``pid`` is gone)."""
    if psutil is not None:
        try:
            parent = psutil.Process(pid)
            return [pid, *(child.pid for child in parent.children(recursive=True))]
        except psutil.Error:
            return []
    if not Path(f"/proc/{pid}").exists():
        return []
    children = _children_from_proc()
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, ()))
    return found


def _rss(pid: int) -> int:
    if psutil is not None:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return 0
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def tree_rss(pid: int) -> tuple[int, list[int]]:
    """The summed RSS (bytes) of ``pid`` and its descendants, and the pids it counted."""
    pids = process_tree(pid)
    return sum(_rss(p) for p in pids), pids
