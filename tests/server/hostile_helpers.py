"""Helpers shared by tests/server/test_hostile*.py: hostile message shapes."""

from __future__ import annotations

import msgpack


# -- hostile bytes ---------------------------------------------------------------
def _array32(count: int, item: bytes) -> bytes:
    return b"\xdd" + count.to_bytes(4, "big") + item * count


def _call_header(rid: int, args_msgpack: bytes, method: str = "echo") -> bytes:
    """A METHOD_CALL header whose args list is the raw msgpack given."""
    head = msgpack.packb({"v": 1, "e": "METHOD_CALL", "i": rid, "m": method})
    # a fixmap of 4 entries becomes one of 6: "a" and "k" follow
    return b"\x86" + head[1:] + b"\xa1a" + args_msgpack + b"\xa1k\x80"


def _native_shapes(size: int) -> dict[str, tuple[bytes, int, str]]:
    """name -> (header, request id of the reply, text of the refusal)."""
    return {
        "header of empty arrays": (_array32(size, b"\x90"), -1, "objects"),
        "empty arrays as args": (
            _call_header(1, b"\x91" + _array32(size, b"\x90")),
            1,
            "objects",
        ),
        "empty maps as args": (
            _call_header(2, b"\x91" + _array32(size, b"\x80")),
            2,
            "objects",
        ),
        "small ints as args": (
            _call_header(3, b"\x91" + _array32(size, b"\x01")),
            3,
            "objects",
        ),
        "short strings as args": (
            _call_header(4, b"\x91" + _array32(size // 2, b"\xa1a")),
            4,
            "objects",
        ),
        "small arrays as args": (  # counted as they complete, not declared
            _call_header(
                9, b"\x91" + _array32(size // 18, b"\xdc\x00\x0f" + b"\x90" * 15)
            ),
            9,
            "objects",
        ),
        "deep nesting as args": (
            _call_header(5, b"\x91" * size + b"\xc0"),
            5,
            "deeper than",
        ),
        "inline arrays as args": (
            _call_header(
                6,
                _array32(
                    size // 16,
                    msgpack.packb(
                        msgpack.ExtType(3, msgpack.packb(["u1", [1], b"\0"]))
                    ),
                ),
            ),
            6,
            "objects",
        ),
    }
