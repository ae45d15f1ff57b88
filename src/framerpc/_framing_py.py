"""Pure-Python framing: a header dict plus buffers <-> a list of frames.

This is the reference behaviour of the framing layer; ``ext/_framing.pyx``
must match it function for function. Nothing here knows about sockets.

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
import numpy as np

from .errors import MessageTooLargeError, ProtocolError, SerializationError

__all__ = [
    "EXT_BUFFER",
    "EXT_ARRAY",
    "EXT_INLINE_ARRAY",
    "INLINE_LIMIT",
    "MAX_FRAMES",
    "MAX_HEADER_SIZE",
    "OutOfBand",
    "encode",
    "decode",
]

# Wire ids: never change them; bump protocol.PROTOCOL_VERSION instead.
EXT_BUFFER = 1
EXT_ARRAY = 2
EXT_INLINE_ARRAY = 3

#: Bytes-like values and arrays smaller than this (bytes) stay inside the
#: header: below it, one more frame costs more than copying into msgpack.
INLINE_LIMIT = 4096
#: Default limits of ``decode``, checked before anything is allocated.
MAX_FRAMES = 1024
MAX_HEADER_SIZE = 16 * 1024 * 1024
_MAX_NDIM = 32

_SCALARS = frozenset({str, int, float, bool, type(None)})
_BYTES_LIKE = (bytes, bytearray, memoryview)


class OutOfBand:
    """Marks a value that must travel as its own frame whatever its size.

    Buffer-method replies use it so that the client always receives a
    memoryview (or array) over the frame, even for 0 bytes.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _array_spec(arr: np.ndarray) -> tuple[np.ndarray, str, list[int]]:
    if arr.dtype.hasobject or arr.dtype.fields is not None:
        raise SerializationError(
            f"numpy arrays of dtype {arr.dtype} cannot be sent: only plain "
            "numeric, bool, bytes and unicode dtypes travel on the wire"
        )
    # Non-contiguous input is copied once here; contiguous input is not.
    return np.ascontiguousarray(arr), arr.dtype.str, list(arr.shape)


def _raw_bytes(arr: np.ndarray) -> np.ndarray:
    return arr.reshape(-1).view(np.uint8)


def _extract(value: Any, buffers: list, limit: int) -> Any:
    """Return ``value`` with large buffers replaced by frame references."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list or kind is tuple:
        return [_extract(item, buffers, limit) for item in value]
    if kind is dict:
        return {
            _check_key(key): _extract(item, buffers, limit)
            for key, item in value.items()
        }
    force = kind is OutOfBand
    if force:
        value = value.value
    if isinstance(value, np.ndarray):
        arr, dtype, shape = _array_spec(value)
        if force or arr.nbytes >= limit:
            payload = msgpack.packb([len(buffers), dtype, shape])
            # datetime64/timedelta64 arrays lack the buffer interface: send bytes
            buffers.append(arr if arr.dtype.kind not in "mM" else _raw_bytes(arr))
            return msgpack.ExtType(EXT_ARRAY, payload)
        payload = msgpack.packb([dtype, shape, arr.tobytes()])
        return msgpack.ExtType(EXT_INLINE_ARRAY, payload)
    if isinstance(value, _BYTES_LIKE):
        if force or len(value) >= limit:
            if isinstance(value, memoryview) and not value.c_contiguous:
                value = value.tobytes()
            buffers.append(value)
            return msgpack.ExtType(EXT_BUFFER, msgpack.packb(len(buffers) - 1))
        return value if kind is bytes else bytes(value)
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        # numpy scalars (e.g. ``arr.max()``) become the Python scalar they hold
        return value.item()
    if isinstance(value, (str, int, float)):  # str / int subclasses (enums)
        return value
    if isinstance(value, (list, tuple)):
        return [_extract(item, buffers, limit) for item in value]
    if isinstance(value, dict):
        return {
            _check_key(key): _extract(item, buffers, limit)
            for key, item in value.items()
        }
    raise SerializationError(
        f"values of type {kind.__module__}.{kind.__qualname__} cannot be sent: "
        "use None, bool, int, float, str, bytes, list, tuple, dict or a numpy array"
    )


def _check_key(key: Any) -> Any:
    if type(key) in _SCALARS or isinstance(key, (str, int, float, bytes)):
        return key
    raise SerializationError(
        f"dict keys of type {type(key).__qualname__} cannot be sent"
    )


def encode(header: dict, limit: int = INLINE_LIMIT) -> list:
    """Turn a header dict into the frames of one message.

    Parameters
    ----------
    header : dict
        The message header. Values may nest lists, tuples, dicts, bytes-like
        objects, numpy arrays and :class:`OutOfBand` markers.
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
    packed = _extract(header, buffers, limit)
    buffers[0] = msgpack.packb(packed, use_bin_type=True)
    return buffers


