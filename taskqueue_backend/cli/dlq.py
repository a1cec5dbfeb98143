"""``taskqueue dlq …`` (also ``celery -A proj dlq …``): the dead letters from a terminal.

``--reason`` always filters by why a message died; ``--note`` is the text an operator leaves
in the audit log and the tasks' history.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..operations import REASONS, Filter, InvalidRequest, Outcome, parsing
from ..operations.dead_letters import DeadLetters
from . import output
from .options import parse_deadline, parse_duration
from .session import json_option, ops, page_options, reports_errors, session

F = TypeVar("F", bound=Callable[..., Any])


def filter_options(command: F) -> F:
    for decorator in reversed([
        click.option("--queue", help="Queue (wildcards allowed)."),
        click.option("--task", "task_name", help="Task name (wildcards allowed: proj.billing.*)."),
        click.option("--reason", type=click.Choice(REASONS), help="Why the message died."),
        click.option("--exception", "exc_type", help="Exception class, with or without module."),
        click.option("--text", help="Case-insensitive text in the args, kwargs or exception."),
        click.option("--since", help="Died at or after: ISO time, or a duration ago (2h)."),
        click.option("--until", help="Died at or before: ISO time, or a duration ago (30m)."),
    ]):  # fmt: skip
        command = decorator(command)
    return command


def make_filter(**given: Any) -> Filter:
    try:
        return parsing.dead_letter_filter(
            queue=given.get("queue"), task=given.get("task_name"), reason=given.get("reason"),
            exception=given.get("exc_type"), text=given.get("text"), since=given.get("since"),
            until=given.get("until"),
        )  # fmt: skip
    except InvalidRequest as exc:
        raise click.UsageError(str(exc)) from None


def _dead_letters(ctx: click.Context) -> DeadLetters:
    return ops(ctx).dead_letters


def _report(ctx: click.Context, outcome: Outcome) -> None:
    if session(ctx).as_json:
        output.as_json(outcome)
        return
    verb = {"replay": "replayed", "delete": "deleted", "purge": "purged"}[outcome.action]
    if outcome.dry_run:
        target = f" to queue {outcome.to_queue}" if outcome.to_queue else ""
        click.echo(f"dry run: {outcome.matched} dead letter(s) would be {verb}{target}")
        return
    line = f"{verb} {outcome.done} of {outcome.matched} dead letter(s)"
    if outcome.to_queue:
        line += f" to queue {outcome.to_queue}"
    if outcome.skipped:
        line += f"; {outcome.skipped} were gone or taken by another operator meanwhile"
    click.echo(line)
    if outcome.action == "replay" and outcome.done and ops(ctx).results is None:
        click.echo("note: no result store was given, so the replayed tasks' results were not "
                   "reopened (pass -A proj or --database-url)")  # fmt: skip


def _bulk(
    ctx: click.Context, count: Callable[[], Outcome], run: Callable[..., Outcome],
    dry_run: bool, ask: bool, question: str, label: str,
) -> None:  # fmt: skip
    """Count first (a dry run reports only that), ask on a terminal unless told not to, then
    run with a progress bar (not with --json) and report."""
    counted = count()
    if dry_run:
        _report(ctx, counted)
        return
    interactive = not session(ctx).as_json and sys.stdin.isatty()
    if ask and interactive:
        click.confirm(question.format(counted.matched), abort=True)
    if session(ctx).as_json or counted.matched < 2:
        outcome = run(progress=None)
    else:
        bar: Any = click.progressbar(length=counted.matched, label=label, file=sys.stderr)
        with bar:
            outcome = run(progress=bar.update)
    _report(ctx, outcome)


@click.group()
@json_option
def dlq() -> None:
    """Dead letters: list, show, stats, replay, delete, purge."""


@dlq.command("list")
@filter_options
@page_options
@json_option
@click.pass_context
@reports_errors
def list_(ctx: click.Context, limit: int, cursor: str | None, **given: Any) -> None:
    """List dead letters, newest first."""
    page = _dead_letters(ctx).page(make_filter(**given), limit=limit, cursor=cursor)
    if session(ctx).as_json:
        output.as_json(page)
        return
    output.table(
        [(e.task_id or e.id, output.when(e.dead_at), e.queue, output.shorten(e.task_name, 32),
          e.reason, e.replays, output.shorten(e.exc_type, 24),
          output.shorten(e.exc_message or e.detail, 40)) for e in page.items],
        ("task id", "died", "queue", "task", "reason", "replays", "exception", "message"),
        empty="(no dead letters match)",
    )  # fmt: skip
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")


@dlq.command()
@click.argument("ident")
@json_option
@click.pass_context
@reports_errors
def show(ctx: click.Context, ident: str) -> None:
    """Everything about one dead letter (task or message id, or a unique prefix)."""
    entry = _dead_letters(ctx).get(ident)
    if session(ctx).as_json:
        output.as_json(entry)
        return
    data = dict(entry.__dict__)
    data["dead_at"] = output.when(entry.dead_at)
    data["published_at"] = output.when(entry.published_at)
    output.pairs(data)


@dlq.command()
@json_option
@click.pass_context
@reports_errors
def stats(ctx: click.Context) -> None:
    """Counts by queue, task, reason and exception; the oldest entry's age; retention trims."""
    found = _dead_letters(ctx).stats()
    if session(ctx).as_json:
        output.as_json(found)
        return
    click.echo(f"dead letters: {found.total} (oldest {output.duration(found.oldest_age)} old)")
    if found.replaying:
        click.echo(f"being replayed: {found.replaying}")
    for title, counts in (("queue", found.by_queue), ("task", found.by_task),
                          ("reason", found.by_reason), ("exception", found.by_exception),
                          ("trimmed by retention (queue)", found.trimmed)):  # fmt: skip
        if counts:
            click.echo("")
            output.table(counts.items(), (title, "count"))


