"""The ``taskqueue`` command line: a thin shell over :mod:`taskqueue_backend.inspect` and
:mod:`taskqueue_backend.backend.migrate` (``taskqueue db ...``)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import click

from .inspect import BrokerInspector


def _inspector(url: str | None, prefix: str, app: str | None) -> BrokerInspector:
    if app:
        from celery.app.utils import find_app

        return BrokerInspector.from_app(find_app(app))
    return BrokerInspector.from_url(
        url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        {"global_keyprefix": prefix},
    )


def _emit(rows: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("(none)")
    for row in rows if isinstance(rows, list) else [rows]:
        click.echo("  ".join(f"{k}={v}" for k, v in row.items()))


@click.group()
@click.option("--broker-url", envvar="REDIS_URL", help="Redis URL (default: $REDIS_URL).")
@click.option("--keyprefix", default="", help="The broker's global_keyprefix, if any.")
@click.option("-A", "--app", "app", default=None, help="Read the broker settings of a Celery app.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def main(
    ctx: click.Context, broker_url: str | None, keyprefix: str, app: str | None, as_json: bool
) -> None:
    """Inspect the taskqueue broker; manage the result backend's tables (``db``)."""
    ctx.obj = {
        "inspector": lambda: _inspector(broker_url, keyprefix, app),
        "json": as_json,
        "app": app,
    }


@main.command()
@click.pass_context
def queues(ctx: click.Context) -> None:
    """Count every queue: ready by priority, delayed, in flight, dead, oldest age."""
    stats = ctx.obj["inspector"]().all_stats()
    _emit([{**asdict(s), "ready": s.ready} for s in stats], ctx.obj["json"])


@main.command()
@click.argument("task_id")
@click.pass_context
def find(ctx: click.Context, task_id: str) -> None:
    """Show where a task's message is (ready, delayed, in flight and whose, dead)."""
    found = ctx.obj["inspector"]().find(task_id)
    if not found:
        raise click.ClickException(f"no message of task {task_id} is in the broker")
    _emit([asdict(m) for m in found], ctx.obj["json"])


@main.command()
@click.argument("task_id")
@click.pass_context
def remove(ctx: click.Context, task_id: str) -> None:
    """Delete a task's waiting message (a durable revoke)."""
    results = ctx.obj["inspector"]().remove(task_id)
    if not results:
        raise click.ClickException(f"no message of task {task_id} is in the broker")
    _emit([{"queue": q, "outcome": o, "detail": d} for q, o, d in results], ctx.obj["json"])


@main.command()
@click.pass_context
def consumers(ctx: click.Context) -> None:
    """List consuming channels with their last heartbeat."""
    _emit([asdict(c) for c in ctx.obj["inspector"]().consumers()], ctx.obj["json"])


# -- the result backend's database ---------------------------------------------------------------
# SQLAlchemy and Alembic are imported inside the db commands: the broker commands stay quick.

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class DatabaseTarget:
    """Which tables a ``db`` command works on: database URL, table prefix, schema."""

    url: str
    prefix: str
    schema: str | None

    @property
    def shown_url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def describe(self) -> str:
        where = f" in schema {self.schema}" if self.schema else ""
        return f"{self.prefix}* tables{where} of {self.shown_url}"

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.shown_url, "prefix": self.prefix, "schema": self.schema}


