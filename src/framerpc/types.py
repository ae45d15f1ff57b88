"""Check and coerce runtime values against type annotations, including generics.

Values that crossed the wire may have lost their exact type (tuples arrive as
lists, arrays as nested lists), so signals and properties ask two questions:
does a value satisfy an annotation, and if not, can it be converted safely.

Decisions:

* Plain classes follow ``isinstance``: ``True`` satisfies ``int``, ``3``
  does not satisfy ``float`` (coercion makes it ``3.0``).
* Constructs not checkable at runtime (bare ``TypeVar``, forward references,
  non-runtime protocols) are satisfied; unknown generics check their origin.
* Coercion refuses lossy or absurd conversions: ``None`` and ``bool`` never
  become another type, floats become ints only when integral, ``str`` is only
  made from numbers and UTF-8 bytes, text and mappings are never split into
  items, and ``bool`` is only made from ``0``/``1`` or the case-insensitive
  strings ``"true"``/``"false"``/``"1"``/``"0"``.
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import inspect
import logging
import numbers
import reprlib
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import numpy as np

__all__ = ["coerce_to_generic", "is_instance_of_generic", "type_name"]

logger = logging.getLogger(__name__)

_UNION_ORIGINS = (Union, types.UnionType)
# Wrappers whose runtime meaning is entirely their first argument.
_TRANSPARENT_ORIGINS = (typing.Annotated, typing.ClassVar, typing.Final)
# Iterable, but never meant as a container of separate items.
_NOT_ITEMS = (str, bytes, bytearray, cabc.Mapping)
_BUILTIN_CONTAINERS = (list, tuple, set, frozenset)
# Hash-equal numbers (1.0, numpy ints and bools) find the int keys too.
_BOOL_VALUES = {"true": True, "false": False, "1": True, "0": False, 1: True, 0: False}
# Concrete dtypes tried, in order, when an annotation names an abstract one.
_CONCRETE_DTYPES = (np.int64, np.float64, np.complex128, np.uint64, np.bool_)


def type_name(type_: Any) -> str:
    """Return a short human-readable name for an annotation, for messages."""
    if isinstance(type_, type) and get_origin(type_) is None:
        return type_.__qualname__
    return repr(type_).replace("typing.", "")


def _resolve(type_: Any) -> Any:
    """Reduce aliases without a runtime check of their own to a checkable type."""
    while True:
        if type_ is None:
            return types.NoneType
        if isinstance(type_, typing.TypeVar):
            options = type_.__constraints__
            fallback = Union[options] if options else Any  # noqa: UP007 - from a tuple
            type_ = type_.__bound__ or fallback
        elif isinstance(type_, typing.NewType):
            type_ = type_.__supertype__
        elif isinstance(type_, (str, typing.ForwardRef)):
            return Any  # cannot be evaluated without the defining namespace
        elif get_origin(type_) in _TRANSPARENT_ORIGINS:
            type_ = get_args(type_)[0]
        else:
            return type_


def _isinstance(value: Any, cls: Any) -> bool:
    try:
        return isinstance(value, cls)
    except TypeError:  # e.g. a protocol that is not runtime_checkable
        return True


def _same_literal(value: Any, allowed: Any) -> bool:
    # Literal[1] must not accept True (equal, but a different type).
    try:
        return type(value) is type(allowed) and bool(value == allowed)
    except (TypeError, ValueError):  # e.g. the ambiguous truth value of an array
        return False


def _ndarray_dtype(args: tuple[Any, ...]) -> Any:
    """Return the scalar type demanded by ``ndarray[shape, dtype[X]]``, or None."""
    dtype_args = get_args(args[1]) if len(args) >= 2 else ()
    scalar = _resolve(dtype_args[0]) if dtype_args else None
    return scalar if isinstance(scalar, type) and scalar is not Any else None


def is_instance_of_generic(value: Any, type_: Any) -> bool:
    """Return whether `value` satisfies the annotation `type_`.

    Parameters
    ----------
    value : Any
        The value to check.
    type_ : Any
        A class or typing construct.

    Returns
    -------
    bool
        Whether `value` matches. Never raises: if a check fails unexpectedly,
        only the annotation's origin class is checked.
    """
    try:
        return _check(value, _resolve(type_))
    except Exception:  # odd values or annotations must never crash the caller
        logger.debug("falling back to origin check for %r", type_, exc_info=True)
        return _isinstance(value, get_origin(type_) or type_)


def _check(value: Any, type_: Any) -> bool:
    if type_ is Any:
        return True
    if type_ is types.NoneType:
        return value is None
    origin, args = get_origin(type_), get_args(type_)
    if origin is None:
        return _isinstance(value, type_)
    if origin in _UNION_ORIGINS:
        return any(is_instance_of_generic(value, member) for member in args)
    if origin is Literal:
        return any(_same_literal(value, allowed) for allowed in args)
    if not _isinstance(value, origin):
        return False
    if not args or not isinstance(origin, type):
        return True
    if issubclass(origin, np.ndarray):
        scalar = _ndarray_dtype(args)
        return scalar is None or bool(np.issubdtype(value.dtype, scalar))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return all(is_instance_of_generic(item, args[0]) for item in value)
        return len(value) == len(args) and all(map(is_instance_of_generic, value, args))
    if origin is type:
        return not isinstance(args[0], type) or issubclass(value, args[0])
    if issubclass(origin, cabc.Mapping) and len(args) == 2:
        key_t, value_t = args
        return all(
            is_instance_of_generic(k, key_t) and is_instance_of_generic(v, value_t)
            for k, v in value.items()
        )
    if len(args) == 1 and issubclass(origin, cabc.Iterable):
        # Only re-iterable collections: checking an iterator would consume it.
        items = value if isinstance(value, cabc.Collection) else ()
        return all(is_instance_of_generic(item, args[0]) for item in items)
    return True


def coerce_to_generic(value: Any, type_: Any) -> Any:
    """Return `value` converted to the annotation `type_`.

    Parameters
    ----------
    value : Any
        The value to convert.
    type_ : Any
        A class or typing construct.

    Returns
    -------
    Any
        `value` itself if it already matches, else a converted copy; containers
        are converted element-wise (``[1, "a"]`` -> ``(1, "a")`` for
        ``tuple[int, str]``). Unions try their members in order.

    Raises
    ------
    TypeError
        If the conversion is impossible or would lose information; the
        message names the value and the type.
    """
    if is_instance_of_generic(value, type_):
        return value
    try:
        return _coerce(value, _resolve(type_))
    except Exception as exc:
        raise TypeError(
            f"cannot coerce {reprlib.repr(value)} to {type_name(type_)}: {exc}"
        ) from exc


def _items(value: Any) -> list[Any]:
    if isinstance(value, _NOT_ITEMS) or not isinstance(value, cabc.Iterable):
        raise TypeError(f"{type(value).__name__} is not a collection of items")
    return list(value)


def _coerce(value: Any, type_: Any) -> Any:
    if value is None:
        raise TypeError("None is only accepted where the annotation allows it")
    if type_ is types.NoneType:
        raise TypeError("only None is accepted")
    # A plain class is handled like an unparameterized generic of itself.
    origin, args = get_origin(type_) or type_, get_args(type_)
    if origin in _UNION_ORIGINS:
        errors = []
        for member in args:
            try:
                return coerce_to_generic(value, member)
            except TypeError as exc:
                errors.append(str(exc))
        raise TypeError("; ".join(errors))
    if origin is Literal:
        for allowed in args:
            with contextlib.suppress(TypeError):
                if _same_literal(coerce_to_generic(value, type(allowed)), allowed):
                    return allowed
        raise TypeError(f"not one of {args!r}")
    if not isinstance(origin, type):
        raise TypeError("unsupported annotation")
    if issubclass(origin, np.ndarray):
        return _coerce_array(value, _ndarray_dtype(args))
    if origin is tuple and args:
        items = _items(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce_to_generic(item, args[0]) for item in items)
        if len(items) != len(args):
            raise TypeError(f"expected {len(args)} items, got {len(items)}")
        return tuple(map(coerce_to_generic, items, args))
    if issubclass(origin, cabc.Mapping) and len(args) == 2:
        pairs = value if isinstance(value, cabc.Mapping) else dict(_items(value))
        factory: cabc.Callable[..., Any] = (
            dict if inspect.isabstract(origin) else origin
        )
        return factory(
            (coerce_to_generic(k, args[0]), coerce_to_generic(v, args[1]))
            for k, v in pairs.items()
        )
    if issubclass(origin, cabc.Iterable) and len(args) == 1:
        items = [coerce_to_generic(item, args[0]) for item in _items(value)]
        return _container_factory(origin, value)(items)
    # A plain class, or a generic known only by its origin.
    return _coerce_plain(value, origin)


def _container_factory(origin: type, value: Any) -> Any:
    """Pick a concrete class to build for `origin`, preferring the value's own."""
    if not inspect.isabstract(origin):
        return origin
    for factory in (type(value), list, set):
        if factory in _BUILTIN_CONTAINERS and issubclass(factory, origin):
            return factory
    raise TypeError(f"no concrete container known for {origin.__qualname__}")


