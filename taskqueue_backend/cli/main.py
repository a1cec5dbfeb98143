"""The ``taskqueue`` root group and the broker commands (queues, find, remove, consumers)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from .session import Session, session


def _emit(rows: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("(none)")
    for row in rows if isinstance(rows, list) else [rows]:
        click.echo("  ".join(f"{k}={v}" for k, v in row.items()))


@click.group()
@click.option("--broker-url", envvar="REDIS_URL", help="Redis URL (default: $REDIS_URL).")
@click.option("--keyprefix", default="", help="The broker's global_keyprefix, if any.")
@click.option("-A", "--app", "app", default=None, help="Read the broker settings of a Celery app.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def main(
    ctx: click.Context, broker_url: str | None, keyprefix: str, app: str | None, as_json: bool
) -> None:
    """Inspect the taskqueue broker and its dead letters; manage the result backend's tables."""
    ctx.obj = Session(broker_url, keyprefix, app, as_json)


@main.command()
@click.pass_context
def queues(ctx: click.Context) -> None:
    """Count every queue: ready by priority, delayed, in flight, dead, oldest age."""
    stats = session(ctx).inspector().all_stats()
    _emit([{**asdict(s), "ready": s.ready} for s in stats], session(ctx).as_json)


@main.command()
@click.argument("task_id")
@click.pass_context
def find(ctx: click.Context, task_id: str) -> None:
    """Show where a task's message is (ready, delayed, in flight and whose, dead)."""
    found = session(ctx).inspector().find(task_id)
    if not found:
        raise click.ClickException(f"no message of task {task_id} is in the broker")
    _emit([asdict(m) for m in found], session(ctx).as_json)


@main.command()
@click.argument("task_id")
@click.pass_context
def remove(ctx: click.Context, task_id: str) -> None:
    """Delete a task's waiting message (a durable revoke)."""
    results = session(ctx).inspector().remove(task_id)
    if not results:
        raise click.ClickException(f"no message of task {task_id} is in the broker")
    _emit([{"queue": q, "outcome": o, "detail": d} for q, o, d in results], session(ctx).as_json)


@main.command()
@click.pass_context
def consumers(ctx: click.Context) -> None:
    """List consuming channels with their last heartbeat."""
    _emit([asdict(c) for c in session(ctx).inspector().consumers()], session(ctx).as_json)
