"""Signing in to the admin UI, the session cookie, CSRF protection, and who may do what.

Operators sign in with the same token the API takes (``taskqueue token new NAME ROLE``). The
session is a signed cookie (``TQ_SECRET_KEY``): HttpOnly, SameSite=Lax, Secure whenever the
request came over TLS (directly, or through ``TQ_PROXY_HOPS`` trusted proxies). It keeps the
token's name, a fingerprint derived from its digest, and the id of its sign-in. Every page
checks both: the fingerprint against ``TQ_API_TOKENS``, so removing or replacing a token ends
its sessions, and the sign-in against its record in Redis (``sign_ins``), so signing out ends
the session for every copy of its cookie. Every form and state-changing request carries a
CSRF token (Flask-WTF). Pages need the same roles as the API routes they mirror; a page hides
the actions its viewer's role may not take, and the server refuses them anyway (403). After
signing in, or after an action, only a path of this site is followed (``safe_next``).
"""

from __future__ import annotations

import functools
import secrets
import unicodedata
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

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

from ..api.security import article
from ..auth import ROLES, Principal, TokenRegistry
from ..context import acting_ops
from ..refusals import MUTATING
from ..settings import Settings
from . import sign_ins
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
    """Who this request's session belongs to (None: nobody, a token no longer configured, or a
    sign-in that was ended or has expired). Raises while Redis does not answer."""
    name, fingerprint = session.get("name"), session.get("fingerprint")
    session_id = session.get("sign_in")
    if not all(isinstance(v, str) for v in (name, fingerprint, session_id)):
        return None
    principal = tokens().recognise(str(name), str(fingerprint))
    if principal is None or not sign_ins.is_current(str(session_id), principal.name):
        return None
    return principal


@bp.before_app_request
def identify() -> None:
    """Who is signed in, for the UI's pages. Nothing else reads the session: the API
    identifies its callers by token, and health checks, metrics and static files answer
    without asking Redis."""
    g.principal = None
    if request.blueprint == bp.name and request.endpoint != "ui.static":
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
                abort(403, f"this needs {article(role)} {role}; {principal.name} is "
                           f"{article(principal.role)} {principal.role}")  # fmt: skip
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
    """This page's address, to come back to after signing in (its path percent-encoded)."""
    if request.method != "GET":
        return url_for("ui.overview")
    query = request.query_string.decode("latin-1")
    return quote(request.path) + (f"?{query}" if query else "")


def _unsafe(char: str) -> bool:
    """White space or a control character (browsers drop tabs and newlines from a URL)."""
    return char.isspace() or unicodedata.category(char).startswith("C")


def safe_next(target: str | None) -> str:
    """``target`` when it is a path of this site, else the overview's.

    Browsers drop tabs and newlines from a URL and read a backslash as a slash, and a proxy in
    front may decode ``%2F``; so a target is refused, never cleaned up, when — as written or
    once its path is percent-decoded — it holds white space, a control character or a
    backslash, starts with two slashes, or names a scheme or a host.
    """
    fallback = url_for("ui.overview")
    if not target or not target.startswith("/"):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return fallback
    for text in (target, unquote(parts.path)):
        if text.startswith("//") or "\\" in text or any(_unsafe(c) for c in text):
            return fallback
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error, status = None, 200
    if request.method == "POST":
        principal = tokens().identify(request.form.get("token", "").strip())
        if principal is not None:
            try:
                return _sign_in(principal)
            except sign_ins.NoBroker as exc:
                error, status = str(exc), 503
        else:
            error, status = ("That token is not one of TQ_API_TOKENS. Paste the token itself, "
                             "not its entry."), 401  # fmt: skip
    return render_template("ui/login.html", error=error,
                           next=safe_next(request.args.get("next") or request.form.get("next")),
                           configured=len(tokens()) > 0), status  # fmt: skip


def _sign_in(principal: Principal) -> Response:
    """A new session, recorded in Redis: whatever this browser held before ends (its record
    too), so a session id planted before signing in is worth nothing after."""
    previous = session.get("sign_in")
    if isinstance(previous, str):
        sign_ins.end(previous)
    session_id = sign_ins.start(principal.name, current_app.permanent_session_lifetime)
    session.clear()
    session.permanent = True
    session["name"] = principal.name
    session["fingerprint"] = tokens().fingerprint(principal)
    session["sign_in"] = session_id
    flash(f"Signed in as {principal.name} ({principal.role}).", "info")
    return redirect(safe_next(request.form.get("next")))


@bp.post("/logout")
def logout() -> Response:
    """Ends the sign-in for every copy of its cookie (its record is deleted), not only here."""
    session_id = session.get("sign_in")
    if isinstance(session_id, str):
        sign_ins.end(session_id)
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("ui.login"))
