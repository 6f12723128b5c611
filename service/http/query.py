"""Query-string parameters: strict, with errors that name the parameter and its range."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TypeVar

from sanic import Request

from service.http.errors import InvalidRequest

E = TypeVar("E", bound=StrEnum)
_DIGITS = re.compile(r"[0-9]{1,18}")
_DECIMAL = re.compile(r"[0-9]{1,18}(\.[0-9]{1,9})?")  # plain decimals: no sign, exponent, nan or inf


def _single(request: Request, name: str) -> str | None:
    values = request.args.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest(
            f"{name} is given {len(values)} times; give it once", field=name, code="invalid_parameter"
        )
    value: str = values[0]
    return value


def int_param(request: Request, name: str, *, default: int, lo: int, hi: int) -> int:
    raw = _single(request, name)
    if raw is None or raw == "":
        return default
    if not _DIGITS.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise InvalidRequest(
            f"{name} must be an integer {lo}..{hi}, got {raw!r}", field=name, code="invalid_parameter"
        )
    return int(raw)


def seconds_param(request: Request, name: str, *, lo: float, hi: float) -> float | None:
    """A plain decimal number of seconds lo..hi (`5`, `0.25`), or None when absent."""
    raw = _single(request, name)
    if raw is None or raw == "":
        return None
    if not _DECIMAL.fullmatch(raw) or not lo <= float(raw) <= hi:
        raise InvalidRequest(
            f"{name} must be a number of seconds {lo:g}..{hi:g}, got {raw!r}",
            field=name,
            code="invalid_parameter",
        )
    return float(raw)


def enum_param(request: Request, name: str, enum: type[E]) -> E | None:
    raw = _single(request, name)
    if raw is None or raw == "":
        return None
    try:
        return enum(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise InvalidRequest(
            f"{name} must be one of {allowed}, got {raw!r}", field=name, code="invalid_parameter"
        ) from None


def str_param(request: Request, name: str) -> str | None:
    raw = _single(request, name)
    return raw or None
