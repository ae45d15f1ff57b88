"""Sockets: options, URLs, socket set-up, CURVE security and the message
I/O that moves frames (send, receive, lend, release)."""

from .sockets import (
    BUFFER_TYPES,
    DEFAULT_OPTIONS,
    IO_IMPLEMENTATION,
    Channel,
    Responder,
    SocketOptions,
    bind,
    bind_ipc_private,
    check_url,
    close_quietly,
    connect_url_for,
    derive_endpoint,
    make_socket,
    parse_url,
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
    "Channel",
    "Responder",
    "BUFFER_TYPES",
    "IO_IMPLEMENTATION",
]
