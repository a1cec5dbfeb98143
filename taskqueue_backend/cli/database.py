"""``taskqueue db …``: create and upgrade the result backend's tables (migrations shipped in
the package); ``db maintain`` (in ``db_maintain``) keeps the history's partitions. SQLAlchemy
and Alembic are imported inside the commands: the others stay quick."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from ..selection import plain_database_url, result_database_url
from . import output
from .main import main
from .session import json_option, session

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

    plain = plain_database_url(url)
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
    from ..backend.schema import DEFAULT_PREFIX

    app = session(ctx).app_name
    conf: Any = {}
    if session(ctx).celery_app() is not None:
        conf = session(ctx).celery_app().conf
    if url:
        url = _plain_database_url(url, "--url")
    elif app:
        # the same precedence as the backend itself: database_url, then result_backend
        configured = result_database_url(conf)
        if configured is None:
            raise click.ClickException(
                f"the result_backend of app {app} is {conf.get('result_backend')!r}, not a tq+ "
                "database URL (e.g. tq+postgresql+psycopg://user@host/db); pass --url instead"
            )
        url = _plain_database_url(configured, f"the result_backend of app {app}")
    elif session(ctx).database_url or os.environ.get("DATABASE_URL"):
        url = _plain_database_url(
            session(ctx).database_url or os.environ["DATABASE_URL"], "$DATABASE_URL"
        )
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


def backend_settings(ctx: click.Context) -> Any:
    """The ``taskqueue_*`` settings of the ``-A`` app (the defaults without one)."""
    from ..backend.settings import BackendSettings

    app = session(ctx).celery_app() if session(ctx).app_name else None
    try:
        return BackendSettings.from_conf(app.conf if app is not None else {})
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


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
@json_option
def db() -> None:
    """Create and upgrade the result backend's tables (migrations shipped in the package)."""


@db.command("upgrade")
@_database_options
@click.option("--revision", default="head", show_default=True, help="Revision to upgrade to.")
@click.option("--verbose", is_flag=True, help="Show each migration step Alembic runs.")
@json_option
@click.pass_context
def db_upgrade(
    ctx: click.Context, url: str | None, prefix: str | None, schema: str | None, revision: str,
    verbose: bool,
) -> None:  # fmt: skip
    """Create the tables or bring them up to date; safe to run from several places at once."""
    from ..backend.migrate import current, upgrade

    target = _database_target(ctx, url, prefix, schema)
    if verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    rolled_back = " (nothing was changed: the upgrade runs in one transaction)"
    with _connected(target, rolled_back) as engine:
        before = current(engine, target.prefix, target.schema)
        upgrade(engine, target.prefix, target.schema, revision, quiet=not verbose)
        after = current(engine, target.prefix, target.schema)
        made = _partitions_ahead(ctx, engine, target) if revision == "head" else []
    if session(ctx).as_json:
        output.as_json({**target.as_dict(), "from": before, "to": after, "partitions_made": made})
    elif before == after:
        click.echo(f"{target.describe()}: already at revision {after}; nothing to do")
    else:
        click.echo(
            f"{target.describe()}: upgraded from {before or '(no tables)'} to revision {after}"
        )
    if made and not session(ctx).as_json:
        click.echo(f"made {len(made)} history partition(s) ahead: {', '.join(made)}")


def _partitions_ahead(ctx: click.Context, engine: Any, target: DatabaseTarget) -> list[str]:
    """On PostgreSQL, the history partitions of now and ahead (retention is ``db maintain``'s)."""
    if engine.dialect.name != "postgresql":
        return []
    from ..backend.partitions import HistoryPartitions, Policy
    from ..backend.schema import tables_for

    tables = tables_for("postgresql", target.prefix, target.schema)
    policy = Policy.from_settings(backend_settings(ctx))
    report = HistoryPartitions(engine, tables, policy).maintain(retention=False)
    return report.created


@db.command("current")
@_database_options
@json_option
@click.pass_context
def db_current(ctx: click.Context, url: str | None, prefix: str | None, schema: str | None) -> None:
    """Print the revision the tables are at, and whether it is the newest this package ships."""
    from ..backend.migrate import current, head

    target = _database_target(ctx, url, prefix, schema)
    with _connected(target) as engine:
        revision = current(engine, target.prefix, target.schema)
    newest = head()
    if session(ctx).as_json:
        output.as_json({**target.as_dict(), "current": revision, "head": newest})
    elif revision is None:
        click.echo(f"(none): no tables yet; `taskqueue db upgrade` creates them at {newest}")
    elif revision == newest:
        click.echo(f"{revision} (head)")
    else:
        click.echo(f"{revision} (head is {newest}; run `taskqueue db upgrade`)")
