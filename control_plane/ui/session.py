"""Signing in to the admin UI, the session cookie, CSRF protection, and who may do what.

Operators sign in with the same token the API takes (``taskqueue token new NAME ROLE``). The
session is a signed cookie (``TQ_SECRET_KEY``): HttpOnly, SameSite=Lax, Secure whenever the
request came over TLS (directly, or through ``TQ_PROXY_HOPS`` trusted proxies). It keeps the
token's name and a fingerprint derived from its digest, checked against ``TQ_API_TOKENS`` on
every request, so removing or replacing a token ends its sessions. Every form and
state-changing request carries a CSRF token (Flask-WTF). Pages need the same roles as the API
routes they mirror; a page hides the actions its viewer's role may not take, and the server
refuses them anyway (403).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from flask import (
    Flask,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from ..auth import ROLES, Principal, TokenRegistry
from ..context import acting_ops
from ..refusals import MUTATING
from ..settings import Settings
from .blueprint import bp

F = TypeVar("F", bound=Callable[..., Any])
csrf = CSRFProtect()


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, marked Secure whenever the request came over TLS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def install(app: Flask, settings: Settings) -> None:
    """Sessions and CSRF for the UI (the API authenticates by bearer token only and takes no
    cookies, so CSRF checks apply to the UI's forms alone)."""
    app.secret_key = settings.secret_key or secrets.token_hex(32)
    app.session_interface = SessionCookies()
    app.config.update(
        SESSION_COOKIE_NAME="tq_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
        WTF_CSRF_CHECK_DEFAULT=False,  # checked by the UI's own before_request
        WTF_CSRF_TIME_LIMIT=None,  # as long as the session
    )
    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops,
            x_host=settings.proxy_hops, x_prefix=settings.proxy_hops,
        )  # fmt: skip
    csrf.init_app(app)


def tokens() -> TokenRegistry:
    found: TokenRegistry = current_app.extensions["taskqueue.tokens"]
    return found


def signed_in() -> Principal | None:
    """Who this request's session belongs to (None: nobody, or a token no longer configured)."""
    name, fingerprint = session.get("name"), session.get("fingerprint")
    if not isinstance(name, str) or not isinstance(fingerprint, str):
        return None
    return tokens().recognise(name, fingerprint)


@bp.before_app_request
def identify() -> None:
    """Who is signed in, for every page (the API identifies its callers by token only)."""
    if not request.path.startswith("/api/"):
        g.principal = signed_in()


@bp.before_request
def check_csrf() -> None:
    if request.method in MUTATING:
        csrf.protect()


def page(role: str = "viewer", redirect_to_login: bool = True) -> Callable[[F], F]:
    """A page or action that needs ``role``: anonymous visitors are sent to the login page
    (or refused with 401 where a redirect means nothing, as for an event stream), lower roles
    are refused (403). The view gets ``g.ops`` acting as the signed-in user."""
    assert role in ROLES

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            principal: Principal | None = g.principal
            if principal is None:
                if not redirect_to_login:
                    abort(401, "sign in again")
                return redirect(url_for("ui.login", next=_here()))
            if not principal.may(role):
                abort(403, f"this needs the {role} role; {principal.name} is a {principal.role}")
            g.ops = acting_ops(principal)
            return view(*args, **kwargs)

        guarded.required_role = role  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return decorate


def may(role: str) -> bool:
    """Whether the signed-in user has ``role`` (templates hide what they may not do)."""
    principal: Principal | None = g.get("principal")
    return principal is not None and principal.may(role)


def _here() -> str:
    return request.full_path.rstrip("?") if request.method == "GET" else url_for("ui.overview")


def safe_next(target: str | None) -> str:
    """Only a path of this site (never another host) is followed after signing in."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("ui.overview")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        principal = tokens().identify(request.form.get("token", "").strip())
        if principal is not None:
            session.clear()
            session.permanent = True
            session["name"] = principal.name
            session["fingerprint"] = tokens().fingerprint(principal)
            flash(f"Signed in as {principal.name} ({principal.role}).", "info")
            return redirect(safe_next(request.form.get("next")))
        error = "That token is not one of TQ_API_TOKENS. Paste the token itself, not its entry."
    status = 401 if error else 200
    return render_template("ui/login.html", error=error,
                           next=safe_next(request.args.get("next") or request.form.get("next")),
                           configured=len(tokens()) > 0), status  # fmt: skip


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("ui.login"))
