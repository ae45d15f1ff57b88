"""Pure-Python call path: the twin of the compiled ``framerpc.rpc._callpath``.

A ``Channel`` is a client's side of its calls, a ``Responder`` a server's
side of the common one; both move their frames with the pure message I/O
(``framerpc.transport._zmqio_py``). ``framerpc.rpc.callpath`` picks this module or
the compiled one (same names, same behaviour; the parity tests in
tests/rpc/test_callpath_parity.py run both).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import zmq

from .._ratelog import RateLimitedLog
from ..errors import ProtocolError
from ..transport._zmqio_py import recv_frames, send_frames
from ..wire import framing, messages
from ..wire.messages import (
    KEY_ARGS,
    KEY_EVENT,
    KEY_ID,
    KEY_KWARGS,
    KEY_METHOD,
    KEY_VERSION,
    PROTOCOL_VERSION,
    Reply,
    RPCEvents,
)

__all__ = ["WAIT_SLICE_MS", "Channel", "Responder"]

# the switch module's logger, whichever twin runs
_log = logging.getLogger("framerpc.rpc.callpath")

_NOBLOCK = int(zmq.NOBLOCK)  # a plain int: an enum operation per call costs
_METHOD_CALL = RPCEvents.METHOD_CALL.value

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
        # a flood of bad replies logs at most one line a second
        self._bad_replies = RateLimitedLog(_log)

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
        frames = messages.encode_call(request_id, method, args, kwargs)
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
                reply = messages.decode_reply(body)
            except ProtocolError as exc:
                self._bad_replies.warning(
                    "dropped a malformed reply from %s: %s", self.url, exc
                )
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
            self._bad_replies.warning(
                "dropped a reply without delimiter from %s", self.url
            )
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
        ``framerpc.wire.framing.decode``; its defaults when None.
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
        version, event = header.get(KEY_VERSION), header.get(KEY_EVENT)
        request_id, name = header.get(KEY_ID), header.get(KEY_METHOD)
        args, kwargs = header.get(KEY_ARGS), header.get(KEY_KWARGS)
        # The checks of messages.decode_request, for this one event (the
        # compiled twin has the same): anything else goes to the general
        # path, which decodes it with messages.request_from_header. Types
        # first: comparing an array to a str or int is no check.
        if (
            type(version) is not int
            or version != PROTOCOL_VERSION
            or type(event) is not str
            or event != _METHOD_CALL
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
                out = messages.encode_result(request_id, result)
            else:
                self.check_buffer_result(name, result)
                out = messages.encode_result(
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
