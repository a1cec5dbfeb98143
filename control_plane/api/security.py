"""Who may call what: bearer tokens (``auth``) and the role each route needs.

Every route of ``/api/v1`` needs a token (401 without one); a route that changes something
needs at least ``operator`` or ``admin`` (403 naming the role). The view then acts through the
operations layer as the token's name, and its audit entries carry the role and request id.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from apiflask import APIBlueprint, HTTPTokenAuth, abort
from flask import current_app, g

from ..auth import ROLES, Principal, TokenRegistry
from ..context import acting_ops

F = TypeVar("F", bound=Callable[..., Any])

bearer = HTTPTokenAuth(
    scheme="Bearer",
    description="A token from `taskqueue token new NAME ROLE`; its SHA-256 is in TQ_API_TOKENS.",
)


@bearer.verify_token
def verify(token: str) -> Principal | None:
    tokens: TokenRegistry = current_app.extensions["taskqueue.tokens"]
    return tokens.identify(token)


def requires(role: str) -> Callable[[F], F]:
    """The one decorator of an API route: a bearer token (401 without a valid one, documented
    in the OpenAPI document) of at least ``role`` (403 naming it); the view gets ``g.ops``
    acting as the token's name."""
    assert role in ROLES

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            principal: Principal = bearer.current_user  # type: ignore[assignment]
            if not principal.may(role):
                abort(403, f"this needs {article(role)} {role}; {principal.name} is "
                      f"{article(principal.role)} {principal.role}",
                      detail={"required_role": role, "role": principal.role})  # fmt: skip
            g.principal = principal
            g.ops = acting_ops(principal)
            return view(*args, **kwargs)

        guarded.__doc__ = f"{(view.__doc__ or '').rstrip()}\n\nNeeds the **{role}** role."
        authenticated = _authenticated(guarded)
        authenticated.required_role = role  # type: ignore[attr-defined]
        return authenticated  # type: ignore[return-value]

    return decorate


def article(role: str) -> str:
    """ "an operator", "an admin", "a viewer"."""
    return "an" if role[:1] in "aeiou" else "a"


#: APIFlask's own ``auth_required``, borrowed from a blueprint that is never registered, so a
#: route needs one decorator and the OpenAPI document still names its security
_authenticated = APIBlueprint("security", __name__).auth_required(bearer)
