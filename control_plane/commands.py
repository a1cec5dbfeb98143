"""``taskqueue control-plane`` (serve it with gunicorn) and ``taskqueue token new``.

Both are plugged into the ``taskqueue`` command through the ``taskqueue.commands`` entry point
group, loaded only when named, so no other ``taskqueue`` or ``celery`` command imports Flask.
"""

from __future__ import annotations

import secrets
from typing import Any

import click

from .auth import ROLES, TokenError, new_token


class ControlPlaneServer:
    """gunicorn serving ``create_app()`` with threaded workers (a live ``/api/v1/stream``
    holds one thread, never a whole process)."""

    def __init__(self, options: dict[str, Any]) -> None:
        from gunicorn.app.base import BaseApplication

        class Application(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                for key, value in options.items():
                    self.cfg.set(key, value)
                # gunicorn >= 25.1 opens a control socket for ``gunicornc`` at one path per
                # user ($XDG_RUNTIME_DIR or ~/.gunicorn/gunicorn.ctl): a second server on the
                # host would take the first one's over (and remove it when it stops), and
                # ``gunicornc`` would shut down or resize the wrong one. This server is run by
                # signals (TERM, HUP, TTIN/TTOU) and its orchestrator: it opens none.
                if "control_socket_disable" in self.cfg.settings:
                    self.cfg.set("control_socket_disable", True)

            def load(self) -> Any:
                from .app import create_app

                return create_app()

        self.application = Application()

    def run(self) -> None:
        self.application.run()


def end_streams_on_sigterm(worker: Any) -> None:
    """gunicorn's ``post_worker_init``: its graceful stop (SIGTERM) waits for open requests,
    and an event stream never finishes by itself, so SIGTERM also ends the streams."""
    import signal

    from .streaming import STOPPING

    stop = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        STOPPING.set()
        if callable(stop):
            stop(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


@click.command("control-plane")
@click.option("--bind", "-b", default="127.0.0.1:8080", show_default=True,
              help="HOST:PORT to listen on (as gunicorn spells it).")  # fmt: skip
@click.option("--workers", "-w", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes.")  # fmt: skip
@click.option(
    "--threads",
    default=16,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Threads per worker process (each open event stream holds one).",
)
@click.option("--access-log/--no-access-log", default=True, show_default=True)
def control_plane(bind: str, workers: int, threads: int, access_log: bool) -> None:
    """Serve the control plane (admin UI, REST API, OpenAPI docs, /metrics) with gunicorn.

    Settings come from the environment: TQ_CELERY_APP or TQ_BROKER_URL/TQ_DATABASE_URL,
    TQ_API_TOKENS, ... (see the README)."""
    import os

    from .app import create_app
    from .settings import SERVER_THREADS, Settings, SettingsError

    os.environ.setdefault("TQ_DB_POOL_SIZE", str(threads))  # a connection for every thread
    os.environ[SERVER_THREADS] = str(threads)  # streams leave some of them free (settings)
    if not os.environ.get("TQ_SECRET_KEY"):
        # one key for every worker process (forked from here), so a UI login holds across them
        os.environ["TQ_SECRET_KEY"] = secrets.token_hex(32)
        click.echo(
            "control-plane: TQ_SECRET_KEY is not set: admin UI logins end when this server "
            "restarts (set it to keep them, and to share them between replicas)",
            err=True,
        )
    try:
        create_app(Settings.from_env())  # fail here, with the reason, not in every worker
    except (SettingsError, TokenError) as exc:
        raise click.ClickException(str(exc)) from None
    options = {"bind": bind, "workers": workers, "threads": threads, "worker_class": "gthread",
               "accesslog": "-" if access_log else None, "graceful_timeout": 10,
               "proc_name": "taskqueue-control-plane",
               "post_worker_init": end_streams_on_sigterm}  # fmt: skip
    ControlPlaneServer(options).run()


@click.group("token")
def token() -> None:
    """API tokens for the control plane."""


@token.command("new")
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
def token_new(name: str, role: str) -> None:
    """Print a fresh token for NAME with ROLE, and the TQ_API_TOKENS entry that admits it.

    Only the entry (the token's SHA-256) belongs in the server's configuration; give the token
    to its user. It is shown once."""
    try:
        secret, entry = new_token(name, role)
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"token: {secret}")
    click.echo(f"TQ_API_TOKENS entry: {entry}")
