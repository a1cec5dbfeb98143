"""The control plane as the tests use it: the real app (Flask test client) with one token per
role, on the test's own broker prefix and result store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from apiflask import APIFlask
from flask.testing import FlaskClient

from control_plane import create_app
from control_plane.app import backends
from control_plane.auth import ROLES, new_token
from control_plane.settings import Settings


@dataclass
class Api:
    """One app and a way to call it as each role (``as_role("operator").post(...)``)."""

    app: APIFlask
    tokens: dict[str, str]
    settings: Settings
    clients: dict[str, FlaskClient] = field(default_factory=dict)

    def headers(self, role: str | None, **extra: str) -> dict[str, str]:
        found = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return {**found, **extra}

    def call(self, method: str, path: str, role: str | None = "admin", **kwargs: Any) -> Any:
        headers = {**self.headers(role), **kwargs.pop("headers", {})}
        client = self.app.test_client()
        return client.open(path, method=method, headers=headers, **kwargs)

    def get(self, path: str, role: str | None = "viewer", **kwargs: Any) -> Any:
        return self.call("GET", path, role, **kwargs)

    def post(
        self, path: str, json: Any = None, role: str | None = "operator", **kwargs: Any
    ) -> Any:
        return self.call("POST", path, role, json={} if json is None else json, **kwargs)

    def delete(self, path: str, role: str | None = "admin", **kwargs: Any) -> Any:
        return self.call("DELETE", path, role, **kwargs)

    @property
    def ops(self) -> Any:
        return backends(self.app).ops()


def tokens_for_roles() -> tuple[dict[str, str], str]:
    tokens, entries = {}, []
    for role in ROLES:
        token, entry = new_token(f"{role}-user", role)
        tokens[role] = token
        entries.append(entry)
    return tokens, ",".join(entries)


def make_api(
    redis_url: str, keyprefix: str, database_url: str | None, schema: str | None = None,
    **settings: Any,
) -> Iterator[Api]:  # fmt: skip
    tokens, entries = tokens_for_roles()
    found = Settings(broker_url=redis_url, broker_keyprefix=keyprefix, database_url=database_url,
                     db_schema=schema, api_tokens=entries, **settings)  # fmt: skip
    app = create_app(found)
    api = Api(app, tokens, found)
    yield api
    backends(app).close()
