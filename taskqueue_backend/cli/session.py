"""What every command needs: the broker, the Celery app (if named) and the output format.

The commands run under ``taskqueue`` (options on the root group) and under
``celery -A proj …`` (Celery's ``celery.commands`` entry point hands over the loaded app).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import click

from ..inspect import BrokerInspector

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_META_KEY = "taskqueue.session"


@dataclass
class Session:
    broker_url: str | None = None
    keyprefix: str = ""
    app_name: str | None = None
    as_json: bool = False
    app: Any = None

    def celery_app(self) -> Any:
        if self.app is None and self.app_name:
            from celery.app.utils import find_app

            self.app = find_app(self.app_name)
        return self.app

    def inspector(self) -> BrokerInspector:
        app = self.celery_app()
        if app is not None:
            return BrokerInspector.from_app(app)
        return BrokerInspector.from_url(
            self.broker_url or os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
            {"global_keyprefix": self.keyprefix},
        )

    def load_result_backend(self) -> None:
        """Load the app's result backend, if it is ours, so operations reach the history."""
        app = self.celery_app()
        if app is not None and str(app.conf.result_backend or "").startswith("tq+"):
            app.backend  # noqa: B018 - connecting the backend subscribes its history


def session(ctx: click.Context) -> Session:
    """The session of this invocation, under ``taskqueue`` or under ``celery``."""
    root = ctx.find_root()
    if isinstance(root.obj, Session):
        return root.obj
    found = root.meta.get(_META_KEY)
    if found is None:
        found = root.meta[_META_KEY] = Session(app=getattr(root.obj, "app", None))
    return found


def json_option(command: Any) -> Any:
    """``--json`` on a subcommand too (``celery … dlq list --json`` has no root option)."""

    def enable(ctx: click.Context, _param: Any, value: bool) -> None:
        if value:
            session(ctx).as_json = True

    return click.option("--json", "as_json", is_flag=True, expose_value=False,
                        callback=enable, help="Print JSON.")(command)  # fmt: skip