def _plain_database_url(url: str, origin: str) -> str:
    """A SQLAlchemy URL from a plain one or a result-backend one (``tq+postgresql+psycopg://``)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    plain = url.removeprefix("tq+")
    try:
        make_url(plain)
    except ArgumentError:
        raise click.ClickException(
            f"{origin} {url!r} is not a database URL; expected e.g. "
            "postgresql+psycopg://user@host/db or sqlite:///results.db (a tq+ prefix is allowed)"
        ) from None
    return plain


def _database_target(
    ctx: click.Context, url: str | None, prefix: str | None, schema: str | None
) -> DatabaseTarget:
    """Options first, then the Celery app given with ``-A``, then ``$DATABASE_URL``/defaults."""
    from .backend.schema import DEFAULT_PREFIX

    app = ctx.obj["app"]
    conf: Any = {}
    if app:
        from celery.app.utils import find_app

        conf = find_app(app).conf
    if url:
        url = _plain_database_url(url, "--url")
    elif app:
        # the same precedence as the backend itself: database_url, then result_backend
        configured = conf.get("database_url") or conf.get("result_backend")
        if not str(configured or "").startswith("tq+"):
            raise click.ClickException(
                f"the result_backend of app {app} is {configured!r}, not a tq+ database URL "
                "(e.g. tq+postgresql+psycopg://user@host/db); pass --url instead"
            )
        url = _plain_database_url(str(configured), f"the result_backend of app {app}")
    elif os.environ.get("DATABASE_URL"):
        url = _plain_database_url(os.environ["DATABASE_URL"], "$DATABASE_URL")
    else:
        raise click.ClickException(
            "no database given: pass --url postgresql+psycopg://user@host/db (or sqlite:///path), "
            "set $DATABASE_URL, or name a Celery app with -A"
        )
    if prefix is None:
        prefix = conf.get("taskqueue_table_prefix") or DEFAULT_PREFIX
    if schema is None:
        schema = conf.get("taskqueue_db_schema")
    return DatabaseTarget(url, str(prefix), schema or None)


def _database_options(command: F) -> F:
    command = click.option("--schema", default=None, help="PostgreSQL schema (default: none).")(
        command
    )
    command = click.option("--prefix", default=None, help="Table prefix (default: tq_).")(command)
    return click.option(
        "--url",
        default=None,
        help="Database URL, plain or tq+ (default: the -A app's result_backend, else "
        "$DATABASE_URL).",
    )(command)


@contextlib.contextmanager
def _connected(target: DatabaseTarget, on_error: str = "") -> Iterator[Any]:
    """A throwaway engine for one command; connection problems become readable errors."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
    from sqlalchemy.pool import NullPool

    try:
        engine = create_engine(target.url, poolclass=NullPool)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise click.ClickException(f"cannot use {target.describe()}: {exc}") from exc
    try:
        yield engine
    except OperationalError as exc:
        raise click.ClickException(
            f"database error on {target.describe()}: {exc.orig or exc}{on_error}"
        ) from exc
    finally:
        engine.dispose()


@main.group()
def db() -> None:
    """Create and upgrade the result backend's tables (migrations shipped in the package)."""


@db.command("upgrade")
@_database_options
@click.option("--revision", default="head", show_default=True, help="Revision to upgrade to.")
@click.pass_context
def db_upgrade(
    ctx: click.Context, url: str | None, prefix: str | None, schema: str | None, revision: str
) -> None:
    """Create the tables or bring them up to date; safe to run from several places at once."""
    from .backend.migrate import current, upgrade

    target = _database_target(ctx, url, prefix, schema)
    rolled_back = " (nothing was changed: the upgrade runs in one transaction)"
    with _connected(target, rolled_back) as engine:
        before = current(engine, target.prefix, target.schema)
        upgrade(engine, target.prefix, target.schema, revision)
        after = current(engine, target.prefix, target.schema)
    if ctx.obj["json"]:
        _emit({**target.as_dict(), "from": before, "to": after}, True)
    elif before == after:
        click.echo(f"{target.describe()}: already at revision {after}; nothing to do")
    else:
        click.echo(
            f"{target.describe()}: upgraded from {before or '(no tables)'} to revision {after}"
        )


@db.command("current")
@_database_options
@click.pass_context
def db_current(ctx: click.Context, url: str | None, prefix: str | None, schema: str | None) -> None:
    """Print the revision the tables are at, and whether it is the newest this package ships."""
    from .backend.migrate import current, head

    target = _database_target(ctx, url, prefix, schema)
    with _connected(target) as engine:
        revision = current(engine, target.prefix, target.schema)
    newest = head()
    if ctx.obj["json"]:
        _emit({**target.as_dict(), "current": revision, "head": newest}, True)
    elif revision is None:
        click.echo(f"(none): no tables yet; `taskqueue db upgrade` creates them at {newest}")
    elif revision == newest:
        click.echo(f"{revision} (head)")
    else:
        click.echo(f"{revision} (head is {newest}; run `taskqueue db upgrade`)")
