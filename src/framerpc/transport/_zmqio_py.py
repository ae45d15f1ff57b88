"""Pure-Python message I/O: the twin of the compiled ``framerpc.transport._zmqio``.

``send_frames`` / ``recv_frames`` move one multipart message; frames
only (send, receive, lend, release): the call path built on them is
``framerpc.rpc``. ``framerpc.transport.zmqio`` picks this module or the
compiled one (same names, same behaviour; the parity tests in
tests/transport/test_zmqio_parity.py run both).
"""

from __future__ import annotations

import numpy as np
import zmq

from ..limits import MAX_FRAMES
from . import _drain

__all__ = [
    "BUFFER_TYPES",
    "recv_frames",
    "release_returned_buffers",
    "send_frames",
]

# A plain int: pyzmq's enum flags cost an enum operation per frame sent.
_SNDMORE = int(zmq.SNDMORE)


def send_frames(sock: zmq.Socket, frames: list, flags: int = 0) -> None:
    """Send ``frames`` as one multipart message, large ones without a copy.

    Cheaper than ``send_multipart`` for the few frames of an RPC message.
    With ``flags=zmq.NOBLOCK``, ``zmq.Again`` means nothing was sent:
    once the first frame is queued, the rest of the message follows.

    Raises
    ------
    TypeError
        A frame does not support the buffer protocol.
    BufferError
        A frame is not one C-contiguous buffer.

    Both are raised before anything is sent. Ownership: pyzmq keeps a
    reference to each buffer of 64 KiB or more until libzmq has sent it;
    smaller frames are copied.
    """
    for index, frame in enumerate(frames):
        # Check the whole message first: a frame refused halfway would leave
        # a partial multipart message queued on the socket.
        if type(frame) is not bytes and type(frame) is not zmq.Frame:
            try:
                view = memoryview(frame)
            except TypeError:
                raise TypeError(
                    f"frame {index} ({type(frame).__name__}) does not support "
                    "the buffer protocol"
                ) from None
            if not view.c_contiguous:
                raise BufferError(
                    f"frame {index} ({type(frame).__name__}) is not C-contiguous"
                )
    last = len(frames) - 1
    send = sock.send
    for index, frame in enumerate(frames):
        send(frame, (_SNDMORE if index < last else 0) | flags, copy=False)
        flags = 0


def release_returned_buffers() -> None:
    """Nothing to do here: pyzmq's collector thread releases sent buffers.

    The compiled twin releases them on its next send or receive; this is
    its way to do so at once.
    """


def recv_frames(sock: zmq.Socket, flags: int = 0) -> list:
    """Receive one multipart message as a list of ``zmq.Frame``.

    Frames are not copied; a memoryview of a frame keeps it alive. Raises
    ``zmq.Again`` when ``RCVTIMEO`` passes or with ``zmq.NOBLOCK``
    and no message.
    """
    recv = sock.recv
    frame = recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = recv(0, copy=False)
        frames.append(frame)
        if len(frames) >= RECV_FRAMES_KEPT and frame.more:
            _drain_parts(sock)
            break
    return frames


#: Most frames ``recv_frames`` keeps of one message: more than any limit of
#: ``framerpc.wire.framing.decode`` plus a routing envelope, so that such a message is
#: still refused by decode. The parts past it are read and dropped at
#: once: a message of millions of empty frames (2 bytes each on the wire)
#: would otherwise cost a Python object per frame (1.5 GB, 9 s of CPU).
RECV_FRAMES_KEPT = 2 * MAX_FRAMES


def _drain_parts(sock: zmq.Socket) -> None:
    """Read and drop the remaining parts of the message being received:
    in batches where ``_drain`` can (few Python calls), else one by one."""
    if _drain.drain is not None and _drain.drain(sock):
        return
    recv = sock.recv
    while recv(0, copy=False).more:  # each part freed at once
        pass


#: What a buffer method may return as its buffer (the server's check and the
#: compiled Responder's copy of it, framerpc.rpc).
BUFFER_TYPES = (bytes, bytearray, memoryview, np.ndarray)
