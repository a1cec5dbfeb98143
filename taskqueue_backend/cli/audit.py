"""``taskqueue audit``: the operators' audit log — who did what to which task, queue, dead
letter or worker, and why — newest first, with the filters of the admin UI's audit page."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from ..operations import AuditEntry, AuditQuery
from . import output
from .options import parse_time
from .session import json_option, ops, page_options, reports_errors, session


def _time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    return parse_time(value)


def _detail(entry: AuditEntry) -> str:
    """What else the entry holds (counts, filters...); role and outcome have columns."""
    rest = {k: v for k, v in entry.detail.items() if k not in ("role", "outcome")}
    return json.dumps(rest, default=str) if rest else ""


def _actor(entry: AuditEntry) -> str:
    role = entry.detail.get("role")
    return f"{entry.actor} ({role})" if role else entry.actor


@click.command()
@click.option("--actor", help="Only this actor (user@host, or an API token's name).")
@click.option("--action", help="An action (dlq.replay), or a prefix ending in a dot (dlq.).")
@click.option("--target", help="Case-insensitive text in the target (task id, queue...).")
@click.option("--since", callback=_time, help="At or after: ISO time, or a duration ago (2h).")
@click.option("--until", callback=_time, help="At or before: ISO time, or a duration ago (30m).")
@page_options
@json_option
@click.pass_context
@reports_errors
def audit(
    ctx: click.Context, actor: str | None, action: str | None, target: str | None,
    since: datetime | None, until: datetime | None, limit: int, cursor: str | None,
) -> None:  # fmt: skip
    """List the audit log, newest first: every change made through the CLI, the API and the
    UI (and every refused one), with who made it and why."""
    page = ops(ctx).audit.entries(AuditQuery(actor, action, target, since, until), limit=limit,
                                  cursor=cursor)  # fmt: skip
    if session(ctx).as_json:
        output.as_json(page)
        return
    rows: list[tuple[Any, ...]] = [
        (output.when(e.at), _actor(e), e.action, output.shorten(e.target, 40),
         output.shorten(e.reason, 30), e.detail.get("outcome") or "-",
         output.shorten(_detail(e), 50)) for e in page.items
    ]  # fmt: skip
    output.table(rows, ("at (utc)", "actor", "action", "target", "reason", "outcome", "detail"),
                 empty="(no audit entry matches)")  # fmt: skip
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")
