# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False
"""Compiled message I/O, the twin of ``framerpc._zmqio_py``: ``send_frames``
/ ``recv_frames`` calling libzmq directly, and the client's
``Channel`` and the server's ``Responder`` built on them.

pyzmq's Python-level wrappers cost a few microseconds per frame, several
times what libzmq itself needs for a small RPC message. This module calls
``zmq_send`` / ``zmq_msg_recv`` on the socket's own handle
(``Socket.underlying``) with the GIL released. It does not link against
libzmq: the functions are looked up in the libzmq that pyzmq already
loaded (``dlopen`` of pyzmq's backend with ``RTLD_NOLOAD``, then
``dlsym``), so both always use the same library. If they cannot be found
the import fails and transport.py uses the pure twin, ``_zmqio_py``.

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

from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import logging

import zmq
import zmq.backend.cython._zmq as _backend

from framerpc import _zmqio_py
from framerpc._zmqio_py import BUFFER_TYPES
from framerpc._zmqio_py import RECV_FRAMES_KEPT as _RECV_FRAMES_KEPT
from framerpc.errors import ProtocolError
from framerpc.framing import OutOfBand, decode, encode
from framerpc.protocol import PROTOCOL_VERSION, Reply, decode_reply

__all__ = [
    "Channel",
    "Frame",
    "Responder",
    "send_frames",
    "recv_frames",
    "release_returned_buffers",
    "ZERO_COPY_MIN",
]

cdef object _decode = decode
cdef object _encode = encode
cdef object _OutOfBand = OutOfBand
cdef tuple _BUFFER_TYPES = BUFFER_TYPES
cdef object _PROTOCOL_VERSION = PROTOCOL_VERSION
cdef object _Reply = Reply
cdef object _decode_reply = decode_reply

# the pure Channel's logger: the same records whichever engine runs
_log = logging.getLogger("framerpc.transport")
cdef int WAIT_SLICE_MS = _zmqio_py.WAIT_SLICE_MS

cdef extern from "dlfcn.h" nogil:
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    char *dlerror()
    int RTLD_NOW
    int RTLD_NOLOAD

cdef extern from "errno.h":
    int EAGAIN
    int EINTR

# libzmq's message: 64 opaque bytes, pointer-aligned (zmq.h).
ctypedef struct zmq_msg_t:
    void *_opaque[8]

ctypedef int (*msg_init_t)(zmq_msg_t *) noexcept nogil
ctypedef int (*msg_recv_t)(zmq_msg_t *, void *, int) noexcept nogil
ctypedef int (*msg_close_t)(zmq_msg_t *) noexcept nogil
ctypedef void *(*msg_data_t)(zmq_msg_t *) noexcept nogil
ctypedef size_t (*msg_size_t)(const zmq_msg_t *) noexcept nogil
ctypedef int (*msg_more_t)(const zmq_msg_t *) noexcept nogil
ctypedef int (*send_t)(void *, const void *, size_t, int) noexcept nogil
ctypedef int (*errno_t)() noexcept nogil
ctypedef int (*setsockopt_t)(void *, int, const void *, size_t) noexcept nogil
ctypedef void (*free_fn_t)(void *, void *) noexcept nogil
ctypedef int (*msg_init_data_t)(zmq_msg_t *, void *, size_t, free_fn_t,
                                void *) noexcept nogil
ctypedef int (*msg_send_t)(zmq_msg_t *, void *, int) noexcept nogil
ctypedef const char *(*msg_gets_t)(const zmq_msg_t *, const char *) noexcept nogil

cdef msg_init_t z_msg_init
cdef msg_recv_t z_msg_recv
cdef msg_close_t z_msg_close
cdef msg_data_t z_msg_data
cdef msg_size_t z_msg_size
cdef msg_more_t z_msg_more
cdef send_t z_send
cdef errno_t z_errno
cdef setsockopt_t z_setsockopt
cdef msg_init_data_t z_msg_init_data
cdef msg_send_t z_msg_send
cdef msg_gets_t z_msg_gets

cdef int SNDMORE = zmq.SNDMORE
cdef int _NOBLOCK = zmq.NOBLOCK
cdef int ZMQ_RCVTIMEO = zmq.RCVTIMEO
#: Frames of at least this many bytes are lent to libzmq, smaller ones
#: copied. Measured (send_frames of [b"", b"h", buffer] on a DEALER, time in
#: the sending thread, medians of 2000): the two cost the same up to 8 KiB
#: (1.6-1.8 us), lending wins from 16 KiB (1.6 vs 2.1 us; 1.7 vs 2.6 us at
#: 48 KiB). pyzmq's 64 KiB threshold prices its collector thread in.
ZERO_COPY_MIN = 16 * 1024
cdef Py_ssize_t _zero_copy_min = ZERO_COPY_MIN


cdef void *_symbol(void *lib, const char *name) except NULL:
    cdef void *found = dlsym(lib, name)
    if found == NULL:
        raise ImportError(f"libzmq symbol {name.decode()} not found")
    return found


cdef _load():
    global z_msg_init, z_msg_recv, z_msg_close, z_msg_data, z_msg_size
    global z_msg_more, z_send, z_errno, z_setsockopt, z_msg_init_data, z_msg_send
    path = _backend.__file__.encode()
    cdef void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if lib == NULL:
        raise ImportError(f"cannot reach pyzmq's libzmq: {dlerror().decode()}")
    z_msg_init = <msg_init_t>_symbol(lib, b"zmq_msg_init")
    z_msg_recv = <msg_recv_t>_symbol(lib, b"zmq_msg_recv")
    z_msg_close = <msg_close_t>_symbol(lib, b"zmq_msg_close")
    z_msg_data = <msg_data_t>_symbol(lib, b"zmq_msg_data")
    z_msg_size = <msg_size_t>_symbol(lib, b"zmq_msg_size")
    z_msg_more = <msg_more_t>_symbol(lib, b"zmq_msg_more")
    z_send = <send_t>_symbol(lib, b"zmq_send")
    z_errno = <errno_t>_symbol(lib, b"zmq_errno")
    z_setsockopt = <setsockopt_t>_symbol(lib, b"zmq_setsockopt")
    z_msg_init_data = <msg_init_data_t>_symbol(lib, b"zmq_msg_init_data")
    z_msg_send = <msg_send_t>_symbol(lib, b"zmq_msg_send")
    global z_msg_gets
    z_msg_gets = <msg_gets_t>_symbol(lib, b"zmq_msg_gets")


_load()


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


cdef object _decode_reply_fast(list body):
    """protocol.decode_reply with its checks in C; anything they refuse goes
    to protocol.decode_reply itself, which raises the same ProtocolError."""
    cdef dict header
    try:
        header = _decode(body)
    except Exception:
        return _decode_reply(body)  # raises
    version, request_id, ok = header.get("v"), header.get("i"), header.get("ok")
    if (type(version) is not int or version != _PROTOCOL_VERSION
            or type(request_id) is not int or type(ok) is not bool):
        return _decode_reply(body)
    if ok:
        info = header.get("in")
        if info is not None and type(info) is not dict:
            return _decode_reply(body)
        return _Reply(request_id, True, header.get("x"), info)
    return _decode_reply(body)  # a failure: not the hot path


cdef double _monotonic():
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)  # what time.monotonic() reads
    return now.tv_sec + now.tv_nsec * 1e-9


cdef class Channel:
    """Compiled twin of ``framerpc._zmqio_py.Channel`` (see there): the
    whole exchange of a call in one C call, without Python frames."""

    cdef public object sock
    cdef public str url
    cdef public bint closed
    cdef public object watch
    cdef int _rcvtimeo
    cdef object _mark

    def __init__(self, sock, str url):
        self.sock = sock
        self.url = url
        self.closed = False
        self.watch = None
        self._rcvtimeo = -1
        self._mark = 0

    def reset(self, sock):
        """Use ``sock`` from now on (after replacing a stuck socket)."""
        self.sock = sock
        self._rcvtimeo = -1

    def call(self, request_id, method, list args, dict kwargs, timeout):
        """A METHOD_CALL request and its reply (see ``request``)."""
        # the header of protocol.encode_call
        frames = _encode({"v": _PROTOCOL_VERSION, "e": "METHOD_CALL",
                          "i": request_id, "m": method, "a": args, "k": kwargs})
        return self.request(frames, request_id, timeout)

    def request(self, list frames, request_id, timeout):
        """Send the request ``frames``; return the reply to ``request_id``."""
        cdef double deadline = _deadline(timeout)
        if self.watch is not None:
            self._mark = self.watch.mark()
        self._send(frames, deadline)
        cdef int wait = _first_wait(timeout)
        while True:
            body = self._receive_body(deadline, wait)
            try:
                reply = _decode_reply_fast(body)
            except ProtocolError as exc:
                _log.warning("dropped a malformed reply from %s: %s", self.url, exc)
            else:
                reply_id = reply.request_id
                if reply_id == request_id or reply_id == -1:
                    return reply
                _log.debug("dropped a late reply to request %s", reply_id)
            wait = self._wait_ms(deadline)

    def exchange(self, list frames, timeout):
        """Send ``frames``; return the frames of the next reply."""
        cdef double deadline = _deadline(timeout)
        if self.watch is not None:
            self._mark = self.watch.mark()
        self._send(frames, deadline)
        return self._receive_body(deadline, _first_wait(timeout))

    cdef _send(self, list frames, double deadline):
        cdef list message = [b""]
        message.extend(frames)
        while True:
            try:
                _send_frames(self.sock, message, _NOBLOCK)
                return
            except zmq.Again:  # not connected yet (IMMEDIATE) or queue full
                if not self.sock.poll(self._wait_ms(deadline), zmq.POLLOUT):
                    self._check_deadline(deadline, "send to")
                    if self.watch is not None:  # nothing is out: "down too long"
                        self.watch.check(self._mark, False, deadline < 0)
                if self.watch is not None:
                    # the connection may have gone and come back meanwhile:
                    # only a loss after this send is this request's
                    self._mark = self.watch.mark()

    cdef list _receive_body(self, double deadline, int wait):
        cdef void *handle = _handle(self.sock)
        cdef list frames
        while True:
            if wait != self._rcvtimeo:  # a blocking recv is cheaper than poll()
                if z_setsockopt(handle, ZMQ_RCVTIMEO, &wait, sizeof(int)) != 0:
                    _raise_zmq(z_errno())
                self._rcvtimeo = wait
            frames = []
            if _recv_message(handle, frames, 0):
                self._check_deadline(deadline, "reply from")
                if self.watch is not None:
                    self.watch.check(self._mark, True, deadline < 0)
                wait = self._wait_ms(deadline)
                continue
            if len(frames) >= 2 and len(<Frame>frames[0]) == 0:
                del frames[0]
                return frames
            _log.warning("dropped a reply without delimiter from %s", self.url)
            wait = self._wait_ms(deadline)

    cdef int _wait_ms(self, double deadline) except -1:
        cdef long remaining
        if self.closed:
            raise RuntimeError(f"client of {self.url} was closed during a call")
        if deadline < 0:
            return WAIT_SLICE_MS
        remaining = <long>((deadline - _monotonic()) * 1000) + 1
        return max(0, min(remaining, WAIT_SLICE_MS))

    cdef _check_deadline(self, double deadline, str what):
        if deadline >= 0 and _monotonic() >= deadline:
            raise TimeoutError(f"no {what} {self.url} in time")


cdef double _deadline(timeout) except? -2:
    """Monotonic deadline of ``timeout`` ms; -1 for none (None)."""
    if timeout is None:
        return -1
    return _monotonic() + <double>timeout / 1000


cdef int _first_wait(timeout) except -1:
    # from the timeout: the clock was read for the deadline a moment ago
    if timeout is None:
        return WAIT_SLICE_MS
    return max(0, min(<long>timeout, WAIT_SLICE_MS))


cdef class Responder:
    """Compiled twin of ``framerpc._zmqio_py.Responder`` (see there): the
    common request answered from one C call, the method's own frame aside."""

    cdef public object sock, target, json_methods, buffer_methods
    cdef public object check_buffer_result, failed, send_failed, fallback
    cdef public tuple limits

    def __init__(self, sock, target, dict json_methods, dict buffer_methods,
                 check_buffer_result, failed, send_failed, fallback=None,
                 limits=None):
        self.sock = sock
        self.target = target
        self.json_methods = json_methods
        self.buffer_methods = buffer_methods
        self.check_buffer_result = check_buffer_result
        self.failed = failed
        self.send_failed = send_failed
        self.fallback = fallback
        self.limits = tuple(limits) if limits is not None else ()

    def handle(self, list frames):
        """Answer ``frames`` if it is the common request; see the class."""
        cdef dict header
        cdef bint is_json
        cdef list message
        if len(frames) < 3 or len(frames[1]) != 0:
            return False
        try:
            # the defaults' call when no limits are given: the hot path
            header = _decode(frames[2:], *self.limits) if self.limits else _decode(frames[2:])
        except Exception as exc:  # the general path says what is wrong
            if self.fallback is None:
                return False
            self.fallback(frames[:2], frames[2:], exc)
            return True
        version, event, request_id = header.get("v"), header.get("e"), header.get("i")
        name, args, kwargs = header.get("m"), header.get("a"), header.get("k")
        # the checks of protocol.decode_request, for this one event
        if (type(version) is not int or version != _PROTOCOL_VERSION
                or type(event) is not str or event != "METHOD_CALL"
                or type(request_id) is not int or type(name) is not str
                or type(args) is not list or type(kwargs) is not dict
                or (name not in <dict>self.json_methods
                    and name not in <dict>self.buffer_methods)):
            if self.fallback is None:
                return False
            self.fallback(frames[:2], frames[2:], header)
            return True
        is_json = name in <dict>self.json_methods
        try:
            result = getattr(self.target, name)(*args, **kwargs)
            # the headers of protocol.encode_result
            if is_json:
                out = _encode({"v": _PROTOCOL_VERSION, "i": request_id,
                               "ok": True, "x": result})
            else:
                # check_buffer_result's test, written out: it is a Python call
                if (type(result) is not tuple or len(result) != 2
                        or not isinstance(result[1], dict)
                        or not isinstance(result[0], _BUFFER_TYPES)):
                    self.check_buffer_result(name, result)
                out = _encode({"v": _PROTOCOL_VERSION, "i": request_id, "ok": True,
                               "x": _OutOfBand(result[0]), "in": result[1]})
        except Exception as exc:  # a failing method or a result msgpack refuses
            out = self.failed(request_id, name, exc)
        message = frames[:2] + out
        try:
            # without blocking: the server keeps what a full queue refuses
            _send_frames(self.sock, message, _NOBLOCK)
        except (zmq.ZMQError, TypeError) as exc:
            self.send_failed(frames[:2], exc, request_id, out)
        return True