def _coerce_plain(value: Any, cls: type) -> Any:
    if isinstance(value, bool) and cls is not bool:
        raise TypeError("bool is not coerced to other types")  # True -> 1.0 is a bug
    if cls is bool:
        key = value.strip().lower() if isinstance(value, str) else value
        if key not in _BOOL_VALUES:
            raise ValueError('expected a bool, 0/1 or "true"/"false"')
        return _BOOL_VALUES[key]
    if issubclass(cls, (int, np.integer)) and isinstance(value, numbers.Number):
        # int() itself rejects nan, inf and complex (a Number has no __int__)
        if int(typing.cast(Any, value)) != value:
            raise ValueError("would lose the fractional part")
    elif issubclass(cls, str):
        if isinstance(value, (bytes, bytearray)):
            value = value.decode()
        elif not isinstance(value, numbers.Number):
            raise TypeError("only numbers and UTF-8 bytes are coerced to str")
    elif issubclass(cls, (bytes, bytearray)):
        if isinstance(value, numbers.Number):
            raise TypeError("bytes(n) would make n zero bytes")
        value = value.encode() if isinstance(value, str) else value
    elif issubclass(cls, _BUILTIN_CONTAINERS):
        value = _items(value)
    elif issubclass(cls, dict) and isinstance(value, (str, bytes, bytearray)):
        raise TypeError("text is not a mapping")
    return cls(value)


def _coerce_array(value: Any, scalar: Any) -> np.ndarray:
    source = np.asarray(value)
    if scalar is not None and np.issubdtype(source.dtype, scalar):
        return source
    if source.dtype == object:  # arbitrary objects, not array data
        raise TypeError("not convertible to a numeric or string array")
    if scalar is None:
        return source
    target = np.dtype(
        next((d for d in _CONCRETE_DTYPES if np.issubdtype(d, scalar)), scalar)
    )
    with np.errstate(all="ignore"):  # casting problems are reported below instead
        result = source.astype(target)
    # Narrowing float precision is expected; wrapping or truncating integers is not.
    lossy = target.kind in "biu" and source.dtype.kind in "biufc"
    if lossy and not np.array_equal(result, source):
        raise ValueError(f"values do not fit dtype {target}")
    return result
