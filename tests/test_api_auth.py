"""Who may call what, from one table: every route of the API with the role it needs.

Without a token every route is 401; with a token of a lower role it is 403 naming the role
needed; with that role or a higher one it gets past authorisation (whatever the operation then
answers). A route missing from the table, or one that names no role, fails the test: the API
denies by default. ``/healthz``, ``/readyz`` and ``/metrics`` are open, the OpenAPI document
and its docs page too (they describe the API, not its data).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from control_plane.auth import ROLES, TokenError, TokenRegistry, new_token

MATRIX = {
    ("GET", "/api/v1/tasks"): "viewer",
    ("GET", "/api/v1/tasks/<task_id>"): "viewer",
    ("GET", "/api/v1/tasks/<task_id>/events"): "viewer",
    ("POST", "/api/v1/tasks"): "operator",
    ("POST", "/api/v1/tasks/<task_id>/retry"): "operator",
    ("POST", "/api/v1/tasks/<task_id>/revoke"): "operator",
    ("POST", "/api/v1/tasks/bulk"): "operator",
    ("GET", "/api/v1/dlq"): "viewer",
    ("GET", "/api/v1/dlq/stats"): "viewer",
    ("GET", "/api/v1/dlq/<ident>"): "viewer",
    ("POST", "/api/v1/dlq/<ident>/replay"): "operator",
    ("POST", "/api/v1/dlq/replay"): "operator",
    ("DELETE", "/api/v1/dlq/<ident>"): "admin",
    ("POST", "/api/v1/dlq/purge"): "admin",
    ("GET", "/api/v1/workers"): "viewer",
    ("GET", "/api/v1/workers/<name>"): "viewer",
    ("POST", "/api/v1/workers/<name>/recover"): "operator",
    ("DELETE", "/api/v1/workers/<name>"): "admin",
    ("POST", "/api/v1/workers/<name>/shutdown"): "admin",
    ("GET", "/api/v1/queues"): "viewer",
    ("GET", "/api/v1/queues/<name>"): "viewer",
    ("POST", "/api/v1/queues/<name>/purge"): "admin",
    ("POST", "/api/v1/queues/<name>/pause"): "operator",
    ("POST", "/api/v1/queues/<name>/resume"): "operator",
    ("GET", "/api/v1/stats"): "viewer",
    ("GET", "/api/v1/stats/timeline"): "viewer",
    ("GET", "/api/v1/audit"): "viewer",
    ("GET", "/api/v1/me"): "viewer",
    ("GET", "/api/v1/stream"): "viewer",
}  # fmt: skip
OPEN = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
        ("GET", "/api/v1/openapi.json"), ("GET", "/api/v1/docs"),
        ("GET", "/api/v1/docs/assets/<name>")}  # fmt: skip


def concrete(rule: str) -> str:
    path = rule.replace("<task_id>", "no-such-task").replace("<ident>", "no-such-entry")
    path = path.replace("<name>", "no-such-name")
    return path + ("?max_seconds=0.1" if path.endswith("/stream") else "")


def routes(app: Any) -> dict[tuple[str, str], Any]:
    """Every route but the admin UI's pages (``tests/test_ui_pages.py`` has their table)."""
    return {
        (method, rule.rule): app.view_functions[rule.endpoint]
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
        if not rule.endpoint.startswith("ui.")
    }


def test_the_table_names_every_route_and_the_role_each_declares(api: Any) -> None:
    found = routes(api.app)
    assert set(found) == set(MATRIX) | OPEN
    assert {route: getattr(found[route], "required_role", None) for route in MATRIX} == MATRIX


@pytest.mark.parametrize(("method", "rule"), sorted(MATRIX), ids=lambda v: str(v))
def test_each_role_on_each_route(api: Any, method: str, rule: str) -> None:
    needed = MATRIX[(method, rule)]
    path = concrete(rule)
    kwargs: dict[str, Any] = {} if method in ("GET", "DELETE") else {"json": {}}

    anonymous = api.call(method, path, None, **kwargs)
    assert anonymous.status_code == 401, anonymous.get_data(as_text=True)
    assert anonymous.json["error"]["code"] == "unauthenticated"
    forged = api.call(method, path, None, headers={"Authorization": "Bearer not-a-token"},
                      **kwargs)  # fmt: skip
    assert forged.status_code == 401
    for role in ROLES:
        response = api.call(method, path, role, **kwargs)
        if ROLES.index(role) < ROLES.index(needed):
            assert response.status_code == 403, (role, response.get_data(as_text=True))
            assert response.json["error"]["details"]["required_role"] == needed
            assert needed in response.json["error"]["message"]
        else:
            assert response.status_code not in (401, 403), (role, response.json)
            assert response.status_code < 500, response.get_data(as_text=True)


@pytest.mark.parametrize(("method", "rule"), sorted(OPEN))
def test_open_routes_need_no_token(api: Any, method: str, rule: str) -> None:
    path = rule.replace("<name>", "swagger-ui-bundle.js")
    assert api.call(method, path, None).status_code == 200


def test_metrics_can_require_a_token(redis_url: str, keyprefix: str) -> None:
    from tests.support.control_plane import make_api

    for api in make_api(redis_url, keyprefix, None, metrics_public=False):
        assert api.call("GET", "/metrics", None).status_code == 401
        assert api.call("GET", "/metrics", "viewer").status_code == 200


def test_tokens_are_kept_as_digests_and_bad_entries_are_refused() -> None:
    token, entry = new_token("ci-bot", "operator")
    name, role, hexdigest = entry.split(":")
    assert (name, role) == ("ci-bot", "operator")
    assert hexdigest == hashlib.sha256(token.encode()).hexdigest() and token not in entry
    registry = TokenRegistry(f"{entry}, ,")
    assert registry.identify(token).name == "ci-bot"  # type: ignore[union-attr]
    assert registry.identify(token + "x") is None and registry.identify(None) is None
    for bad, words in [
        ("a:viewer", "is not name:role:sha256hex"),
        ("a:root:" + "0" * 64, "role 'root'"),
        ("a:viewer:abc", "SHA-256 hex digest"),
        (f"a:viewer:{'0' * 64},a:admin:{'1' * 64}", "names 'a' twice"),
    ]:
        with pytest.raises(TokenError, match=words):
            TokenRegistry(bad)


def test_a_route_added_without_a_role_is_refused(api: Any) -> None:
    from apiflask import APIBlueprint

    from control_plane.api.security import bearer

    bp = APIBlueprint("careless", __name__, url_prefix="/api/v1")

    @bp.get("/careless")
    @bp.auth_required(bearer)
    def careless() -> Any:
        return {"oops": True}

    api.app.register_blueprint(bp)
    response = api.call("GET", "/api/v1/careless", "admin")
    assert response.status_code == 403 and "names no role" in response.json["error"]["message"]
