"""Who may call which route: the one check every request passes (SPEC.md, Access).

A route declares its level with Sanic's route context (`ctx_access=OPEN`, ...);
undeclared routes get the level their method implies: GET/HEAD read, anything
else acts. So a new POST route (a new action) is protected the moment it
exists, and only routes that must stay open (probes, metrics, docs, the
dashboard's assets and login) say so. `check` is the one decision that enforces
it, made before every route's handler by `GuardedRouter` (every route is added
through it, so no route can be added without it):

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
from collections.abc import Callable
from enum import StrEnum
from functools import wraps
from typing import Any

from sanic import HTTPResponse, Request, redirect
from sanic.router import Router
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
_JSON = "application/json"


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
    headers = request.headers
    # `in` first: Sanic's Header.get is ~0.2 µs a call, `in` ~0.05, and most requests
    # (curl, servers, SDKs) carry neither header (docs/PERFORMANCE.md, Item 1).
    if "origin" not in headers and "sec-fetch-site" not in headers:
        return  # not a browser's cross-origin request
    origin = headers.get("origin")
    fetch_site = (headers.get("sec-fetch-site") or "").strip().lower()
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
    if value == _JSON:
        return  # the usual spelling, without parsing it
    media = (value or "").split(";", 1)[0].strip().lower()
    if media == _JSON or (media.startswith("application/") and media.endswith("+json")):
        return
    got = "none" if value is None else repr(value)
    raise NotJson(f"a request body must be sent with Content-Type: application/json, got {got}")


class GuardedRouter(Router):
    """Sanic's router, adding every route with `check` made before its handler.

    Not a Sanic request middleware: Sanic skips its middleware machinery for a route
    that has none, and that machinery (`_run_request_middleware`, `Middleware.__call__`,
    `isawaitable`) was ~1.5% of a POST /enqueue, against ~1% for the check itself
    (py-spy, docs/PERFORMANCE.md, Item 1). A request that matches no route (404, 405)
    reaches no handler and needs no decision."""

    def add(  # type: ignore[override]  # as Sanic's own Router.add
        self, uri: str, methods: Any, handler: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        return super().add(uri, methods, guarded(handler), *args, **kwargs)


def guarded(handler: Callable[..., Any]) -> Callable[..., Any]:
    """`handler` behind `check`: a refusal (raised, or the login redirect) answers instead.

    Synchronous: it returns the handler's coroutine for Sanic to await, so guarding adds a
    call, not a coroutine. `wraps` keeps what Sanic reads off a handler (`is_stream`, the
    signature that types path parameters)."""

    @wraps(handler)
    def guarded_handler(request: Request, *args: Any, **kwargs: Any) -> Any:
        refusal = check(request)
        if refusal is not None:
            return refusal
        return handler(request, *args, **kwargs)

    return guarded_handler


def check(request: Request) -> HTTPResponse | None:
    """Decide access from the route's level, before the handler runs: None to go on, the
    login redirect for a dashboard page, or raise the refusal.

    Synchronous, and a token is looked for only when one is configured: this runs on
    every request, and the coroutine plus the cookie parsing of an unconditional
    `role_of(presented_token(...))` were ~7% of a POST /enqueue in the profile
    (docs/PERFORMANCE.md, Issue 12). The decisions are those of `may_read`/`may_act`.
    """
    route = request.route
    if route is None:  # no route matched (404, 405): no handler runs
        return None
    level = route_level(route, request.method)
    if level is OPEN:
        return None
    config: Config = request.app.ctx.config
    if level is LOGIN:
        check_same_origin(request, config)
        return None
    if level is READ:
        if not config.read_token or may_read(role_of(presented_token(request), config), config):
            return None
        if getattr(route.ctx, "page", False):  # ask for the token
            return redirect(f"/ui/login?next={request.path}", status=303)
        raise Unauthenticated(_missing_or_wrong(request))
    if config.api_token:
        role = role_of(presented_token(request), config)
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
