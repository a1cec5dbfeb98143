"""``taskqueue workers`` (the worker registry) and ``taskqueue status TASK_ID``."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import click

from ..dlq import DeadLetters, InvalidRequest
from ..workers import WorkerRegistry
from . import output
from .session import json_option, session


@click.group(invoke_without_command=True)
@click.option("--online", "online_only", is_flag=True, help="Leave offline workers out.")
@json_option
@click.pass_context
def workers(ctx: click.Context, online_only: bool) -> None:
    """List workers: online, stale (missed its window) or offline (gone)."""
    if ctx.invoked_subcommand is not None:
        return
    found = WorkerRegistry(session(ctx).inspector()).workers(include_offline=not online_only)
    if session(ctx).as_json:
        output.as_json([asdict(w) for w in found])
        return
    now = time.time()
    output.table(
        [(w.hostname or w.consumer_id, w.state, w.pid or "-", ",".join(w.queues) or "-",
          w.concurrency or "-", "-" if w.active is None else w.active,
          "-" if w.processed is None else w.processed, w.failed,
          output.age(None if w.last_heartbeat is None else now - w.last_heartbeat),
          (f"{w.offline_reason}, returned {w.returned}" if w.state == "offline" else ""))
         for w in found],
        ("worker", "state", "pid", "queues", "conc", "active", "processed", "failed",
         "last beat", "offline"),
    )  # fmt: skip


@workers.command()
@click.argument("ident")
@click.option("--reason", "why", default="", help="Why (kept in the audit log).")
@json_option
@click.pass_context
def forget(ctx: click.Context, ident: str, why: str) -> None:
    """Remove an offline worker (node name or consumer id) from views and metrics."""
    try:
        gone = WorkerRegistry(session(ctx).inspector()).forget(ident, reason=why)
    except InvalidRequest as exc:
        raise click.ClickException(str(exc)) from None
    if session(ctx).as_json:
        output.as_json({"forgotten": gone})
    else:
        click.echo(f"forgot {len(gone)} offline consumer(s) of {ident}")


@workers.command()
@json_option
@click.pass_context
def recover(ctx: click.Context) -> None:
    """Return the messages of every stale worker now (live workers also do it by themselves)."""
    done = WorkerRegistry(session(ctx).inspector()).recover_stale()
    rows = [{"consumer": r.consumer_id, "returned": len(r.returned),
             "dead_lettered": len(r.dead_lettered)} for r in done]  # fmt: skip
    if session(ctx).as_json:
        output.as_json(rows)
    else:
        output.table([tuple(r.values()) for r in rows], ("consumer", "returned", "dead_lettered"))


def _backend_view(app: Any, task_id: str) -> dict[str, Any] | None:
    """The result and history of a task, when the app uses this package's result backend."""
    if app is None or not str(app.conf.result_backend or "").startswith("tq+"):
        return None
    backend = app.backend
    row = backend.store.read(task_id)
    history = backend.task_history(task_id)
    if row is None and not history:
        return None
    result = dict(row._mapping) if row is not None else {}
    result.pop("result", None)  # encoded payload: shown through AsyncResult by the app
    return {"result": result, "history": history}


@click.command()
@click.argument("task_id")
@json_option
@click.pass_context
def status(ctx: click.Context, task_id: str) -> None:
    """Where a task is and what happened to it: its broker message(s), dead letter, and (with
    ``-A`` and this package's result backend) its result and history."""
    s = session(ctx)
    inspector = s.inspector()
    broker = [asdict(m) for m in inspector.find(task_id)]
    dead = DeadLetters(inspector).get(task_id)
    backend = _backend_view(s.celery_app(), task_id)
    if not broker and backend is None:
        raise click.ClickException(
            f"the broker knows nothing about task {task_id}"
            + ("" if s.celery_app() else " (pass -A proj to look in the result backend too)")
            + ("" if s.celery_app() is None else ", nor does the result backend")
        )
    if s.as_json:
        dead_letter = asdict(dead) if dead else None
        output.as_json({"task_id": task_id, "broker": broker, "dead_letter": dead_letter,
                        "backend": backend})  # fmt: skip
        return
    for location in broker:
        click.echo(f"broker: {location['state']} in queue {location['queue']} "
                   f"(deliveries {location['deliveries']}"
                   + (f", owner {location['owner']}" if location["owner"] else "")
                   + (f", reason {location['reason']}: {location['detail']}"
                      if location["reason"] else "") + ")")  # fmt: skip
    if backend is not None:
        result = backend["result"]
        if result:
            click.echo(f"result: {result.get('state')} ({result.get('name') or '?'}) on "
                       f"{result.get('worker') or '-'}")  # fmt: skip
        for event in backend["history"]:
            click.echo(f"  {event['at']}  {event['event']:<20} {event.get('worker') or '-'}  "
                       f"{json_text(event.get('detail'))}")  # fmt: skip


def json_text(value: Any) -> str:
    import json

    return "" if not value else json.dumps(value, default=str)
