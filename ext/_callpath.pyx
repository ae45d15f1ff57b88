# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False
"""Compiled call path, the twin of ``framerpc.rpc._callpath_py``: the
client's ``Channel`` and the server's ``Responder``, each exchange in one
C call without Python frames.

Frames move through the compiled message I/O (``framerpc.transport._zmqio``),
whose functions are called from C (declared in ``_zmqio.pxd``); headers
are built and read with the keys of ``framerpc.wire.messages``. Anything the
checks here refuse goes to ``framerpc.wire.messages`` (a reply) or to the
server's general path (a request), which say what is wrong, so both
engines answer alike. ``call_fields`` is this engine's one check of a
METHOD_CALL's fields, the Responder's and the general request parser's.
"""

from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from framerpc.transport._zmqio cimport _handle, _recv_message, _send_frames, _set_rcvtimeo

import logging

import numpy as np
import zmq

from framerpc.transport._zmqio_py import BUFFER_TYPES
from framerpc._ratelog import RateLimitedLog
from framerpc.errors import ProtocolError
from framerpc.wire.framing import OutOfBand, decode, encode
from framerpc.wire.messages import (
    KEY_ARGS,
    KEY_EVENT,
    KEY_ID,
    KEY_INFO,
    KEY_KWARGS,
    KEY_METHOD,
    KEY_OK,
    KEY_VALUE,
    KEY_VERSION,
    PROTOCOL_VERSION,
    Reply,
    RPCEvents,
    check_version,
    decode_reply,
    request_event,
)
from framerpc.wire.shm import KEY_RELEASES
from framerpc.rpc import _callpath_py

__all__ = ["Channel", "Responder", "WAIT_SLICE_MS", "read_reply", "call_fields"]

cdef object _decode = decode
cdef object _ndarray = np.ndarray
cdef object _encode = encode
cdef object _OutOfBand = OutOfBand
cdef tuple _BUFFER_TYPES = BUFFER_TYPES
cdef object _PROTOCOL_VERSION = PROTOCOL_VERSION
cdef object _Reply = Reply
cdef object _decode_reply = decode_reply
cdef str _METHOD_CALL = RPCEvents.METHOD_CALL.value
# the header keys, as C-level names (a module global is a dict lookup)
cdef str _K_VERSION = KEY_VERSION
cdef str _K_EVENT = KEY_EVENT
cdef str _K_ID = KEY_ID
cdef str _K_METHOD = KEY_METHOD
cdef str _K_ARGS = KEY_ARGS
cdef str _K_KWARGS = KEY_KWARGS
cdef str _K_VALUE = KEY_VALUE
cdef str _K_OK = KEY_OK
cdef str _K_INFO = KEY_INFO
cdef str _K_RELEASES = KEY_RELEASES

# the switch module's logger: the same records whichever engine runs
_log = logging.getLogger("framerpc.rpc.callpath")
WAIT_SLICE_MS = _callpath_py.WAIT_SLICE_MS
cdef int _WAIT_SLICE_MS = WAIT_SLICE_MS
cdef int _NOBLOCK = zmq.NOBLOCK


cdef object _decode_reply_fast(list body):
    """protocol.decode_reply with its checks in C; anything they refuse goes
    to protocol.decode_reply itself, which raises the same ProtocolError."""
    cdef dict header
    try:
        header = _decode(body)
    except Exception:
        return _decode_reply(body)  # raises
    version, request_id, ok = header.get(_K_VERSION), header.get(_K_ID), header.get(_K_OK)
    if (type(version) is not int or version != _PROTOCOL_VERSION
            or type(request_id) is not int or type(ok) is not bool):
        return _decode_reply(body)
    if ok:
        info = header.get(_K_INFO)
        if info is not None and type(info) is not dict:
            return _decode_reply(body)
        return _Reply(request_id, True, header.get(_K_VALUE), info)
    return _decode_reply(body)  # a failure: not the hot path


