"""Chooses the message I/O engine: compiled ``framerpc.transport._zmqio``
(libzmq called directly) or the pure twin ``framerpc.transport._zmqio_py``.

The one switch for this pair, in the style of pyzmq's
``zmq/backend/select.py``: one function picks the module, and the names
it provides are taken from it explicitly. ``FRAMERPC_PURE`` (read once, by
``framerpc._env.choose_engine``) forces the twin; a compiled module that
is not built falls back to it. ``IO_IMPLEMENTATION`` tells which one is
live (``"compiled"`` or ``"pure"``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._env import choose_engine
from . import _zmqio_py

__all__ = [
    "send_frames",
    "recv_frames",
    "release_returned_buffers",
    "BUFFER_TYPES",
    "IO_IMPLEMENTATION",
]

_log = logging.getLogger(__name__)


_engine, IO_IMPLEMENTATION = choose_engine("framerpc.transport._zmqio", _zmqio_py, _log)
if TYPE_CHECKING:  # both engines have the signatures of the pure twin
    from ._zmqio_py import (
        recv_frames,
        release_returned_buffers,
        send_frames,
    )
else:
    send_frames = _engine.send_frames
    recv_frames = _engine.recv_frames
    release_returned_buffers = _engine.release_returned_buffers
#: What ``send_frames`` accepts as a frame besides zmq.Frame.
BUFFER_TYPES = _zmqio_py.BUFFER_TYPES
