"""Pure-Python message I/O: the twin of the compiled ``framerpc._zmqio``.

``send_frames`` / ``recv_frames`` move one multipart message; a
``Channel`` is a client's side of its calls and a ``Responder``
a server's side of the common one. ``framerpc.transport`` picks this
module or the compiled one (same names, same behaviour; the parity tests
in tests/test_zmqio_parity.py run both).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from ..errors import ProtocolError
from ..wire import framing
from ..wire import messages as protocol
from ..wire.messages import PROTOCOL_VERSION, Reply

__all__ = [
    "BUFFER_TYPES",
    "WAIT_SLICE_MS",
    "Channel",
    "Responder",
    "recv_frames",
    "release_returned_buffers",
    "send_frames",
]

# the transport module's logger, whichever twin runs
_log = logging.getLogger("framerpc.transport")

# Plain ints: pyzmq's enum flags cost an enum operation per frame sent.
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)


def send_frames(sock: zmq.Socket, frames: list, flags: int = 0) -> None:
    """Send ``frames`` as one multipart message, large ones without a copy.

    Cheaper than ``send_multipart`` for the few frames of an RPC message.
    With ``flags=zmq.NOBLOCK``, ``zmq.Again`` means nothing was sent:
    once the first frame is queued, the rest of the message follows.

    Raises
    ------
    TypeError
        A frame does not support the buffer protocol.
    BufferError
        A frame is not one C-contiguous buffer.

    Both are raised before anything is sent. Ownership: pyzmq keeps a
    reference to each buffer of 64 KiB or more until libzmq has sent it;
    smaller frames are copied.
    """
    for index, frame in enumerate(frames):
        # Check the whole message first: a frame refused halfway would leave
        # a partial multipart message queued on the socket.
        if type(frame) is not bytes and type(frame) is not zmq.Frame:
            try:
                view = memoryview(frame)
            except TypeError:
                raise TypeError(
                    f"frame {index} ({type(frame).__name__}) does not support "
                    "the buffer protocol"
                ) from None
            if not view.c_contiguous:
                raise BufferError(
                    f"frame {index} ({type(frame).__name__}) is not C-contiguous"
                )
    last = len(frames) - 1
    send = sock.send
    for index, frame in enumerate(frames):
        send(frame, (_SNDMORE if index < last else 0) | flags, copy=False)
        flags = 0


def release_returned_buffers() -> None:
    """Nothing to do here: pyzmq's collector thread releases sent buffers.

    The compiled twin releases them on its next send or receive; this is
    its way to do so at once.
    """


def recv_frames(sock: zmq.Socket, flags: int = 0) -> list:
    """Receive one multipart message as a list of ``zmq.Frame``.

    Frames are not copied; a memoryview of a frame keeps it alive. Raises
    ``zmq.Again`` when ``RCVTIMEO`` passes or with ``zmq.NOBLOCK``
    and no message.
    """
    recv = sock.recv
    frame = recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = recv(0, copy=False)
        frames.append(frame)
        if len(frames) >= RECV_FRAMES_KEPT and frame.more:
            _drain_parts(sock)
            break
    return frames


#: Most frames ``recv_frames`` keeps of one message: more than any limit of
#: ``framing.decode`` plus a routing envelope, so that such a message is
#: still refused by decode. The parts past it are read and dropped at
#: once: a message of millions of empty frames (2 bytes each on the wire)
#: would otherwise cost a Python object per frame (1.5 GB, 9 s of CPU).
RECV_FRAMES_KEPT = 2 * framing.MAX_FRAMES


def _drain_parts(sock: zmq.Socket) -> None:
    """Read and drop the remaining parts of the message being received."""
    recv = sock.recv
    while recv(0, copy=False).more:  # each part freed at once
        pass


#: What a buffer method may return as its buffer (the server's check and the
#: compiled Responder's copy of it).
BUFFER_TYPES = (bytes, bytearray, memoryview, np.ndarray)

#: Longest single wait (ms) of a ``Channel``: how soon a call notices
#: that another thread closed its client.
WAIT_SLICE_MS = 100


class Channel:
    """Request/reply exchanges on one DEALER socket, one at a time.

    A request goes out behind an empty delimiter frame (what a REQ socket
    adds, so REP and ROUTER servers both answer); the native reply that
    carries its id comes back as a ``Reply``.
    Replies without delimiter, malformed or late ones are dropped and
    logged. Waits last at most ``WAIT_SLICE_MS``, so that setting
    ``closed`` from another thread ends a call, and so that a lost
    server is noticed (see ``watch``).

    Parameters
    ----------
    sock : zmq.Socket
        A connected DEALER socket.
    url : str
        The peer's URL, for messages.

    Attributes
    ----------
    sock : zmq.Socket
        Replace it with ``reset``.
    closed : bool
        Set it to make a call in progress raise RuntimeError.
    watch : PeerWatch or None
        The socket's ``PeerWatch``: marked before
        each request, checked at each wait slice that passes without a
        reply, so that a call whose server went away raises
        ``PeerLostError``. None: no such check.
    """

    def __init__(self, sock: zmq.Socket, url: str) -> None:
        self.sock = sock
        self.url = url
        self.closed = False
        self.watch: Any = None
        self._rcvtimeo = -1
        self._mark = 0

    def reset(self, sock: zmq.Socket) -> None:
        """Use ``sock`` from now on (after replacing a stuck socket)."""
        self.sock = sock
        self._rcvtimeo = -1

    def call(
        self,
        request_id: int,
        method: str,
        args: list,
        kwargs: dict,
        timeout: int | None,
    ) -> Reply:
        """A METHOD_CALL request and its reply (see ``request``)."""
        frames = protocol.encode_call(request_id, method, args, kwargs)
        return self.request(frames, request_id, timeout)

    def request(self, frames: list, request_id: int, timeout: int | None) -> Reply:
        """Send the request ``frames``; return the reply to ``request_id``.

        A reply with id -1 (the server could not read the request's id) is
        returned too.

        Raises
        ------
        TimeoutError
            No reply within ``timeout`` ms (None: wait for ever).
        PeerLostError
            The server went away (see ``watch``).
        RuntimeError
            ``closed`` was set.
        """
        deadline = _deadline(timeout)
        if self.watch is not None:
            self._mark = self.watch.mark()
        self._send(frames, deadline)
        wait = _first_wait(timeout)
        while True:
            body = self._receive_body(deadline, wait)
            try:
                reply = protocol.decode_reply(body)
            except ProtocolError as exc:
                _log.warning("dropped a malformed reply from %s: %s", self.url, exc)
            else:
                if reply.request_id == request_id or reply.request_id == -1:
                    return reply
                _log.debug("dropped a late reply to request %s", reply.request_id)
            wait = self._wait_ms(deadline)

    def exchange(self, frames: list, timeout: int | None) -> list:
        """Send ``frames``; return the frames of the next reply (after its
        delimiter), whichever request it answers. Raises as ``request``.
        """
        deadline = _deadline(timeout)
        if self.watch is not None:
            self._mark = self.watch.mark()
        self._send(frames, deadline)
        return self._receive_body(deadline, _first_wait(timeout))

    def _send(self, frames: list, deadline: float | None) -> None:
        sock = self.sock
        message = [b"", *frames]
        while True:
            try:
                send_frames(sock, message, _NOBLOCK)
                return
            except zmq.Again:  # not connected yet (IMMEDIATE) or queue full
                if not sock.poll(self._wait_ms(deadline), zmq.POLLOUT):
                    self._check_deadline(deadline, "send to")
                    if self.watch is not None:  # nothing is out: "down too long"
                        self.watch.check(self._mark, False, deadline is None)
                if self.watch is not None:
                    # the connection may have gone and come back meanwhile:
                    # only a loss after this send is this request's
                    self._mark = self.watch.mark()

    def _receive_body(self, deadline: float | None, wait: int) -> list:
        sock = self.sock
        while True:
            if wait != self._rcvtimeo:  # a blocking recv is cheaper than poll()
                sock.setsockopt(zmq.RCVTIMEO, wait)
                self._rcvtimeo = wait
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                self._check_deadline(deadline, "reply from")
                if self.watch is not None:
                    self.watch.check(self._mark, True, deadline is None)
                wait = self._wait_ms(deadline)
                continue
            if len(frames) >= 2 and len(frames[0]) == 0:
                return frames[1:]
            _log.warning("dropped a reply without delimiter from %s", self.url)
            wait = self._wait_ms(deadline)

    def _wait_ms(self, deadline: float | None) -> int:
        if self.closed:
            raise RuntimeError(f"client of {self.url} was closed during a call")
        if deadline is None:
            return WAIT_SLICE_MS
        remaining = int((deadline - time.monotonic()) * 1000) + 1
        return max(0, min(remaining, WAIT_SLICE_MS))

    def _check_deadline(self, deadline: float | None, what: str) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"no {what} {self.url} in time")


class Responder:
    """Answers the common request on a server's ROUTER socket, whole.

    The common request is a native METHOD_CALL of a known method from a
    peer whose envelope is one identity frame (a DEALER or a REQ socket).
    ``handle`` answers it (runs the method, encodes and sends the
    reply) and returns True. For any other message with that envelope it
    passes what decoding gave (the header, or the exception raised) to
    ``fallback`` and returns True, so the header is decoded once; without
    a ``fallback``, or with another envelope, it returns False before
    acting, and the server's general path takes the message.

    Parameters
    ----------
    sock : zmq.Socket
        The server's ROUTER socket.
    target : object
        Whose methods are called (the server).
    json_methods, buffer_methods : dict
        The callable methods by name (read at each call: the server's own).
    check_buffer_result : callable
        ``(name, result)``: raises the TypeError of a buffer method's
        result that is not ``(bytes-like or array, dict)``.
    failed : callable
        ``(request_id, name, exc) -> frames`` of the error reply, called
        while ``exc`` is being handled (it may read the traceback).
    send_failed : callable
        ``(envelope, exc, request_id, frames)``: the reply ``frames`` could
        not be sent; ``zmq.Again`` (the peer's queue is full: replies
        go without blocking) means nothing of it was sent.
    fallback : callable, optional
        ``(envelope, body, decoded)``: takes the messages not answered here;
        ``decoded`` is the header dict or the exception decoding raised.
    limits : tuple, optional
        ``(max_frames, max_header, max_objects, max_depth)`` for
        ``framerpc.framing.decode``; its defaults when None.
    """

    def __init__(
        self,
        sock: zmq.Socket,
        target: object,
        json_methods: dict,
        buffer_methods: dict,
        check_buffer_result: Callable,
        failed: Callable,
        send_failed: Callable,
        fallback: Callable | None = None,
        limits: tuple | None = None,
    ) -> None:
        self.sock = sock
        self.target = target
        self.json_methods = json_methods
        self.buffer_methods = buffer_methods
        self.check_buffer_result = check_buffer_result
        self.failed = failed
        self.send_failed = send_failed
        self.fallback = fallback
        self.limits = tuple(limits) if limits is not None else ()

    def handle(self, frames: list) -> bool:
        """Answer ``frames`` if it is the common request; see the class."""
        if len(frames) < 3 or len(frames[1]) != 0:
            return False
        try:
            # the defaults' call when no limits are given: the hot path
            body = frames[2:]
            header = (
                framing.decode(body, *self.limits)
                if self.limits
                else framing.decode(body)
            )
        except Exception as exc:  # the general path says what is wrong
            if self.fallback is None:
                return False
            self.fallback(frames[:2], frames[2:], exc)
            return True
        version, event, request_id = header.get("v"), header.get("e"), header.get("i")
        name, args, kwargs = header.get("m"), header.get("a"), header.get("k")
        # the checks of protocol.decode_request, for this one event; types
        # first: comparing an array to a str or int is no check
        if (
            type(version) is not int
            or version != PROTOCOL_VERSION
            or type(event) is not str
            or event != "METHOD_CALL"
            or type(request_id) is not int
            or type(name) is not str
            or type(args) is not list
            or type(kwargs) is not dict
            or (name not in self.json_methods and name not in self.buffer_methods)
        ):
            if self.fallback is None:
                return False
            self.fallback(frames[:2], frames[2:], header)
            return True
        is_json = name in self.json_methods
        try:
            result = getattr(self.target, name)(*args, **kwargs)
            if is_json:
                out = protocol.encode_result(request_id, result)
            else:
                self.check_buffer_result(name, result)
                out = protocol.encode_result(
                    request_id, result[0], result[1], buffer_reply=True
                )
        except Exception as exc:  # a failing method or a result msgpack refuses
            out = self.failed(request_id, name, exc)
        envelope = frames[:2]
        message = envelope + out
        try:
            send_frames(self.sock, message, _NOBLOCK)
        except (zmq.ZMQError, TypeError) as exc:
            self.send_failed(envelope, exc, request_id, out)
        return True


def _deadline(timeout: int | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout / 1000


def _first_wait(timeout: int | None) -> int:
    # from the timeout: the clock was read for the deadline a moment ago
    return WAIT_SLICE_MS if timeout is None else max(0, min(timeout, WAIT_SLICE_MS))
