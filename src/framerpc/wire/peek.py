"""Best-effort reading of a native header that failed to decode.

An error reply should still carry the event and request id of the
message it answers: ``peek_header`` reads a few leading msgpack scalars
of frame 0 with bounded work, whatever the frame holds.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["peek_header", "peek_request_id"]

#: How many leading entries of a header ``peek_header`` reads at most.
_PEEK_ENTRIES = 8


def peek_header(frame: Any) -> dict:
    """Best-effort header of a message that failed to decode, so that an
    error reply can carry its event and request id; {} when unreadable.

    Bounded work whatever the frame holds, no decoding of the rest: reads
    at most 8 leading entries and stops at the first whose value is a
    list or a map. Values that are nil, bools, numbers and strings of up
    to 255 bytes are kept; bytes, ext values and longer strings are
    skipped. Headers written by framerpc start with ``v``, ``e`` and ``i``.
    """
    try:
        view = memoryview(frame).cast("B")
    except (TypeError, ValueError):
        return {}
    end = len(view)
    if end == 0:
        return {}
    tag = view[0]
    if 0x80 <= tag <= 0x8F:
        count, pos = tag & 0x0F, 1
    elif tag == 0xDE and end >= 3:
        count, pos = int.from_bytes(view[1:3], "big"), 3
    elif tag == 0xDF and end >= 5:
        count, pos = int.from_bytes(view[1:5], "big"), 5
    else:
        return {}
    header: dict = {}
    for _ in range(min(count, _PEEK_ENTRIES)):
        key, pos = _peek_scalar(view, pos, end)
        if key is _NOT_SCALAR:
            break
        value, pos = _peek_scalar(view, pos, end)
        if value is _NOT_SCALAR:
            break
        if type(key) is str and value is not _SKIPPED:
            header[key] = value
    return header


_NOT_SCALAR = object()  # a list, a map or bad bytes: the peek stops
# bin 8/16/32, ext 8/16/32, str 8/16/32: bytes of their size field
_SIZE_WIDTHS = {
    0xC4: 1,
    0xC5: 2,
    0xC6: 4,
    0xC7: 1,
    0xC8: 2,
    0xC9: 4,
    0xD9: 1,
    0xDA: 2,
    0xDB: 4,
}
_SKIPPED = object()  # a scalar read past, not kept


def _peek_scalar(view: memoryview, pos: int, end: int) -> tuple[Any, int]:
    """The msgpack scalar at ``view[pos]`` (or ``_SKIPPED``) and the
    position after it; ``_NOT_SCALAR`` for a container or bad bytes."""
    if pos >= end:
        return _NOT_SCALAR, pos
    tag = view[pos]
    if tag <= 0x7F:
        return tag, pos + 1
    if tag >= 0xE0:
        return tag - 0x100, pos + 1
    if tag == 0xC0:
        return None, pos + 1
    if tag in (0xC2, 0xC3):
        return tag == 0xC3, pos + 1
    if tag in (0xCA, 0xCB):  # float 32, 64
        width = 4 if tag == 0xCA else 8
        if pos + 1 + width > end:
            return _NOT_SCALAR, pos
        raw = bytes(view[pos + 1 : pos + 1 + width])
        return struct.unpack(">f" if width == 4 else ">d", raw)[0], pos + 1 + width
    if 0xCC <= tag <= 0xD3:  # uint 8..64, then int 8..64
        width = 1 << ((tag - 0xCC) & 3)
        if pos + 1 + width > end:
            return _NOT_SCALAR, pos
        number = int.from_bytes(
            view[pos + 1 : pos + 1 + width], "big", signed=tag >= 0xD0
        )
        return number, pos + 1 + width
    if 0xD4 <= tag <= 0xD8:  # fixext: a type byte and 1..16 bytes
        return _SKIPPED, pos + 2 + (1 << (tag - 0xD4))
    if 0xA0 <= tag <= 0xBF:
        size, start = tag & 0x1F, pos + 1
    elif tag in _SIZE_WIDTHS:
        width = _SIZE_WIDTHS[tag]
        if pos + 1 + width > end:
            return _NOT_SCALAR, pos
        size = int.from_bytes(view[pos + 1 : pos + 1 + width], "big")
        start = pos + 1 + width + (1 if 0xC7 <= tag <= 0xC9 else 0)  # ext type
    else:
        return _NOT_SCALAR, pos
    if start + size > end:
        return _NOT_SCALAR, pos
    if (tag > 0xBF and tag < 0xD9) or size > 255:  # bytes, ext, a long str
        return _SKIPPED, start + size
    try:
        return bytes(view[start : start + size]).decode(), start + size
    except UnicodeDecodeError:
        return _SKIPPED, start + size


def peek_request_id(frame: Any) -> int:
    """The request id of a header that failed to decode, read by
    ``peek_header`` (bounded work); -1 when it cannot be read."""
    rid = peek_header(frame).get("i")
    return rid if type(rid) is int else -1
