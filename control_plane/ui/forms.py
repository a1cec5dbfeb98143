"""What the admin UI's pages read from requests, and how its actions confirm and report.

Filters come from the query string and are validated by the same models as the API's query
parameters (``control_plane.api.models``), so a page and its API route accept the same
filters; empty form fields mean "any", and times without a zone are UTC. A value the page
cannot take is named with what it takes instead, and the page answers 400. Destructive actions
go through ``confirmation``: the first POST shows what would happen (the dry-run count) and
asks for a reason; the second, with ``confirmed=1``, acts. Outcomes and refusals are flashed
on the page the action came from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from flask import flash, g, redirect, render_template, request, url_for
from pydantic import BaseModel, ValidationError
from werkzeug.wrappers import Response

from .session import safe_next

M = TypeVar("M", bound=BaseModel)
#: form fields that are not part of the action's own fields
CONTROL_FIELDS = frozenset({"csrf_token", "reason", "confirmed", "typed"})


#: what a refused time should look like
TIME_HINT = ("not a time: give one such as 2026-05-01T12:00:00 (UTC) or a duration ago such as "
             "90s, 15m, 2h, 7d")  # fmt: skip


def _message(error: Any) -> str:
    """pydantic's message for a refused value, as a person reads it."""
    if str(error["type"]).startswith(("datetime", "date_")):
        return TIME_HINT
    return str(error["msg"]).removeprefix("Value error, ")


def query(model: type[M]) -> tuple[M, dict[str, str]]:
    """``model`` from the query string (empty fields dropped), and the fields it refused
    (field name -> message); a refused field is left at its default. A field the model does
    not have, or a value holding a NUL, is refused before the model sees it, so the message
    names the field."""
    given = {k: v.strip() for k, v in request.args.items() if v.strip()}
    errors: dict[str, str] = {}
    takes = ", ".join(model.model_fields)
    for name in list(given):
        if name not in model.model_fields:
            errors[name] = f"not a filter of this page (it takes {takes})"
        elif "\x00" in given[name]:
            errors[name] = "holds a NUL character, which no value may hold"
        else:
            continue
        del given[name]
    while True:
        try:
            found = model.model_validate(given)
            break
        except ValidationError as exc:
            bad = {str(e["loc"][0]) if e["loc"] else "": _message(e) for e in exc.errors()}
            errors.update(bad)
            if not set(bad) & set(given):
                found = model()
                break
            given = {k: v for k, v in given.items() if k not in bad}
    for name, value in found:
        if isinstance(value, datetime) and value.tzinfo is None:
            setattr(found, name, value.replace(tzinfo=UTC))
    return found, errors


def args_without(*names: str) -> dict[str, Any]:
    """The current query string as a dict, without ``names`` (for page links)."""
    return {k: v for k, v in request.args.items() if k not in names and v.strip()}


def reason() -> str:
    return (request.form.get("reason") or "").strip()[:500]


def confirmed() -> bool:
    return request.form.get("confirmed") == "1"


def back(default: str = "ui.overview", **values: Any) -> str:
    """Where the action came from (a ``back`` field of this site), else ``default``."""
    return safe_next(request.form.get("back")) if request.form.get("back") else url_for(
        default, **values)  # fmt: skip


def done(message: str, target: str) -> Response:
    flash(message, "ok")
    return redirect(target, code=303)


def refused(message: str, target: str, status: int = 422) -> Response:
    """An action the operation refused: said on the page it came from, and audited."""
    g.refused = (status, message)
    flash(message, "error")
    return redirect(target, code=303)


def confirmation(
    title: str, message: str, *, button: str, count: int | None = None,
    typed: str | None = None, error: str | None = None, danger: bool = True,
) -> tuple[str, int]:  # fmt: skip
    """The confirmation page of the action this request posted: it posts the same fields
    again with a reason (required) and ``confirmed=1``; ``typed`` must be typed to confirm."""
    fields = [(k, v) for k, v in request.form.items(multi=True) if k not in CONTROL_FIELDS]
    page = render_template(
        "ui/confirm.html", title=title, message=message, button=button, count=count,
        typed=typed, error=error, danger=danger, fields=fields, action=request.path,
        cancel=back(), given_reason=reason(),
    )  # fmt: skip
    return page, 400 if error else 200


def unconfirmed(title: str, message: str, **options: Any) -> tuple[str, int] | None:
    """The confirmation page while this action is not confirmed yet — with a reason, and the
    ``typed`` text when there is one (400 with what is missing when the confirmation lacks
    it); None once it is, and the action may go ahead."""
    if not confirmed():
        return confirmation(title, message, **options)
    typed = options.get("typed")
    if typed is not None and (request.form.get("typed") or "").strip() != typed:
        return confirmation(title, message, error=f"Type {typed} to confirm.", **options)
    if not reason():
        return confirmation(title, message, error="Give a reason: it is kept in the audit log.",
                            **options)  # fmt: skip
    return None
