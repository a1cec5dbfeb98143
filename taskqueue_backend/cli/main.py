"""The ``taskqueue`` root group and the queue and task commands.

Every command is a thin shell: parse the options, call the operations layer, print a table
(or ``--json``).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ..operations import MessageLocation, QueueStats, parsing
from ..vocabulary import TaskState, values
from . import output
from .session import Session, json_option, ops, page_options, reports_errors, session

TASK_STATES = values(TaskState)


class PluggableGroup(click.Group):
    """The root group, plus the commands other installed parts add through the
    ``taskqueue.commands`` entry point group (the control plane's), imported only when run."""

    def _plugins(self) -> dict[str, Any]:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group="taskqueue.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugins()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name)
        if found is None and name in self._plugins():
            loaded = self._plugins()[name].load()
            return loaded if isinstance(loaded, click.Command) else None
        return found


@click.group(cls=PluggableGroup)
@click.option("--broker-url", envvar="REDIS_URL", help="Broker URL (default: $REDIS_URL).")
@click.option("--keyprefix", default="", help="The broker's global_keyprefix, if any.")
@click.option("--database-url", envvar="DATABASE_URL",
              help="Result store URL, e.g. postgresql+psycopg://user@host/db "
                   "(default: $DATABASE_URL).")  # fmt: skip
@click.option("--table-prefix", default=None, help="Result tables' prefix (default: tq_).")
@click.option("-A", "--app", "app", default=None,
              help="A Celery app (module:app): its broker and result store.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def main(
    ctx: click.Context, broker_url: str | None, keyprefix: str, database_url: str | None,
    table_prefix: str | None, app: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Inspect and operate the taskqueue broker, its dead letters, workers and result store."""
    earlier = ctx.meta.get("taskqueue.session")  # a subcommand's --json may have come first
    ctx.obj = Session(broker_url, keyprefix, database_url, table_prefix, app,
                      as_json or bool(earlier and earlier.as_json))  # fmt: skip


def location_rows(found: list[MessageLocation]) -> list[tuple[Any, ...]]:
    return [
        (m.queue, m.state, m.priority if m.priority is not None else "-", m.deliveries,
         m.replays, output.when(m.published_at),
         output.due(m.due_at) if m.state == "delayed" else "-",
         m.owner or "-", output.shorten(m.reason and f"{m.reason}: {m.detail}", 40))
        for m in found
    ]  # fmt: skip


LOCATION_HEADERS = ("queue", "state", "priority", "deliveries", "replays", "published", "due",
                    "owner", "reason")  # fmt: skip


def _by_priority(stats: QueueStats) -> str:
    return " ".join(f"{p}:{n}" for p, n in stats.ready_by_priority.items()) or "-"


@main.group(invoke_without_command=True)
@json_option
@click.pass_context
@reports_errors
def queues(ctx: click.Context) -> None:
    """Count every queue: ready by priority, delayed, in flight, dead, consumers, oldest age."""
    if ctx.invoked_subcommand is not None:
        return
    found = ops(ctx).queues.all()
    if session(ctx).as_json:
        output.as_json(found)
        return
    output.table(
        [(s.queue, s.ready, _by_priority(s), s.delayed, output.due(s.next_due_at), s.inflight,
          s.dead, s.consumers, output.duration(s.oldest_ready_age),
          "paused" if s.paused else "") for s in found],
        ("queue", "ready", "by priority", "delayed", "next due", "in flight", "dead",
         "consumers", "oldest ready", ""),
        empty="(no queue holds anything)",
    )  # fmt: skip


@queues.command("purge")
@click.argument("queue")
@click.option("--keep-delayed", is_flag=True, help="Keep the ETA/countdown tasks.")
@click.option("--note", default="", help="Why (kept in the audit log).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
@reports_errors
def purge_queue(ctx: click.Context, queue: str, keep_delayed: bool, note: str, yes: bool) -> None:
    """Delete a queue's waiting messages (ready, and delayed unless --keep-delayed).

    Messages in flight stay with their workers; dead letters stay for `taskqueue dlq`."""
    waiting = ops(ctx).queues.purge(queue, include_delayed=not keep_delayed, dry_run=True)
    if not yes and not session(ctx).as_json and sys.stdin.isatty():
        click.confirm(f"Delete {waiting} waiting message(s) of queue {queue}?", abort=True)
    gone = ops(ctx).queues.purge(queue, include_delayed=not keep_delayed, reason=note)
    if session(ctx).as_json:
        output.as_json({"queue": queue, "purged": gone, "include_delayed": not keep_delayed})
    else:
        click.echo(f"purged {gone} waiting message(s) of queue {queue}")


@queues.command("pause")
@click.argument("queue")
@click.option("--note", default="", help="Why (kept in the audit log).")
@json_option
@click.pass_context
@reports_errors
def pause_queue(ctx: click.Context, queue: str, note: str) -> None:
    """Stop every consumer from leasing from QUEUE (durable) until it is resumed."""
    changed = ops(ctx).queues.pause(queue, reason=note)
    if session(ctx).as_json:
        output.as_json({"queue": queue, "paused": True, "changed": changed})
    else:
        click.echo(f"paused queue {queue}" if changed else f"queue {queue} was paused already")


@queues.command("resume")
@click.argument("queue")
@click.option("--note", default="", help="Why (kept in the audit log).")
@json_option
@click.pass_context
@reports_errors
def resume_queue(ctx: click.Context, queue: str, note: str) -> None:
    """Let consumers lease from QUEUE again."""
    changed = ops(ctx).queues.resume(queue, reason=note)
    if session(ctx).as_json:
        output.as_json({"queue": queue, "paused": False, "changed": changed})
    else:
        click.echo(f"resumed queue {queue}" if changed else f"queue {queue} was not paused")


@main.command()
@click.argument("task_id")
@json_option
@click.pass_context
@reports_errors
def find(ctx: click.Context, task_id: str) -> None:
    """Show where a task's message is (ready, delayed, in flight and whose, dead).

    TASK_ID may be a unique prefix of the id."""
    full = ops(ctx).tasks.resolve(task_id)
    found = ops(ctx).queues.find(full)
    if not found:
        raise click.ClickException(f"no message of task {full} is in the broker (it may have "
                                   "finished: see `taskqueue status`)")  # fmt: skip
    if session(ctx).as_json:
        output.as_json(found)
        return
    click.echo(f"task {full}")
    output.table(location_rows(found), LOCATION_HEADERS)


@main.command()
@click.argument("task_id")
@click.option("--note", default="", help="Why (kept in the audit log and the task's history).")
@json_option
@click.pass_context
@reports_errors
def remove(ctx: click.Context, task_id: str, note: str) -> None:
    """Delete a task's waiting message so it never runs (a durable revoke).

    The result store records it as REVOKED, with a history row naming who did it. A message
    in flight is left to its worker (use `celery control revoke`)."""
    outcome = ops(ctx).queues.remove(task_id, reason=note)
    if session(ctx).as_json:
        output.as_json(outcome)
        return
    for m in outcome.removed:
        click.echo(f"removed task {outcome.task_id} from queue {m.queue} (it was {m.state})")
    for m in outcome.in_flight:
        click.echo(f"task {outcome.task_id} is in flight in queue {m.queue}, held by {m.owner}: "
                   "left to its worker (revoke it with `celery control revoke`)")  # fmt: skip
    for m in outcome.dead:
        click.echo(f"task {outcome.task_id} is a dead letter of queue {m.queue}: left as it is "
                   "(see `taskqueue dlq delete`)")  # fmt: skip
    if outcome.removed:
        click.echo("result store: REVOKED, with a history row" if outcome.result_revoked else
                   "result store: not given, so the result was not marked REVOKED")  # fmt: skip


@main.command()
@json_option
@click.pass_context
@reports_errors
def consumers(ctx: click.Context) -> None:
    """List live consumers (one per worker process) with their last heartbeat."""
    found = [w for w in ops(ctx).workers.all() if w.state != "offline"]
    if session(ctx).as_json:
        output.as_json(found)
        return
    output.table(
        [(w.consumer_id, w.hostname or "-", w.pid or "-", ",".join(w.queues) or "-", w.state,
          output.ago(w.last_heartbeat)) for w in found],
        ("consumer", "worker", "pid", "queues", "state", "last beat"),
        empty="(no live consumer)",
    )  # fmt: skip


@main.command()
@click.option(
    "--state",
    "states",
    multiple=True,
    help=f"Result state (repeatable, or comma-separated): {', '.join(TASK_STATES)}.",
)
@click.option("--name", help="Task name (wildcards allowed: proj.billing.*).")
@click.option("--queue", help="Queue it was delivered from.")
@click.option("--worker", help="Worker node name that ran it.")
@click.option("--since", help="At or after: ISO time, or a duration ago (2h).")
@click.option("--until", help="At or before: ISO time, or a duration ago (30m).")
@click.option("--text", help="Text in the exception, or in the JSON args/kwargs.")
@click.option(
    "--sort",
    type=click.Choice(["updated", "received", "finished"]),
    default="updated",
    show_default=True,
    help="The time to order (and bound with --since/--until) by.",
)
@page_options
@json_option
@click.pass_context
@reports_errors
def tasks(
    ctx: click.Context, states: tuple[str, ...], name: str | None, queue: str | None,
    worker: str | None, since: str | None, until: str | None, text: str | None, sort: str,
    limit: int, cursor: str | None,
) -> None:  # fmt: skip
    """List results from the result store, newest first."""
    query = parsing.task_query([s.upper() for s in states], name, queue, worker, since, until,
                               text, sort)  # fmt: skip
    page = ops(ctx).tasks.search(query, limit=limit, cursor=cursor)
    if session(ctx).as_json:
        output.as_json(page)
        return
    output.table(
        [(r.task_id, r.state, output.shorten(r.name, 32), r.queue or "-", r.worker or "-",
          output.when(getattr(r, query.sort)), output.shorten(r.exception_message, 30))
         for r in page.items],
        ("task id", "state", "task", "queue", "worker", sort, "exception"),
        empty="(no result matches)",
    )  # fmt: skip
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")
