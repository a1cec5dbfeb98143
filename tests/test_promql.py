"""The PromQL reader of ``tests.support.promql``, which the deployment tests use to list the
metric names an alert rule, a dashboard panel or a scaler query reads: which identifiers are
series (not functions, keywords, label names, durations or Grafana variables), what it refuses,
how it lexes, and how it tells a histogram's series from its family. Then
``unexported_names``, which sets those names against the sample names an exporter served.
"""

from __future__ import annotations

import pytest

from tests.support.exported_metrics import unexported_names
from tests.support.promql import (
    PromQLSyntaxError,
    metric_names,
    split_histogram_suffix,
    tokens,
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum by (queue, priority) (taskqueue_queue_ready_messages{queue=~"$queue"})',
         {"taskqueue_queue_ready_messages"}),
        ("sum(rate(a_total[5m])) by (job) / sum without (instance) (b)", {"a_total", "b"}),
        ('histogram_quantile(0.95, sum by (le) (rate(h_bucket{task=~"$task"}[$__rate_interval])))',
         {"h_bucket"}),
        ('(c == 0) and on (queue) (m{state="ready"} > 0) unless on(queue) (p == 1)',
         {"c", "m", "p"}),
        ("x * ignoring(code) group_left(team) y + on(a) group_right z", {"x", "y", "z"}),
        ("max_over_time(x[1h:5m]) @ start() > 1e3 and y offset -5m or z > bool 0x1F",
         {"x", "y", "z"}),
        ('label_replace(vector(1), "dst", "$1", "src", "(.*)")', set()),
        ('count_values("version", build_info) > Inf or NaN', {"build_info"}),
        ('{__name__="up", job="a{b}"} == 0  # not_a_metric in a comment', {"up"}),
        ('{__name__=~"up|down"}', set()),
        ("increase(trimmed_total[15m]) > 1_000", {"trimmed_total"}),
        ("metric:recorded:rate5m offset 1d", {"metric:recorded:rate5m"}),
    ],
)  # fmt: skip
def test_metric_names_keeps_only_the_series_an_expression_selects(
    expr: str, names: set[str]
) -> None:
    assert metric_names(expr) == names


@pytest.mark.parametrize("expr", ["sum(rate(x[5m])", "x{a='b'", "x]", "x ; y"])
def test_metric_names_refuses_what_it_cannot_read(expr: str) -> None:
    with pytest.raises(PromQLSyntaxError):
        metric_names(expr)


def test_the_lexer_reads_strings_durations_and_variables_as_single_tokens() -> None:
    assert tokens('rate(x{a="}]"}[1h30m]) ${datasource}') == [
        ("name", "rate"), ("operator", "("), ("name", "x"), ("operator", "{"), ("name", "a"),
        ("operator", "="), ("string", '"}]"'), ("operator", "}"), ("operator", "["),
        ("duration", "1h30m"), ("operator", "]"), ("operator", ")"),
        ("variable", "${datasource}"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "split"),
    [("h_bucket", ("h", "_bucket")), ("h_sum", ("h", "_sum")), ("h_count", ("h", "_count")),
     ("h_total", ("h_total", "")), ("_count", ("_count", ""))],
)  # fmt: skip
def test_split_histogram_suffix(name: str, split: tuple[str, str]) -> None:
    assert split_histogram_suffix(name) == split


def test_unexported_names_knows_histogram_series_and_counters() -> None:
    # what an exporter serves for a histogram h, counters c_total and d, and a gauge g
    served = {"h_bucket", "h_sum", "h_count", "h_created", "c_total", "d_total", "g"}
    assert unexported_names("rate(h_bucket[1m]) + h_sum + h_count + c_total + d_total + g",
                            served) == set()  # fmt: skip
    assert unexported_names("h + g_bucket + c + typo_total", served) == {
        "h", "g_bucket", "c", "typo_total"}  # fmt: skip
