"""``Arena``: the shared-memory segments plain arrays are copied into, for
buffer replies (``shm_frames``) and for signals (``shm_signals``), each
server side its own, reused by size and bounded in bytes.

A segment is taken for one array and given back when every holder
released it; segments of other sizes that nobody holds are closed first
when a new size would exceed the bound. Not thread-safe: each owner
calls it under its own lock or from one thread.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import numpy as np

from ..pool import _Lease
from ..transport import shm as segments
from ..wire import shmpath

__all__ = ["Arena", "first_generation", "pool_frame_at"]

_log = logging.getLogger(__name__)
#: A page: segments are whole pages (``segments.round_pages``, inlined
#: in ``Arena.take``, the hot path).
_PAGE = segments.round_pages(1)


class Arena:
    """Segments of at most ``max_bytes`` in all (see the module).

    Attributes
    ----------
    max_bytes : int
        The bound (``SocketOptions.shm_max_bytes``).
    split : bool
        Whether big copies into this arena may use the compiled engine's
        worker thread (``SocketOptions.shm_copy_thread``): pass it to
        ``shmpath.copy_into``.
    bytes : int
        The bytes of all open segments, held or free.
    """

    def __init__(self, max_bytes: int, split: bool = True) -> None:
        self.max_bytes = max_bytes
        self.split = split
        self.bytes = 0
        self._free: dict[int, list[segments.Segment]] = {}
        # the worker thread of split copies lives while an arena that
        # splits is open (joined at the last close)
        self._copier = split
        if split:
            shmpath.hold_copier()

    def take(self, nbytes: int) -> segments.Segment | None:
        """A segment of at least ``nbytes``, or None when the bound (or the
        host) leaves no room."""
        size = -(-nbytes // _PAGE) * _PAGE or _PAGE  # segments.round_pages
        free = self._free.get(size)
        if free:
            return free.pop()
        # make room: segments of other sizes nobody holds go first
        for other, spare in list(self._free.items()):
            while spare and self.bytes + size > self.max_bytes:
                self._drop(spare.pop())
            if not spare:
                del self._free[other]
        if self.bytes + size > self.max_bytes:
            return None
        try:
            segment = segments.Segment(size)
        except OSError as exc:
            _log.info("no shared-memory segment of %d bytes: %s", size, exc)
            return None
        self.bytes += segment.size
        return segment

    def give_back(self, segment: segments.Segment) -> None:
        """``segment`` is held by nobody any more: free for the next take."""
        free = self._free.get(segment.size)
        if free is None:  # not setdefault: no list made per call
            self._free[segment.size] = [segment]
        else:
            free.append(segment)

    def close(self) -> None:
        """Unlink the free segments (held ones are given back first)."""
        for spare in self._free.values():
            for segment in spare:
                self._drop(segment)
        self._free.clear()
        if self._copier:
            self._copier = False
            shmpath.release_copier()

    def _drop(self, segment: segments.Segment) -> None:
        self.bytes -= segment.size
        segment.close()


def pool_frame_at(value: np.ndarray) -> tuple[Any, segments.Segment, int] | None:
    """``(lease, segment, offset)`` when ``value`` is a ``FramePool`` frame
    lying whole in its pool's shared segment while the camera can still
    acquire another (so it may go by reference, with no copy); else None.
    """
    base = value.base
    if type(base) is not _Lease:
        return None
    segment = base._segment
    if (
        segment is None
        or not base._free.qsize()  # the camera can still acquire
        or not value.flags.c_contiguous
    ):
        return None
    # An array based on a lease lies where the lease's interface says:
    # ``acquire`` made it there (``shmpath.lease_array``), or numpy did from
    # that interface (a lease exports no buffer: nothing else bases an
    # array on it). ``value.ctypes`` costs a microsecond a frame (it
    # imports and builds a helper).
    offset = base.__array_interface__["data"][0] - segment.address
    if 0 <= offset and offset + value.nbytes <= segment.size:
        return base, segment, offset
    return None


def first_generation() -> int:
    """Where a server's handout generations start: at random (below 2**52),
    not at 1, so that a release a client sends for an array of a server
    that restarted since (the same slot and generation numbers) cannot
    free a slot of the new one that the client holds in another array."""
    return secrets.randbits(52) + 1
