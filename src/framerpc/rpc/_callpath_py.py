"""Pure-Python call path: the twin of the compiled ``framerpc.rpc._callpath``.

A ``Channel`` is a client's side of its calls, a ``Responder`` a server's
side of the common one; both move their frames with the pure message I/O
(``framerpc.transport._zmqio_py``). ``call_fields`` is the one check of a
METHOD_CALL's fields, the Responder's and the general request parser's
(``framerpc.rpc.requests``). ``framerpc.rpc.callpath`` picks this module or
the compiled one (same names, same behaviour; the parity tests in
tests/rpc/test_callpath_parity.py run both).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from .._ratelog import RateLimitedLog
from ..errors import ProtocolError
from ..transport._zmqio_py import recv_frames, send_frames
from ..wire import framing, messages
from ..wire.messages import (
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
)
from ..wire.shm import KEY_RELEASES

__all__ = ["WAIT_SLICE_MS", "Channel", "Responder", "read_reply", "call_fields"]

# the switch module's logger, whichever twin runs
_log = logging.getLogger("framerpc.rpc.callpath")

_NOBLOCK = int(zmq.NOBLOCK)  # a plain int: an enum operation per call costs
_METHOD_CALL = RPCEvents.METHOD_CALL.value

#: Longest single wait (ms) of a ``Channel``: how soon a call notices
#: that another thread closed its client.
WAIT_SLICE_MS = 100


def call_fields(header: dict) -> tuple[int, str, list, dict]:
    """The request id, method, args and kwargs of a decoded METHOD_CALL
    header: the only check of a METHOD_CALL's fields (with its compiled
    twin), in the order and with the texts the general parser always had.

    Raises
    ------
    ProtocolError
        A wrong version or event, a missing or mistyped field, or a
        request id that is not an int.
    """
    return _call_fields(header, True)  # type: ignore[return-value]


def _call_fields(header: dict, explain: bool) -> tuple | None:
    """``call_fields``; without ``explain``, None instead of raising (the
    Responder's hot path hands a refused header on without a text)."""
    version, event = header.get(KEY_VERSION), header.get(KEY_EVENT)
    # Types first: comparing an array to a str or int is no check.
    if type(version) is not int or version != PROTOCOL_VERSION:
        if explain:
            messages.check_version(header)  # raises, with wire's text
        return None
    if type(event) is not str or event != _METHOD_CALL:
        if explain:
            messages.request_event(header)  # raises for a non-request event
            raise ProtocolError(f"{event!r} is not a METHOD_CALL request")
        return None
    method, args = header.get(KEY_METHOD), header.get(KEY_ARGS)
    kwargs, request_id = header.get(KEY_KWARGS), header.get(KEY_ID)
    if type(method) is not str:
        return _refuse(header, explain, KEY_METHOD, "method", str)
    if type(args) is not list:
        return _refuse(header, explain, KEY_ARGS, "args", list)
    if type(kwargs) is not dict:
        return _refuse(header, explain, KEY_KWARGS, "kwargs", dict)
    if type(request_id) is not int:
        if explain:  # the text of Request's own check
            raise ProtocolError(f"request id must be an int, got {request_id!r}")
        return None
    return request_id, method, args, kwargs


def _refuse(
    header: dict, explain: bool, key: str, attr: str, kind: type
) -> tuple | None:
    # field ``key`` is missing or mistyped: None, or with explain the error
    if not explain:
        return None
    if key not in header:
        raise ProtocolError(f"METHOD_CALL request lacks field {key!r} ({attr})")
    raise ProtocolError(
        f"METHOD_CALL field {attr!r} must be {kind.__name__}, "
        f"got {type(header[key]).__name__}"
    )


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
    lane : ClientLane or None
        Same host: ``request`` and ``call`` try its ``request`` first.
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
        self.lane: Any = None

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
        lane = self.lane  # same host: framerpc.client.lane, or None
        if lane and (reply := lane.request(self, frames, request_id, timeout)):
            return reply
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

    Attributes
    ----------
    shm : callable or None
        ``(identity, request_id, result) -> frames``: builds a buffer
        method's reply instead of the plain encoding (the server's
        shared-memory slots, ``framerpc.server.shm_frames``); None until
        a client shook hands for shared memory.
    shm_release : callable or None
        ``(identity, pairs)``: the slots a call's header releases (key
        ``rl``, ``framerpc.wire.shm``); read only while ``shm`` is set.
    shm_threshold : int
        ``shm`` is called for numpy arrays of this many bytes or more only
        (smaller results keep the plain encoding, without a Python call).
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
        self.shm: Callable | None = None
        self.shm_release: Any = None  # set with shm
        self.shm_threshold = 0

    def handle(self, frames: list, lane: Callable | None = None) -> bool:
        """Answer ``frames`` (see the class); ``lane`` replies if given."""
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
        # the one METHOD_CALL check: what it refuses, and calls of other
        # methods, go to the general path (framerpc.rpc.requests)
        fields = _call_fields(header, False)
        if fields is None or (
            fields[1] not in self.json_methods and fields[1] not in self.buffer_methods
        ):
            if self.fallback is None:
                return False
            self.fallback(frames[:2], frames[2:], header)
            return True
        if self.shm is not None:  # slots this client is done with
            releases = header.get(KEY_RELEASES)
            if releases is not None:
                self.shm_release(frames[0], releases)
        request_id, name, args, kwargs = fields
        is_json = name in self.json_methods
        try:
            result = getattr(self.target, name)(*args, **kwargs)
            if is_json:
                out = messages.encode_result(request_id, result)
            else:
                self.check_buffer_result(name, result)
                value = result[0]
                if (
                    self.shm is not None  # may become a shared-memory reference
                    and type(value) is np.ndarray
                    and value.nbytes >= self.shm_threshold
                ):
                    out = self.shm(frames[0], request_id, result)
                else:
                    out = messages.encode_result(
                        request_id, result[0], result[1], buffer_reply=True
                    )
        except Exception as exc:  # a failing method or a result msgpack refuses
            out = self.failed(request_id, name, exc)
        envelope = frames[:2]
        if lane is not None:  # a same-host lane's request (server.lane)
            return lane(envelope, out, request_id) or True
        message = envelope + out
        try:
            send_frames(self.sock, message, _NOBLOCK)
        except (zmq.ZMQError, TypeError) as exc:
            self.send_failed(envelope, exc, request_id, out)
        return True


