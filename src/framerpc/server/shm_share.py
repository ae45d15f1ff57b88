"""One client's share of a server's shared memory (issue 14): how many
bytes of copies and how many pool frames it may hold at a time, so that
one client keeping everything it fetched never leaves the others (or the
camera) without.

- **Copies** (plain arrays, in an ``Arena``): a client may hold at most
  ``shm_client_share`` of ``shm_max_bytes`` (a quarter by default: 64 MiB
  of 256 MiB, two 24.9 MB frames) in segments, counted by segment size
  (whole pages; ``ShmServer._place`` checks it: its hot path). A client
  holding no copy may always take one, however
  large, if the arena has room: its share is at least one frame. Beyond
  its share its arrays go over the socket (counted as any fallback) while
  the other clients still get shared memory; its releases give the share
  back.
- **Pool frames** referred to in place: a client may hold at most half a
  ``FramePool``'s slots (as signals do for all subscribers together), so
  a camera that keeps one frame published while it fills the next never
  waits in ``acquire`` for one client's hoard; beyond, its frames are
  copied (and count as copies).
- **Signal copies** (``shm_signals``: one copy in the signals' own arena,
  shared by every subscriber it went to): each holder is counted the whole
  segment for each reference it holds (any one of them keeps it alive),
  against the same share of the signals' arena. A holder past its share
  gets the next emissions' frames over the socket; an emission is checked
  as a whole (its arrays that may be copied), so a holder may end up to
  one emission past its share when a pool frame had to be copied.

- **Signal references lost with a pipe**: a subscription that vanished
  while its client stayed connected (a reconnection of the signal
  socket alone) leaves the references sent to it that never arrived. The
  server cannot tell them from the ones the client holds; the client's
  claim of its new subscription lists the signal slots it holds, and
  ``unheld`` names the others sent to it before that claim's nonce (the
  client decoded every reference sent before the nonce before it saw the
  nonce: one pipe, in order), which are taken back.

Not thread-safe: each owner uses it under its own lock or from one thread.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

from ..transport import shm as segments
from ..wire import shm as wire_shm
from .shm_arena import pool_frame_at

__all__ = ["Share", "copy_bytes", "share_limit", "unheld", "within"]


def share_limit(max_bytes: int, fraction: float) -> int:
    """Bytes of copies one client may hold (``fraction`` of ``max_bytes``;
    a fraction outside (0, 1] is taken as 1: no share below the arena)."""
    if not 0 < fraction <= 1:
        fraction = 1.0
    return int(max_bytes * fraction)


class Share:
    """What one client holds: bytes of copies, and pool frames per pool.

    Attributes
    ----------
    bytes : int
        Bytes of arena segments it holds (whole pages).
    pins : dict
        ``id()`` of a pool's free list -> frames of that pool it holds.
    """

    __slots__ = ("bytes", "pins")

    def __init__(self) -> None:
        self.bytes = 0
        self.pins: dict[int, int] = {}

    def pin(self, lease: Any, segment: Any, nbytes: int) -> bool:
        """Count one more frame of ``lease``'s pool (its slots of ``nbytes``
        in ``segment``) as held, if that leaves the camera half its slots;
        whether it did (one call: the check and the count are on every
        pool frame's path)."""
        pool = id(lease._free)
        pins = self.pins.get(pool, 0)
        depth = segment.size // segments.round_pages(nbytes)  # the slot stride
        if pins >= depth // 2:
            return False
        self.pins[pool] = pins + 1
        return True

    def unpin(self, frame: Any) -> None:
        """A pool frame held (``pin``) is given back."""
        pool = id(frame.base._free)
        left = self.pins.pop(pool, 0) - 1
        if left > 0:
            self.pins[pool] = left


def copy_bytes(args: list, big: list[int]) -> int:
    """Bytes (whole pages) the arrays ``args[i]`` of ``big`` that are no
    pool frame to refer to in place would take in an arena (a signal's)."""
    return sum(
        segments.round_pages(args[i].nbytes)
        for i in big
        if pool_frame_at(args[i]) is None
    )


def within(held: int, more: int, limit: int) -> bool:
    """Whether a holder of ``held`` bytes of copies may take ``more``: up
    to ``limit``, or anything while it holds none."""
    return not held or not more or held + more <= limit


def unheld(
    slots: dict[int, Any], identity: bytes, held: Any, marker: int
) -> Iterator[tuple[int, int]]:
    """``(slot number, references)`` that ``identity`` holds among
    ``slots`` (signal slots: ``generation``, ``holders``) of generations
    below ``marker`` beyond what ``held`` (a claim's ``[[slot,
    generation], ...]``, one pair per array alive) lists; nothing when
    ``held`` is malformed (it may not be whole)."""
    pairs, bad = wire_shm.parse_releases(held)
    if bad:
        return
    keep = collections.Counter(pairs)
    for number, slot in list(slots.items()):
        count = slot.holders.get(identity, 0) - keep[(number, slot.generation)]
        if count > 0 and slot.generation < marker:
            yield number, count
