"""Dead-letter pages: ``/dlq`` (entries filtered by queue, task, reason, exception, text and
time, newest first; counts by queue, task, reason and exception) and ``/dlq/<id>`` (one entry
with its message and traceback). Operators replay selected entries or every match, to their
queue or another; admins delete and purge. Each action shows its dry-run count, asks for a
reason and a confirmation, then reports what it did."""

from __future__ import annotations

from typing import Any

from flask import g, render_template, request, url_for
from pydantic import ValidationError

from taskqueue_backend.operations import REASONS, Conflict, Filter, InvalidRequest, NotFound

from ..api import models as m
from ..api.dead_letters import dead_letter_filter
from . import forms
from .blueprint import bp
from .session import page

FILTER_FIELDS = ("queue", "task", "reason", "exception", "text", "since", "until")
#: the page counts by task, reason and exception over this many newest entries (totals and
#: counts per queue are exact whatever the size of the dead letters)
STATS_SCAN = 10_000


@bp.get("/dlq")
@page("viewer")
def dead_letters() -> Any:
    given, errors = forms.query(m.DeadLetterQuery)
    flt = dead_letter_filter(given)
    try:
        found = g.ops.dead_letters.page(flt, limit=given.limit, cursor=given.cursor)
    except InvalidRequest as exc:
        errors["cursor" if given.cursor else "query"] = str(exc)
        found = g.ops.dead_letters.page(flt, limit=given.limit)
    next_url = None
    if found.next_cursor:
        next_url = url_for("ui.dead_letters", **forms.args_without("cursor"),
                           cursor=found.next_cursor)  # fmt: skip
    first_url = url_for("ui.dead_letters", **forms.args_without("cursor")) \
        if given.cursor else None  # fmt: skip
    filtered = {k: v for k, v in forms.args_without("cursor", "limit").items()
                if k in FILTER_FIELDS}  # fmt: skip
    return render_template(
        "ui/dlq.html", section="dlq", page=found, stats=g.ops.dead_letters.stats(STATS_SCAN),
        given=given, errors=errors, reasons=REASONS, filtered=filtered, next_url=next_url,
        first_url=first_url,
    ), 400 if errors else 200  # fmt: skip


@bp.get("/dlq/<ident>")
@page("viewer")
def dead_letter(ident: str) -> str:
    return render_template("ui/dead_letter.html", section="dlq",
                           entry=g.ops.dead_letters.get(ident))  # fmt: skip


def _posted_filter() -> Filter | None:
    """The filter of the list an action was taken on (``f_*`` fields), as the API reads it."""
    given = {k[2:]: v.strip() for k, v in request.form.items() if k.startswith("f_") and v.strip()}
    try:
        return dead_letter_filter(m.DeadLetterFilter.model_validate(given)) if given else None
    except ValidationError as exc:
        wrong = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
        raise InvalidRequest(f"the list's filter is not valid ({wrong}): filter it again") from None


def _selection() -> tuple[list[str] | None, Filter | None, bool, str]:
    """What an action applies to: the ticked ids, or every entry matching the list's filter
    (all entries when the list was not filtered), and a description of it."""
    if request.form.get("scope") == "matching":
        flt = _posted_filter()
        if flt is None:
            return None, None, True, "every dead letter"
        return None, flt, False, "every dead letter matching the list's filter"
    ids = [i for i in request.form.getlist("ids") if i.strip()]
    if not ids:
        raise InvalidRequest("tick the dead letters to act on, or choose all matching")
    return ids, None, False, f"{len(ids):,} selected dead letter(s)"


def _expiry() -> dict[str, Any]:
    """The replay's new expiry: minutes from now (``expires_minutes``), or ``clear_expiry``."""
    minutes = (request.form.get("expires_minutes") or "").strip()
    clear = request.form.get("clear_expiry") == "1"
    if not minutes:
        return {"clear_expiry": clear}
    try:
        value = float(minutes)
    except ValueError:
        raise InvalidRequest(f"the new expiry must be minutes from now, not {minutes!r}") from None
    return {"expires": value * 60, "clear_expiry": clear}


@bp.post("/dlq/replay")
@page("operator")
def replay_dead_letters() -> Any:
    here = forms.back("ui.dead_letters")
    to_queue = (request.form.get("to_queue") or "").strip() or None
    try:
        ids, flt, everything, what = _selection()
        expiry = _expiry()
        dry = g.ops.dead_letters.replay(ids, flt, everything, to_queue=to_queue, dry_run=True,
                                        **expiry)  # fmt: skip
    except (InvalidRequest, NotFound) as exc:
        return forms.refused(str(exc), here)
    title = "Replay dead letters"
    where = f"to queue {to_queue}" if to_queue else "each to the queue it died on"
    message = (f"Puts {what} back, {where}, with its priority and body unchanged; each "
               "task's result is reopened and its history continues.")  # fmt: skip
    if expiry.get("expires"):
        message += f" Each expires {expiry['expires'] / 60:g} minute(s) from now."
    elif expiry["clear_expiry"]:
        message += " None of them expires."
    page = forms.unconfirmed(title, message, button="Replay", count=dry.matched, danger=False)
    if page is not None:
        return page
    try:
        outcome = g.ops.dead_letters.replay(ids, flt, everything, to_queue=to_queue,
                                            reason=forms.reason(), **expiry)  # fmt: skip
    except (Conflict, InvalidRequest, NotFound) as exc:
        return forms.refused(str(exc), here)
    skipped = f" ({outcome.skipped:,} taken by someone else meanwhile)" if outcome.skipped else ""
    return forms.done(f"Replayed {outcome.done:,} of {outcome.matched:,} dead letter(s){skipped}.",
                      here)  # fmt: skip


@bp.post("/dlq/delete")
@page("admin")
def delete_dead_letters() -> Any:
    here = forms.back("ui.dead_letters")
    try:
        ids, flt, everything, what = _selection()
        if ids is None:
            dry = g.ops.dead_letters.purge(flt, everything=everything, dry_run=True)
        else:
            dry = None
    except (InvalidRequest, NotFound) as exc:
        return forms.refused(str(exc), here)
    count = dry.matched if dry is not None else len(ids or [])
    title = "Delete dead letters"
    message = f"Deletes {what} for good: they can no longer be replayed."
    page = forms.unconfirmed(title, message, button="Delete", count=count)
    if page is not None:
        return page
    try:
        if ids is not None:
            outcome = g.ops.dead_letters.delete(ids, reason=forms.reason())
        else:
            outcome = g.ops.dead_letters.purge(flt, everything=everything, reason=forms.reason())
    except (Conflict, InvalidRequest, NotFound) as exc:
        return forms.refused(str(exc), here)
    return forms.done(f"Deleted {outcome.done:,} of {outcome.matched:,} dead letter(s).", here)
