"""Every error response in one table: exception class -> status and machine code.

Bodies follow SPEC.md: `{"error": <code>, "message": <sentence>, ...extra}`.
"""

from __future__ import annotations

import logging
from typing import Any

from sanic import HTTPResponse, Request, json
from sanic.exceptions import RequestCancelled, SanicException
from sanic.handlers import ErrorHandler

from domain.errors import InvalidTransition, JobConflict, QueueFull, UnknownJob, VersionConflict
from service.engine import Draining
from service.http.access import CrossSite, NotJson, NotPermitted, Unauthenticated
from service.http.response import Answer
from service.store.faults import RETRY_AFTER_S as RETRY_AFTER_STORE_S
from service.store.faults import StoreUnavailable

log = logging.getLogger("kasp.http")

JSON = "application/json"
CONSTANT_ANSWERS = 64  # distinct constant answers kept encoded: one per (class, message); a guess, ample
RETRY_AFTER_FULL_S = 1  # a guess: the default pool drains 64 jobs of ~300 ms in ~5 s
RETRY_AFTER_DRAINING_S = 5  # a guess: about one restart of a single-process service
RETRY_AFTER_SHED_S = 1  # a guess: connections at the cap turn over within REQUEST_DEADLINE


class InvalidRequest(Exception):
    """The request is well-formed HTTP but its content is not acceptable."""

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid_field") -> None:
        super().__init__(message)
        self.code = code
        self.field = field


class PayloadTooLarge(Exception):
    """The request body is larger than MAX_BODY_BYTES."""


# class -> (status, code, extra headers)
_TABLE: dict[type[BaseException], tuple[int, str, dict[str, str]]] = {
    InvalidRequest: (400, "invalid_request", {}),
    Unauthenticated: (401, "unauthorized", {"WWW-Authenticate": "Bearer"}),
    NotPermitted: (403, "forbidden", {}),
    CrossSite: (403, "cross_site", {}),
    UnknownJob: (404, "not_found", {}),
    JobConflict: (409, "conflict", {}),
    InvalidTransition: (409, "invalid_transition", {}),
    VersionConflict: (409, "version_conflict", {}),
    PayloadTooLarge: (413, "payload_too_large", {}),
    NotJson: (415, "unsupported_media_type", {}),
    QueueFull: (429, "queue_full", {"Retry-After": str(RETRY_AFTER_FULL_S)}),
    Draining: (503, "shutting_down", {"Retry-After": str(RETRY_AFTER_DRAINING_S)}),
    # Logged once per outage by the store's health record, not per request.
    StoreUnavailable: (503, "store_unavailable", {"Retry-After": str(RETRY_AFTER_STORE_S)}),
}

_SANIC_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    414: "uri_too_long",
    416: "range_not_satisfiable",
    417: "expectation_failed",
    431: "header_fields_too_large",
    503: "service_unavailable",
}

_DRAINING_MESSAGE = "the service is shutting down and accepts no new jobs; retry on another instance or later"


def describe(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) of the answer to `exc`: the one place an error becomes an
    answer, for a whole response (`render`) and for one job of a batch alike."""
    for cls in type(exc).__mro__:
        entry = _TABLE.get(cls)
        if entry is not None:
            status, code, headers = entry
            break
    else:
        if isinstance(exc, SanicException):
            status = exc.status_code
            code = _SANIC_CODES.get(status, "http_error")
            headers = {str(k): str(v) for k, v in (getattr(exc, "headers", None) or {}).items()}
            return status, {"error": code, "message": str(exc) or code.replace("_", " ")}, headers
        log.error("unhandled error", exc_info=exc, extra={"action": "http_500"})
        return 500, {"error": "internal_error", "message": "the server failed to handle this request"}, {}
    body: dict[str, Any] = {
        "error": code,
        "message": _DRAINING_MESSAGE if isinstance(exc, Draining) else str(exc),
    }
    if isinstance(exc, InvalidRequest):
        body["error"] = exc.code
        if exc.field is not None:
            body["field"] = exc.field
    return status, body, headers


def render(exc: BaseException) -> HTTPResponse:
    status, body, headers = describe(exc)
    return json(body, status=status, headers=headers or None)


_encoded: dict[tuple[type[BaseException], str], tuple[int, bytes | None, dict[str, str] | None]] = {}


def render_constant(exc: BaseException) -> HTTPResponse:
    """`render(exc)` for an error whose answer depends on its class and message only
    (QueueFull: the message names QUEUE_SIZE), encoded once and reused: the 429 of a
    full queue comes in floods, and encoding it each time was ~9% of such a request in
    the profile (docs/PERFORMANCE.md, Issue 12)."""
    key = (type(exc), str(exc))
    entry = _encoded.get(key)
    if entry is None:
        response = render(exc)
        entry = (response.status, response.body, dict(response.headers) or None)
        if len(_encoded) < CONSTANT_ANSWERS:
            _encoded[key] = entry
    status, body, headers = entry
    return Answer(body, status=status, headers=headers, content_type=JSON)


class KaspErrorHandler(ErrorHandler):
    """Renders every error, Sanic's own (404, 405, 413, ...) included, in SPEC.md's shape,
    whatever the client's Accept header says."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if isinstance(exception, RequestCancelled):
            # The client went away mid-request: nobody to answer, nothing to log or count.
            return HTTPResponse(status=503)
        response = render(exception)
        parts = getattr(request.app.ctx, "parts", None)  # absent before the server starts
        if parts is not None:
            parts.metrics.count_rejection(request.method, request.path, response.status)
        return response
