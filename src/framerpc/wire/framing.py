"""Chooses the framing engine: compiled ``framerpc.wire._framing`` or the
pure twin ``framerpc.wire._framing_py``.

The one switch for this pair, in the style of pyzmq's
``zmq/backend/select.py``: one function picks the module, and the names
it provides (``encode``, ``decode``) are taken from it explicitly. Set
``FRAMERPC_PURE=1`` (or true/yes/on, any case; read once by
``framerpc._env.choose_engine``) to force the twin; empty, 0, false, no
and off keep the compiled engine, and an engine that is not built falls
back to the twin. ``IMPLEMENTATION`` tells which one is live
(``"compiled"`` or ``"pure"``). The constants and ``OutOfBand`` are the
same objects in both engines (``framerpc.wire._framing_common``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._env import choose_engine
from . import _framing_py
from ._framing_common import (
    EXT_ARRAY,
    EXT_BUFFER,
    EXT_INLINE_ARRAY,
    INLINE_LIMIT,
    MAX_DEPTH,
    MAX_FRAMES,
    MAX_HEADER_SIZE,
    MAX_OBJECTS,
    OutOfBand,
)

__all__ = [
    "EXT_BUFFER",
    "EXT_ARRAY",
    "EXT_INLINE_ARRAY",
    "INLINE_LIMIT",
    "MAX_FRAMES",
    "MAX_HEADER_SIZE",
    "MAX_OBJECTS",
    "MAX_DEPTH",
    "OutOfBand",
    "encode",
    "decode",
    "IMPLEMENTATION",
]

_log = logging.getLogger(__name__)


_engine, IMPLEMENTATION = choose_engine("framerpc.wire._framing", _framing_py, _log)
if TYPE_CHECKING:  # both engines have the signatures of the pure twin
    from ._framing_py import decode, encode
else:
    encode = _engine.encode
    decode = _engine.decode
