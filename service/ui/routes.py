"""The dashboard: server-rendered pages (Jinja2) kept live by htmx over /events/stream.

Pages render from the store as the API reads it; each page opens ONE
EventSource on /events/stream, the stream every client uses, and refreshes the
fragments an event concerns (service/ui/static/dashboard.js). Actions (Retry,
Cancel, Enqueue) call the API itself (POST /jobs/{id}/retry, /jobs/{id}/cancel,
/enqueue) from the page, so service/http/access.py judges them exactly as any
other client's: a read token's session is refused by the server, not only shown
no button.
Every script and stylesheet is served from service/ui/static/ (vendored, see
scripts/refresh-ui-vendor.sh); nothing is loaded from another host.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from sanic import Blueprint, HTTPResponse, Request, html, redirect
from sanic.exceptions import NotFound

from domain.errors import UnknownJob
from domain.states import EventType, JobState
from service.http.access import LOGIN, OPEN, SESSION_COOKIE, Role, presented_token, role_of
from service.http.docs import STATE_DIAGRAM, Asset, load_site
from service.http.query import enum_param, int_param, str_param
from service.parts import parts_of
from service.ui import views

bp = Blueprint("ui")

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = (
    "dashboard.css",
    "dashboard.js",
    "vendor/htmx.org/htmx.min.js",
    "vendor/htmx-ext-sse/sse.min.js",
    "vendor/uplot/uPlot.iife.min.js",
    "vendor/uplot/uPlot.min.css",
)
STATIC_CACHE = "public, max-age=3600"  # a guess, as for Swagger UI's assets: they change with a release
MAX_CURSOR = 10**18
# A page's stream sends at most once a second under load (`?batch_ms=`): live to the eye, and
# 10 open dashboards cost the engine 40 times fewer sends than the stream's default 25 ms.
STREAM_BATCH_MS = 1000
# The overview keeps its counters from the events and re-reads /stats this often, for what no
# event says: delayed jobs coming due, other instances' workers, evictions (RETAIN_FINISHED).
# A guess: few enough requests for 10 dashboards to cost ~1% (bench/dashboards.py).
RESYNC_MS = 5000


def _job_url(job_id: str) -> str:
    return "/ui/jobs/" + quote(job_id, safe=":@~-_.")


@cache
def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("service.ui", "templates"),
        autoescape=select_autoescape(("html",)),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["job_url"] = _job_url
    env.globals["states"] = [s.value for s in JobState]
    env.globals["event_types"] = [t.value for t in EventType]
    env.globals["sse_triggers"] = ", ".join(f"sse:{t.value}" for t in EventType)
    return env


@cache
def _static() -> dict[str, Asset]:
    return {name: Asset.read(STATIC_DIR / name) for name in STATIC_FILES}


def _render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTTPResponse:
    config = parts_of(request).config
    auth = bool(config.api_token or config.read_token)
    role = role_of(presented_token(request), config) if auth else Role.OPERATOR
    can_act = not config.api_token or role is Role.OPERATOR
    page = (
        _templates()
        .get_template(template)
        .render(
            auth=auth,
            role=role.value,
            can_act=can_act,
            path=request.path,
            stream_batch_ms=STREAM_BATCH_MS,
            resync_ms=RESYNC_MS,
            **context,
        )
    )
    return html(page, status=status, headers={"Cache-Control": "no-store"})


@bp.get("/", ctx_access=OPEN)
async def root(request: Request) -> HTTPResponse:
    return redirect("/ui/", status=302)


@bp.get("/ui/", ctx_page=True)
async def overview(request: Request) -> HTTPResponse:
    c = await views.counters(parts_of(request))
    return _render(
        request,
        "overview.html",
        c=c,
        nav="overview",
        stream_after=max(0, c.last_seq - views.FEED_BACKFILL),
    )


@bp.get("/ui/jobs", ctx_page=True)
async def jobs_table(request: Request) -> HTTPResponse:
    parts = parts_of(request)
    q = str_param(request, "q")
    if q:
        view = await parts.store.get_job(q.strip())
        found = [view] if view is not None else []
        page = views.JobsPage(jobs=found, state=None, next_cursor=None, cursor=0)
    else:
        state = enum_param(request, "state", JobState)
        cursor = int_param(request, "cursor", default=0, lo=0, hi=MAX_CURSOR)
        page = await views.jobs_page(parts, state=state, cursor=cursor)
    if request.headers.get("hx-request"):  # a refresh of the table alone: no counters to read
        return _render(request, "_jobs_table.html", page=page, q=q or "")
    c = await views.counters(parts)
    return _render(request, "jobs.html", page=page, q=q or "", c=c, nav="jobs", stream_after=c.last_seq)


async def _job_context(request: Request, job_id: str) -> dict[str, Any]:
    store = parts_of(request).store
    view = await store.get_job(job_id)
    events = await store.job_events(job_id)
    if view is None or events is None:
        raise UnknownJob(job_id)
    diagram = load_site().docs_assets.get(STATE_DIAGRAM)
    return {
        "job": view,
        "steps": views.timeline(events),
        "diagram": views.marked_diagram(diagram.body if diagram else None, view.state),
    }


@bp.get("/ui/jobs/<job_id:job_id>", ctx_page=True)
async def job_page(request: Request, job_id: str) -> HTTPResponse:
    try:
        context = await _job_context(request, job_id)
    except UnknownJob:
        return _render(request, "missing.html", status=404, job_id=job_id, nav="jobs")
    last_seq = (await parts_of(request).store.stats()).last_seq
    return _render(request, "job.html", nav="jobs", stream_after=last_seq, **context)


@bp.get("/ui/jobs/<job_id:job_id>/panel")
async def job_panel(request: Request, job_id: str) -> HTTPResponse:
    return _render(request, "_job_panel.html", **await _job_context(request, job_id))


@bp.get("/ui/failures", ctx_page=True)
async def failures_page(request: Request) -> HTTPResponse:
    parts = parts_of(request)
    last_seq = (await parts.store.stats()).last_seq
    return _render(
        request,
        "failures.html",
        f=await views.failures(parts),
        nav="failures",
        stream_after=last_seq,
    )


@bp.get("/ui/fragments/failures")
async def failures_fragment(request: Request) -> HTTPResponse:
    return _render(request, "_failures.html", f=await views.failures(parts_of(request)))


@bp.get("/ui/enqueue", ctx_page=True)
async def enqueue_page(request: Request) -> HTTPResponse:
    last_seq = (await parts_of(request).store.stats()).last_seq
    return _render(request, "enqueue.html", nav="enqueue", stream_after=last_seq)


# -- the session ---------------------------------------------------------------


def _safe_next(raw: str | None) -> str:
    """Where to go after the login: a dashboard path only, never another host."""
    if raw and raw.startswith("/ui/") and "//" not in raw and "\\" not in raw:
        return raw
    return "/ui/"


@bp.get("/ui/login", ctx_access=LOGIN)
async def login_page(request: Request) -> HTTPResponse:
    config = parts_of(request).config
    target = _safe_next(str_param(request, "next"))
    if not (config.api_token or config.read_token):
        return redirect(target, status=303)  # no tokens: nothing to log in to
    had_cookie = request.cookies.get(SESSION_COOKIE) is not None
    error = "the saved token is no longer valid; enter it again" if had_cookie else None
    return _render(request, "login.html", next=target, error=error, nav="login", status=200)


@bp.post("/ui/login", ctx_access=LOGIN)
async def login(request: Request) -> HTTPResponse:
    config = parts_of(request).config
    token = (request.form.get("token") or "").strip() if request.form else ""
    target = _safe_next(request.form.get("next") if request.form else None)
    if role_of(token, config) is Role.NONE:
        response = _render(
            request, "login.html", status=401, next=target, error="that token is not valid", nav="login"
        )
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    response = redirect(target, status=303)
    response.add_cookie(
        SESSION_COOKIE,
        token,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",  # plain-HTTP localhost keeps the cookie too
    )
    return response


@bp.post("/ui/logout", ctx_access=LOGIN)
async def logout(request: Request) -> HTTPResponse:
    response = redirect("/ui/login", status=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@bp.get("/ui/static/<name:path>", ctx_access=OPEN)
async def static_file(request: Request, name: str) -> HTTPResponse:
    asset = _static().get(name)
    if asset is None:
        raise NotFound("no such file")
    return HTTPResponse(asset.body, content_type=asset.content_type, headers={"Cache-Control": STATIC_CACHE})
