"""``taskqueue loadtest``: the figures it computes (percentiles, priority inversions, lost and
duplicate tasks) on crafted records, and a real run of the command against both transports
that loses nothing, fails what it was asked to fail, compares, and leaves no key behind."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from itertools import permutations
from pathlib import Path

import click
import pytest
import redis

from taskqueue_backend.cli.loadtest import parse_priorities
from taskqueue_backend.loadtest import (
    LoadSpec,
    PlannedTask,
    RunData,
    TaskTiming,
    count_inversions,
    percentiles,
    plan_tasks,
    summarize,
)
from tests.support import REPO_ROOT, delete_keys_containing

TASKQUEUE = Path(sys.executable).with_name("taskqueue")


def brute_force_inversions(tasks: list[TaskTiming]) -> int:
    """The definition, pair by pair: j better than i, published before i started, started
    after i started."""
    return sum(
        1
        for i, j in permutations(tasks, 2)
        if j.priority < i.priority and j.published_at < i.started_at < j.started_at
    )


# -- percentiles -----------------------------------------------------------------------------


def test_percentiles_are_nearest_rank_with_the_maximum() -> None:
    assert percentiles(float(v) for v in range(100, 0, -1)) == {
        "p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0,
    }  # fmt: skip
    assert percentiles([3.0, 1.0, 2.0, 10.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]) == {
        "p50": 5.0, "p95": 10.0, "p99": 10.0, "max": 10.0,
    }  # fmt: skip
    assert percentiles([7.5]) == {"p50": 7.5, "p95": 7.5, "p99": 7.5, "max": 7.5}


def test_percentiles_of_nothing_are_none_not_zero() -> None:
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}


# -- priority inversions ---------------------------------------------------------------------


def test_counts_exactly_the_better_tasks_waiting_when_a_worse_one_started() -> None:
    worse = TaskTiming(priority=5, published_at=0.0, started_at=10.0)
    waiting_better = [TaskTiming(p, 1.0 + p, 11.0 + p) for p in (0, 1, 2, 3, 4, 4, 0)]
    not_inversions = [
        TaskTiming(0, 10.5, 10.8),  # published after the worse one started
        TaskTiming(0, 2.0, 9.0),  # better, but started before the worse one
        TaskTiming(5, 3.0, 20.0),  # waiting, but of the same priority
        TaskTiming(7, 4.0, 21.0),  # waiting, but of a worse priority
    ]
    tasks = [worse, *waiting_better, *not_inversions]
    assert brute_force_inversions(tasks) == len(waiting_better) == 7

    assert count_inversions(tasks) == 7


def test_a_task_published_after_another_started_is_not_an_inversion() -> None:
    first = TaskTiming(priority=9, published_at=0.0, started_at=1.0)
    later_better = TaskTiming(priority=0, published_at=1.5, started_at=2.0)

    assert count_inversions([first, later_better]) == 0
    # the same better task published just before the worse one started is one
    assert count_inversions([first, TaskTiming(0, 0.5, 2.0)]) == 1


def test_strict_priority_order_has_no_inversion() -> None:
    """Everything published at once, then run best priority first, FIFO within one."""
    tasks = [TaskTiming(p, 0.0, 1.0 + rank) for rank, p in enumerate(sorted([3, 0, 9, 0, 5, 3]))]

    assert count_inversions(tasks) == 0
    assert count_inversions(list(reversed(tasks))) == 0  # the order of the input does not matter


def test_matches_the_pairwise_definition_on_random_runs() -> None:
    draw = random.Random(7)
    for _ in range(30):
        tasks = []
        for _ in range(draw.randrange(1, 80)):
            published = draw.uniform(0, 10)
            tasks.append(TaskTiming(draw.randrange(4), published, published + draw.uniform(0, 5)))
        assert count_inversions(tasks) == brute_force_inversions(tasks)


def test_a_start_recorded_at_the_publish_time_counts_as_just_after_it() -> None:
    worse = TaskTiming(priority=3, published_at=0.0, started_at=2.0)
    same_instant = TaskTiming(priority=0, published_at=1.0, started_at=1.0)  # a coarse clock

    assert count_inversions([worse, same_instant]) == 0


# -- one run's figures -----------------------------------------------------------------------


def test_lost_duplicates_failures_and_rates_from_records() -> None:
    plan = [PlannedTask(0, 0, False), PlannedTask(1, 9, True), PlannedTask(2, 0, False),
            PlannedTask(3, 5, True)]  # fmt: skip
    published_at = [100.0, 100.5, 101.0, 101.5]

    def record(seq: int, started: float, finished: float) -> dict[str, object]:
        return {"seq": seq, "priority": plan[seq].priority, "fail": plan[seq].fail,
                "published_at": published_at[seq], "started_at": started,
                "finished_at": finished, "pid": 10 + seq % 2}  # fmt: skip

    records = [
        record(1, 102.0, 102.5),  # the worse task first: task 2 (priority 0) was waiting
        record(0, 103.0, 103.5),
        record(2, 104.0, 104.0),
        record(2, 105.0, 105.0),  # delivered twice
    ]  # task 3 never ran
    figures = summarize(RunData(plan, published_at, 100.0, 102.0, records))

    assert figures["published"] == 4
    assert figures["fail_requested"] == 2
    assert (figures["finished"], figures["failed"]) == (3, 1)
    assert (figures["lost"], figures["duplicates"]) == (1, 1)
    assert figures["throughput_tasks_per_s"] == pytest.approx(3 / 4.0)  # 100.0 -> 104.0
    assert figures["publish_rate_per_s"] == pytest.approx(4 / 2.0)
    assert figures["queue_wait_ms"]["max"] == pytest.approx(3000.0)
    assert figures["end_to_end_ms"]["p50"] == pytest.approx(3000.0)
    assert figures["inversions"] == 2  # tasks 0 and 2 were waiting when task 1 started
    assert figures["inversions_per_1000"] == pytest.approx(2000 / 3)
    assert figures["worker_processes"] == 2


def test_priorities_are_ranges_and_lists() -> None:
    assert parse_priorities("0-9") == tuple(range(10))
    assert parse_priorities("0, 5,9") == (0, 5, 9)
    assert parse_priorities("7,0-2") == (0, 1, 2, 7)
    for wrong in ("9-0", "a-b", "0-256", ""):
        with pytest.raises(click.BadParameter):
            parse_priorities(wrong)


# -- the command, end to end -----------------------------------------------------------------

RUN_FIELDS = {
    "transport", "key_prefix", "timed_out", "published", "fail_requested", "finished", "failed",
    "lost", "duplicates", "throughput_tasks_per_s", "publish_rate_per_s", "wall_seconds",
    "publish_seconds", "end_to_end_ms", "queue_wait_ms", "inversions", "inversions_per_1000",
    "worker_processes",
}  # fmt: skip


@pytest.mark.timeout(120)
def test_loadtest_against_both_transports_loses_nothing_and_cleans_up(
    redis_url: str, keyprefix: str, tmp_path: Path
) -> None:
    report_path = tmp_path / "report.json"
    seed, tasks, failure_rate = 20261206, 150, 0.1
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    done = subprocess.run(
        [str(TASKQUEUE), "--broker-url", redis_url, "--keyprefix", keyprefix, "loadtest",
         "-n", str(tasks), "--workers", "1", "-c", "2", "--failure-rate", str(failure_rate),
         "--priorities", "0-9", "--publishers", "2", "--seed", str(seed), "--timeout", "60",
         "--compare-stock", "--json-report", str(report_path)],
        capture_output=True, text=True, timeout=110, cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    try:
        left = sorted(client.scan_iter(match=f"*{keyprefix}*", count=1000))
    finally:
        delete_keys_containing(client, keyprefix)
        client.close()

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text())
    assert set(report) == {"settings", "runs", "ratios"}
    assert set(report["runs"]) == {"taskqueue", "stock"}
    drawn = plan_tasks(LoadSpec(tasks, 2, tuple(range(10)), failure_rate, 0.0, 1, 2, "prefork",
                                4, 60.0, seed))  # fmt: skip
    asked_to_fail = sum(task.fail for task in drawn)
    assert 0 < asked_to_fail < tasks / 4
    for name, run in report["runs"].items():
        assert set(run) == RUN_FIELDS, name
        assert run["key_prefix"].startswith(keyprefix)
        assert (run["published"], run["finished"]) == (tasks, tasks), name
        assert (run["lost"], run["duplicates"], run["timed_out"]) == (0, 0, False), name
        assert run["fail_requested"] == run["failed"] == asked_to_fail, name
        assert run["throughput_tasks_per_s"] > 0 and run["publish_rate_per_s"] > 0
        assert set(run["end_to_end_ms"]) == set(run["queue_wait_ms"]) == {"p50", "p95", "p99",
                                                                          "max"}  # fmt: skip
        assert 0 <= run["queue_wait_ms"]["p50"] <= run["end_to_end_ms"]["max"]
    assert report["ratios"]["throughput_tasks_per_s"] > 0
    assert report["ratios"]["end_to_end_ms_p99"] > 0
    assert report["settings"]["seed"] == seed

    lines = done.stdout.splitlines()
    header = next(line for line in lines if "taskqueue" in line and "stock" in line)
    assert header.split()[-1] == "ratio"
    throughput = next(line for line in lines if line.startswith("throughput"))
    assert throughput.endswith("x")
    assert any(line.startswith("priority inversions") for line in lines)
    assert "ratio > 1 favours taskqueue" in done.stdout
    assert left == [], "the run left keys behind"
