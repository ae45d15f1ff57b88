"""Short descriptions of large test values, for failure messages.

A property test that compares frames or decoded headers may hold megabytes
of bytes. pytest's assertion rewriting prints whole reprs (without
truncation when ``CI`` is set), and hypothesis prints the falsifying
example: one failure could fill a terminal with ``b"xxxx..."``. The
helpers here compare and raise an ``AssertionError`` whose message names
lengths, a few leading bytes and a digest instead, and
``install_hypothesis_printers`` makes hypothesis print long bytes and
strings the same way (see ``tests/conftest.py``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

#: Bytes and str longer than this are summarised, not printed.
LONG = 64
#: A description longer than this is cut (nested containers of many items).
MAX_DESCRIPTION = 2000


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:10]


def _summary(value: bytes | str) -> str:
    """``b'x' * 32768`` for a run of one item, else head, length and digest."""
    if len(value) <= LONG:
        return repr(value)
    if value == value[:1] * len(value):
        return f"{value[:1]!r} * {len(value)}"
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return (
        f"<{type(value).__name__} len={len(value)} "
        f"sha1={_digest(raw)} starts {value[:16]!r}>"
    )


def describe(value: Any, depth: int = 0) -> str:
    """A repr of ``value`` whose long bytes, strings and arrays are summarised."""
    if isinstance(value, bytes | str):
        text = _summary(value)
    elif isinstance(value, bytearray | memoryview):
        view = memoryview(value)
        raw = bytes(view.cast("B")) if view.nbytes else b""
        text = f"{type(value).__name__}({_summary(raw)})"
    elif isinstance(value, np.ndarray):
        raw = value.tobytes()
        text = (
            f"<ndarray dtype={value.dtype.str} shape={value.shape} "
            f"nbytes={len(raw)} sha1={_digest(raw)}>"
        )
    elif depth > 6:
        text = f"<{type(value).__name__} ...>"
    elif isinstance(value, dict):
        items = ", ".join(
            f"{describe(k, depth + 1)}: {describe(v, depth + 1)}"
            for k, v in value.items()
        )
        text = "{" + items + "}"
    elif isinstance(value, list | tuple):
        items = ", ".join(describe(item, depth + 1) for item in value)
        text = f"[{items}]" if isinstance(value, list) else f"({items})"
    else:
        text = repr(value)
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 20] + f"... ({len(text)} chars)"
    return text


def _first_difference(left: Any, right: Any) -> str:
    """Where two lists first differ, as a short note (empty if not lists)."""
    if not (isinstance(left, list | tuple) and isinstance(right, list | tuple)):
        return ""
    for index, (a, b) in enumerate(zip(left, right, strict=False)):
        if type(a) is not type(b) or a != b:
            return f"; first difference at [{index}]: {describe(a)} != {describe(b)}"
    return f"; lengths {len(left)} != {len(right)}"


def assert_same(left: Any, right: Any, what: str = "values") -> None:
    """Raise ``AssertionError`` with a short message unless ``left == right``."""
    __tracebackhide__ = True  # the caller's line is the one to read
    if left == right:
        return
    raise AssertionError(
        f"{what} differ{_first_difference(left, right)}\n"
        f"  left:  {describe(left)}\n  right: {describe(right)}"
    )


def _hypothesis_printer(value: Any, printer: Any, cycle: bool) -> None:
    printer.text(_summary(value) if len(value) > LONG else repr(value))


def _hypothesis_bytearray_printer(value: Any, printer: Any, cycle: bool) -> None:
    printer.text(describe(value))


def install_hypothesis_printers() -> None:
    """Make hypothesis print long bytes, bytearrays and str in short form.

    Uses the printer table of hypothesis's vendored pretty-printer, which is
    not public API: if it moves, reprs stay long but nothing breaks.
    """
    try:
        from hypothesis.vendor import pretty
    except ImportError:  # pragma: no cover - depends on the hypothesis version
        return
    table = getattr(pretty, "_type_pprinters", None)
    if not isinstance(table, dict):  # pragma: no cover
        return
    table[bytes] = _hypothesis_printer
    table[str] = _hypothesis_printer
    table[bytearray] = _hypothesis_bytearray_printer
