"""What every command needs: the operations layer for the broker and result store it names.

The commands run under ``taskqueue`` (options on the root group) and under
``celery -A proj …`` (Celery's ``celery.commands`` entry point hands over the loaded app).
Where they look, in order: the Celery app given with ``-A`` (its broker and, when it uses this
package's backend, its result store); else ``--broker-url``/``$REDIS_URL`` and
``--database-url``/``$DATABASE_URL``. With none of them a command stops and says so; otherwise
it names the broker and result store it reads on stderr (not with ``--json``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from ..backend.outage import describe
from ..operations import OperationError, Operations, unavailable
from ..operations.errors import InvalidRequest

_META_KEY = "taskqueue.session"
F = TypeVar("F", bound=Callable[..., Any])

NOTHING_GIVEN = (
    "no broker or result store given: pass -A proj (a Celery app using this package), "
    "--broker-url redis://host:6379/0 (or set REDIS_URL) and/or --database-url "
    "postgresql+psycopg://user@host/db (or set DATABASE_URL)"
)


@dataclass
class Session:
    broker_url: str | None = None
    keyprefix: str = ""
    database_url: str | None = None
    table_prefix: str | None = None
    app_name: str | None = None
    as_json: bool = False
    app: Any = None
    _ops: Operations | None = field(default=None, repr=False)

    def celery_app(self) -> Any:
        if self.app is None and self.app_name:
            from celery.app.utils import find_app

            self.app = find_app(self.app_name)
        return self.app

    def operations(self) -> Operations:
        """The operations layer, opened on first use (and announced on stderr)."""
        if self._ops is not None:
            return self._ops
        app = self.celery_app()
        try:
            if app is not None:
                ops = Operations.from_app(app)
            elif self.broker_url or self.database_url:
                ops = Operations.from_urls(
                    self.broker_url,
                    self.database_url,
                    transport_options={"global_keyprefix": self.keyprefix},
                    table_prefix=self.table_prefix,
                )
            else:
                raise click.UsageError(NOTHING_GIVEN)
        except OperationError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            down = unavailable(exc)
            if down is None:
                raise
            raise click.ClickException(f"{down}: {describe(exc)}") from None
        if not self.as_json:
            click.echo(f"taskqueue: {ops.describe()}", err=True)
        self._ops = ops
        return ops


def session(ctx: click.Context) -> Session:
    """The session of this invocation, under ``taskqueue`` or under ``celery``."""
    root = ctx.find_root()
    if isinstance(root.obj, Session):
        return root.obj
    found = root.meta.get(_META_KEY)
    if found is None:
        found = root.meta[_META_KEY] = Session(app=getattr(root.obj, "app", None))
    return found


def ops(ctx: click.Context) -> Operations:
    return session(ctx).operations()


def json_option(command: Any) -> Any:
    """``--json`` on every command and group, in any position (``taskqueue queues --json``,
    ``taskqueue --json queues``, ``celery -A proj dlq list --json``)."""

    def enable(ctx: click.Context, _param: Any, value: bool) -> None:
        if value:
            session(ctx).as_json = True

    return click.option("--json", "as_json", is_flag=True, expose_value=False, is_eager=True,
                        callback=enable, help="Print JSON.")(command)  # fmt: skip


def page_options(command: Any) -> Any:
    """``--limit`` and ``--cursor`` of a command that prints one page of a list."""
    command = click.option("--cursor", help="Continue after the page that printed this cursor.")(
        command
    )
    return click.option("--limit", default=50, show_default=True,
                        type=click.IntRange(1, 1000))(command)  # fmt: skip


def reports_errors(command: F) -> F:
    """Operation errors and lost connections become one-line errors, never tracebacks: exit
    code 2 for a request that cannot be honoured as given, 1 for not found or a conflict."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InvalidRequest as exc:
            raise click.UsageError(str(exc)) from None
        except OperationError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            down = unavailable(exc)
            if down is not None:
                raise click.ClickException(f"{down}: {describe(exc)}") from None
            raise

    return run  # type: ignore[return-value]