@dlq.command()
@click.argument("ids", nargs=-1)
@filter_options
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter.")
@click.option("--to-queue", help="Replay into this queue instead of the original one.")
@click.option("--rate", type=float, help="At most this many messages per second.")
@click.option("--dry-run", is_flag=True, help="Only count what would be replayed.")
@click.option(
    "--expires",
    "new_expiry",
    help="A new expiry for the replayed tasks: a duration from now (1h) or a time.",
)
@click.option("--clear-expiry", is_flag=True, help="Replay the tasks without an expiry.")
@click.option("--note", default="", help="Why (kept in the audit log and the tasks' history).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
@reports_errors
def replay(
    ctx: click.Context, ids: tuple[str, ...], everything: bool, to_queue: str | None,
    rate: float | None, dry_run: bool, new_expiry: str | None, clear_expiry: bool, note: str,
    yes: bool, **given: Any,
) -> None:  # fmt: skip
    """Put dead letters back on their queue, body and priority unchanged.

    Name them by id (task or message id, or a unique prefix), by filter options, or --all.
    Tasks whose expiry passed are refused unless --expires or --clear-expiry is given.
    """
    dead = _dead_letters(ctx)
    flt = make_filter(**given)
    expires = parse_deadline(new_expiry)
    _bulk(
        ctx,
        lambda: dead.replay(ids, flt, everything, to_queue=to_queue, dry_run=True,
                            expires=expires, clear_expiry=clear_expiry),
        lambda progress: dead.replay(ids, flt, everything, to_queue=to_queue, rate=rate,
                                     reason=note, progress=progress, expires=expires,
                                     clear_expiry=clear_expiry),
        dry_run, not (yes or ids), "Replay {} dead letter(s)?", "replaying",
    )  # fmt: skip


@dlq.command()
@click.argument("ids", nargs=-1, required=True)
@click.option("--note", default="", help="Why (kept in the audit log and the tasks' history).")
@json_option
@click.pass_context
@reports_errors
def delete(ctx: click.Context, ids: tuple[str, ...], note: str) -> None:
    """Delete dead letters for good, by task or message id (or a unique prefix)."""
    _report(ctx, _dead_letters(ctx).delete(ids, reason=note))


@dlq.command()
@filter_options
@click.option("--older-than", help="Only entries that died longer ago than this (7d).")
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--note", default="", help="Why (kept in the audit log and the tasks' history).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
@reports_errors
def purge(
    ctx: click.Context, older_than: str | None, everything: bool, dry_run: bool, note: str,
    yes: bool, **given: Any,
) -> None:  # fmt: skip
    """Delete every dead letter matching the filter options and/or --older-than (or --all)."""
    dead = _dead_letters(ctx)
    flt = make_filter(**given)
    age = parse_duration(older_than) if older_than else None
    _bulk(
        ctx,
        lambda: dead.purge(flt, older_than=age, everything=everything, dry_run=True),
        lambda progress: dead.purge(flt, older_than=age, everything=everything, reason=note,
                                    progress=progress),
        dry_run, not yes, "Delete {} dead letter(s) for good?", "purging",
    )  # fmt: skip
