"""Tests for framerpc.typing: runtime checks and coercion against annotations."""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable, Mapping, MutableSet, Sequence
from enum import Enum
from typing import Annotated, Any, Literal, NewType, Optional, TypeVar, Union

import numpy as np
import numpy.typing as npt
import pytest

from framerpc.typing import coerce_to_generic, is_instance_of_generic, type_name

UserId = NewType("UserId", int)
BoundT = TypeVar("BoundT", bound=str)
FreeT = TypeVar("FreeT")


class Color(Enum):
    RED = 1
    GREEN = 2


class NotRuntimeProtocol(typing.Protocol):
    def run(self) -> None: ...


U8 = np.zeros(3, dtype=np.uint8)
F64 = np.zeros(3)

MATCHES = [
    # plain classes, following isinstance (bool is an int)
    (3, int),
    (True, int),
    (True, bool),
    (3.0, float),
    ("a", str),
    (b"a", bytes),
    (Color.RED, Color),
    (object(), object),
    # Any, None
    (None, Any),
    ([1, "x"], Any),
    (None, None),
    (None, type(None)),
    # unions
    (None, int | None),
    (3, int | None),
    ("a", Union[int, str]),  # noqa: UP007 - the typing spelling is under test
    (None, Optional[int]),  # noqa: UP045 - the typing spelling is under test
    # tuples
    ((1, "a"), tuple[int, str]),
    ((), tuple[int, ...]),
    ((1, 2, 3), tuple[int, ...]),
    ((1, 2), tuple),
    ((1, "a"), typing.Tuple[int, str]),  # noqa: UP006 - the typing spelling is under test
    # lists, dicts, sets
    ([1.0, 2.5], list[float]),
    ([], list[float]),
    ({"a": 1}, dict[str, int]),
    ({1, 2}, set[int]),
    (frozenset({"a"}), frozenset[str]),
    ([[1], [2, 3]], list[list[int]]),
    ({"a": [1, None]}, dict[str, list[int | None]]),
    # collections.abc generics
    ((1, 2), Sequence[int]),
    ([1, 2], Sequence[int]),
    ("abc", Sequence[str]),
    ({"a": 1}, Mapping[str, int]),
    ({1}, MutableSet[int]),
    (iter([1, "x"]), Iterable[int]),  # iterators are not consumed: origin only
    (len, Callable[[Any], int]),
    (int, type[int]),
    (bool, type[int]),
    # Literal
    (1, Literal[1, 2]),
    ("a", Literal["a"]),
    (None, Literal[None]),
    (Color.RED, Literal[Color.RED]),
    # numpy
    (U8, np.ndarray),
    (U8, npt.NDArray[np.uint8]),
    (U8, npt.NDArray[np.unsignedinteger]),
    (F64, npt.NDArray[np.floating]),
    (F64, npt.NDArray[Any]),
    (F64, npt.NDArray),
    (F64, np.ndarray[Any, np.dtype[np.float64]]),
    # aliases and constructs that cannot be checked
    (3, UserId),
    ("a", BoundT),
    (object(), FreeT),
    (3, Annotated[int, "meta"]),
    (3, "SomeForwardRef"),
    (3, NotRuntimeProtocol),
]

MISMATCHES = [
    ("3", int),
    (3, float),
    (3, str),
    (1, bool),
    (None, int),
    (3, None),
    (3, type(None)),
    ("a", int | None),
    (b"a", Union[int, str]),  # noqa: UP007 - the typing spelling is under test
    ([1, "a"], tuple[int, str]),
    ((1,), tuple[int, str]),
    ((1, "a", 2), tuple[int, str]),
    ((1, "a"), tuple[int, ...]),
    ([1, 2], tuple[int, ...]),
    ([1.0, "x"], list[float]),
    ((1.0,), list[float]),
    ({"a": "1"}, dict[str, int]),
    ({1: 1}, dict[str, int]),
    ([("a", 1)], dict[str, int]),
    ({1, "a"}, set[int]),
    ({1}, frozenset[int]),
    ([[1], ["2"]], list[list[int]]),
    ((1, "a"), Sequence[int]),
    ({1, 2}, Sequence[int]),
    ({"a": "b"}, Mapping[str, int]),
    (3, Callable[[Any], int]),
    (str, type[int]),
    (3, type[int]),
    (3, Literal[1, 2]),
    (True, Literal[1]),  # equal to 1, but not the same literal
    ("b", Literal["a"]),
    ([1, 2], np.ndarray),
    (F64, npt.NDArray[np.uint8]),
    (U8, npt.NDArray[np.floating]),
    ([1, 2], npt.NDArray[Any]),
    ("a", UserId),
    (3, BoundT),
    ("3", Annotated[int, "meta"]),
]


