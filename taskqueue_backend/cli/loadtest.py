"""``taskqueue loadtest``: publish N tasks to real workers and measure what the broker did.

A thin shell over ``taskqueue_backend.loadtest``: parse the options, run the load on this
package's transport (and, with ``--compare-stock``, on kombu's stock Redis transport under
another key prefix of the same Redis), show a progress bar on stderr while the tasks run,
then print the figures (or ``--json``) and write ``--json-report``. Exit code 1 when a task
was lost or ran twice, or the run could not be carried out; 2 for options that cannot work.
"""

from __future__ import annotations

import json
import random
import re
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import click
import redis
from kombu.utils.url import maybe_sanitize_url

from ..loadtest import LoadRun, LoadSpec, LoadtestConfig, LoadtestError, plan_tasks
from ..loadtest.app import OURS, STOCK, is_redis_url
from ..loadtest.report import document, render
from ..loadtest.stats import PlannedTask, summarize
from .session import json_option, reports_errors, session

_PRIORITY_PART = re.compile(r"^(\d+)(?:-(\d+))?$")
MAX_PRIORITY = 255


def parse_priorities(text: str) -> tuple[int, ...]:
    """``0-9``, ``0,5,9`` or ``0-2,7`` -> the sorted priority levels."""
    levels: set[int] = set()
    for part in text.replace(" ", "").split(","):
        found = _PRIORITY_PART.match(part)
        if not found:
            raise click.BadParameter(f"{text!r} is not a list of priorities such as 0-9, "
                                     "0,5,9 or 0-2,7")  # fmt: skip
        low = int(found.group(1))
        high = int(found.group(2) or low)
        if low > high or high > MAX_PRIORITY:
            raise click.BadParameter(f"{part!r}: priorities run from 0 to {MAX_PRIORITY}, "
                                     "low-high in that order")  # fmt: skip
        levels.update(range(low, high + 1))
    return tuple(sorted(levels))


