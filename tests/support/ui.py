"""The admin UI as a signed-in browser would use it, through the Flask test client: sign in
with a role's token, read the CSRF token of a page, post forms with it."""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, f"no CSRF token on the page:\n{html[:2000]}"
    return found.group(1)


class UiClient:
    """A test client with a session: ``get`` pages, ``post`` forms (with the CSRF token)."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self._csrf: str | None = None

    @classmethod
    def signed_in(cls, app: Any, token: str | None, base_url: str = "http://localhost") -> UiClient:
        ui = cls(app.test_client())
        ui.base_url = base_url
        if token is not None:
            answer = ui.post("/login", {"token": token})
            assert answer.status_code == 302, answer.get_data(as_text=True)[:2000]
            ui._csrf = None  # signing in starts a new session, with a new CSRF token
        return ui

    base_url = "http://localhost"

    def csrf(self) -> str:
        if self._csrf is None:
            self._csrf = csrf_of(self.get("/login").get_data(as_text=True))
        return self._csrf

    def get(self, path: str, **kwargs: Any) -> Any:
        headers = {"Accept": "text/html", **kwargs.pop("headers", {})}
        return self.client.get(path, headers=headers, base_url=self.base_url, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, csrf: bool = True,
             **kwargs: Any) -> Any:  # fmt: skip
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf())
        # over TLS a browser sends the page it posts from (CSRF protection checks it)
        headers = {"Accept": "text/html", "Referer": self.base_url + "/"}
        return self.client.post(path, data=form, headers=headers, base_url=self.base_url,
                                **kwargs)  # fmt: skip

    def text(self, path: str) -> str:
        answer = self.get(path)
        assert answer.status_code == 200, (path, answer.status_code,
                                           answer.get_data(as_text=True)[:2000])  # fmt: skip
        return str(answer.get_data(as_text=True))
