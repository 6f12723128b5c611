"""Checks a live response against the OpenAPI document: the operation, the status and the body schema."""

from __future__ import annotations

import re
from typing import Any

import httpx
from openapi_schema_validator import OAS30Validator

from service.openapi import document

_DOC = document()


def _template_pattern(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")


# Literal paths first, so /docs/DOCUMENTATION.md is not taken for /docs/{asset}.
_TEMPLATES = sorted(_DOC["paths"], key=lambda p: ("{" in p, p))
_PATTERNS = [(p, _template_pattern(p)) for p in _TEMPLATES]


def path_template(path: str) -> str:
    for template, pattern in _PATTERNS:
        if pattern.match(path):
            return template
    raise AssertionError(f"{path} matches no path of the OpenAPI document")


def documented_response(method: str, path: str, status: int) -> dict[str, Any]:
    item = _DOC["paths"][path_template(path)]
    operation = item.get(method.lower())
    if operation is None and status == 405:  # the 405 is documented on the allowed method
        operation = next(op for op in item.values() if "405" in op["responses"])
    assert operation is not None, f"{method} {path} is not in the OpenAPI document"
    response = operation["responses"].get(str(status))
    assert response is not None, f"{method} {path} answered {status}, which the document does not list"
    return response


def check(response: httpx.Response) -> Any:
    """Fail unless `response` is what the document promises; return its JSON body, if any."""
    request = response.request
    documented = documented_response(request.method, request.url.path, response.status_code)
    media_types = documented["content"]
    received = response.headers["content-type"].split(";")[0].strip()
    assert received in media_types, (
        f"{request.method} {request.url.path}: {received} not in {list(media_types)}"
    )
    for name in documented.get("headers", {}):
        assert name in response.headers, f"{request.method} {request.url.path}: header {name} is missing"
    if received != "application/json":
        return None
    body = response.json()
    schema = {"components": _DOC["components"], **media_types[received]["schema"]}
    errors = [e.message for e in OAS30Validator(schema).iter_errors(body)]
    assert not errors, f"{request.method} {request.url.path} {response.status_code}: {errors} in {body}"
    return body