@pytest.mark.parametrize(("value", "type_"), MATCHES)
def test_is_instance_accepts(value: Any, type_: Any) -> None:
    assert is_instance_of_generic(value, type_) is True


@pytest.mark.parametrize(("value", "type_"), MISMATCHES)
def test_is_instance_rejects(value: Any, type_: Any) -> None:
    assert is_instance_of_generic(value, type_) is False


class _BrokenMapping(dict):
    def items(self) -> Any:
        raise RuntimeError("broken")


def test_is_instance_never_crashes_and_falls_back_to_origin() -> None:
    assert is_instance_of_generic(_BrokenMapping(), dict[str, int]) is True
    assert is_instance_of_generic(np.zeros(2), Literal[1]) is False


@pytest.mark.parametrize(("value", "type_"), MATCHES)
def test_coerce_returns_matching_value_unchanged(value: Any, type_: Any) -> None:
    assert coerce_to_generic(value, type_) is value


COERCIONS = [
    # plain classes
    ("3", int, 3),
    (" -4 ", int, -4),
    (3.0, int, 3),
    (np.int64(7), int, 7),
    (np.float32(2.0), int, 2),
    (3, float, 3.0),
    ("2.5", float, 2.5),
    (np.float32(0.5), float, 0.5),
    (3, str, "3"),
    (b"caf\xc3\xa9", str, "café"),
    ("abc", bytes, b"abc"),
    ([1, 2], bytes, b"\x01\x02"),
    ([1, 2], tuple, (1, 2)),
    ((1, 2), list, [1, 2]),
    ([("a", 1)], dict, {"a": 1}),
    (2, Color, Color.GREEN),
    # bool: only 0/1 and "true"/"false"/"1"/"0", case-insensitively
    ("true", bool, True),
    (" FALSE ", bool, False),
    ("1", bool, True),
    ("0", bool, False),
    (1, bool, True),
    (0.0, bool, False),
    (np.bool_(True), bool, True),
    # unions: first member that coerces wins
    ("3", int | None, 3),
    ("3", Union[int, float], 3),  # noqa: UP007 - the typing spelling is under test
    ("3.5", int | float, 3.5),
    ("3", Optional[float], 3.0),  # noqa: UP045 - the typing spelling is under test
    # tuples: the wire turns tuples into lists
    ([1, "a"], tuple[int, str], (1, "a")),
    (["1", "a"], tuple[int, str], (1, "a")),
    ([1, 2], tuple[int, ...], (1, 2)),
    (["1", 2.0], tuple[float, ...], (1.0, 2.0)),
    ([], tuple[int, ...], ()),
    ([[1, "a"]], list[tuple[int, str]], [(1, "a")]),
    # lists, dicts, sets
    (["1", 2], list[float], [1.0, 2.0]),
    ((1, 2), list[int], [1, 2]),
    (np.array([1.0, 2.0]), list[int], [1, 2]),
    ({"1": "2"}, dict[int, float], {1: 2.0}),
    ([("a", "1")], dict[str, int], {"a": 1}),
    ({"a": [[1, "x"]]}, dict[str, list[tuple[int, str]]], {"a": [(1, "x")]}),
    (["1", "2"], set[int], {1, 2}),
    ([1, 2], frozenset[int], frozenset({1, 2})),
    # collections.abc generics build a fitting concrete container
    (["1", "2"], Sequence[int], [1, 2]),
    (("1", "2"), Sequence[int], (1, 2)),
    ({"a": "1"}, Mapping[str, int], {"a": 1}),
    (["1"], MutableSet[int], {1}),
    # Literal
    ("2", Literal[1, 2], 2),
    (1, Literal[Color.RED], Color.RED),
    # aliases
    ("3", UserId, 3),
    (1, BoundT, "1"),
    ("3", Annotated[int, "meta"], 3),
]


