"""The control plane's settings: environment variables with typed defaults, in one place.

| variable | default | meaning |
|---|---|---|
| ``TQ_CELERY_APP`` | none | ``module:app``: the broker, result store and tasks of an app |
| ``TQ_BROKER_URL`` | ``$REDIS_URL`` | the broker (this package's transport), when no app is given |
| ``TQ_BROKER_KEYPREFIX`` | ``""`` | the broker's ``global_keyprefix`` |
| ``TQ_BROKER_TRANSPORT_OPTIONS`` | ``{}`` | further transport options as JSON, as the workers' |
| ``TQ_DATABASE_URL`` | ``$DATABASE_URL`` | SQLAlchemy URL of the result store (``tq+`` allowed) |
| ``TQ_TABLE_PREFIX`` / ``TQ_DB_SCHEMA`` | ``tq_`` / none | where the result tables are |
| ``TQ_DB_POOL_SIZE`` | 16 | database connections kept per process (at least its threads) |
| ``TQ_API_TOKENS`` | none | ``name:role:sha256hex,...`` (see ``auth``) |
| ``TQ_METRICS_PUBLIC`` | ``true`` | ``/metrics`` open (``false``: a viewer token is needed) |
| ``TQ_MAX_BODY_BYTES`` | 1048576 | larger request bodies are refused with 413 |
| ``TQ_STREAM_HEARTBEAT`` | 15 | seconds between keep-alive comments on ``/api/v1/stream`` |
| ``TQ_STREAM_POLL`` | 0.5 | seconds between looks for worker and DLQ changes on the stream |
| ``TQ_STREAM_LIMIT`` | threads − 4 | open event streams per process (each holds a thread) |
| ``TQ_STREAM_LIMIT_PER_CALLER`` | 4 | open event streams per token or UI login and process |
| ``TQ_SECRET_KEY`` | random per start | signs the admin UI's session cookies and CSRF tokens |
| ``TQ_SESSION_HOURS`` | 12 | how long an admin UI login lasts |
| ``TQ_PROXY_HOPS`` | 0 | reverse proxies in front whose ``X-Forwarded-*`` headers are trusted |
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskqueue_backend.flags import parse_flag


class SettingsError(ValueError):
    """A setting has a value the control plane cannot use (the message names it)."""


def _flag(value: str, name: str) -> bool:
    try:
        return parse_flag(value, name)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _number(value: str, name: str) -> float:
    try:
        found = float(value)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if found <= 0:
        raise SettingsError(f"{name} must be > 0, got {value!r}")
    return found


#: threads of a server process that streams never take (health checks, sign-in, requests)
RESERVED_THREADS = 4
#: the server's threads per process, as ``taskqueue control-plane`` tells its processes
SERVER_THREADS = "TQ_SERVER_THREADS"


def _at_least_one(env: Mapping[str, str], name: str, default: str) -> int:
    """A positive number setting, as a whole count of at least one."""
    return max(1, int(_number(env.get(name, default), name)))


def _stream_limit(env: Mapping[str, str]) -> int:
    if env.get("TQ_STREAM_LIMIT"):
        return _at_least_one(env, "TQ_STREAM_LIMIT", "")
    if env.get(SERVER_THREADS):
        return max(1, _at_least_one(env, SERVER_THREADS, "") - RESERVED_THREADS)
    return 12  # the development server starts a thread per request


def _count(value: str, name: str) -> int:
    try:
        found = int(value)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {value!r}") from None
    if found < 0:
        raise SettingsError(f"{name} must be >= 0, got {value!r}")
    return found


def _json_object(value: str, name: str) -> dict[str, Any]:
    try:
        found = json.loads(value or "{}")
    except ValueError as exc:
        raise SettingsError(f"{name} must be a JSON object: {exc}") from None
    if not isinstance(found, dict):
        raise SettingsError(f"{name} must be a JSON object, got {value!r}")
    return found


@dataclass(frozen=True)
class Settings:
    celery_app: str | None = None
    broker_url: str | None = None
    broker_keyprefix: str = ""
    #: e.g. ``{"heartbeat_timeout": 30}`` when the workers use other than the defaults
    transport_options: dict[str, Any] = field(default_factory=dict)
    database_url: str | None = None
    table_prefix: str | None = None
    db_schema: str | None = None
    db_pool_size: int = 16
    api_tokens: str = ""
    metrics_public: bool = True
    max_body_bytes: int = 1024 * 1024
    stream_heartbeat: float = 15.0
    stream_poll: float = 0.5
    #: open streams per process; the threads it leaves answer every other request
    stream_limit: int = 12
    stream_limit_per_caller: int = 4
    #: empty: a random key per server start (``taskqueue control-plane`` makes one for all its
    #: processes), so logins end with a restart and are not shared between replicas
    secret_key: str = ""
    session_hours: float = 12.0
    proxy_hops: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            celery_app=env.get("TQ_CELERY_APP") or None,
            broker_url=env.get("TQ_BROKER_URL") or env.get("REDIS_URL") or None,
            broker_keyprefix=env.get("TQ_BROKER_KEYPREFIX", ""),
            transport_options=_json_object(
                env.get("TQ_BROKER_TRANSPORT_OPTIONS", ""), "TQ_BROKER_TRANSPORT_OPTIONS"
            ),  # fmt: skip
            database_url=env.get("TQ_DATABASE_URL") or env.get("DATABASE_URL") or None,
            table_prefix=env.get("TQ_TABLE_PREFIX") or None,
            db_schema=env.get("TQ_DB_SCHEMA") or None,
            db_pool_size=int(_number(env.get("TQ_DB_POOL_SIZE", "16"), "TQ_DB_POOL_SIZE")),
            api_tokens=env.get("TQ_API_TOKENS", ""),
            metrics_public=_flag(env.get("TQ_METRICS_PUBLIC", "true"), "TQ_METRICS_PUBLIC"),
            max_body_bytes=int(
                _number(env.get("TQ_MAX_BODY_BYTES", "1048576"), "TQ_MAX_BODY_BYTES")
            ),  # fmt: skip
            stream_heartbeat=_number(env.get("TQ_STREAM_HEARTBEAT", "15"), "TQ_STREAM_HEARTBEAT"),
            stream_poll=_number(env.get("TQ_STREAM_POLL", "0.5"), "TQ_STREAM_POLL"),
            stream_limit=_stream_limit(env),
            stream_limit_per_caller=_at_least_one(env, "TQ_STREAM_LIMIT_PER_CALLER", "4"),
            secret_key=env.get("TQ_SECRET_KEY", ""),
            session_hours=_number(env.get("TQ_SESSION_HOURS", "12"), "TQ_SESSION_HOURS"),
            proxy_hops=_count(env.get("TQ_PROXY_HOPS", "0"), "TQ_PROXY_HOPS"),
        )

    def check(self) -> None:
        if not (self.celery_app or self.broker_url or self.database_url):
            raise SettingsError(
                "the control plane needs a broker and/or a result store: set TQ_CELERY_APP "
                "(module:app), or TQ_BROKER_URL (or REDIS_URL) and TQ_DATABASE_URL "
                "(or DATABASE_URL)"
            )
        if self.secret_key and len(self.secret_key) < 16:
            raise SettingsError(
                "TQ_SECRET_KEY must be at least 16 characters (e.g. the output "
                "of `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
