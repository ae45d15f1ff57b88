"""The same-host lane's packets: one RPC message in one ``AF_UNIX``
``SOCK_SEQPACKET`` packet (see docs/protocol.md, "Same-host lane").

A sync client that shook hands for shared memory may send its method
calls on a Unix socket of the server instead of its ZeroMQ connection:
each direction of a libzmq message wakes an I/O thread on both sides, a
packet wakes only the reader. This module is the packet layout, shared
by ``framerpc.client.lane`` and ``framerpc.server.lane``; nothing here
knows about RPC.

Layout of a message packet (the frames of one message, without routing
envelope or delimiter)::

    byte 0        n, the number of frames (1 to MAX_FRAMES)
    4 * (n - 1)   the lengths of frames 0 to n - 2 (u32, little-endian)
    ...           the frames, one after the other (the last one to the end)

A packet whose byte 0 is 0 is a control packet: ``HELLO`` (the client's
first packet: lane id and token), ``ACK`` (the server's answer to it).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

__all__ = [
    "ACK",
    "AVAILABLE",
    "MAX_FRAMES",
    "MAX_PACKET",
    "TOKEN_BYTES",
    "decode",
    "encode",
    "hello",
    "PacketReader",
    "parse_hello",
    "size_buffers",
]

#: Whether this platform has ``SOCK_SEQPACKET`` Unix sockets (Linux).
AVAILABLE = hasattr(socket, "AF_UNIX") and hasattr(socket, "SOCK_SEQPACKET")
#: Largest packet either side sends or accepts (bytes). A larger request
#: goes over ZeroMQ, a larger reply too; a larger packet closes the lane.
#: 256 KiB, the default ``shm_threshold``: every reply below it fits (with
#: 64 KiB, a 64 KiB frame and its header did not, and went over ZeroMQ
#: while the client waited on both: 64 KiB fetches were 16-43% slower than
#: before the lane existed). The server's offer carries it, and a client
#: uses only an offer of its own bound (``size_buffers``: each socket's
#: send buffer holds one such packet).
MAX_PACKET = 256 << 10
#: Most frames in one message packet.
MAX_FRAMES = 16
#: Bytes of the token that binds a lane connection to a client.
TOKEN_BYTES = 16
#: The server's answer to a valid ``HELLO``.
ACK = b"\x00A"

_HELLO = b"\x00H"
_HELLO_SIZE = len(_HELLO) + 4 + TOKEN_BYTES
_U32 = struct.Struct("<I")


class PacketReader:
    """Reads packets into one buffer of ``MAX_PACKET + 1`` bytes and
    returns each as bytes of its own size (b"" at the end of the
    connection, or for an empty packet); a packet over ``MAX_PACKET``
    comes cut at ``MAX_PACKET + 1`` bytes (refuse it). One thread at a
    time.

    ``socket.recv(MAX_PACKET + 1)`` allocated that much for every packet:
    over glibc's mmap threshold (128 KiB unless a larger block was freed
    before), and shrunk by realloc (mremap), which never raises the
    threshold: an mmap, page faults and an munmap per packet (pinned echo
    24 -> 47 us with 256 KiB packets). A peek at the length first
    (``MSG_PEEK | MSG_TRUNC``) cost about 5 us a packet here. The copy out
    of the buffer costs a few microseconds at 64 KiB.
    """

    __slots__ = ("_buffer", "_view")

    def __init__(self) -> None:
        self._buffer = bytearray(MAX_PACKET + 1)
        self._view = memoryview(self._buffer)

    def read(self, sock: socket.socket, flags: int = 0) -> bytes:
        """The next packet of ``sock`` (``flags`` as ``socket.recv``'s)."""
        size = sock.recv_into(self._buffer, MAX_PACKET + 1, flags)
        return self._view[:size].tobytes()


def size_buffers(sock: socket.socket) -> None:
    """Let ``sock`` send a packet of ``MAX_PACKET``: a Unix datagram larger
    than the socket's send buffer fails (EMSGSIZE), and the default
    buffer (``net.core.wmem_default``) is smaller on some systems (about
    160 KiB on 32-bit ARM). The kernel doubles the value asked for, up to
    twice ``net.core.wmem_max``; a send that still fails goes over ZeroMQ."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * MAX_PACKET)
    except OSError:
        pass


def hello(lane_id: int, token: bytes) -> bytes:
    """The client's first packet: the lane id and token of its offer."""
    return _HELLO + _U32.pack(lane_id) + token


def parse_hello(packet: bytes) -> tuple[int, bytes] | None:
    """The lane id and token of a ``HELLO`` packet; None if it is not one."""
    if len(packet) != _HELLO_SIZE or not packet.startswith(_HELLO):
        return None
    return _U32.unpack_from(packet, 2)[0], packet[6:]


def encode(frames: list) -> list | None:
    """The buffers of the packet of ``frames`` (for ``socket.sendmsg``,
    which gathers them without a copy); None when the message does not fit
    in a packet (too large, too many frames): it goes over ZeroMQ."""
    count = len(frames)
    if count == 1:  # the common message: a header alone
        frame = frames[0]
        size = len(frame) if type(frame) is bytes else memoryview(frame).nbytes
        return [b"\x01", frame] if size < MAX_PACKET else None
    if not 0 < count <= MAX_FRAMES:
        return None
    sizes = [memoryview(frame).nbytes for frame in frames]
    if sum(sizes) + 4 * count >= MAX_PACKET:
        return None
    head = bytes([count]) + b"".join(_U32.pack(size) for size in sizes[:-1])
    return [head, *frames]


def decode(packet: Any) -> list:
    """The frames (read-only memoryviews over ``packet``) of a message
    packet.

    Raises
    ------
    ValueError
        A control packet, an empty one, or lengths that do not add up.
    """
    view = memoryview(packet).toreadonly()
    if not view:
        raise ValueError("empty lane packet")
    count = view[0]
    if count == 1:
        return [view[1:]]
    if count == 0 or count > MAX_FRAMES:
        raise ValueError(f"lane packet of {count} frames")
    start = 1 + 4 * (count - 1)
    if start > len(view):
        raise ValueError("truncated lane packet header")
    frames = []
    for index in range(count - 1):
        size = _U32.unpack_from(view, 1 + 4 * index)[0]
        if start + size > len(view):
            raise ValueError("lane packet shorter than its frames")
        frames.append(view[start : start + size])
        start += size
    frames.append(view[start:])
    return frames