def _as_view(frame: Any) -> memoryview:
    view = frame if type(frame) is memoryview else memoryview(frame)
    return view.toreadonly()


def _frame_at(frames: Sequence, index: Any, used: set) -> memoryview:
    if type(index) is not int or not 1 <= index < len(frames):
        raise ProtocolError(
            f"header refers to frame {index!r} but the message has {len(frames)} frames"
        )
    if index in used:
        raise ProtocolError(f"frame {index} is referenced twice")
    used.add(index)
    return _as_view(frames[index])


def _decode_array(dtype_str: Any, shape: Any, view: memoryview) -> np.ndarray:
    if type(dtype_str) is not str or type(shape) is not list:
        raise ProtocolError("array reference needs a dtype string and a shape list")
    if len(shape) > _MAX_NDIM or not all(
        type(dim) is int and dim >= 0 for dim in shape
    ):
        raise ProtocolError(f"invalid array shape {shape!r}")
    try:
        dtype = np.dtype(dtype_str)
    except TypeError as exc:
        raise ProtocolError(f"invalid array dtype {dtype_str!r}") from exc
    if dtype.hasobject or dtype.fields is not None:
        raise ProtocolError(f"array dtype {dtype_str!r} is not allowed")
    count = 1
    for dim in shape:
        count *= dim
    if count * dtype.itemsize != view.nbytes:
        raise ProtocolError(
            f"array of dtype {dtype_str} and shape {shape} needs "
            f"{count * dtype.itemsize} bytes, its frame has {view.nbytes}"
        )
    return np.frombuffer(view, dtype=dtype).reshape(shape)


def decode(
    frames: Sequence, max_frames: int = MAX_FRAMES, max_header: int = MAX_HEADER_SIZE
) -> dict:
    """Turn the frames of one message back into its header dict.

    Parameters
    ----------
    frames : sequence of buffer-like
        ``[header, *buffers]`` as received (zmq Frames, bytes, memoryviews).
    max_frames, max_header : int
        Limits checked before decoding anything.

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
        More frames or a larger header than the limits allow.
    """
    if not frames:
        raise ProtocolError("empty message")
    if len(frames) > max_frames:
        raise MessageTooLargeError(
            f"message has {len(frames)} frames, the limit is {max_frames}"
        )
    head = frames[0]
    if type(head) is not bytes:
        head = _as_view(head)
    if len(head) > max_header:
        raise MessageTooLargeError(
            f"header of {len(head)} bytes exceeds the limit of {max_header}"
        )
    used: set = set()

    def ext_hook(code: int, data: bytes) -> Any:
        try:
            spec = msgpack.unpackb(data)
        except Exception as exc:
            raise ProtocolError(f"malformed ext payload (code {code})") from exc
        if code == EXT_BUFFER:
            return _frame_at(frames, spec, used)
        if code == EXT_ARRAY:
            if type(spec) is not list or len(spec) != 3:
                raise ProtocolError("array reference must be [frame, dtype, shape]")
            view = _frame_at(frames, spec[0], used)
            return _decode_array(spec[1], spec[2], view)
        if code == EXT_INLINE_ARRAY:
            if type(spec) is not list or len(spec) != 3 or type(spec[2]) is not bytes:
                raise ProtocolError("inline array must be [dtype, shape, bytes]")
            return _decode_array(spec[0], spec[1], memoryview(spec[2]))
        raise ProtocolError(f"unknown ext code {code}")

    try:
        header = msgpack.unpackb(
            head, raw=False, strict_map_key=False, ext_hook=ext_hook
        )
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"header is not valid msgpack: {exc}") from exc
    if type(header) is not dict:
        raise ProtocolError(f"header must be a map, got {type(header).__name__}")
    if len(used) != len(frames) - 1:
        raise ProtocolError(
            f"message has {len(frames) - 1} buffer frames but the header "
            f"refers to {len(used)}"
        )
    return header
