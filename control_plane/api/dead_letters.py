"""``/api/v1/dlq``: list, count, show, replay, delete and purge dead letters."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import g

from taskqueue_backend.operations import Filter, parsing

from . import models as m
from .security import requires

bp = APIBlueprint("dead_letters", __name__, url_prefix="/api/v1", tag="Dead letters")


def dead_letter_filter(given: m.DeadLetterFilter | None) -> Filter | None:
    if given is None:
        return None
    return parsing.dead_letter_filter(given.queue, given.task, given.reason, given.exception,
                                      given.text, given.since, given.until)  # fmt: skip


@bp.get("/dlq")
@requires("viewer")
@bp.input(m.DeadLetterQuery, location="query")
@bp.output(m.DeadLetterPage)
def list_dead_letters(query_data: m.DeadLetterQuery) -> Any:
    """Dead letters, newest first (cursor pagination)."""
    page = g.ops.dead_letters.page(dead_letter_filter(query_data), limit=query_data.limit,
                                   cursor=query_data.cursor)  # fmt: skip
    return {"items": page.items, "next_cursor": page.next_cursor}


@bp.get("/dlq/stats")
@requires("viewer")
@bp.input(m.DeadLetterStatsQuery, location="query")
@bp.output(m.DeadLetterStatsOut)
def dead_letter_stats(query_data: m.DeadLetterStatsQuery) -> Any:
    """Counts by queue, task name, reason and exception type; the oldest age; retention trims.
    With ``scan_limit``, the counts by task, reason and exception cover the newest entries
    only (``scanned`` says how many)."""
    return g.ops.dead_letters.stats(query_data.scan_limit)


@bp.get("/dlq/<ident>")
@requires("viewer")
@bp.output(m.DeadLetterOut)
@bp.doc(responses=[404])
def get_dead_letter(ident: str) -> Any:
    """One dead letter (task id, message id or a unique prefix), with its stored message."""
    return g.ops.dead_letters.get(ident)


@bp.post("/dlq/<ident>/replay")
@requires("operator")
@bp.input(m.ReplayOneIn, location="json")
@bp.output(m.OutcomeOut)
@bp.doc(responses=[404])
def replay_dead_letter(ident: str, json_data: m.ReplayOneIn) -> Any:
    """Put one dead letter back on its queue (or ``to_queue``), body and priority unchanged
    (a task whose expiry passed needs ``expires`` or ``clear_expiry``)."""
    body = json_data
    return g.ops.dead_letters.replay([ident], to_queue=body.to_queue, expires=body.expires,
                                     clear_expiry=body.clear_expiry,
                                     reason=body.reason)  # fmt: skip


@bp.post("/dlq/replay")
@requires("operator")
@bp.input(m.ReplayIn, location="json")
@bp.output(m.OutcomeOut)
@bp.doc(responses=[404, 422])
def replay_dead_letters(json_data: m.ReplayIn) -> Any:
    """Replay dead letters by ids, by a filter, or all; optionally to another queue, at a
    rate, or as a dry run that only counts."""
    body = json_data
    return g.ops.dead_letters.replay(body.ids, dead_letter_filter(body.filter), body.all,
                                     to_queue=body.to_queue, rate=body.rate,
                                     dry_run=body.dry_run, expires=body.expires,
                                     clear_expiry=body.clear_expiry,
                                     reason=body.reason)  # fmt: skip


@bp.delete("/dlq/<ident>")
@requires("admin")
@bp.input(m.ReasonIn, location="query")
@bp.output(m.OutcomeOut)
@bp.doc(responses=[404])
def delete_dead_letter(ident: str, query_data: m.ReasonIn) -> Any:
    """Delete one dead letter for good."""
    return g.ops.dead_letters.delete([ident], reason=query_data.reason)


@bp.post("/dlq/purge")
@requires("admin")
@bp.input(m.PurgeIn, location="json")
@bp.output(m.OutcomeOut)
@bp.doc(responses=[422])
def purge_dead_letters(json_data: m.PurgeIn) -> Any:
    """Delete every dead letter matching the filter and/or older than ``older_than`` seconds
    (or all); ``dry_run`` only counts."""
    body = json_data
    return g.ops.dead_letters.purge(dead_letter_filter(body.filter), older_than=body.older_than,
                                    everything=body.all, dry_run=body.dry_run,
                                    reason=body.reason)  # fmt: skip
