"""Who may call which route: the one check every request passes (SPEC.md, Access).

A route declares its level with Sanic's route context (`ctx_access=OPEN`, ...);
undeclared routes get the level their method implies: GET/HEAD read, anything
else acts. So a new POST route (a new action) is protected the moment it
exists, and only routes that must stay open (probes, metrics, docs, the
dashboard's assets and login) say so. `check` is the single request middleware
that enforces it:

- acting (ACT): a cross-site browser request (`Sec-Fetch-Site: cross-site`, or
  an `Origin` other than the service's own) is refused unless ALLOWED_ORIGINS
  lists its origin; with API_TOKEN set, the API token is needed (the read token
  gets 403); a non-empty body must say `Content-Type: application/json`.
- reading (READ): with READ_TOKEN set, the read token or the API token.
- the dashboard's login (LOGIN): no token, but the cross-site rule of acting.

Credentials are `Authorization: Bearer <token>`, or the dashboard's session
cookie (HttpOnly, SameSite=Strict, set by the login form), which EventSource
sends where it cannot send headers. Tokens are compared with
hmac.compare_digest, so the time taken says nothing about how much matched.
"""

from __future__ import annotations

import hmac
from enum import StrEnum

from sanic import HTTPResponse, Request, redirect
from sanic_routing import Route

from service.config import Config

#: the dashboard's session cookie: the token the login form accepted
SESSION_COOKIE = "kasp_session"


class Access(StrEnum):
    OPEN = "open"  #: no token, no checks: probes, metrics, docs, static assets
    LOGIN = "login"  #: no token, but refused cross-site: the dashboard's login and logout
    READ = "read"  #: READ_TOKEN or API_TOKEN when READ_TOKEN is set
    ACT = "act"  #: API_TOKEN when set; same-origin (or ALLOWED_ORIGINS); JSON bodies only


OPEN, LOGIN, READ, ACT = Access.OPEN, Access.LOGIN, Access.READ, Access.ACT
_READING_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Unauthenticated(Exception):
    """No token, or not one of the configured tokens."""


class NotPermitted(Exception):
    """A valid token that may not do this (the read token on an acting route)."""


class CrossSite(Exception):
    """A browser says this request comes from another site's page."""


class NotJson(Exception):
    """An acting request whose non-empty body is not declared as JSON."""


class Role(StrEnum):
    """What a request's credentials allow."""

    NONE = "none"
    READER = "reader"
    OPERATOR = "operator"


def level_of(request: Request) -> Access | None:
    """The level of the request's route; None when no route matched (404/405)."""
    route = request.route
    return None if route is None else route_level(route, request.method)


def route_level(route: Route, method: str) -> Access:
    """A route's declared level (`ctx_access=`), or the one its method implies."""
    declared: Access | None = getattr(route.ctx, "access", None)
    if declared is not None:
        return declared
    return READ if method.upper() in _READING_METHODS else ACT


def presented_token(request: Request) -> str | None:
    """The bearer token of the request, else the dashboard's session cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    cookie: str | None = request.cookies.get(SESSION_COOKIE)
    return cookie


def _same(presented: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


def role_of(token: str | None, config: Config) -> Role:
    """OPERATOR for the API token, READER for the read token, NONE for anything else."""
    presented = token or ""
    if _same(presented, config.api_token):
        return Role.OPERATOR
    if _same(presented, config.read_token):
        return Role.READER
    return Role.NONE


def may_read(role: Role, config: Config) -> bool:
    """Reading is open unless READ_TOKEN is set; then either token reads."""
    return not config.read_token or role is not Role.NONE


def may_act(role: Role, config: Config) -> bool:
    """Acting is open unless API_TOKEN is set (only READ_TOKEN set: acting needs no token)."""
    return not config.api_token or role is Role.OPERATOR


def own_origin(request: Request) -> str:
    """The origin a page of this service has: the scheme and host the browser used."""
    return f"{request.scheme}://{request.host}".lower()


def check_same_origin(request: Request, config: Config) -> None:
    """Refuse a request that a browser marks as coming from another site's page."""
    origin = request.headers.get("origin")
    fetch_site = (request.headers.get("sec-fetch-site") or "").strip().lower()
    if origin is None and fetch_site != "cross-site":
        return  # not a browser's cross-origin request (curl, a server, a same-origin navigation)
    normalized = (origin or "").strip().rstrip("/").lower()
    if normalized and normalized in config.allowed_origins:
        return
    if origin is not None and normalized == own_origin(request) and fetch_site != "cross-site":
        return
    shown = origin if origin is not None else f"Sec-Fetch-Site: {fetch_site}"
    raise CrossSite(
        f"cross-site request refused ({shown}); list the page's origin in ALLOWED_ORIGINS to allow it"
    )


def _check_json_body(request: Request) -> None:
    if not request.body:
        return  # nothing to read: retry and cancel need no body and no Content-Type
    value = request.headers.get("content-type")
    media = (value or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    got = "none" if value is None else repr(value)
    raise NotJson(f"a request body must be sent with Content-Type: application/json, got {got}")


async def check(request: Request) -> HTTPResponse | None:
    """The request middleware: decide access from the route's level, before any handler runs."""
    level = level_of(request)
    if level is None or level is OPEN:
        return None
    config: Config = request.app.ctx.config
    if level is LOGIN:
        check_same_origin(request, config)
        return None
    role = role_of(presented_token(request), config)
    if level is READ:
        if may_read(role, config):
            return None
        if request.route is not None and getattr(request.route.ctx, "page", False):  # ask for the token
            return redirect(f"/ui/login?next={request.path}", status=303)
        raise Unauthenticated(_missing_or_wrong(request))
    if not may_act(role, config):
        if role is Role.READER:
            raise NotPermitted("the read token can only read; acting needs the API token (API_TOKEN)")
        raise Unauthenticated(_missing_or_wrong(request))
    check_same_origin(request, config)
    _check_json_body(request)
    return None


def _missing_or_wrong(request: Request) -> str:
    if presented_token(request) is None:
        return "a token is needed: send Authorization: Bearer <token>"
    return "the token is not valid for this service"
