"""A signal fan-out's subscriber (``framerpc.server.fanout``, issue 11):
the private prefix every emission to it starts with, native or JSON, and
the bytes libzmq may still hold for it.
"""

from __future__ import annotations

from collections import deque

from ..wire import framing
from ..wire.messages import PROTOCOL_VERSION, RPCEvents, SignalEmission

__all__ = ["json_prefix", "native_prefix", "encode_native"]

#: The header of a native emission up to the subscriber id: a map of 7
#: keys whose first is "_", a bin of 4 bytes.
_NATIVE_HEAD = b"\x87\xa1_\xc4\x04"
_ID_PLACEHOLDER = b"\0\0\0\0"
_JSON_DIGITS = 12
_WHITESPACE = b" \t\n\r"


def native_prefix(ident: int) -> bytes:
    """The first bytes of every native emission to subscriber ``ident``."""
    return _NATIVE_HEAD + ident.to_bytes(4, "big")


def json_prefix(ident: int) -> bytes:
    """JSON whitespace naming subscriber ``ident`` (12 base-4 digits)."""
    digits = bytearray(_JSON_DIGITS)
    for index in range(_JSON_DIGITS - 1, -1, -1):
        digits[index] = _WHITESPACE[ident & 3]
        ident >>= 2
    return bytes(digits)


def encode_native(emission: SignalEmission) -> list:
    """Frames of a native emission whose header starts with a placeholder
    subscriber id (the first ``len(native_prefix(0))`` bytes, replaced per
    subscriber)."""
    header = {
        "_": _ID_PLACEHOLDER,
        "v": PROTOCOL_VERSION,
        "e": RPCEvents.EMIT_SIGNAL.value,
        "s": emission.name,
        "x": emission.args,
        "q": emission.seq,  # sigseq: nil when not numbered, 7 keys always
        "ep": emission.epoch,
    }
    return framing.encode(header)


class _Subscriber:
    """What the server knows of one subscriber: ``held`` bytes libzmq may
    still hold for it, the ``pending`` trackers and the bytes each stands
    for (its emission and the untracked ones before it), the ``tail`` of
    untracked bytes sent since the last tracker, ``dropped`` emissions."""

    __slots__ = ("dropped", "held", "ident", "pending", "prefix", "tail")

    def __init__(self, ident: int, prefix: bytes) -> None:
        self.ident = ident
        self.prefix = prefix
        self.pending: deque = deque()  # (tracker, nbytes), oldest first
        self.held = 0
        self.tail = 0
        self.dropped = 0

    def release(self) -> int:
        pending = self.pending
        while pending and pending[0][0].done:
            self.held -= pending.popleft()[1]
        return self.held