def read_reply(sock):
    """The next reply waiting on the DEALER ``sock``, without blocking, or
    None (see ``_callpath_py.read_reply``): one C call for the receive,
    the delimiter check and the header's decoding."""
    cdef list frames = []
    if _recv_message(_handle(sock), frames, _NOBLOCK):
        return None  # this receive re-armed the ZMQ_FD wake-up
    if len(frames) < 2 or len(frames[0]) != 0:
        raise ProtocolError("reply without delimiter")
    return _decode_reply_fast(frames[1:])
def call_fields(dict header):
    """Compiled twin of ``framerpc.rpc._callpath_py.call_fields`` (see
    there): ``(request_id, method, args, kwargs)`` or ProtocolError."""
    return _call_fields(header, True)


cdef tuple _call_fields(dict header, bint explain):
    """The one METHOD_CALL check of this engine, as the pure twin's
    ``_call_fields``: None for a refused header without ``explain``."""
    version, event = header.get(_K_VERSION), header.get(_K_EVENT)
    # types first: comparing an array to a str or int is no check
    if type(version) is not int or version != _PROTOCOL_VERSION:
        if explain:
            check_version(header)  # raises, with wire's text
        return None
    if type(event) is not str or event != _METHOD_CALL:
        if explain:
            request_event(header)  # raises for a non-request event
            raise ProtocolError(f"{event!r} is not a METHOD_CALL request")
        return None
    method, args = header.get(_K_METHOD), header.get(_K_ARGS)
    kwargs, request_id = header.get(_K_KWARGS), header.get(_K_ID)
    if type(method) is not str:
        return _refuse(header, explain, _K_METHOD, "method", str)
    if type(args) is not list:
        return _refuse(header, explain, _K_ARGS, "args", list)
    if type(kwargs) is not dict:
        return _refuse(header, explain, _K_KWARGS, "kwargs", dict)
    if type(request_id) is not int:
        if explain:  # the text of Request's own check
            raise ProtocolError(f"request id must be an int, got {request_id!r}")
        return None
    return (request_id, method, args, kwargs)


cdef tuple _refuse(dict header, bint explain, str key, str attr, type kind):
    # field ``key`` is missing or mistyped: None, or with explain the error
    if not explain:
        return None
    if key not in header:
        raise ProtocolError(f"METHOD_CALL request lacks field {key!r} ({attr})")
    raise ProtocolError(f"METHOD_CALL field {attr!r} must be {kind.__name__}, "
                        f"got {type(header[key]).__name__}")


cdef double _monotonic():
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)  # what time.monotonic() reads
    return now.tv_sec + now.tv_nsec * 1e-9


cdef class Channel:
    """Compiled twin of ``framerpc.rpc._callpath_py.Channel`` (see there):
    the whole exchange of a call in one C call, without Python frames."""

    cdef public object sock
    cdef public str url
    cdef public bint closed
    cdef public object watch
    cdef public object lane
    cdef int _rcvtimeo
    cdef object _mark
    cdef object _bad_replies

    def __init__(self, sock, str url):
        self.sock = sock
        self.url = url
        self.closed = False
        self.watch = None
        self._rcvtimeo = -1
        self._mark = 0
        # a flood of bad replies logs at most one line a second
        self._bad_replies = RateLimitedLog(_log)
        self.lane = None

    def reset(self, sock):
        """Use ``sock`` from now on (after replacing a stuck socket)."""
        self.sock = sock
        self._rcvtimeo = -1

    def call(self, request_id, method, list args, dict kwargs, timeout):
        """A METHOD_CALL request and its reply (see ``request``)."""
        # protocol.encode_call's header, key for key
        frames = _encode({_K_VERSION: _PROTOCOL_VERSION, _K_EVENT: _METHOD_CALL,
                          _K_ID: request_id, _K_METHOD: method, _K_ARGS: args,
                          _K_KWARGS: kwargs})
        return self._request(frames, request_id, timeout)

    def request(self, list frames, request_id, timeout):
        """Send the request ``frames``; return the reply to ``request_id``."""
        return self._request(frames, request_id, timeout)

    cdef _request(self, list frames, request_id, timeout):
        if self.lane is not None:  # same host: the lane (framerpc.client.lane)
            reply = self.lane.request(self, frames, request_id, timeout)
            if reply is not None:
                return reply
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
                self._bad_replies.warning(
                    "dropped a malformed reply from %s: %s", self.url, exc)
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
                _set_rcvtimeo(handle, wait)
                self._rcvtimeo = wait
            frames = []
            if _recv_message(handle, frames, 0):
                self._check_deadline(deadline, "reply from")
                if self.watch is not None:
                    self.watch.check(self._mark, True, deadline < 0)
                wait = self._wait_ms(deadline)
                continue
            if len(frames) >= 2 and len(frames[0]) == 0:
                del frames[0]
                return frames
            self._bad_replies.warning(
                "dropped a reply without delimiter from %s", self.url)
            wait = self._wait_ms(deadline)

    cdef int _wait_ms(self, double deadline) except -1:
        cdef long remaining
        if self.closed:
            raise RuntimeError(f"client of {self.url} was closed during a call")
        if deadline < 0:
            return _WAIT_SLICE_MS
        remaining = <long>((deadline - _monotonic()) * 1000) + 1
        return max(0, min(remaining, _WAIT_SLICE_MS))

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
        return _WAIT_SLICE_MS
    return max(0, min(<long>timeout, _WAIT_SLICE_MS))


