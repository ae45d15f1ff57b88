"""A signal fan-out's subscriber (``framerpc.server.fanout``, issue 11):
the private prefix every emission to it starts with, native or JSON, and
the bytes libzmq may still hold for it.

Those bytes are counted down by ``zmq.MessageTracker``: libzmq's release
of a lent frame reaches pyzmq's garbage-collector thread, a Python thread
that sets the tracker's event once it gets the GIL. Under a busy GIL it
lags behind libzmq, and a subscriber that reads everything looks as if it
held what it has read; so before an emission is dropped for one, a
``Fence`` waits until that thread has handled every release made so far.
"""

from __future__ import annotations

import logging
from collections import deque

import zmq

from ..wire import framing
from ..wire.messages import PROTOCOL_VERSION, RPCEvents, SignalEmission

__all__ = ["Fence", "json_prefix", "native_prefix", "encode_native"]

_log = logging.getLogger("framerpc.server")

#: Longest wait (s) of a ``Fence`` for pyzmq's garbage-collector thread;
#: past it the bytes it has not handled count as held (the emission drops).
FENCE_WAIT = 0.25
#: A subscriber a fence found over its bound is fenced again after this
#: many drops, if no release of its was seen before.
REJUDGE = 8

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
    untracked bytes sent since the last tracker, ``dropped`` emissions;
    ``judged``: drops since a ``Fence`` found it over its bound, with no
    release seen since (0: not judged)."""

    __slots__ = ("dropped", "held", "ident", "judged", "pending", "prefix", "tail")

    def __init__(self, ident: int, prefix: bytes) -> None:
        self.ident = ident
        self.prefix = prefix
        self.pending: deque = deque()  # (tracker, nbytes), oldest first
        self.held = 0
        self.tail = 0
        self.dropped = 0
        self.judged = 0

    def release(self) -> int:
        pending = self.pending
        while pending and pending[0][0].done:
            self.held -= pending.popleft()[1]
            self.judged = 0
        return self.held


class Fence:
    """Once per emission, before it is dropped for a subscriber over its
    bound: wait until pyzmq's garbage-collector thread has handled every
    release libzmq made so far (see the module), then count again.

    A subscriber it finds over the bound is judged slow for ``REJUDGE``
    drops, or until one of its releases is seen, without waiting again: a
    stalled one costs a wait per ``REJUDGE`` emissions, not one each; one
    that was behind and caught up meanwhile may lose that many more."""

    __slots__ = ("waited",)

    def __init__(self) -> None:
        self.waited = False

    def over(self, sub: _Subscriber, nbytes: int, limit: int) -> bool:
        """Whether ``nbytes`` more would take ``sub`` over ``limit`` once
        the releases libzmq made before now are counted."""
        held = sub.release()  # judged no more if a release was seen
        if 0 < sub.judged < REJUDGE and held + nbytes > limit:
            sub.judged += 1
            return True
        if not self.waited:
            self.waited = True
            _caught_up(FENCE_WAIT)
        over = sub.release() + nbytes > limit
        sub.judged = 1 if over else 0
        return over


def _caught_up(timeout: float) -> bool:
    """Wait until pyzmq's garbage-collector thread has handled every
    release libzmq made before this call; False after ``timeout``."""
    try:
        # a lent frame closed unsent: libzmq releases it at once, and its
        # release queues behind every earlier one (one socket to the thread)
        fence = zmq.Frame(b"fence", track=True, copy=False)
    except (RuntimeError, zmq.ZMQError):  # pyzmq's thread is shutting down
        return False
    tracker = fence.tracker
    del fence
    try:
        tracker.wait(timeout)
    except zmq.NotDone:
        _log.debug("pyzmq's garbage collector lags over %.2f s", timeout)
        return False
    return True
