"""Reading the JSON body of an API request, with errors that say what was wrong.

Before any view runs, the body of a request to ``/api/v1`` that carries one is read here:

- no body at all is an empty object (every field of such a body is optional);
- a body that is not JSON by its content type is 415, naming the type to send;
- a body that is not valid JSON is 400 with the parser's reason and position;
- a body nested deeper than ``MAX_DEPTH`` is 400 (arguments are never that deep, and a
  deeper one could exhaust the parser or what runs the task);
- a body that is not a JSON object is 400 (every body of the API is one).

A query parameter given twice is 400 too: every parameter of the API takes one value (lists
are comma-separated), so a repeat would otherwise be dropped without a word.

The parsed value is what the views' input models then validate (``request.get_json``).
"""

from __future__ import annotations

import json
from typing import Any

from apiflask import abort
from flask import Flask, g, request

MAX_DEPTH = 64
JSON_TYPES = ("application/json",)


def depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def refuse_repeated_parameters() -> None:
    if not request.path.startswith("/api/"):
        return
    for name, given in request.args.lists():
        if len(given) > 1:
            g.input_error = True
            abort(400, f"query parameter {name!r} is given {len(given)} times; give it once "
                  "(a list is comma-separated)")  # fmt: skip


def read_json_body() -> None:
    if not request.path.startswith("/api/") or request.method not in ("POST", "PUT", "PATCH"):
        return
    raw = request.get_data(cache=True)
    if not raw.strip():
        data: Any = {}
    else:
        if request.mimetype not in JSON_TYPES:
            g.input_error = True
            abort(415, f"send the body as JSON (Content-Type: application/json), not "
                  f"{request.mimetype or 'without a content type'}")  # fmt: skip
        try:
            data = json.loads(raw)
        except RecursionError:
            g.input_error = True
            abort(400, f"the JSON body is nested deeper than {MAX_DEPTH} levels")
        except (ValueError, UnicodeDecodeError) as exc:
            g.input_error = True
            abort(400, f"the body is not valid JSON: {exc}")
        if depth(data) > MAX_DEPTH:
            g.input_error = True
            abort(400, f"the JSON body is nested deeper than {MAX_DEPTH} levels")
        if not isinstance(data, dict):
            g.input_error = True
            kind = {list: "an array", str: "a string", bool: "a boolean"}.get(
                type(data), "a number"
            )
            abort(400, f"the body must be a JSON object, not {'null' if data is None else kind}")
    request._cached_json = (data, data)  # what get_json() returns, silent or not


def install(app: Flask) -> None:
    app.before_request(refuse_repeated_parameters)
    app.before_request(read_json_body)
