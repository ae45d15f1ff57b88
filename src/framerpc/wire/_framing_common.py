"""What both framing engines share: wire ids, limits (from
``framerpc.limits``), the out-of-band
marker, and the rare paths (arrays, bytes-like values, ext references).

The engines (``_framing_py`` and the compiled ``_framing``) differ in the
hot loops over containers and scalars, and the compiled one also writes
and reads the usual array and buffer references itself (the same bytes,
tests/wire/test_framing_parity.py). Everything else, the errors included,
exists once, here.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import numpy as np

from ..errors import MessageTooLargeError, ProtocolError, SerializationError

# the engines and json_text take the limits from here
from ..limits import MAX_DEPTH, MAX_FRAMES, MAX_HEADER_SIZE, MAX_OBJECTS  # noqa: F401

# Wire ids: never change them; bump messages.PROTOCOL_VERSION instead.
EXT_BUFFER = 1
EXT_ARRAY = 2
EXT_INLINE_ARRAY = 3

#: Bytes-like values and arrays smaller than this (bytes) stay inside the
#: header. Measured (encode + send + receive + decode over inproc, both
#: engines): inline is cheaper up to 16 KiB (compiled 2.6 us vs 3.7 us out
#: of band), the two cross near 32 KiB, and at 64 KiB out of band wins
#: (4.7 us vs 7.5 us). pyzmq's own copy threshold is 64 KiB.
INLINE_LIMIT = 32 * 1024
#: Headers up to this size (bytes) are not checked for objects and depth:
#: whatever their shape they cost at most a few MB and ms to decode.
SCAN_ABOVE = 64 * 1024
#: What one ext reference counts against ``max_objects``: resolving it
#: (an inline array: a dtype, an ndarray) costs about 16 plain objects.
EXT_COST = 16
_MAX_NDIM = 32

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


def check_key(key: Any) -> Any:
    """Return a dict key that msgpack can carry, else raise."""
    if isinstance(key, (str, int, float, bytes)) or key is None:
        return key
    raise SerializationError(
        f"dict keys of type {type(key).__qualname__} cannot be sent"
    )


def encode_leaf(value: Any, buffers: list, limit: int, walk: Callable) -> Any:
    """Encode anything that is not a plain dict, list, tuple or scalar.

    ``walk`` is the calling engine's container walker, used for subclasses
    of list, tuple and dict. Large buffers are appended to ``buffers`` and
    replaced by an ExtType reference.
    """
    force = type(value) is OutOfBand
    if force:
        value = value.value
    if isinstance(value, np.ndarray):
        arr, dtype, shape = _array_spec(value)
        if force or arr.nbytes >= limit:
            payload = msgpack.packb([len(buffers), dtype, shape])
            # datetime64/timedelta64 arrays lack the buffer interface: send bytes
            kind = arr.dtype.kind
            buffers.append(arr if kind not in "mM" else arr.reshape(-1).view(np.uint8))
            return msgpack.ExtType(EXT_ARRAY, payload)
        payload = msgpack.packb([dtype, shape, arr.tobytes()])
        return msgpack.ExtType(EXT_INLINE_ARRAY, payload)
    if isinstance(value, _BYTES_LIKE):
        if force or len(value) >= limit:
            if isinstance(value, memoryview) and not value.c_contiguous:
                value = value.tobytes()
            buffers.append(value)
            return msgpack.ExtType(EXT_BUFFER, msgpack.packb(len(buffers) - 1))
        return value if type(value) is bytes else bytes(value)
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        # numpy scalars (e.g. ``arr.max()``) become the Python scalar they hold
        return value.item()
    if force:
        raise SerializationError(
            f"only bytes-like values and arrays travel out of band, "
            f"got {type(value).__qualname__}"
        )
    if isinstance(value, (str, int, float)) or value is None:  # subclasses, enums
        return value
    if isinstance(value, (list, tuple)):
        return walk(list(value), buffers, limit)
    if isinstance(value, dict):
        return walk(dict(value), buffers, limit)
    cls = type(value)
    raise SerializationError(
        f"values of type {cls.__module__}.{cls.__qualname__} cannot be sent: "
        "use None, bool, int, float, str, bytes, list, tuple, dict or a numpy array"
    )


def pack_header(packed: dict) -> bytes:
    """msgpack bytes of a walked header; unpackable values raise
    ``SerializationError`` (a lone surrogate, an int beyond 64 bits)."""
    try:
        return msgpack.packb(packed)
    except (UnicodeEncodeError, OverflowError, ValueError) as exc:
        raise SerializationError(f"a value cannot be sent: {exc}") from exc


def header_view(frames: Sequence, max_frames: int, max_header: int) -> Any:
    """Check the limits of a received message; return its header buffer."""
    if not frames:
        raise ProtocolError("empty message")
    if len(frames) > max_frames:
        raise MessageTooLargeError(
            f"message has {len(frames)} frames, the limit is {max_frames}"
        )
    head = frames[0]
    if type(head) is not bytes:
        head = memoryview(head)
    if len(head) > max_header:
        raise MessageTooLargeError(
            f"header of {len(head)} bytes exceeds the limit of {max_header}"
        )
    return head


def too_many_objects(max_objects: int) -> MessageTooLargeError:
    """The error of a header holding more than ``max_objects`` objects."""
    return MessageTooLargeError(
        f"header holds more than {max_objects} objects (the limit)"
    )


def too_deep(max_depth: int) -> MessageTooLargeError:
    """The error of a header nesting containers deeper than ``max_depth``."""
    return MessageTooLargeError(
        f"header nests containers deeper than {max_depth} (the limit)"
    )


#: Deepest nesting msgpack itself decodes (its parser's stack).
_MSGPACK_MAX_DEPTH = 1024


def unpackb_large(head: Any, **options: Any) -> Any:
    """``msgpack.unpackb`` of a large header with the cyclic garbage
    collector paused: msgpack builds a tree, so a collection finds nothing,
    but the collections that a million new lists trigger cost 3/4 of
    their decoding time (0.22 s against 0.06 s on the 2-core machine)."""
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        return msgpack.unpackb(head, strict_map_key=False, **options)
    finally:
        if enabled:
            gc.enable()


def bounded_unpackb(
    head: Any, ext_hook: Callable, max_objects: int, max_depth: int
) -> Any:
    """``msgpack.unpackb`` of a large header within ``max_objects`` and
    ``max_depth`` (the pure engine; the compiled one scans the bytes first).

    Every object but the header itself is an item of one container, so
    the hooks, summing container sizes as msgpack completes them, refuse
    exactly the headers of more than ``max_objects`` objects; no single
    container may declare more. Objects pending in containers not yet
    complete are at most as many again. Depth is measured afterwards, and
    only when there are enough non-empty containers to nest too deep.
    """
    # [objects left, non-empty containers seen]
    state = [max_objects - 1, 0]

    def list_hook(items: list) -> list:
        state[0] -= len(items)
        if items:
            state[1] += 1
        if state[0] < 0:
            raise too_many_objects(max_objects)
        return items

    def object_hook(mapping: dict) -> dict:
        state[0] -= 2 * len(mapping)
        if mapping:
            state[1] += 1
        if state[0] < 0:
            raise too_many_objects(max_objects)
        return mapping

    def ext(code: int, data: bytes) -> Any:
        state[0] -= EXT_COST - 1  # and one as an item of its container
        if state[0] < 0:
            raise too_many_objects(max_objects)
        return ext_hook(code, data)

    try:
        header = unpackb_large(
            head,
            ext_hook=ext,
            list_hook=list_hook,
            object_hook=object_hook,
            max_array_len=max_objects,
            max_map_len=max_objects,
        )
    except msgpack.StackError:
        if max_depth <= _MSGPACK_MAX_DEPTH:  # deeper than msgpack's 1024
            raise too_deep(max_depth) from None
        raise
    except ValueError as exc:
        if "exceeds max_" in str(exc):  # a declared size: msgpack's check
            raise too_many_objects(max_objects) from None
        raise
    # nesting d takes d - 1 non-empty containers: most headers need no walk
    if state[1] + 1 > max_depth:
        check_depth(header, max_depth)
    return header


def check_depth(value: Any, max_depth: int) -> None:
    """Raise ``too_deep`` if containers in ``value`` nest deeper than
    ``max_depth`` (``value`` itself, a container, at depth 1).

    Level by level, in comprehensions: a million empty lists cost 0.04 s
    (a plain stack walk took 0.66 s, more than the decoding).
    """
    if type(value) is not list and type(value) is not dict:
        return
    if max_depth < 1:
        raise too_deep(max_depth)
    level, depth = [value], 1
    while level:
        following: list = []
        for item in level:
            items = item.values() if type(item) is dict else item
            if depth == max_depth:  # any container inside is one too deep
                if any(type(c) is list or type(c) is dict for c in items):
                    raise too_deep(max_depth)
            else:  # empty containers cannot nest deeper: not followed
                following += [
                    c for c in items if (type(c) is list or type(c) is dict) and c
                ]
        level, depth = following, depth + 1


def _frame_at(frames: Sequence, index: Any, used: set) -> memoryview:
    if type(index) is not int or not 1 <= index < len(frames):
        raise ProtocolError(
            f"header refers to frame {index!r} but the message has {len(frames)} frames"
        )
    if index in used:
        raise ProtocolError(f"frame {index} is referenced twice")
    used.add(index)
    return memoryview(frames[index]).toreadonly()


def _decode_array(dtype_str: Any, shape: Any, view: memoryview) -> np.ndarray:
    if type(dtype_str) is not str or type(shape) is not list:
        raise ProtocolError("array reference needs a dtype string and a shape list")
    if len(shape) > _MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
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


def resolve_ext(code: int, data: bytes, frames: Sequence, used: set) -> Any:
    """Turn one ExtType of a received header into the value it stands for."""
    try:
        spec = msgpack.unpackb(data)
    except Exception as exc:
        raise ProtocolError(f"malformed ext payload (code {code})") from exc
    if code == EXT_BUFFER:
        return _frame_at(frames, spec, used)
    if code == EXT_ARRAY:
        if type(spec) is not list or len(spec) != 3:
            raise ProtocolError("array reference must be [frame, dtype, shape]")
        return _decode_array(spec[1], spec[2], _frame_at(frames, spec[0], used))
    if code == EXT_INLINE_ARRAY:
        if type(spec) is not list or len(spec) != 3 or type(spec[2]) is not bytes:
            raise ProtocolError("inline array must be [dtype, shape, bytes]")
        return _decode_array(spec[0], spec[1], memoryview(spec[2]))
    raise ProtocolError(f"unknown ext code {code}")


def check_decoded(header: Any, frames: Sequence, used: set) -> dict:
    """Final checks of a decoded header: a map that used every frame."""
    if type(header) is not dict:
        raise ProtocolError(f"header must be a map, got {type(header).__name__}")
    if len(used) != len(frames) - 1:
        raise ProtocolError(
            f"message has {len(frames) - 1} buffer frames but the header "
            f"refers to {len(used)}"
        )
    return header
