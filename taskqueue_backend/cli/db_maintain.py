"""``taskqueue db maintain``: the history's partitions made ahead, rows waiting in the default
partition moved into theirs, and what is past the retention dropped (``backend.partitions``).

Run it from cron or a Kubernetes CronJob (daily is enough with the default seven partitions
ahead); workers that migrate on first use make the partitions ahead too, and Celery beat's
``backend_cleanup`` runs the same maintenance. Settings come from the ``-A`` app
(``taskqueue_history_*``), then from the options.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import click

from ..operations import to_json
from . import output
from .database import _connected, _database_options, _database_target, backend_settings, db
from .session import json_option, session

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta | None:
    """``30d``, ``36h``, ``90m``, ``3600`` (seconds), ``2w``; ``none`` keeps everything."""
    if text.strip().lower() in ("none", "forever", "off"):
        return None
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None or float(found.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration: expected e.g. 30d, 36h, 90m, "
                                 "3600 (seconds) or none")  # fmt: skip
    return timedelta(seconds=float(found.group(1)) * _UNIT_SECONDS[found.group(2)])


@db.command("maintain")
@_database_options
@click.option("--partition", "period", type=click.Choice(["daily", "weekly", "monthly"]),
              default=None, help="Time one partition holds (default: the app's "
              "taskqueue_history_partition, else daily).")  # fmt: skip
@click.option("--ahead", type=click.IntRange(min=0), default=None,
              help="Partitions made ahead of the current one (default: the app's, "
              "else 7).")  # fmt: skip
@click.option("--retention", default=None, metavar="DURATION",
              help="Drop history older than this, a partition at a time: 30d, 36h, none "
              "(default: the app's taskqueue_history_retention, else none).")  # fmt: skip
@click.option("--lock-timeout", type=click.FloatRange(min=0.001), default=0.5,
              show_default=True, help="Seconds a step waits for its lock (three tries) "
              "before it is left for the next run.")  # fmt: skip
@json_option
@click.pass_context
def db_maintain(
    ctx: click.Context, url: str | None, prefix: str | None, schema: str | None,
    period: str | None, ahead: int | None, retention: str | None, lock_timeout: float,
) -> None:  # fmt: skip
    """Make the history's partitions ahead and drop those past the retention."""
    from sqlalchemy.exc import DBAPIError

    from ..backend.migrate import current
    from ..backend.partitions import HistoryPartitions, Policy
    from ..backend.periods import Period
    from ..backend.schema import tables_for

    target = _database_target(ctx, url, prefix, schema)
    policy = Policy.from_settings(backend_settings(ctx))
    changes: dict[str, Any] = {"lock_timeout": lock_timeout}
    if period is not None:
        changes["period"] = Period(period)
    if ahead is not None:
        changes["ahead"] = ahead
    if retention is not None:
        changes["retention"] = parse_duration(retention)
    policy = Policy(**{**policy.__dict__, **changes})
    with _connected(target) as engine:
        if current(engine, target.prefix, target.schema) is None:
            raise click.ClickException(f"{target.describe()}: no tables yet; "
                                       "`taskqueue db upgrade` creates them")  # fmt: skip
        tables = tables_for(engine.dialect.name, target.prefix, target.schema)
        try:
            report = HistoryPartitions(engine, tables, policy).maintain()
        except (DBAPIError, ValueError) as exc:
            problem = getattr(exc, "orig", None) or exc
            raise click.ClickException(f"{target.describe()}: maintenance stopped: {problem} "
                                       "(the steps done before it are kept)") from exc  # fmt: skip
    if session(ctx).as_json:
        output.as_json({**target.as_dict(), **to_json(report)})
        return
    _describe(target.describe(), report, policy)
    if report.skipped and report.partitioned:
        raise click.ClickException(f"{target.describe()}: {report.skipped}")


def _describe(where: str, report: Any, policy: Any) -> None:
    if report.skipped:
        click.echo(f"{where}: {report.skipped}")
        return
    kept = "kept for ever"
    if report.cutoff is not None:
        kept = f"kept from {report.cutoff:%Y-%m-%d %H:%M:%S} UTC on"
    if not report.partitioned:
        click.echo(f"{where}: a flat history table (SQLite); history {kept}; "
                   f"{report.deleted_rows} older row(s) deleted")  # fmt: skip
        return
    click.echo(f"{where}: {report.partitions} history partition(s), {policy.period.value}, "
               f"{policy.ahead} ahead; history {kept}")  # fmt: skip
    click.echo(f"made: {', '.join(report.created) or '(none)'}"
               + (f" ({report.adopted_rows} row(s) moved in from the default partition)"
                  if report.adopted_rows else ""))  # fmt: skip
    click.echo(f"dropped: {', '.join(report.dropped) or '(none)'}"
               + (f"; {report.deleted_rows} old row(s) deleted from the default partition"
                  if report.deleted_rows else ""))  # fmt: skip
    if report.default_rows:
        click.echo(f"{report.default_rows} row(s) wait in the default partition (times beyond "
                   "the partitions made)")  # fmt: skip
    for step in report.postponed:
        click.echo(f"postponed (lock not granted in {policy.lock_timeout:g} s): {step}", err=True)
