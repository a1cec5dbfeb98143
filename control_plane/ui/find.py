"""Finding a task or a dead letter by its id: ``/find?id=…``, the search box in the header of
every page. A task id, or a unique start of one, opens the task's page; a dead letter's own id
opens its entry. Otherwise the page says why not — nothing has that id, or the start of an id
names several tasks (404 and 409, as the API answers) — with the search box holding what was
typed."""

from __future__ import annotations

from typing import Any

from flask import g, redirect, render_template, request, url_for

from taskqueue_backend.operations import Conflict, NotFound
from taskqueue_backend.operations.tasks import MIN_PREFIX

from .blueprint import bp
from .session import page

#: longer than any task or message id (the API takes ids of at most 255 characters)
LONGEST = 255


@bp.get("/find")
@page("viewer")
def find() -> Any:
    typed = request.args.get("id", "")
    ident = typed.strip()
    if not ident:
        return _unopened(typed, f"Give a task id, the start of one (at least {MIN_PREFIX} "
                                "characters), or a dead letter's id.", 400)  # fmt: skip
    if "\x00" in ident or len(ident) > LONGEST:
        return _unopened(typed, f"An id is at most {LONGEST} characters and holds no NUL "
                                "character.", 400)  # fmt: skip
    try:
        task_id = g.ops.tasks.resolve(ident)
    except Conflict as exc:
        return _unopened(typed, f"{exc}.", 409)
    except NotFound:
        # not a task's id: perhaps a dead letter's own (its message id)
        entry = g.ops.dead_letters.find(ident) if g.ops.has_broker else None
        if entry is not None:
            return redirect(url_for("ui.dead_letter", ident=entry.id))
        shown = ident.rstrip("…").rstrip(".")
        hint = (f" Give at least {MIN_PREFIX} characters to look an id up by its start."
                if len(shown) < MIN_PREFIX else "")  # fmt: skip
        return _unopened(typed, f"Nothing has the id {shown!r}: it is neither a task's id nor "
                                f"the start of one, nor a dead letter's id.{hint}",
                         404)  # fmt: skip
    return redirect(url_for("ui.task", task_id=task_id))


TITLES = {400: "Give an id", 404: "Not found", 409: "Ambiguous id"}


def _unopened(typed: str, message: str, status: int) -> Any:
    """The page saying why nothing was opened, the search box holding what was typed."""
    return render_template("ui/find.html", message=message, title=TITLES[status],
                           status=status, typed=typed), status  # fmt: skip
