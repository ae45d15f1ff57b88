"""Dropping the rest of a very long message in batches (pure engine).

``_zmqio_py.recv_frames`` keeps ``RECV_FRAMES_KEPT`` frames of a message
and drops the rest. Read one at a time with pyzmq (``recv(copy=False)``),
each dropped part costs a ``zmq.Frame`` and a GIL release: about 1 us,
and 22 s of server CPU for a 16 MiB message of 8 million empty frames.

``zmq_recviov`` (libzmq's stable API) reads up to N parts of a message
in one C call; it copies each part into a ``malloc``'d buffer that the
caller frees. Called through ctypes on the libzmq that pyzmq's backend
already loaded (the same library, as the compiled engine does), a batch
of 4096 empty parts costs one call plus one ``free`` per part: about 3
times less CPU per part. The copies are what limits it: batches start
small and grow only while their parts are nearly empty; once a batch
carried more than ``_COPY_LIMIT`` bytes, the rest of the message is left
to pyzmq's loop, which does not copy.

The calls keep the GIL (``ctypes.PyDLL``): libzmq hands a multipart
message to its reader only once every part arrived, so the parts after
the first never make the call wait; ``ZMQ_DONTWAIT`` makes sure of it
(EAGAIN, EINTR or ENOMEM hand the rest to the loop as well). Where the
backend is not pyzmq's Cython extension, or lacks a symbol, ``drain`` is
None and ``_zmqio_py`` reads the rest one part at a time as before.
"""

from __future__ import annotations

import ctypes
import errno as _errno
from collections import deque
from collections.abc import Callable

import numpy as np
import zmq

__all__ = ["drain", "load"]

#: Parts per batch: the first batch, and the most a batch grows to.
_FIRST_BATCH, _MAX_BATCH = 256, 4096
#: A batch that copied at most this many bytes may double its size.
_GROW_LIMIT = 64 << 10
#: A batch that copied more than this ends the batching for this message.
_COPY_LIMIT = 1 << 20

_RCVMORE = int(zmq.RCVMORE)
_DONTWAIT = int(zmq.DONTWAIT)
_HAND_OVER = frozenset({_errno.EAGAIN, _errno.EINTR, _errno.ENOMEM})


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def load(path: str | None = None) -> Callable[[zmq.Socket], bool] | None:
    """A batch drain on the libzmq in ``path`` (default: pyzmq's Cython
    backend), or None when it cannot be set up.

    The function returned takes a socket whose current message has more
    parts, reads and drops some or all of them, and returns True when the
    message's last part was read, False when parts remain (the caller
    reads them one at a time).
    """
    try:
        if path is None:
            from zmq.backend.cython import _zmq

            path = _zmq.__file__
        lib = ctypes.PyDLL(path)
        recviov = lib.zmq_recviov
        getsockopt = lib.zmq_getsockopt
        zmq_errno = lib.zmq_errno
        # the free() that libzmq's malloc() pairs with: looked up from the
        # library, so through its own dependencies
        free = lib.free
    except (ImportError, OSError, AttributeError, TypeError):
        return None
    recviov.restype = ctypes.c_int
    recviov.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(_Iovec),
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.c_int,
    ]
    getsockopt.restype = ctypes.c_int
    getsockopt.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    zmq_errno.restype = ctypes.c_int
    zmq_errno.argtypes = []
    free.restype = None
    free.argtypes = [ctypes.c_void_p]

    def drain(sock: zmq.Socket) -> bool:
        iov = (_Iovec * _MAX_BATCH)()
        # (base, len) pairs as one array: pointers and sizes without a
        # Python object per part (through a memoryview of the same memory:
        # numpy's frombuffer is typed for buffers, not ctypes arrays)
        pairs = np.frombuffer(memoryview(iov), dtype=np.uintp).reshape(_MAX_BATCH, 2)
        count = ctypes.c_size_t()
        more = ctypes.c_int()
        more_size = ctypes.c_size_t()
        more_ref, more_size_ref = ctypes.byref(more), ctypes.byref(more_size)
        handle = ctypes.c_void_p(sock.underlying)
        batch = _FIRST_BATCH
        while True:
            count.value = batch
            rc = recviov(handle, iov, ctypes.byref(count), _DONTWAIT)
            error = zmq_errno() if rc < 0 else 0
            read = count.value  # parts read and copied, even when rc < 0
            deque(map(free, pairs[:read, 0].tolist()), 0)
            copied = int(pairs[:read, 1].sum())
            if rc < 0 and error not in _HAND_OVER:
                if error == zmq.ETERM:
                    raise zmq.ContextTerminated()
                raise zmq.ZMQError(error)
            # RCVMORE tells about the last part received, also when the
            # call failed after it (ENOMEM) or before any (EAGAIN)
            more_size.value = ctypes.sizeof(more)
            if getsockopt(handle, _RCVMORE, more_ref, more_size_ref):
                raise zmq.ZMQError(zmq_errno())
            if not more.value:
                return True
            if rc < 0 or copied > _COPY_LIMIT:
                return False
            if copied <= _GROW_LIMIT and batch < _MAX_BATCH:
                batch *= 2

    return drain


#: The batch drain, or None: see the module docstring.
drain = load()
