# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False
"""Compiled message I/O, the twin of ``framerpc._zmqio_py``: ``send_frames``
/ ``recv_frames`` calling libzmq directly. It only moves frames (send,
receive, lend, release); the call path built on it (``Channel``,
``Responder``) is ``framerpc.rpc._callpath``, which calls the functions
declared in ``_zmqio.pxd`` from C.

pyzmq's Python-level wrappers cost a few microseconds per frame, several
times what libzmq itself needs for a small RPC message. This module calls
``zmq_send`` / ``zmq_msg_recv`` on the socket's own handle
(``Socket.underlying``) with the GIL released. It does not link against
libzmq: the functions are looked up in the libzmq that pyzmq already
loaded (``dlopen`` of pyzmq's backend with ``RTLD_NOLOAD``, then
``dlsym``), so both always use the same library. If they cannot be found
the import fails and framerpc.transport.zmqio uses the pure twin, ``_zmqio_py``.

Frames of ``ZERO_COPY_MIN`` (16 KiB) or more, of any buffer type
(``bytes`` included: it is immutable), are lent to libzmq without a copy
(``zmq_msg_init_data``); the loan holds a reference to the object until
libzmq gives the buffer back. libzmq calls the free function from its I/O
thread, where the GIL is not held, so it only marks the loan returned;
the buffer itself is released by the next ``send_frames`` or receive of
any socket in the process (a server's loop receives at least every
100 ms). pyzmq's ``send(copy=False)`` instead wakes a garbage-collector
thread for each frame, which takes the GIL: on a 2-core machine that
thread costs more than the rest of the reply. Received frames are
``Frame`` objects that own their message: no copy, freed when the
last view goes.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_FillInfo, PyBuffer_Release
from cpython.buffer cimport PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from libc.stdlib cimport free, malloc

import zmq
import zmq.backend.cython._zmq as _backend

from framerpc.transport._zmqio_py import RECV_FRAMES_KEPT as _RECV_FRAMES_KEPT

__all__ = [
    "Frame",
    "send_frames",
    "recv_frames",
    "release_returned_buffers",
    "ZERO_COPY_MIN",
]

# libzmq's functions (z_send, z_msg_recv...), found at import
include "_libzmq.pxi"

cdef int SNDMORE = zmq.SNDMORE
cdef int ZMQ_RCVTIMEO = zmq.RCVTIMEO
#: Frames of at least this many bytes are lent to libzmq, smaller ones
#: copied. Measured (send_frames of [b"", b"h", buffer] on a DEALER, time in
#: the sending thread, medians of 2000): the two cost the same up to 8 KiB
#: (1.6-1.8 us), lending wins from 16 KiB (1.6 vs 2.1 us; 1.7 vs 2.6 us at
#: 48 KiB). pyzmq's 64 KiB threshold prices its collector thread in.
ZERO_COPY_MIN = 16 * 1024
cdef Py_ssize_t _zero_copy_min = ZERO_COPY_MIN


cdef void *_handle(sock) except NULL:
    cdef size_t address = sock.underlying
    if address == 0:
        raise zmq.ZMQError(zmq.ENOTSOCK)
    return <void *>address


cdef class Frame:
    """One received message part; owns its libzmq message (no copy).

    Supports the buffer protocol; ``buffer`` (a memoryview), ``bytes`` (a
    copy) and ``more`` mirror ``zmq.Frame``.
    """

    cdef zmq_msg_t msg
    cdef bint _open
    cdef readonly bint more

    def __cinit__(self):
        z_msg_init(&self.msg)
        self._open = True

    def __dealloc__(self):
        if self._open:
            z_msg_close(&self.msg)

    def __len__(self):
        return z_msg_size(&self.msg)

    def __getbuffer__(self, Py_buffer *view, int flags):
        # read-only: over inproc the memory may be a sender's lent bytes
        PyBuffer_FillInfo(view, self, z_msg_data(&self.msg),
                          z_msg_size(&self.msg), 1, flags)

    @property
    def buffer(self):
        return memoryview(self)

    @property
    def bytes(self):
        return PyBytes_FromStringAndSize(<char *>z_msg_data(&self.msg),
                                         z_msg_size(&self.msg))

    def get(self, str name):
        """A metadata property of the message (``"User-Id"``: the peer's
        CURVE key), as ``zmq.Frame.get``: ZMQError when absent."""
        cdef bytes key = name.encode()
        cdef const char *value = z_msg_gets(&self.msg, key)
        if value == NULL:
            raise zmq.ZMQError(z_errno())
        return value.decode("utf-8", "replace")

    def __repr__(self):
        return f"<framerpc Frame {z_msg_size(&self.msg)} B>"


cdef _raise_zmq(int error):
    if error == EAGAIN:
        raise zmq.Again()
    if error == zmq.ETERM:  # as pyzmq raises it, so both engines agree
        raise zmq.ContextTerminated()
    raise zmq.ZMQError(error)


cdef int _send_copy(void *handle, const void *data, size_t size, int flags) except -1:
    cdef int rc, error
    while True:
        with nogil:
            rc = z_send(handle, data, size, flags)
            error = z_errno() if rc < 0 else 0
        if rc >= 0:
            return 0
        if error == EINTR:
            PyErr_CheckSignals()
            continue
        _raise_zmq(error)


# -- buffers lent to libzmq -------------------------------------------------
cdef extern from *:
    """
    /* The flag is set by libzmq's I/O thread and read under the GIL. */
    static inline void framerpc_mark_returned(int *flag) {
        __atomic_store_n(flag, 1, __ATOMIC_RELEASE);
    }
    static inline int framerpc_is_returned(int *flag) {
        return __atomic_load_n(flag, __ATOMIC_ACQUIRE);
    }
    /* Cython types Py_buffer.obj as an object: these leave it untouched. */
    static inline void framerpc_forget_view(Py_buffer *view) { view->obj = NULL; }
    static inline int framerpc_view_held(Py_buffer *view) { return view->obj != NULL; }
    """
    void _mark_returned "framerpc_mark_returned"(int *flag) noexcept nogil
    int _is_returned "framerpc_is_returned"(int *flag) noexcept nogil
    void _forget_view "framerpc_forget_view"(Py_buffer *view) noexcept nogil
    bint _view_held "framerpc_view_held"(Py_buffer *view) noexcept nogil


ctypedef struct _Loan:
    Py_buffer view  # holds the exporter until the loan is released
    int returned
    _Loan *next

# Loans not yet released, touched only with the GIL held.
cdef _Loan *_loans = NULL


cdef void _loan_returned(void *data, void *hint) noexcept nogil:
    # libzmq is done with the buffer; no GIL here, so only mark it
    _mark_returned(&(<_Loan *>hint).returned)


cdef void _release_returned() noexcept:
    """Release the buffers libzmq has given back."""
    global _loans
    cdef _Loan *item = _loans
    cdef _Loan *following
    cdef _Loan *kept = NULL
    cdef _Loan *done = NULL
    while item != NULL:
        following = item.next
        if _is_returned(&item.returned):
            item.next = done
            done = item
        else:
            item.next = kept
            kept = item
        item = following
    _loans = kept
    # Releasing may run Python code (a last reference going), which may send
    # again: the list is consistent before the first release.
    while done != NULL:
        following = done.next
        PyBuffer_Release(&done.view)
        free(done)
        done = following


def release_returned_buffers():
    """Release now the sent buffers libzmq has given back (every send and
    receive does it; see the module docstring)."""
    _release_returned()


cdef int _send_lent(void *handle, Py_buffer *view, int flags) except -1:
    """Send ``view`` without a copy; the loan takes over the view."""
    global _loans
    cdef zmq_msg_t msg
    cdef int rc, error
    cdef _Loan *loan = <_Loan *>malloc(sizeof(_Loan))
    if loan == NULL:
        raise MemoryError()
    loan.returned = 0
    if z_msg_init_data(&msg, view.buf, view.len, _loan_returned, loan) != 0:
        free(loan)
        _raise_zmq(z_errno())
    loan.view = view[0]
    _forget_view(view)  # the loan releases it now
    loan.next = _loans
    _loans = loan
    while True:
        with nogil:
            rc = z_msg_send(&msg, handle, flags)
            error = z_errno() if rc < 0 else 0
        if rc >= 0:
            return 0
        if error == EINTR:
            try:
                PyErr_CheckSignals()
            except BaseException:
                z_msg_close(&msg)
                _release_returned()
                raise
            continue
        z_msg_close(&msg)  # not sent: libzmq returns the loan at once
        _release_returned()
        _raise_zmq(error)


cdef int _acquire(object item, Py_ssize_t index, Py_buffer *view) except -1:
    try:
        PyObject_GetBuffer(item, view, PyBUF_SIMPLE)
    except Exception:
        _forget_view(view)
        # the pure twin's checks, for its errors word for word
        try:
            whole = memoryview(item)
        except TypeError:
            raise TypeError(f"frame {index} ({type(item).__name__}) does not "
                            "support the buffer protocol") from None
        if not whole.c_contiguous:
            raise BufferError(f"frame {index} ({type(item).__name__}) is not "
                              "C-contiguous") from None
        raise
    return 0


cdef enum:
    _STACK_VIEWS = 8  # frames whose views fit on the stack


cdef int _send_frames(sock, list frames, int flags) except -1:
    cdef Py_ssize_t index, count
    cdef int part_flags
    cdef Py_buffer stack_views[_STACK_VIEWS]
    cdef Py_buffer *views = stack_views
    cdef Frame frame
    cdef tuple items
    cdef void *handle = _handle(sock)
    if _loans != NULL:
        _release_returned()
    # A snapshot: releasing, and each send (the GIL is let go), may run
    # Python code that changes the list.
    items = tuple(frames)
    count = len(items)
    if count > _STACK_VIEWS:
        views = <Py_buffer *>malloc(count * sizeof(Py_buffer))
        if views == NULL:
            raise MemoryError()
    for index in range(count):
        _forget_view(&views[index])
    try:
        # Every buffer first: a frame refused halfway would leave a partial
        # multipart message queued on the socket.
        for index in range(count):
            item = items[index]
            if type(item) is bytes:
                # immutable: a large one is lent like any other buffer
                if PyBytes_GET_SIZE(item) >= _zero_copy_min:
                    _acquire(item, index, &views[index])
            elif type(item) is not Frame:
                _acquire(item, index, &views[index])
        for index in range(count):
            part_flags = (SNDMORE if index < count - 1 else 0) | (flags if index == 0 else 0)
            item = items[index]
            if type(item) is bytes and not _view_held(&views[index]):
                _send_copy(handle, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item),
                           part_flags)
            elif type(item) is Frame:
                frame = <Frame>item
                _send_copy(handle, z_msg_data(&frame.msg), z_msg_size(&frame.msg),
                           part_flags)
            elif views[index].len < _zero_copy_min:
                _send_copy(handle, views[index].buf, views[index].len, part_flags)
            else:
                _send_lent(handle, &views[index], part_flags)
    finally:
        for index in range(count):
            if _view_held(&views[index]):
                PyBuffer_Release(&views[index])
        if views != stack_views:
            free(views)
    return 0


def send_frames(sock, list frames, int flags=0):
    """Send ``frames`` as one multipart message (see ``_zmqio_py``)."""
    _send_frames(sock, frames, flags)


cdef int _recv_message(void *handle, list frames, int flags) except -1:
    """Append one multipart message's frames; returns 1 on EAGAIN (nothing
    received), 0 otherwise."""
    cdef Frame frame
    cdef int rc, error
    cdef bint first = True
    if _loans != NULL:
        _release_returned()
    while True:
        frame = Frame.__new__(Frame)
        while True:
            with nogil:
                rc = z_msg_recv(&frame.msg, handle, flags)
                error = z_errno() if rc < 0 else 0
            if rc >= 0:
                break
            if error == EINTR:
                PyErr_CheckSignals()
                continue
            if error == EAGAIN and first:
                return 1
            _raise_zmq(error)
        frame.more = z_msg_more(&frame.msg)
        frames.append(frame)
        if not frame.more:
            return 0
        if len(frames) >= _RECV_FRAMES_KEPT:
            _drain_parts(handle)  # see _zmqio_py.RECV_FRAMES_KEPT
            return 0
        flags = 0
        first = False


cdef int _drain_parts(void *handle) except -1:
    """Read and drop the remaining parts of the message being received,
    in one reused libzmq message (no Python object per part)."""
    cdef zmq_msg_t msg
    cdef int rc, error
    cdef bint more = True
    z_msg_init(&msg)
    try:
        while more:
            with nogil:
                rc = z_msg_recv(&msg, handle, 0)
                error = z_errno() if rc < 0 else 0
            if rc < 0:
                if error == EINTR:
                    PyErr_CheckSignals()
                    continue
                _raise_zmq(error)
            more = z_msg_more(&msg)
    finally:
        z_msg_close(&msg)
    return 0


def recv_frames(sock, int flags=0):
    """Receive one multipart message as a list of ``Frame``."""
    cdef list frames = []
    if _recv_message(_handle(sock), frames, flags):
        raise zmq.Again()
    return frames


cdef int _set_rcvtimeo(void *handle, int wait) except -1:
    """``RCVTIMEO`` of the socket ``handle`` (ms): a blocking receive with
    a timeout is cheaper than a poll() before each receive."""
    if z_setsockopt(handle, ZMQ_RCVTIMEO, &wait, sizeof(int)) != 0:
        _raise_zmq(z_errno())
    return 0
