"""Pure-Python twin of the compiled shared-memory hot path
``framerpc.wire._shmpath`` (chosen by ``framerpc.wire.shmpath``; same
names, same behaviour, tests/wire/test_shmpath_parity.py runs both).

What a same-host buffer reply costs besides its one copy (issue 14): on
the client, a reference (``framerpc.wire.shm``) becoming a read-only
array whose base is a ``Lease`` that queues the slot's release when the
array and its views are gone, and a call carrying the queued releases;
on the server, the reply naming the slot and the releases read back.
No I/O: the client passes the function that maps a segment by name.
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ProtocolError
from .messages import encode_result
from .shm import (
    MAX_RELEASES,
    SIGNAL_SLOT_BASE,
    encode_call_releasing,
    make_ref,
    parse_ref,
)
from .shm import parse_releases as parse_releases

__all__ = [
    "Lease",
    "Tally",
    "call_frames",
    "copier_stats",
    "copy_into",
    "hold_copier",
    "lease_array",
    "parse_releases",
    "ref_reply",
    "release_copier",
    "resolve",
    "split_releases",
]


class Tally:
    """The leases of one client still alive (``len``): the goodbye waits
    for none (``client.shm.Leases.goodbye``)."""

    __slots__ = ("_live",)

    def __init__(self) -> None:
        self._live: weakref.WeakSet[Lease] = weakref.WeakSet()

    def __len__(self) -> int:
        return len(self._live)

    def add(self, lease: Lease) -> None:
        self._live.add(lease)

    def signal_slots(self) -> list[tuple[int, int]]:
        """The (slot, generation) pairs of the signal arrays alive (slots
        from ``SIGNAL_SLOT_BASE``): a claim again lists them.

        Raises
        ------
        RuntimeError
            A lease was collected meanwhile (another thread): try again.
        """
        pairs = [lease._slot for lease in list(self._live)]
        return [pair for pair in pairs if pair[0] >= SIGNAL_SLOT_BASE]


class Lease:
    """The base of one received array: queues the slot's release when the
    array and all its views are gone."""

    __slots__ = ("__array_interface__", "__weakref__", "_map", "_pending", "_slot")

    def __init__(
        self,
        mapped: Any,
        interface: dict,
        slot: tuple[int, int],
        pending: collections.deque,
    ) -> None:
        self._map = mapped  # keeps the segment mapped while the array lives
        self._slot = slot
        self._pending = pending
        self.__array_interface__ = interface

    def __del__(self) -> None:
        # any thread, on garbage collection: deque.append needs no lock
        self._pending.append(self._slot)


def resolve(
    value: dict, lookup: Callable[[str], Any], pending: collections.deque, tally: Tally
) -> np.ndarray:
    """The read-only array the reference ``value`` names, on the mapping
    ``lookup(segment)`` returns (``.address``, ``.size``); its release goes
    to ``pending`` when it is collected.

    Raises
    ------
    ProtocolError
        A malformed reference, or a segment that cannot be mapped
        (``lookup`` raised OSError or ValueError) or is too small for it;
        then its slot is queued for release all the same.
    """
    ref = parse_ref(value)
    slot = (ref.slot, ref.generation)
    try:
        mapped = lookup(ref.segment)
    except (OSError, ValueError) as exc:
        pending.append(slot)
        raise ProtocolError(f"cannot map shared-memory reply: {exc}") from None
    if ref.offset + ref.nbytes > mapped.size:
        pending.append(slot)
        raise ProtocolError("shared-memory reply beyond its segment")
    interface = {
        "version": 3,
        "shape": ref.shape,
        "typestr": ref.dtype.str,
        "data": (mapped.address + ref.offset, True),  # read-only
        "strides": None,
    }
    lease = Lease(mapped, interface, slot, pending)
    tally.add(lease)
    return np.asarray(lease)


def call_frames(
    request_id: int, method: str, args: list, kwargs: dict, pending: collections.deque
) -> tuple[list, list[tuple[int, int]]]:
    """Frames of a METHOD_CALL carrying up to ``MAX_RELEASES`` releases
    taken from ``pending`` (key ``rl``, see ``framerpc.wire.shm``), and
    those pairs; when an argument cannot be encoded they are put back,
    first in line, and the error raised."""
    pairs: list[tuple[int, int]] = []
    while pending and len(pairs) < MAX_RELEASES:
        pairs.append(pending.popleft())
    try:
        frames = encode_call_releasing(request_id, method, args, kwargs, pairs)
    except Exception:  # an argument msgpack refuses
        pending.extendleft(reversed(pairs))
        raise
    return frames, pairs


def ref_reply(
    request_id: int,
    segment: str,
    offset: int,
    value: np.ndarray,
    slot: int,
    generation: int,
    info: dict,
) -> list:
    """Frames of a buffer reply whose array ``value`` lies at ``offset``
    in ``segment`` under ``slot``: the same bytes as
    ``messages.encode_result(request_id, shm.make_ref(...), info)``, which
    this twin is."""
    ref = make_ref(
        segment, offset, value.nbytes, slot, generation, value.dtype, value.shape
    )
    return encode_result(request_id, ref, info)


def lease_array(lease: Any, kind: np.dtype, shape: tuple, address: int) -> np.ndarray:
    """The writable C-contiguous array of ``kind`` and ``shape`` over the
    memory at ``address`` that a ``FramePool`` lease describes (its
    ``__array_interface__``), with the lease as its base: numpy's
    ``asarray`` of the lease here, which reads and parses that interface."""
    return np.asarray(lease)


def split_releases(
    value: list,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
    """``parse_releases(value)``'s pairs split by slot: those of replies
    (below ``SIGNAL_SLOT_BASE``) and those of signals, each in their
    order, and the count of malformed items (or beyond ``MAX_RELEASES``);
    the server frees each kind in its own table."""
    pairs, bad = parse_releases(value)
    replies = [pair for pair in pairs if pair[0] < SIGNAL_SLOT_BASE]
    signals = [pair for pair in pairs if pair[0] >= SIGNAL_SLOT_BASE]
    return replies, signals, bad


def copy_into(segment: Any, value: np.ndarray, split: bool = True) -> None:
    """Copy ``value``'s elements, in C order, to the start of ``segment``
    (a writable mapping: ``.map``, at least ``value.nbytes`` long): the one
    copy of a plain array's reply. ``split`` (compiled engine: whether a
    big copy may use the worker thread) changes nothing here."""
    target = np.frombuffer(segment.map, value.dtype, value.size).reshape(value.shape)
    np.copyto(target, value, casting="no")


# The compiled engine splits a big copy with a worker thread that exists
# while someone holds the copier; here numpy copies alone, and only the
# holders are counted (same answers, no thread).
_holders = 0
_holders_lock = threading.Lock()


def hold_copier() -> int:
    """One more holder (each server arena): while any, the compiled engine
    may split a big ``copy_into`` with its worker thread, started on the
    first one in a process allowed on 2 or more CPUs. Returns the holders.
    """
    global _holders
    with _holders_lock:
        _holders += 1
        return _holders


def release_copier() -> int:
    """One holder fewer (never below 0); the compiled engine stops and
    joins its worker thread at the last. Returns the holders left."""
    global _holders
    with _holders_lock:
        _holders = max(0, _holders - 1)
        return _holders


def copier_stats() -> dict[str, int]:
    """The copier's state: ``holders``; ``alive`` (the worker thread runs:
    never here) and ``started``; the split copies (``jobs``), those the
    worker joined, their ``chunks`` and the ``worker_chunks``; big copies
    made ``alone`` (no worker, or another copy was using it); the waits
    that ``slept`` for the worker; the settings ``threshold``, ``chunk``,
    ``spin`` and ``avoid`` (the worker kept off the caller's CPU); the jobs
    the worker joined on the caller's CPU (``same_cpu``) and the times it
    was ``moved`` off it. All 0 here."""
    names = (
        "alive",
        "started",
        "jobs",
        "joined",
        "chunks",
        "worker_chunks",
        "alone",
        "slept",
        "threshold",
        "chunk",
        "spin",
        "avoid",
        "same_cpu",
        "moved",
    )
    return {"holders": _holders, **dict.fromkeys(names, 0)}
