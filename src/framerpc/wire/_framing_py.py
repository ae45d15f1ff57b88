"""Pure-Python framing: a header dict plus buffers <-> a list of frames.

The reference behaviour of the framing layer; ``ext/_framing.pyx`` matches
it function for function (tests/wire/test_framing_parity.py checks both give
the same frames). Nothing here knows about sockets.

Layout of one message (see ``docs/protocol.md``)::

    frame 0      msgpack map (the header)
    frame 1..n   out-of-band buffers, referenced from the header

Inside the header a large bytes-like value or a numpy array is replaced by
a msgpack ExtType that points at its frame:

=======  ==========================  ======================================
ext code payload (msgpack)           decoded as
=======  ==========================  ======================================
1        frame index                 read-only ``memoryview`` of the frame
2        [frame index, dtype, shape] read-only ``numpy.ndarray`` on the frame
3        [dtype, shape, raw bytes]   ``numpy.ndarray`` (small, inline)
=======  ==========================  ======================================

Ownership: an encoded message holds references to the caller's buffers (no
copy) until the transport has sent them. A decoded memoryview or array
keeps its received frame alive and never copies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from ..errors import ProtocolError
from ._framing_common import (
    EXT_ARRAY,
    EXT_BUFFER,
    EXT_INLINE_ARRAY,
    INLINE_LIMIT,
    MAX_DEPTH,
    MAX_FRAMES,
    MAX_HEADER_SIZE,
    MAX_OBJECTS,
    SCAN_ABOVE,
    OutOfBand,
    bounded_unpackb,
    check_decoded,
    check_key,
    encode_leaf,
    header_view,
    pack_header,
    resolve_ext,
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
]

_SCALARS = frozenset({str, int, float, bool, type(None)})
_KEYS = frozenset({str, int})


def _walk(value: Any, buffers: list, limit: int) -> Any:
    """Return ``value`` with large buffers replaced by frame references.

    Scalars are tested inline in the container loops: most values of a
    header are scalars, and a call per value would dominate small messages.
    """
    kind = type(value)
    if kind is dict:
        return {
            (key if type(key) in _KEYS else check_key(key)): (
                item if type(item) in _SCALARS else _walk(item, buffers, limit)
            )
            for key, item in value.items()
        }
    if kind is list or kind is tuple:
        return [
            item if type(item) in _SCALARS else _walk(item, buffers, limit)
            for item in value
        ]
    if kind in _SCALARS:
        return value
    if kind is bytes and len(value) < limit:
        return value
    return encode_leaf(value, buffers, limit, _walk)


def encode(header: dict, limit: int = INLINE_LIMIT) -> list:
    """Turn a header dict into the frames of one message.

    Parameters
    ----------
    header : dict
        The message header. Values may nest lists, tuples, dicts, bytes-like
        objects, numpy arrays and ``OutOfBand`` markers.
    limit : int
        Bytes-like values and arrays of at least this many bytes travel as
        their own frame (zero-copy); smaller ones are copied into the header.

    Returns
    -------
    list
        ``[header_bytes, *buffers]``. The buffers are the caller's objects
        (or a contiguous copy of a non-contiguous array), not copies.

    Raises
    ------
    SerializationError
        A value of an unsupported type; the message names the type.
    """
    buffers: list = [None]
    packed = _walk(header, buffers, limit)
    buffers[0] = pack_header(packed)
    return buffers


def decode(
    frames: Sequence,
    max_frames: int = MAX_FRAMES,
    max_header: int = MAX_HEADER_SIZE,
    max_objects: int = MAX_OBJECTS,
    max_depth: int = MAX_DEPTH,
) -> dict:
    """Turn the frames of one message back into its header dict.

    Parameters
    ----------
    frames : sequence of buffer-like
        ``[header, *buffers]`` as received (zmq Frames, bytes, memoryviews).
    max_frames, max_header : int
        Limits checked before decoding anything: a larger header is refused
        without being read.
    max_objects, max_depth : int
        Limits on a header of more than ``SCAN_ABOVE`` (64 KiB) bytes: how
        many objects it may hold (values, keys and containers count one,
        ext references 16) and how deep its containers may nest (the
        header map is at depth 1). Decoding stops as soon as one is
        exceeded, so a message costs work in proportion to its size.

    Returns
    -------
    dict
        The header, with frame references replaced by read-only memoryviews
        and read-only numpy arrays over the received frames (no copy).

    Raises
    ------
    ProtocolError
        Not msgpack, not a map, a bad or dangling reference, an array whose
        dtype and shape do not match its frame, or an unreferenced frame.
    MessageTooLargeError
        More frames, a larger header, more objects or deeper nesting than
        the limits allow.
    """
    head = header_view(frames, max_frames, max_header)
    used: set = set()

    def ext_hook(code: int, data: bytes) -> Any:
        return resolve_ext(code, data, frames, used)

    try:
        if len(head) > SCAN_ABOVE:
            header = bounded_unpackb(head, ext_hook, max_objects, max_depth)
        else:
            header = msgpack.unpackb(head, strict_map_key=False, ext_hook=ext_hook)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"header is not valid msgpack: {exc}") from exc
    return check_decoded(header, frames, used)
