"""``FramePool``: frames a camera fills and a server sends without a copy,
never torn.

A buffer method's array is sent after the method returns, and over a
socket libzmq reads it from the array's own memory until the message has
left (over ``inproc://`` the receiving client reads that very memory for
as long as it keeps the frame). A camera that refills one array for the
next frame can therefore change a frame that is still on its way: clients
receive rows of two frames (torn) or a later frame than the metadata says
(stale). A pool hands out a slot per frame and takes it back only when no
one can read it any more.

How a slot comes back
---------------------
Each ``acquire`` wraps the slot's memory in a fresh ``_Lease`` object and
returns a new numpy array whose base is that lease (numpy stops collapsing
a chain of views at a base that is not an array, so every view of the
frame, memoryview and buffer export keeps the lease alive). When the last
of them goes, the lease's ``__del__`` puts the slot back. Who holds the
frame while it travels, per engine:

- compiled I/O (``ext/_zmqio.pyx``): frames of 16 KiB or more are lent to
  libzmq; the loan holds the array's buffer export (hence the array) until
  libzmq calls its free function, and the export is released by the next
  send or receive of any socket in the process, or by
  ``transport.release_returned_buffers`` (``acquire`` calls it while it
  waits). Smaller frames are copied before ``send_frames`` returns.
- pure I/O (pyzmq ``send(copy=False)``): frames of 64 KiB or more become a
  ``zmq.Frame`` whose object pyzmq's garbage-collector thread keeps until
  libzmq frees the message; smaller ones are copied at once.
- signals (both engines): frames of the signal budget's ``track_min``
  (4 KiB by default) or more are lent through pyzmq's
  ``zmq.Frame(copy=False, track=True)``: its collector thread keeps the
  array until libzmq frees the message; smaller ones are copied.
- libzmq frees a message when it has written it to the kernel (tcp://,
  ipc://), when every subscriber of a PUB socket has (signals), when the
  receiving side closes its copy (inproc://: the client's array is the
  slot's memory until it is garbage collected), or when it drops it (a
  peer that disconnected or died, a context terminated).
- same-host clients with shared memory (``framerpc.server.shm_frames``):
  the slots lie in one shared segment (``/dev/shm``) when the host has
  one, and such a client receives a reference to the slot instead of its
  bytes; the server keeps the frame until that client released it (its
  array collected) or ended.
- a reply refused by a full client queue waits in the server's reply
  backlog with its frames (the slot stays out); a reply given up on (over
  the backlog's bounds, or its client gone) drops them at once.

So the slot is out for as long as any of these may still read it;
``acquire`` hands it out again only after that.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from . import transport
from .transport import shm
from .wire import shmpath

__all__ = ["DEFAULT_ACQUIRE_TIMEOUT_S", "FramePool"]

_log = logging.getLogger(__name__)

#: How long ``acquire`` waits for a slot when neither it nor the pool is
#: given a timeout (seconds): a pool never blocks for ever.
DEFAULT_ACQUIRE_TIMEOUT_S = 10.0
# Longest sleep of an exhausted ``acquire`` before it releases the buffers
# the compiled engine got back from libzmq (it does so only on its next
# send or receive, at least every 100 ms in a server's loop).
_WAIT_SLICE_S = 0.005


class _Lease:
    """The base object of one acquired frame; gives the slot back when
    the frame, its views and every buffer export of it are gone."""

    __slots__ = (
        "__array_interface__",
        "_free",
        "_index",
        "_segment",
        "_storage",
    )

    def __init__(
        self,
        storage: npt.NDArray[np.uint8],
        index: int,
        interface: dict[str, Any],
        free: queue.SimpleQueue[int],
        segment: Any = None,
    ) -> None:
        self._storage = storage  # the memory outlives the pool if need be
        self._index = index
        self._free = free  # the pool's free slots: ``index`` goes back there
        # shm: the pool's shared segment (None: private memory); a server
        # sends a same-host client a reference into it instead of a copy,
        # while the pool's free slots are not all gone
        self._segment = segment
        self.__array_interface__ = interface

    def __del__(self) -> None:
        # Any thread may drop the last reference (the server's, pyzmq's
        # collector, a client's over inproc, the garbage collector):
        # SimpleQueue.put is reentrant and needs no lock.
        self._free.put(self._index)


class FramePool:
    """A fixed number of frame buffers that a camera fills and a server
    sends without a copy and without tearing.

    ``acquire`` hands out a writable array of ``shape`` and ``dtype``;
    return it from a buffer method (or emit it in a signal) and it is sent
    without a copy. Its slot goes back to the pool only when every
    receiver is done with it, so a frame from a pool is never overwritten
    while it travels.

    Parameters
    ----------
    shape : sequence of int
        Shape of every frame.
    dtype : numpy dtype or anything ``numpy.dtype`` accepts
        A plain numeric, bool, bytes or unicode dtype (what travels on the
        wire); object and structured dtypes raise ``TypeError``.
    depth : int
        Number of slots (at least 1). Memory: ``depth * nbytes``, reserved
        when the pool is created (pages are touched when first written);
        on Linux in one shared segment of ``/dev/shm`` (reserved there at
        once; private memory when it has no room or the pool is over
        ``MAX_SHARED_POOL_BYTES``), so same-host clients read frames
        without a copy (see ``shared``).
        Use at least one slot more than the frames you hold yourself (the
        latest frame, a frame being filled) plus the fetches you expect in
        flight.
    timeout : float, optional
        Default wait of ``acquire`` in seconds (``DEFAULT_ACQUIRE_TIMEOUT_S``,
        10 s); finite, so that nothing waits for ever.

    Notes
    -----
    Who may touch a slot's memory, and until when:

    - From ``acquire`` until you return the array from a buffer method (or
      emit it): yours only. Fill it.
    - From then on, read-only for everyone: libzmq reads it until the
      message has left (a client that does not read over tcp:// keeps it
      that long); over ``inproc://`` the client's received array is that
      memory until the client drops it. Keep references if you like (e.g.
      the latest frame, served to several clients), but do not write
      through them: write the next frame into the next ``acquire``.
    - The slot returns when the array, every view and memoryview of it and
      every send of it are gone (on garbage collection; a reference cycle
      holding the array delays it to the next collection). With the
      compiled engine this is noticed at the next send or receive of the
      process, or while ``acquire`` waits.
    - Do not keep what escapes reference counting: raw pointers
      (``frame.ctypes.data``, ``__array_interface__``) or the frame's
      ``base`` (the lease) beyond the frame's own life.

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy.dtype
    depth : int
    nbytes : int
        Bytes of one frame.
    timeout : float
        The default wait of ``acquire`` (s).
    """

    def __init__(
        self,
        shape: Sequence[int] | int,
        dtype: npt.DTypeLike,
        depth: int,
        *,
        timeout: float = DEFAULT_ACQUIRE_TIMEOUT_S,
    ) -> None:
        dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims):
            raise ValueError(f"shape must be non-negative ints, got {shape!r}")
        kind = np.dtype(dtype)
        if kind.hasobject or kind.fields is not None:
            raise TypeError(
                f"a FramePool of dtype {kind} cannot be sent: only plain numeric, "
                "bool, bytes and unicode dtypes travel on the wire"
            )
        if not isinstance(depth, (int, np.integer)) or isinstance(depth, bool):
            raise TypeError(f"depth must be an int, got {type(depth).__name__}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.timeout = _check_timeout(timeout)
        self.shape: tuple[int, ...] = tuple(int(d) for d in dims)
        self.dtype = kind
        self.depth = int(depth)
        self.nbytes = math.prod(self.shape) * kind.itemsize
        # shm: the slots lie in one shared segment when the host has them
        # (page-aligned each); else one allocation per slot. Either way a
        # slot never shares pages with another.
        self._segment = _shared_segment(self.nbytes, self.depth)
        if self._segment is not None:
            stride = shm.round_pages(self.nbytes)
            self._slots = [
                self._segment.array(i * stride, self.nbytes) for i in range(self.depth)
            ]
        else:
            self._slots = [np.empty(self.nbytes, np.uint8) for _ in range(self.depth)]
        self._interfaces = [
            {
                "version": 3,
                "shape": self.shape,
                "typestr": kind.str,
                "data": (slot.ctypes.data, False),  # writable
                "strides": None,
            }
            for slot in self._slots
        ]
        self._addresses = [int(slot.ctypes.data) for slot in self._slots]
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(self.depth):
            self._free.put(index)

    @property
    def shared(self) -> bool:
        """Whether the slots lie in shared memory (same-host clients then
        receive a reference to the frame instead of its bytes)."""
        return self._segment is not None

    @property
    def available(self) -> int:
        """Slots free now (a snapshot: other threads may change it)."""
        return self._free.qsize()

    def acquire(self, timeout: float | None = None) -> npt.NDArray[Any]:
        """A writable frame from a free slot, waiting for one if need be.

        Parameters
        ----------
        timeout : float or None
            Longest wait in seconds; None: the pool's ``timeout`` (10 s by
            default). 0 does not wait.

        Returns
        -------
        numpy.ndarray
            A new C-contiguous array of the pool's shape and dtype over the
            slot's memory, holding what it held last (fill every element).

        Raises
        ------
        TimeoutError
            No slot came back within the timeout: every slot is still held
            by you, by a send in progress or by a client (over inproc://).
        ValueError
            A negative, infinite or NaN timeout.
        """
        wait = self.timeout if timeout is None else _check_timeout(timeout)
        try:
            index = self._free.get_nowait()
        except queue.Empty:
            index = self._wait(wait)
        lease = _Lease(
            self._slots[index],
            index,
            self._interfaces[index],
            self._free,
            self._segment,
        )
        # the array of the interface, made without reading it (compiled)
        address = self._addresses[index]
        return shmpath.lease_array(lease, self.dtype, self.shape, address)

    def _wait(self, wait: float) -> int:
        deadline = time.monotonic() + wait
        while True:
            # the compiled engine's loans libzmq gave back, released now
            transport.release_returned_buffers()
            try:
                return self._free.get_nowait()
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"no free frame in the pool within {wait:g} s: all "
                    f"{self.depth} slots are held (by the server's own "
                    "references, sends in progress or clients over inproc://)"
                )
            try:
                return self._free.get(timeout=min(remaining, _WAIT_SLICE_S))
            except queue.Empty:
                continue

    def __repr__(self) -> str:
        return (
            f"<FramePool {self.shape} {self.dtype} depth={self.depth} "
            f"available={self.available}>"
        )


#: Largest pool (bytes, all slots) put in shared memory; larger ones use
#: private memory (their frames then travel over the socket).
MAX_SHARED_POOL_BYTES = 4 << 30


def _shared_segment(nbytes: int, depth: int) -> Any:
    """A shared segment for ``depth`` page-aligned slots, or None (no
    /dev/shm, too large, or no room: private memory works everywhere)."""
    stride = shm.round_pages(nbytes)
    if not shm.AVAILABLE or stride * depth > MAX_SHARED_POOL_BYTES:
        return None
    try:
        return shm.Segment(stride * depth)
    except OSError as exc:
        _log.info("frame pool in private memory: %s", exc)
        return None


def _check_timeout(timeout: float) -> float:
    value = float(timeout)
    if not math.isfinite(value) or value < 0:
        # a finite wait: nothing in framerpc blocks for ever
        raise ValueError(
            f"timeout must be a finite number of seconds >= 0, got {timeout!r}"
        )
    return value
