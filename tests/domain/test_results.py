"""check_result: a JSON value of at most 64 KiB as compact UTF-8 JSON, or a clear refusal."""

from __future__ import annotations

import json
from collections import OrderedDict
from decimal import Decimal
from enum import IntEnum
from typing import Any

import pytest

from domain.errors import InvalidResult
from domain.results import MAX_RESULT_BYTES, check_result


def compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class Colour(IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -17,
        2**80,  # JSON numbers have no size limit; Python reads them back exactly
        3.25,
        -0.0,
        1e300,
        "",
        "héllo ✓ 𝄞",
        [],
        {},
        [1, "two", 3.0, None, [True, {"k": []}]],
        {"nested": {"list": [{"deep": "value"}]}, "empty": ""},
    ],
)
def test_json_values_are_accepted_and_returned_equal(value: Any) -> None:
    assert check_result(value) == value
    assert type(check_result(value)) is type(value)


def test_the_result_is_a_fresh_plain_copy() -> None:
    value = OrderedDict(a=[1, 2])
    checked = check_result(value)
    assert checked == {"a": [1, 2]} and type(checked) is dict
    assert checked["a"] is not value["a"]
    assert check_result([Colour.RED]) == [1] and type(check_result([Colour.RED])[0]) is int


def test_a_value_used_twice_is_not_a_cycle() -> None:
    shared = [1]
    assert check_result({"a": shared, "b": shared}) == {"a": [1], "b": [1]}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (float("nan"), "$ is nan, which JSON has no number for"),
        ({"x": [float("inf")]}, "$['x'][0] is inf, which JSON has no number for"),
        ([float("-inf")], "$[0] is -inf"),
        ({1: "one"}, "$ has the key 1 (int): JSON object keys are strings"),
        ({"a": {None: 0}}, "$['a'] has the key None (NoneType)"),
        ({(1, 2): 0}, "$ has the key (1, 2) (tuple)"),
        (b"bytes", "$ is of type bytes, which is not a JSON value"),
        ([bytearray(b"x")], "$[0] is of type bytearray"),
        ({"t": (1, 2)}, "$['t'] is of type tuple, which is not a JSON value (use a list)"),
        ({"s": {1, 2}}, "$['s'] is of type set"),
        (object(), "$ is of type object"),
        (Decimal("1.5"), "$ is of type Decimal"),
        ("lone \ud800 surrogate", "$ is a string with a lone surrogate"),
        (["ok", {"k": "\udfff"}], "$[1]['k'] is a string with a lone surrogate"),
        ({"\ud83d": 1}, "$ has a key with a lone surrogate"),
    ],
)
def test_what_json_cannot_carry_is_refused_saying_what_and_where(value: Any, problem: str) -> None:
    with pytest.raises(InvalidResult) as info:
        check_result(value)
    assert str(info.value).startswith("the result is not a JSON value: ")
    assert problem in str(info.value)


def test_an_integer_too_long_to_write_is_refused() -> None:
    with pytest.raises(InvalidResult, match=r"\$\['n'\] is an integer too long to write as JSON"):
        check_result({"n": 10**5000})


def test_a_cycle_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidResult, match=r"\$\[0\] contains itself \(a cycle\)"):
        check_result(loop)


def test_a_value_nested_too_deeply_to_encode_is_refused() -> None:
    deep: list[Any] = []
    inner = deep
    for _ in range(10_000):  # beyond the encoder's recursion limit (1000 by default)
        inner.append([])
        inner = inner[0]
    with pytest.raises(InvalidResult, match="nested too deeply"):
        check_result(deep)


def test_a_container_that_raises_when_read_is_refused_not_propagated() -> None:
    class Hostile(dict[str, Any]):
        def items(self) -> Any:
            raise RuntimeError("no")

        def __iter__(self) -> Any:
            raise RuntimeError("no")

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no")

        __hash__ = None  # type: ignore[assignment]

    with pytest.raises(InvalidResult, match="not a JSON value"):
        check_result(Hostile(a=1))


def test_the_limit_is_64_kib_of_compact_utf8_json_inclusive() -> None:
    assert MAX_RESULT_BYTES == 65536
    at_limit = "x" * (MAX_RESULT_BYTES - 2)  # plus two quotes
    assert len(compact(at_limit)) == MAX_RESULT_BYTES
    assert check_result(at_limit) == at_limit
    over = at_limit + "x"
    with pytest.raises(InvalidResult) as info:
        check_result(over)
    assert str(info.value) == (
        "the result is 65537 bytes as compact UTF-8 JSON, over the limit of 65536 bytes (64 KiB)"
    )


def test_the_limit_counts_utf8_bytes_not_characters() -> None:
    ascii_fits = "a" * (MAX_RESULT_BYTES - 2)
    assert check_result(ascii_fits) == ascii_fits
    same_length = "€" + "a" * (MAX_RESULT_BYTES - 3)  # as many characters; "€" is 3 bytes in UTF-8
    with pytest.raises(InvalidResult, match="65538 bytes"):
        check_result(same_length)
    euros_at_limit = "€" * 21844 + "aa"  # 3 * 21844 + 2 + 2 quotes = 65536 bytes
    assert len(compact(euros_at_limit)) == MAX_RESULT_BYTES
    assert check_result(euros_at_limit) == euros_at_limit


def test_a_dict_at_the_limit_counts_no_whitespace() -> None:
    key_overhead = len(compact({"k": ""}))  # {"k":""}
    value = {"k": "y" * (MAX_RESULT_BYTES - key_overhead)}
    assert len(compact(value)) == MAX_RESULT_BYTES
    assert len(json.dumps(value)) > MAX_RESULT_BYTES  # json.dumps' default ", " / ": " would not fit
    assert check_result(value) == value
