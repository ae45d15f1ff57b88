"""JSON text of the older protocol: ``dumps`` and a bounded ``loads``.

One JSON object per ZeroMQ frame. ``loads`` checks the size, the number
of values and the nesting before parsing (``check_json_shape``), so a
hostile frame costs bounded memory; ``dumps`` refuses what JSON cannot
carry (bytes, arrays, other objects) with ``SerializationError``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from ..errors import MessageTooLargeError, ProtocolError, SerializationError
from ._framing_common import (
    MAX_DEPTH,
    MAX_HEADER_SIZE,
    MAX_OBJECTS,
    SCAN_ABOVE,
    too_deep,
    too_many_objects,
)

__all__ = ["dumps", "loads", "check_json_shape"]


def _default(value: Any) -> Any:
    # numpy scalars are numbers to a reader of the result; everything else
    # JSON lacks (bytes, arrays, sets...) is refused rather than stringified.
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    raise SerializationError(
        f"{type(value).__qualname__} values cannot travel in the JSON protocol"
    )


def dumps(value: Any) -> bytes:
    """UTF-8 JSON text of ``value``.

    Raises
    ------
    SerializationError
        ``value`` holds something JSON cannot carry; the message names its
        type.
    """
    try:
        # ASCII output, as Python's json (and so the older peers) writes it:
        # any str travels, even one with a lone surrogate.
        text = json.dumps(value, default=_default)
    except SerializationError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:  # keys, cycles, depth
        raise SerializationError(f"cannot travel in the JSON protocol: {exc}") from exc
    return text.encode("ascii")


def _frame_bytes(frame: Any) -> bytes:
    return frame.bytes if hasattr(frame, "bytes") else bytes(frame)


# A JSON string, escapes included: what brackets, commas and colons inside
# it are not. Unrolled (no alternation under the star): linear and fast.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPENING = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def check_json_shape(text: bytes, max_objects: int, max_depth: int) -> None:
    """Refuse JSON ``text`` of more than ``max_objects`` values or nested
    deeper than ``max_depth``, at C speed and without building anything
    (json.loads would build an object per ``[]``: 70 bytes for 2 bytes).

    Texts up to 64 KiB are not checked, as msgpack headers. Values are
    counted as the brackets, commas and colons outside strings (an upper
    bound on what json.loads builds); the outermost container is at
    depth 1.

    Raises
    ------
    MessageTooLargeError
        A limit is exceeded.
    """
    if len(text) <= SCAN_ABOVE:
        return
    opening = text.count(b"[") + text.count(b"{")
    if (
        opening + text.count(b",") + text.count(b":") < max_objects
        and opening <= max_depth
    ):
        return  # even counting inside strings: within the limits
    text = _JSON_STRING.sub(b'""', text)
    opening = text.count(b"[") + text.count(b"{")
    if opening + text.count(b",") + text.count(b":") + 1 > max_objects:
        raise too_many_objects(max_objects)
    if opening > max_depth:
        # +1 per opening, -1 per closing bracket: the running sum is the depth
        steps = text.translate(None, _NOT_BRACKETS).translate(_OPENING)
        depth = np.frombuffer(steps, np.int8).cumsum(dtype=np.int32)
        if depth.size and int(depth.max()) > max_depth:
            raise too_deep(max_depth)


def loads(
    frame: Any,
    max_size: int = MAX_HEADER_SIZE,
    max_objects: int = MAX_OBJECTS,
    max_depth: int = MAX_DEPTH,
) -> dict:
    """The JSON object in ``frame`` (bytes, memoryview or zmq Frame).

    Parameters
    ----------
    frame : buffer-like
        The received frame.
    max_size, max_objects, max_depth : int
        The limits of native headers (see ``SocketOptions``): a larger
        frame is refused unread; a frame larger than 64 KiB is checked
        for values and nesting (``check_json_shape``) before parsing.

    Raises
    ------
    ProtocolError
        The frame is not UTF-8 JSON text of an object.
    MessageTooLargeError
        The frame exceeds a limit (a subclass of ProtocolError).
    """
    size = len(frame)
    if size > max_size:
        raise MessageTooLargeError(
            f"JSON message of {size} bytes exceeds the limit of {max_size}"
        )
    text = _frame_bytes(frame)
    check_json_shape(text, max_objects, max_depth)
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: deep nesting
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if type(message) is not dict:
        raise ProtocolError(
            f"JSON message must be an object, got {type(message).__name__}"
        )
    return message
