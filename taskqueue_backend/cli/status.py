"""``taskqueue status TASK_ID`` and ``taskqueue history TASK_ID``: one task, everywhere."""

from __future__ import annotations

import json
from typing import Any

import click

from ..operations import HistoryEvent
from . import output
from .main import LOCATION_HEADERS, location_rows
from .session import json_option, ops, reports_errors, session


def _detail(value: Any) -> str:
    return "" if not value else json.dumps(value, default=str)


def print_history(history: list[HistoryEvent]) -> None:
    output.table(
        [(output.when(e.at)[:11] + output.precise(e.at), e.event, e.state or "-", e.worker or "-",
          output.shorten(_detail(e.detail), 70)) for e in history],
        ("at (utc)", "event", "state", "worker", "detail"),
        empty="(no history recorded)",
    )  # fmt: skip


@click.command()
@click.argument("task_id")
@json_option
@click.pass_context
@reports_errors
def status(ctx: click.Context, task_id: str) -> None:
    """Where a task is and what happened to it: its message in the broker, its dead letter,
    its result and its history. TASK_ID may be a unique prefix of the id."""
    found = ops(ctx).tasks.status(task_id)
    if session(ctx).as_json:
        output.as_json(found)
        return
    click.echo(f"task {found.task_id}: {found.place}")
    if found.broker:
        click.echo("\nbroker:")
        output.table(location_rows(found.broker), LOCATION_HEADERS)
    if found.dead_letter is not None:
        d = found.dead_letter
        click.echo(f"\ndead letter: {d.reason} in queue {d.queue} since {output.when(d.dead_at)}"
                   f" ({d.exc_type or '-'}: {output.shorten(d.exc_message or d.detail, 60)}),"
                   f" replayed {d.replays} time(s)")  # fmt: skip
    r = found.result
    if r is not None:
        click.echo(f"\nresult: {r.state} ({r.name or '?'}) on {r.worker or '-'}, "
                   f"updated {output.when(r.updated_at)}")  # fmt: skip
        if r.exception_type:
            click.echo(f"  {r.exception_type}: {output.shorten(r.exception_message, 80)}")
    if ops(ctx).results is not None:
        click.echo("\nhistory:")
        print_history(found.history)


@click.command()
@click.argument("task_id")
@json_option
@click.pass_context
@reports_errors
def history(ctx: click.Context, task_id: str) -> None:
    """A task's history from the result store, oldest first (TASK_ID may be a prefix)."""
    found = ops(ctx).tasks.history(task_id)
    if session(ctx).as_json:
        output.as_json(found)
        return
    print_history(found)
