"""The metric names a PromQL expression reads, without a Prometheus to parse it.

``metric_names`` lexes the expression and keeps the identifiers that stand for series: it drops
string literals, comments, label matchers (``{...}``, though ``__name__="x"`` inside one names a
metric), range and subquery brackets (``[5m]``, ``[1h:1m]``), grouping and matching clauses
(``by``/``without``/``on``/``ignoring``/``group_left``/``group_right`` with their label lists),
calls (functions and aggregations, ``sum by (x) (...)`` included), keywords and operators,
numbers and durations, and Grafana's template variables (``$queue``, ``${datasource}``,
``$__rate_interval``). Names come back as written: ``split_histogram_suffix`` tells a
histogram's ``_bucket``/``_sum``/``_count`` series from its family name.
"""

from __future__ import annotations

import re

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

#: words that are never metric names where they stand (binary operators and modifiers)
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
#: clauses followed by a parenthesised label list that names no metric
LABEL_LIST_CLAUSES = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

_DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
_TOKEN = re.compile(
    rf"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<variable>\$\{{[^}}]*\}}|\$\w+|\[\[\w+(?::\w+)?\]\])
    | (?P<duration>{_DURATION})(?![\w.])
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_:][\w:]*)
    | (?P<operator>=~|!~|!=|==|>=|<=|[-+*/%^=<>@,(){{}}\[\]:])
    """,
    re.VERBOSE,
)


class PromQLSyntaxError(ValueError):
    """The expression has a character or bracket this lexer cannot place."""


def tokens(expr: str) -> list[tuple[str, str]]:
    """``(kind, text)`` pairs of ``expr``, whitespace and comments left out."""
    found: list[tuple[str, str]] = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise PromQLSyntaxError(
                f"unexpected {expr[position]!r} at offset {position} in {expr!r}"
            )
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            found.append((kind, match.group()))
        position = match.end()
    return found


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects, as written (``x_bucket`` stays ``x_bucket``)."""
    items = tokens(expr)
    names: set[str] = set()
    depth = {"{": 0, "[": 0, "(": 0}
    closing = {"}": "{", "]": "[", ")": "("}
    label_list_until = -1  # the paren depth at which a clause's label list ends
    for index, (kind, text) in enumerate(items):
        following = items[index + 1] if index + 1 < len(items) else ("", "")
        if kind == "operator" and text in depth:
            depth[text] += 1
            continue
        if kind == "operator" and text in closing:
            depth[closing[text]] -= 1
            if depth[closing[text]] < 0:
                raise PromQLSyntaxError(f"unbalanced {text!r} in {expr!r}")
            if text == ")" and depth["("] == label_list_until:
                label_list_until = -1
            continue
        if label_list_until >= 0 or depth["["]:
            continue  # label names of by(...)/on(...), durations of [5m] and [1h:1m]
        if depth["{"]:
            # {__name__="x"}: an exact name given as a matcher; other matchers name labels
            if text == "__name__" and items[index + 1 : index + 2] == [("operator", "=")]:
                value = items[index + 2] if index + 2 < len(items) else ("", "")
                if value[0] == "string":
                    names.add(value[1][1:-1])
            continue
        if kind != "name":
            continue
        lowered = text.lower()
        if lowered in LABEL_LIST_CLAUSES:
            if following == ("operator", "("):
                label_list_until = depth["("]
            continue
        if lowered in KEYWORDS:
            continue
        if following == ("operator", "("):
            continue  # a function or an aggregation: sum(...)
        if following[0] == "name" and following[1].lower() in ("by", "without"):
            continue  # an aggregation with its grouping first: sum by (x) (...)
        names.add(text)
    if any(depth.values()):
        raise PromQLSyntaxError(f"unbalanced brackets in {expr!r}")
    return names


def split_histogram_suffix(name: str) -> tuple[str, str]:
    """``("x", "_bucket")`` for ``x_bucket`` (likewise ``_sum``, ``_count``), else ``(name, "")``.

    Only a caller that knows the families can say whether ``x`` is a histogram: a gauge may be
    named ``..._count`` too."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return name, ""