cdef class Responder:
    """Compiled twin of ``framerpc.rpc._callpath_py.Responder`` (see there):
    the common request answered from one C call, the method's own frame
    aside."""

    cdef public object sock, target, json_methods, buffer_methods
    cdef public object check_buffer_result, failed, send_failed, fallback
    cdef public tuple limits
    cdef public object shm, shm_release
    cdef public Py_ssize_t shm_threshold

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
        self.shm = None
        self.shm_release = None
        self.shm_threshold = 0

    def handle(self, list frames, lane=None):
        """Answer ``frames`` if it is the common request; see the class."""
        cdef dict header
        cdef tuple fields
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
        # the one METHOD_CALL check (see the pure twin)
        fields = _call_fields(header, False)
        if fields is None or (fields[1] not in <dict>self.json_methods
                              and fields[1] not in <dict>self.buffer_methods):
            if self.fallback is None:
                return False
            self.fallback(frames[:2], frames[2:], header)
            return True
        if self.shm is not None:  # slots this client is done with
            releases = header.get(_K_RELEASES)
            if releases is not None:
                self.shm_release(frames[0], releases)
        request_id, name, args, kwargs = fields
        is_json = name in <dict>self.json_methods
        try:
            result = getattr(self.target, name)(*args, **kwargs)
            # protocol.encode_result's headers, key for key
            if is_json:
                out = _encode({_K_VERSION: _PROTOCOL_VERSION, _K_ID: request_id,
                               _K_OK: True, _K_VALUE: result})
            else:
                # check_buffer_result's test, written out: it is a Python call
                if (type(result) is not tuple or len(result) != 2
                        or not isinstance(result[1], dict)
                        or not isinstance(result[0], _BUFFER_TYPES)):
                    self.check_buffer_result(name, result)
                value = result[0]
                if (self.shm is not None  # may become a shared-memory reference
                        and type(value) is _ndarray
                        and value.nbytes >= self.shm_threshold):
                    out = self.shm(frames[0], request_id, result)
                else:
                    out = _encode({_K_VERSION: _PROTOCOL_VERSION, _K_ID: request_id,
                                   _K_OK: True, _K_VALUE: _OutOfBand(result[0]),
                                   _K_INFO: result[1]})
        except Exception as exc:  # a failing method or a result msgpack refuses
            out = self.failed(request_id, name, exc)
        if lane is not None:  # a same-host lane's request (server.lane)
            lane(frames[:2], out, request_id)
            return True
        message = frames[:2] + out
        try:
            # without blocking: the server keeps what a full queue refuses
            _send_frames(self.sock, message, _NOBLOCK)
        except (zmq.ZMQError, TypeError) as exc:
            self.send_failed(frames[:2], exc, request_id, out)
        return True
