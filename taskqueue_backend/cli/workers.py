"""``taskqueue workers`` (the worker registry): list, recover the stale, forget the gone."""

from __future__ import annotations

import click

from ..vocabulary import WorkerState, values
from . import output
from .session import json_option, ops, reports_errors, session


@click.group(invoke_without_command=True)
@click.option("--status", type=click.Choice(values(WorkerState)),
              help="Only workers in this state.")  # fmt: skip
@click.option("--online", "online_only", is_flag=True, help="Leave offline workers out.")
@json_option
@click.pass_context
@reports_errors
def workers(ctx: click.Context, status: str | None, online_only: bool) -> None:
    """List worker processes: online, stale (missed its window) or offline (gone)."""
    if ctx.invoked_subcommand is not None:
        return
    found = ops(ctx).workers.all(status)
    if online_only:
        found = [w for w in found if w.state != "offline"]
    if session(ctx).as_json:
        output.as_json(found)
        return
    output.table(
        [(w.hostname or "-", w.consumer_id, w.state, w.pid or "-", ",".join(w.queues) or "-",
          w.concurrency or "-", "-" if w.active is None else w.active,
          "-" if w.processed is None else w.processed, w.failed, output.ago(w.last_heartbeat),
          (f"{w.offline_reason}, returned {w.returned}" if w.state == "offline" else ""))
         for w in found],
        ("worker", "consumer id", "state", "pid", "queues", "conc", "active", "processed",
         "failed", "last beat", "offline"),
        empty="(no worker has registered)",
    )  # fmt: skip


@workers.command()
@click.argument("ident")
@click.option("--note", default="", help="Why (kept in the audit log).")
@json_option
@click.pass_context
@reports_errors
def forget(ctx: click.Context, ident: str, note: str) -> None:
    """Remove an offline worker (node name or consumer id) from views and metrics."""
    gone = ops(ctx).workers.forget(ident, reason=note)
    if session(ctx).as_json:
        output.as_json({"forgotten": gone})
    else:
        click.echo(f"forgot {len(gone)} offline consumer(s) of {ident}: {', '.join(gone)}")


@workers.command()
@click.option("--note", default="", help="Why (kept in the audit log).")
@json_option
@click.pass_context
@reports_errors
def recover(ctx: click.Context, note: str) -> None:
    """Return the messages of every stale worker now (live workers also do it by themselves)."""
    done = ops(ctx).workers.recover_stale(reason=note)
    if session(ctx).as_json:
        output.as_json(done)
        return
    output.table([(r.consumer_id, len(r.returned), len(r.dead_lettered)) for r in done],
                 ("consumer", "returned", "dead-lettered"),
                 empty="(no stale worker)")  # fmt: skip
