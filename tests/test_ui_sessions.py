"""Signing in to the admin UI and what ends a sign-in, through the real app (Flask test client)
on real Redis: the page followed after signing in is always one of this site; the session
cookie is guarded; signing out, removing the token, or losing the record in Redis ends a
session, for every copy of its cookie; and while Redis is down the UI says so and lets nobody
in."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote

import pytest
import redis

from control_plane import create_app
from control_plane.auth import new_token
from control_plane.context import backends
from control_plane.settings import Settings
from taskqueue_backend.embedded import EmbeddedRedis
from taskqueue_backend.transport.keys import GlobalKeys
from tests.support.control_plane import make_api
from tests.support.ui import UiClient, csrf_of

COOKIE = "tq_session"
#: ``next`` values (as the login page receives them, once decoded) that lead off this site,
#: or to a header the server cannot write, or are not plainly a path of it
OFF_SITE = [
    "/\t/evil.example",  # browsers drop tabs and newlines: //evil.example
    "/\n/x",
    "/\r/evil.example",
    "/\r\n/evil.example",
    " //evil.example",
    "/ /evil.example",
    "/\x00/evil.example",
    "/\x0b/evil.example",
    "/\u2028/evil.example",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "https://evil.example",
    "https:/evil.example",
    "javascript:alert(1)",
    "evil.example",
    "/%2F%2Fevil.example",  # still encoded: the same slashes once a proxy decodes them
    "/%2f/evil.example",
    "/%5Cevil.example",
    "/%09/evil.example",
]
#: paths of this site, followed as they are
ON_SITE = ["/tasks?state=FAILURE&name=bk.%2A", "/dlq/abc", "/audit?target=a%20b&q=C%3A%5Cx", "/"]


def next_of_login_page(ui: UiClient, next_value: str) -> str:
    """The ``next`` field of the login form, opened with ``?next=<next_value>``."""
    page = ui.get(f"/login?next={quote(next_value, safe='')}")
    assert page.status_code == 200, page.get_data(as_text=True)[:2000]
    found = re.search(r'name="next" value="([^"]*)"', page.get_data(as_text=True))
    assert found, "the login form has no next field"
    return html.unescape(found.group(1))


@pytest.mark.parametrize("target", OFF_SITE + ON_SITE, ids=repr)
def test_after_signing_in_only_a_path_of_this_site_is_followed(api: Any, target: str) -> None:
    expected = target if target in ON_SITE else "/"
    through_the_form = UiClient.signed_in(api.app, None)
    kept = next_of_login_page(through_the_form, target)
    assert kept == expected
    signed = through_the_form.post("/login", {"token": api.tokens["viewer"], "next": kept})
    assert (signed.status_code, signed.headers["Location"]) == (302, expected)
    # a form posted with any next at all
    posted = UiClient.signed_in(api.app, None)
    signed = posted.post("/login", {"token": api.tokens["viewer"], "next": target})
    assert (signed.status_code, signed.headers["Location"]) == (302, expected)


def test_an_anonymous_visit_comes_back_to_its_page_after_signing_in(api: Any) -> None:
    ui = UiClient.signed_in(api.app, None)
    sent = ui.get("/tasks?state=FAILURE&name=bk.*")
    assert sent.status_code == 302
    login = sent.headers["Location"]
    assert login.startswith("/login?next=")
    kept = html.unescape(re.search(r'name="next" value="([^"]*)"',  # type: ignore[union-attr]
                                   ui.get(login).get_data(as_text=True)).group(1))  # fmt: skip
    signed = ui.post("/login", {"token": api.tokens["viewer"], "next": kept})
    assert signed.headers["Location"] == "/tasks?state=FAILURE&name=bk.*"


def ui_session_keys(client: redis.Redis, keyprefix: str) -> list[bytes]:
    return list(client.scan_iter(match=GlobalKeys(keyprefix).sign_in("*"), count=1000))


def test_signing_in_sets_a_guarded_cookie_and_records_the_sign_in(
    api: Any, redis_client: redis.Redis, keyprefix: str
) -> None:
    ui = UiClient.signed_in(api.app, None)
    wrong = ui.post("/login", {"token": "not-a-token"})
    assert wrong.status_code == 401 and "not one of TQ_API_TOKENS" in wrong.get_data(as_text=True)
    assert ui_session_keys(redis_client, keyprefix) == []
    signed = ui.post("/login", {"token": api.tokens["operator"], "next": "https://evil.example/"})
    assert signed.status_code == 302 and signed.headers["Location"] == "/"  # never off-site
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert api.tokens["operator"] not in cookie
    ui._csrf = None
    assert "operator-user" in ui.text("/")
    [record] = ui_session_keys(redis_client, keyprefix)
    lifetime = api.settings.session_hours * 3600
    assert lifetime - 60 < redis_client.ttl(record) <= lifetime
    assert redis_client.get(record) == b"operator-user"


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(
    api: Any, redis_client: redis.Redis, keyprefix: str
) -> None:
    ui = UiClient.signed_in(api.app, api.tokens["admin"])
    cookie = ui.client.get_cookie(COOKIE)
    assert cookie is not None
    copy = UiClient(api.app.test_client())
    copy.client.set_cookie(COOKIE, cookie.value)
    assert copy.get("/tasks").status_code == 200, "the copy works while signed in"

    out = ui.post("/logout", {})
    assert out.status_code == 302 and out.headers["Location"] == "/login"
    assert ui_session_keys(redis_client, keyprefix) == []
    for client in (ui, copy):
        refused = client.get("/tasks")
        assert refused.status_code == 302
        assert refused.headers["Location"].startswith("/login")
    # no action either (a fresh CSRF token of the copied cookie's session)
    copy._csrf = csrf_of(copy.get("/login").get_data(as_text=True))
    assert copy.post("/queues/held/pause", {"reason": "x"}).status_code == 302


def test_a_session_whose_record_is_gone_is_signed_out(
    api: Any, redis_client: redis.Redis, keyprefix: str
) -> None:
    """As when the record expires, or Redis lost its data."""
    ui = UiClient.signed_in(api.app, api.tokens["viewer"])
    assert ui.get("/tasks").status_code == 200
    redis_client.delete(*ui_session_keys(redis_client, keyprefix))
    assert ui.get("/tasks").status_code == 302


def test_signing_in_again_ends_the_previous_sign_in_of_that_browser(
    api: Any, redis_client: redis.Redis, keyprefix: str
) -> None:
    ui = UiClient.signed_in(api.app, api.tokens["viewer"])
    before = ui.client.get_cookie(COOKIE)
    assert before is not None
    ui._csrf = None
    assert ui.post("/login", {"token": api.tokens["admin"]}).status_code == 302
    assert len(ui_session_keys(redis_client, keyprefix)) == 1
    old = UiClient(api.app.test_client())
    old.client.set_cookie(COOKIE, before.value)
    assert old.get("/tasks").status_code == 302


def test_removing_the_token_ends_its_sessions(api: Any) -> None:
    again = UiClient.signed_in(api.app, api.tokens["operator"])
    _, entry = new_token("someone-else", "admin")
    others = ",".join(e for e in api.settings.api_tokens.split(",") if "operator-user" not in e)
    settings = Settings(**{**api.settings.__dict__, "api_tokens": f"{others},{entry}",
                           "secret_key": api.app.secret_key})  # fmt: skip
    renewed = create_app(settings)
    again.client.application = renewed  # the same browser, the reconfigured server
    try:
        assert again.get("/").status_code == 302
    finally:
        backends(renewed).close()


def test_the_session_cookie_is_secure_over_tls(api: Any) -> None:
    ui = UiClient(api.app.test_client())
    ui.base_url = "https://localhost"
    answer = ui.post("/login", {"token": api.tokens["viewer"]})
    assert answer.status_code == 302
    assert "Secure" in answer.headers["Set-Cookie"]


def test_login_page_is_a_form_with_a_csrf_token(api: Any) -> None:
    page = UiClient.signed_in(api.app, None).text("/login")
    assert csrf_of(page) and 'type="password"' in page and 'autocomplete="current-password"' in page


def test_while_redis_is_down_the_ui_says_so_and_lets_nobody_in() -> None:
    with EmbeddedRedis() as server:
        api = next(make_api(server.url, "ui-down:", None))
        try:
            ui = UiClient.signed_in(api.app, api.tokens["admin"])
            assert ui.get("/queues").status_code == 200
            stranger = UiClient.signed_in(api.app, None)
            stranger.csrf()  # the login form, read while Redis answers
            server.kill()
            down = ui.get("/queues")
            assert down.status_code == 503, down.get_data(as_text=True)[:2000]
            assert "redis is unreachable" in down.get_data(as_text=True)
            refused = stranger.post("/login", {"token": api.tokens["admin"]})
            assert refused.status_code == 503
            assert "redis is unreachable" in refused.get_data(as_text=True)
            assert api.get("/healthz", role=None).status_code == 200  # liveness needs no Redis
            server.start()  # empty: the sign-ins it held are gone
            assert ui.get("/queues").status_code == 302
            assert stranger.get("/queues").status_code == 302, "the refused sign-in let it in"
            assert stranger.post("/login", {"token": api.tokens["admin"]}).status_code == 302
            assert stranger.get("/queues").status_code == 200
        finally:
            backends(api.app).close()


def test_without_a_broker_signing_in_is_refused_saying_why(tmp_path: Any) -> None:
    api = next(make_api(None, "", f"sqlite:///{tmp_path / 'results.db'}"))  # type: ignore[arg-type]
    try:
        ui = UiClient.signed_in(api.app, None)
        refused = ui.post("/login", {"token": api.tokens["admin"]})
        assert refused.status_code == 503
        assert "TQ_BROKER_URL" in refused.get_data(as_text=True)
        assert ui.get("/tasks").status_code == 302
        assert api.get("/api/v1/tasks").status_code == 200  # the API takes its tokens as ever
    finally:
        backends(api.app).close()