def _broker_url(ctx: click.Context) -> str:
    found = session(ctx).broker_url
    if not found and session(ctx).app_name:
        found = str(session(ctx).celery_app().conf.broker_url or "")
    if not found:
        raise click.UsageError("no broker given: pass --broker-url redis://host:6379/0 before "
                               "`loadtest` (or set REDIS_URL)")  # fmt: skip
    if not is_redis_url(found):
        raise click.UsageError(f"loadtest needs a redis://, rediss:// or unix:// broker URL "
                               f"(it also reads its records and removes its keys with a plain "
                               f"Redis client), not {maybe_sanitize_url(found)}")  # fmt: skip
    client = redis.Redis.from_url(found, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise click.ClickException(f"cannot reach {maybe_sanitize_url(found)}: {exc}") from None
    finally:
        client.close()
    return found


def _announce(spec: LoadSpec, settings: dict[str, Any], plan: list[PlannedTask]) -> None:
    failing = sum(task.fail for task in plan)
    click.echo(
        f"taskqueue loadtest: {spec.tasks:,} tasks ({failing:,} to fail) from "
        f"{spec.publishers} publisher thread(s), priorities {settings['priorities_text']}, "
        f"duration {spec.duration:g} s, seed {spec.seed}; {spec.workers} worker(s) -P "
        f"{spec.pool} -c {spec.concurrency}, prefetch multiplier {spec.prefetch_multiplier}; "
        f"broker {settings['broker_url']} under {settings['key_prefix']}, result backend "
        f"{settings['result_backend'] or 'none'}",
        err=True,
    )


def _run_one(spec: LoadSpec, config: LoadtestConfig, plan: list[PlannedTask],
             log_dir: Path, quiet: bool) -> dict[str, Any]:  # fmt: skip
    with LoadRun(spec, config, plan, log_dir) as run:
        if not quiet:
            click.echo(f"{config.transport}: starting {spec.workers} worker(s)…", err=True)
        run.start_workers()
        label = f"{config.transport}: tasks finished"
        bar: Any = click.progressbar(length=len(plan), label=label, file=sys.stderr)
        with bar:
            complete = run.publish_and_wait(bar.update)
    figures = summarize(run.data())
    return {"transport": config.transport, "key_prefix": config.keyprefix,
            "timed_out": not complete, **figures}  # fmt: skip


@click.command()
@click.option(
    "-n",
    "--tasks",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="How many tasks to publish.",
)
@click.option(
    "--publishers", default=2, show_default=True, type=click.IntRange(1), help="Publishing threads."
)
@click.option(
    "--priorities",
    "priorities_text",
    default="0-9",
    show_default=True,
    help="Priorities drawn uniformly per task: 0-9, 0,5,9 or 0-2,7 (lower runs first).",
)
@click.option(
    "--failure-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of tasks that raise (each drawn independently).",
)
@click.option(
    "--duration",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds each task sleeps.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="celery worker processes to start.",
)
@click.option(
    "-c",
    "--concurrency",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="Pool size of each worker.",
)
@click.option(
    "-P",
    "--pool",
    default="prefork",
    show_default=True,
    type=click.Choice(["prefork", "threads", "solo"]),
    help="Each worker's pool.",
)
@click.option(
    "--prefetch-multiplier",
    default=4,
    show_default=True,
    type=click.IntRange(1),
    help="worker_prefetch_multiplier.",
)
@click.option(
    "--timeout",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds from the first publish after which unfinished tasks count as lost.",
)
@click.option(
    "--result-backend",
    default=None,
    help="A Celery result_backend URL (e.g. tq+sqlite:///r.db); default: none.",
)
@click.option(
    "--record-url", default=None, help="The Redis the tasks record into (default: the broker's)."
)
@click.option(
    "--compare-stock",
    is_flag=True,
    help="Run the same load on kombu's stock Redis transport too, and compare.",
)
@click.option(
    "--json-report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report as JSON to this file.",
)
@click.option("--seed", type=int, default=None, help="Seed of the drawn priorities and failures.")
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the workers' logs here (default: a temporary directory, removed).",
)
@json_option
@click.pass_context
@reports_errors
def loadtest(
    ctx: click.Context, tasks: int, publishers: int, priorities_text: str, failure_rate: float,
    duration: float, workers: int, concurrency: int, pool: str, prefetch_multiplier: int,
    timeout: float, result_backend: str | None, record_url: str | None, compare_stock: bool,
    json_report: Path | None, seed: int | None, log_dir: Path | None,
) -> None:  # fmt: skip
    """Run N tasks through real workers and print throughput, latency percentiles, priority
    inversions, lost and duplicate tasks and failures (the broker: --broker-url before it).

    With --compare-stock the same tasks run on kombu's stock Redis transport as well, on the
    same Redis under another key prefix, and both are printed side by side with ratios.
    Every key of the run is removed afterwards."""
    broker_url = _broker_url(ctx)
    if record_url and not is_redis_url(record_url):
        raise click.BadParameter("a redis://, rediss:// or unix:// URL", param_hint="--record-url")
    priorities = parse_priorities(priorities_text)
    quiet = session(ctx).as_json
    spec = LoadSpec(
        tasks=tasks, publishers=publishers, priorities=priorities, failure_rate=failure_rate,
        duration=duration, workers=workers, concurrency=concurrency, pool=pool,
        prefetch_multiplier=prefetch_multiplier, timeout=timeout,
        seed=seed if seed is not None else random.randrange(2**31),
    )  # fmt: skip
    plan = plan_tasks(spec)
    base_prefix = f"{session(ctx).keyprefix}tqload-{uuid.uuid4().hex[:10]}:"
    settings: dict[str, Any] = {
        "tasks": tasks, "publishers": publishers, "priorities": list(priorities),
        "priorities_text": priorities_text, "failure_rate": failure_rate,
        "duration_s": duration, "workers": workers, "concurrency": concurrency, "pool": pool,
        "prefetch_multiplier": prefetch_multiplier, "timeout_s": timeout, "seed": spec.seed,
        "broker_url": maybe_sanitize_url(broker_url), "key_prefix": base_prefix,
        "result_backend": maybe_sanitize_url(result_backend) if result_backend else None,
        "record_url": maybe_sanitize_url(record_url) if record_url else None,
    }  # fmt: skip
    if not quiet:
        _announce(spec, settings, plan)
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tq-loadtest-") as scratch:
        logs = log_dir or Path(scratch)
        logs.mkdir(parents=True, exist_ok=True)
        for transport in (OURS, STOCK) if compare_stock else (OURS,):
            config = LoadtestConfig(
                broker_url=broker_url, transport=transport,
                keyprefix=f"{base_prefix}{transport}:", result_backend=result_backend,
                record_url=record_url, prefetch_multiplier=prefetch_multiplier,
                max_priority=max(priorities), publishers=publishers,
            )  # fmt: skip
            try:
                runs[transport] = _run_one(spec, config, plan, logs, quiet)
            except LoadtestError as exc:
                raise click.ClickException(str(exc)) from None
    report = document(settings, runs)
    if json_report is not None:
        json_report.write_text(json.dumps(report, indent=2) + "\n")
    if quiet:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in render(report):
            click.echo(line)
        if json_report is not None:
            click.echo(f"JSON report: {json_report}")
    broken = [f"{name}: {run['lost']} lost, {run['duplicates']} duplicate(s)"
              for name, run in runs.items() if run["lost"] or run["duplicates"]]  # fmt: skip
    if broken:
        click.echo("taskqueue loadtest: " + "; ".join(broken), err=True)
        ctx.exit(1)
