"""Helpers shared by tests/wire/test_framing_parity*.py."""

from __future__ import annotations

import numpy as np

from framerpc.errors import ProtocolError, SerializationError
from framerpc.wire import _framing_py as pure

LIMIT = pure.INLINE_LIMIT


def _as_bytes(frame) -> bytes:
    return memoryview(frame).tobytes()


def _encoded(engine, header, limit):
    try:
        return [_as_bytes(f) for f in engine.encode(header, limit)]
    except SerializationError as exc:
        return str(exc)


def _normalized(value):
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, memoryview):
        return ("view", value.tobytes(), value.readonly)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, dict):
        return [(_normalized(k), _normalized(v)) for k, v in value.items()]
    if isinstance(value, list):
        return ("list", [_normalized(v) for v in value])
    return (type(value).__name__, value)


def _decoded(engine, frames):
    try:
        return _normalized(engine.decode(frames))
    except ProtocolError as exc:
        return (type(exc).__name__, str(exc))