def read_reply(sock: zmq.Socket) -> Reply | None:
    """The next reply waiting on the DEALER ``sock``, without blocking
    (the asyncio client's reader): None when there is none. The receive
    that finds none re-arms the socket's ``ZMQ_FD`` wake-up, as a
    ``ZMQ_EVENTS`` check does.

    Raises
    ------
    ProtocolError
        The message has no empty delimiter frame, or ``decode_reply``
        refuses it (with its words); the message is consumed.
    """
    try:
        frames = recv_frames(sock, _NOBLOCK)
    except zmq.Again:
        return None
    if len(frames) < 2 or len(frames[0]) != 0:
        raise ProtocolError("reply without delimiter")
    body = frames[1:]
    header = framing.decode(body)  # raises decode_reply's ProtocolError
    # decode_reply's checks for the common success reply, inline
    version, request_id = header.get(KEY_VERSION), header.get(KEY_ID)
    if type(version) is int and version == PROTOCOL_VERSION:
        info = header.get(KEY_INFO)
        if (
            type(request_id) is int
            and header.get(KEY_OK) is True
            and (info is None or type(info) is dict)
        ):
            return Reply(request_id, True, header.get(KEY_VALUE), info)
    return messages.decode_reply(body)


def _deadline(timeout: int | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout / 1000


def _first_wait(timeout: int | None) -> int:
    # from the timeout: the clock was read for the deadline a moment ago
    return WAIT_SLICE_MS if timeout is None else max(0, min(timeout, WAIT_SLICE_MS))
