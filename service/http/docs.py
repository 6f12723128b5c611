"""/openapi.json, Swagger UI at /swagger/, and the documentation page at /docs/.

Everything is read and rendered once, when the server starts, and served from
memory: no request renders Markdown or touches the disk, and no page refers to a
host other than kasp itself (Swagger UI's files come from the `swagger-ui-bundle`
package). The documentation is the committed docs/DOCUMENTATION.md and its state
diagram, which `make doc` generates from the code and tests/docs/ keeps in sync.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template

import markdown
from sanic import Blueprint, HTTPResponse, Request, raw
from sanic.exceptions import NotFound
from swagger_ui_bundle import swagger_ui_path

from service.http.access import OPEN
from service.openapi import document_bytes
from service.parts import App

log = logging.getLogger("kasp.docs")
bp = Blueprint("docs")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"  # the repository's docs/, written by `make doc`
DOCUMENTATION = "DOCUMENTATION.md"
STATE_DIAGRAM = "state-diagram.svg"

SWAGGER_UI_FILES = (
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "swagger-ui.css",
    "favicon-16x16.png",
    "favicon-32x32.png",
)
MARKDOWN_EXTENSIONS = ("tables", "fenced_code", "toc", "sane_lists")
MISSING_DOCS = "the documentation is not part of this installation; run `make doc` in a kasp checkout"
ASSET_CACHE = "public, max-age=3600"  # a guess: assets change only with a new release

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str

    @classmethod
    def read(cls, path: Path) -> Asset:
        return cls(path.read_bytes(), _TYPES[path.suffix])


@dataclass(frozen=True, slots=True)
class DocsSite:
    swagger_page: Asset
    swagger_assets: dict[str, Asset]
    docs_page: Asset | None  #: None when docs/ is not in this installation
    docs_source: Asset | None
    docs_assets: dict[str, Asset]


def render_documentation(source: str) -> str:
    """The Markdown source as the body of the /docs/ page."""
    html: str = markdown.markdown(source, extensions=list(MARKDOWN_EXTENSIONS), output_format="html")
    return html


@cache  # once per process: the files only change with a new checkout, which means a restart
def load_site(docs_dir: Path = DOCS_DIR) -> DocsSite:
    swagger_assets = {name: Asset.read(Path(str(swagger_ui_path)) / name) for name in SWAGGER_UI_FILES}
    swagger_assets["kasp-init.js"] = Asset.read(STATIC_DIR / "swagger" / "kasp-init.js")
    site = DocsSite(
        swagger_page=Asset.read(STATIC_DIR / "swagger" / "index.html"),
        swagger_assets=swagger_assets,
        docs_page=None,
        docs_source=None,
        docs_assets={"docs.css": Asset.read(STATIC_DIR / "docs" / "docs.css")},
    )
    source, diagram = docs_dir / DOCUMENTATION, docs_dir / STATE_DIAGRAM
    if not (source.is_file() and diagram.is_file()):
        # An installation without the repository's docs/ still serves the API and Swagger UI.
        log.warning("%s: %s", source, MISSING_DOCS, extra={"action": "docs_missing"})
        return site
    page = Template((STATIC_DIR / "docs" / "page.html").read_text()).substitute(
        body=render_documentation(source.read_text(encoding="utf-8"))
    )
    return DocsSite(
        swagger_page=site.swagger_page,
        swagger_assets=site.swagger_assets,
        docs_page=Asset(page.encode(), _TYPES[".html"]),
        docs_source=Asset.read(source),
        docs_assets={**site.docs_assets, STATE_DIAGRAM: Asset.read(diagram)},
    )


@bp.before_server_start
def _load(app: App) -> None:
    app.ctx.docs_site = load_site()


def _send(
    asset: Asset | None, *, cache_control: str = "no-cache", missing: str = "no such file"
) -> HTTPResponse:
    if asset is None:
        raise NotFound(missing)
    return raw(asset.body, content_type=asset.content_type, headers={"Cache-Control": cache_control})


@bp.get("/openapi.json", ctx_access=OPEN)
async def openapi_json(request: Request) -> HTTPResponse:
    return raw(document_bytes(), content_type="application/json")


@bp.get("/swagger/", ctx_access=OPEN)
async def swagger_ui(request: Request) -> HTTPResponse:
    return _send(request.app.ctx.docs_site.swagger_page)


@bp.get("/swagger/<asset:str>", ctx_access=OPEN)
async def swagger_asset(request: Request, asset: str) -> HTTPResponse:
    return _send(request.app.ctx.docs_site.swagger_assets.get(asset), cache_control=ASSET_CACHE)


@bp.get("/docs/", ctx_access=OPEN)
async def docs_page(request: Request) -> HTTPResponse:
    return _send(request.app.ctx.docs_site.docs_page, missing=MISSING_DOCS)


@bp.get(f"/docs/{DOCUMENTATION}", ctx_access=OPEN)
async def docs_source(request: Request) -> HTTPResponse:
    return _send(request.app.ctx.docs_site.docs_source, missing=MISSING_DOCS)


@bp.get("/docs/<asset:str>", ctx_access=OPEN)
async def docs_asset(request: Request, asset: str) -> HTTPResponse:
    return _send(request.app.ctx.docs_site.docs_assets.get(asset))
