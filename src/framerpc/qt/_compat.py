"""Work around a Qt binding bug that would crash the interpreter."""

from __future__ import annotations

import ctypes
import sys
import traceback
from typing import Any, TypeVar

import qtpy

__all__ = ["EMIT_RETURNS_BORROWED", "emit", "strip_frames"]

E = TypeVar("E", bound=BaseException)


def _emit_returns_borrowed() -> bool:
    # PySide6 6.12.0's SignalInstance.emit() returns True without taking a
    # reference: each call takes one from True, and on Python < 3.12 (where
    # True is not immortal) the interpreter aborts with "bool_dealloc" after
    # some thousand emissions. 6.11 and older are fine.
    if not qtpy.PYSIDE6 or sys.version_info >= (3, 12):
        return False
    import PySide6

    return tuple(PySide6.__version_info__[:3]) == (6, 12, 0)


EMIT_RETURNS_BORROWED = _emit_returns_borrowed()

_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = [ctypes.py_object]
_incref.restype = None


def emit(signal: Any, *args: Any) -> None:
    """``signal.emit(*args)``, giving back the reference a buggy binding takes."""
    result = signal.emit(*args)
    if EMIT_RETURNS_BORROWED:
        _incref(result)


def strip_frames(exc: E) -> E:
    """Replace ``exc``'s traceback (and its chain's) by a note with its text.

    A traceback holds frames, their locals and, through ``f_back``, every
    calling frame of the worker thread: any of them may tie the caller's
    QObjects into a reference cycle, which Python's garbage collector may
    then free on any thread (Qt objects must be freed in their own). The
    text stays readable: ``traceback.print_exception`` and
    ``logging.exception`` show the note.
    """
    text = "".join(traceback.format_exception(exc)).rstrip()
    seen: set[int] = set()
    chain: list[BaseException] = [exc]
    while chain:
        current = chain.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        chain += [e for e in (current.__cause__, current.__context__) if e is not None]
    exc.add_note(f"raised on a framerpc.qt thread:\n{text}")
    return exc