@pytest.mark.parametrize(("value", "type_", "expected"), COERCIONS)
def test_coerce_converts(value: Any, type_: Any, expected: Any) -> None:
    result = coerce_to_generic(value, type_)
    assert result == expected
    assert type(result) is type(expected)
    assert is_instance_of_generic(result, type_)


ARRAY_COERCIONS = [
    ([1, 2, 3], np.ndarray, None),
    ([[1, 2], [3, 4]], npt.NDArray[np.uint8], np.uint8),
    (np.array([1.0, 2.0]), npt.NDArray[np.uint8], np.uint8),
    ([0.5, 1.5], npt.NDArray[np.float32], np.float32),
    ([1, 2], npt.NDArray[np.floating], np.float64),
    ((1, 2), npt.NDArray[Any], None),
]


@pytest.mark.parametrize(("value", "type_", "dtype"), ARRAY_COERCIONS)
def test_coerce_arrays(value: Any, type_: Any, dtype: Any) -> None:
    result = coerce_to_generic(value, type_)
    assert isinstance(result, np.ndarray)
    np.testing.assert_array_equal(result, np.asarray(value))
    if dtype is not None:
        assert result.dtype == dtype


FAILURES = [
    (3.5, int),
    (float("nan"), int),
    (float("inf"), int),
    ("3.0", int),
    ("x", int),
    (None, int),
    (None, str),
    (None, list[int]),
    (None, np.ndarray),
    ("x", float),
    (True, float),
    (True, str),
    ([1], str),
    (3, bytes),
    ("abc", list),
    ("abc", list[str]),
    ({"a": 1}, list[str]),
    ("ab", dict),
    ("maybe", bool),
    (2, bool),
    (3, Color),
    (300, np.uint8),
    (3, type(None)),
    ("x", int | None),
    ([1, 2, 3], tuple[int, str]),
    ([1, "x"], tuple[int, int]),
    (5, tuple[int, ...]),
    (["1", "x"], list[int]),
    ([1], dict[str, int]),
    ({"a": "x"}, dict[str, int]),
    ([1.5], Sequence[int]),
    (3, Literal[1, 2]),
    ("c", Literal["a", "b"]),
    ([1.5, 2.0], npt.NDArray[np.uint8]),
    ([300], npt.NDArray[np.uint8]),
    ([-1], npt.NDArray[np.uint8]),
    ([object()], np.ndarray),
    (["x"], npt.NDArray[np.float64]),
    (1.5, Callable[[], int]),
]


@pytest.mark.parametrize(("value", "type_"), FAILURES)
def test_coerce_refuses(value: Any, type_: Any) -> None:
    with pytest.raises(TypeError, match="cannot coerce") as info:
        coerce_to_generic(value, type_)
    # The message names the value and the type.
    assert type_name(type_) in str(info.value)
    assert repr(value)[:10] in str(info.value)


def test_coerce_union_reports_each_member() -> None:
    with pytest.raises(TypeError, match=r"to int.*to float"):
        coerce_to_generic("x", int | float)


@pytest.mark.parametrize(
    ("type_", "name"),
    [
        (int, "int"),
        (list[int], "list[int]"),
        (int | None, "int | None"),
        (Optional[int], "Optional[int]"),  # noqa: UP045 - the typing spelling is under test
        (Color, "Color"),
    ],
)
def test_type_name(type_: Any, name: str) -> None:
    assert type_name(type_) == name
