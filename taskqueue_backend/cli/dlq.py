"""``taskqueue dlq …`` (also ``celery -A proj dlq …``): the dead letters from a terminal."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar

import click

from ..dlq import REASONS, DeadLetters, Filter, InvalidRequest, Outcome
from . import output
from .session import json_option, session

F = TypeVar("F", bound=Callable[..., Any])
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w`` -> seconds."""
    found = _DURATION.match(text.strip().lower())
    if not found:
        raise click.BadParameter(f"{text!r} is not a duration such as 90s, 15m, 2h, 7d or 1w")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_time(text: str | None) -> float | None:
    """An ISO 8601 time (naive = UTC) or a duration meaning that long ago."""
    if text is None:
        return None
    if _DURATION.match(text.strip().lower()):
        return time.time() - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO 8601 time (2026-11-23T10:00) nor a duration (2h)"
        ) from None
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


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
        return Filter(
            queue=given.get("queue"),
            task_name=given.get("task_name"),
            reason=given.get("reason"),
            exc_type=given.get("exc_type"),
            text=given.get("text"),
            since=parse_time(given.get("since")),
            until=parse_time(given.get("until")),
        )
    except InvalidRequest as exc:
        raise click.UsageError(str(exc)) from None


def _dead_letters(ctx: click.Context) -> DeadLetters:
    s = session(ctx)
    s.load_result_backend()
    return DeadLetters(s.inspector())


def _report(ctx: click.Context, outcome: Outcome) -> None:
    if session(ctx).as_json:
        output.as_json(asdict(outcome))
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


def _bulk(
    ctx: click.Context, count: Callable[[], Outcome], run: Callable[..., Outcome],
    dry_run: bool, ask: bool, question: str, label: str,
) -> None:  # fmt: skip
    """Count first (a dry run reports only that), ask on a terminal unless told not to, then
    run with a progress bar (not with --json) and report."""
    try:
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
    except InvalidRequest as exc:
        raise click.UsageError(str(exc)) from None
    _report(ctx, outcome)


@click.group()
@json_option
def dlq() -> None:
    """Dead letters: list, show, stats, replay, delete, purge."""


@dlq.command("list")
@filter_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--cursor", help="Continue after the page that printed this cursor.")
@json_option
@click.pass_context
def list_(ctx: click.Context, limit: int, cursor: str | None, **given: Any) -> None:
    """List dead letters, newest first."""
    try:
        page = _dead_letters(ctx).page(make_filter(**given), limit=limit, cursor=cursor)
    except InvalidRequest as exc:
        raise click.UsageError(str(exc)) from None
    if session(ctx).as_json:
        output.as_json({"items": [asdict(e) for e in page.items], "next_cursor": page.next_cursor})
        return
    output.table(
        [(e.task_id or e.id, output.when(e.dead_at), e.queue, output.shorten(e.task_name, 32),
          e.reason, output.shorten(e.exc_type, 24), output.shorten(e.exc_message or e.detail, 40))
         for e in page.items],
        ("id", "died", "queue", "task", "reason", "exception", "message"),
    )  # fmt: skip
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")


@dlq.command()
@click.argument("ident")
@json_option
@click.pass_context
def show(ctx: click.Context, ident: str) -> None:
    """Everything about one dead letter (task id or message id), with its message."""
    entry = _dead_letters(ctx).get(ident)
    if entry is None:
        raise click.ClickException(f"no dead letter with id or task id {ident!r}")
    data = asdict(entry)
    if session(ctx).as_json:
        output.as_json(data)
        return
    data["dead_at"] = output.when(entry.dead_at)
    data["published_at"] = output.when(entry.published_at)
    output.pairs(data)


@dlq.command()
@json_option
@click.pass_context
def stats(ctx: click.Context) -> None:
    """Counts by queue, task, reason and exception; the oldest entry's age; retention trims."""
    found = _dead_letters(ctx).stats()
    if session(ctx).as_json:
        output.as_json(asdict(found))
        return
    click.echo(f"dead letters: {found.total} (oldest {output.age(found.oldest_age)})")
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
@click.option("--reason", "why", default="", help="Why (kept in the audit log).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def replay(
    ctx: click.Context, ids: tuple[str, ...], everything: bool, to_queue: str | None,
    rate: float | None, dry_run: bool, why: str, yes: bool, **given: Any,
) -> None:  # fmt: skip
    """Put dead letters back on their queue, body and priority unchanged.

    Name them by id (task or message id), by filter options, or with --all.
    """
    dead = _dead_letters(ctx)
    flt = make_filter(**given)
    _bulk(
        ctx,
        lambda: dead.replay(ids, flt, everything, to_queue=to_queue, dry_run=True),
        lambda progress: dead.replay(ids, flt, everything, to_queue=to_queue, rate=rate,
                                     reason=why, progress=progress),
        dry_run, not (yes or ids), "Replay {} dead letter(s)?", "replaying",
    )  # fmt: skip


@dlq.command()
@click.argument("ids", nargs=-1, required=True)
@click.option("--reason", "why", default="", help="Why (kept in the audit log).")
@json_option
@click.pass_context
def delete(ctx: click.Context, ids: tuple[str, ...], why: str) -> None:
    """Delete dead letters for good, by task or message id."""
    try:
        outcome = _dead_letters(ctx).delete(ids, reason=why)
    except InvalidRequest as exc:
        raise click.UsageError(str(exc)) from None
    _report(ctx, outcome)


@dlq.command()
@filter_options
@click.option("--older-than", help="Only entries that died longer ago than this (7d).")
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--reason", "why", default="", help="Why (kept in the audit log).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def purge(
    ctx: click.Context, older_than: str | None, everything: bool, dry_run: bool, why: str,
    yes: bool, **given: Any,
) -> None:  # fmt: skip
    """Delete every dead letter matching the filter options and/or --older-than (or --all)."""
    dead = _dead_letters(ctx)
    flt = make_filter(**given)
    age = parse_duration(older_than) if older_than else None
    _bulk(
        ctx,
        lambda: dead.purge(flt, older_than=age, everything=everything, dry_run=True),
        lambda progress: dead.purge(flt, older_than=age, everything=everything, reason=why,
                                    progress=progress),
        dry_run, not yes, "Delete {} dead letter(s) for good?", "purging",
    )  # fmt: skip
