"""Work around a Qt binding bug that would crash the interpreter."""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import qtpy

__all__ = ["EMIT_RETURNS_BORROWED", "emit"]


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
