"""Sockets: options, URLs, socket set-up with CURVE, and the message I/O
that only moves frames (send, receive, lend, release).

Modules: ``options`` (``SocketOptions``), ``urls``, ``sockets`` (create,
bind, close), ``keys`` / ``authenticator`` / ``curve`` (CURVE security),
``zmqio`` (the message I/O engine switch). This package imports nothing
from ``framerpc.wire`` or the endpoints above it.
"""

from .options import DEFAULT_OPTIONS, SocketOptions
from .sockets import bind, bind_ipc_private, close_quietly, make_socket
from .urls import check_url, connect_url_for, derive_endpoint, parse_url
from .zmqio import (
    BUFFER_TYPES,
    IO_IMPLEMENTATION,
    recv_frames,
    release_returned_buffers,
    send_frames,
)

__all__ = [
    "SocketOptions",
    "DEFAULT_OPTIONS",
    "parse_url",
    "check_url",
    "make_socket",
    "bind",
    "bind_ipc_private",
    "derive_endpoint",
    "connect_url_for",
    "close_quietly",
    "send_frames",
    "recv_frames",
    "release_returned_buffers",
    "BUFFER_TYPES",
    "IO_IMPLEMENTATION",
]
