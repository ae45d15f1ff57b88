"""How a client makes its calls: the native hot path through the
``Channel``, the JSON exchange of the older protocol, properties, the
proxy's lock and its socket (replaced after a JSON timeout)."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any

import zmq

from .. import _lifecycle, transport
from .._peerwatch import PeerWatch
from ..errors import PeerLostError, ProtocolError, RemoteError
from ..rpc import callpath
from ..rpc.callpath import never_sent
from ..wire import json_codec, messages, shmpath
from ..wire.messages import Reply, Request, RPCEvents

__all__ = ["CallsMixin", "NoResult"]

_log = logging.getLogger(__name__)


class NoResult:
    """The outcome of a remote call that failed; always falsy.

    Parameters
    ----------
    error : str
        What went wrong (for a remote exception: ``"Type: message"``).
    traceback : str
        The remote traceback, or "" when there is none.
    """

    __slots__ = ("error", "traceback")

    def __init__(self, error: str, traceback: str) -> None:
        self.error = error
        self.traceback = traceback

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"NoResult({self.error!r})"


class CallsMixin:
    """RPCClient's calls (see ``RPCClient``)."""

    # set by RPCClient.__init__
    url: str
    socket: zmq.Socket
    _zmq_context: zmq.Context
    _timeout: int
    _lock: threading.Lock
    _closed: bool
    _protocol: str
    _options: transport.SocketOptions
    _ids: itertools.count[int]
    _channel: Any
    _stop_channel: Any  # the Channel of a stop_server() in progress, or None
    _json_methods: dict[str, int | None]
    _buffer_methods: dict[str, int | None]
    _watch: PeerWatch | None
    _shm: Any  # framerpc.client.shm.ShmLink or None

    def execute(self, method_name: str, params: dict) -> tuple[bool, Any]:
        """Call a remote method.

        Parameters
        ----------
        method_name : str
            The remote method.
        params : dict
            ``{"args": [...], "kwargs": {...}}`` (both optional).

        Returns
        -------
        tuple
            ``(True, result)``, where a buffer method's result is
            ``(buffer, info)``, or ``(False, (error, traceback))``.

        Raises
        ------
        TimeoutError
            No reply within the method's timeout. The client stays usable.
        PeerLostError
            The server went away during the call (see the class notes); a
            ``TimeoutError`` too. The client stays usable.
        TypeError
            An argument cannot travel on the wire.
        """
        result = self._call(
            method_name, params.get("args", ()), dict(params.get("kwargs", {}))
        )
        if type(result) is NoResult:
            return False, (result.error, result.traceback)
        return True, result

    def _call(self, method_name: str, args: tuple | list, kwargs: dict) -> Any:
        """A proxy method's call: the result, ``(buffer, info)`` for a buffer
        method, or a ``NoResult`` when the remote side failed."""
        is_buffer = method_name in self._buffer_methods
        if is_buffer:
            timeout = self._buffer_methods[method_name]
        else:
            timeout = self._json_methods.get(method_name, self._timeout)
        if self._protocol == "native":  # the hot path: one call into the Channel
            what = repr(method_name)  # for errors: 'grab'
            started = time.monotonic()
            remaining = self._lock_within(timeout, started, what)
            try:
                if self._closed:
                    raise RuntimeError(f"client of {self.url} is closed")
                shm = self._shm
                if shm is not None and shm.pending:  # released slots ride along
                    request_id = next(self._ids)
                    # shmpath's, not Leases.call_frames: a Python call less
                    frames, taken = shmpath.call_frames(
                        request_id, method_name, list(args), kwargs, shm.pending
                    )
                    try:
                        reply = self._channel.request(frames, request_id, remaining)
                    except TimeoutError as exc:
                        if never_sent(exc):
                            shm.untake(taken)  # else their slots stay held
                        raise
                else:
                    reply = self._channel.call(
                        next(self._ids), method_name, list(args), kwargs, remaining
                    )
            except TimeoutError as exc:
                raise self._no_reply(exc, what, timeout, started) from None
            finally:
                self._lock.release()
        else:
            request = Request(RPCEvents.METHOD_CALL, 0, method_name, list(args), kwargs)
            reply = self._legacy_request(request, timeout, is_buffer)
        if not reply.ok:
            return NoResult(reply.error, reply.traceback)
        if reply.info is not None:
            shm = self._shm
            if type(reply.value) is dict and shm is not None:
                # a reference into the server's shared memory (wire.shm)
                return shm.resolve(reply.value), reply.info
            return reply.value, reply.info
        return reply.value

    def _get_property(self, name: str) -> Any:
        reply = self._request(
            Request(RPCEvents.PROPERTY_GET, next(self._ids), name=name), self._timeout
        )
        return reply.value if reply.ok else NoResult(reply.error, reply.traceback)

    def _set_property(self, name: str, value: Any) -> None:
        reply = self._request(
            Request(RPCEvents.PROPERTY_SET, next(self._ids), name=name, value=value),
            self._timeout,
        )
        if not reply.ok:
            raise RemoteError(reply.error, reply.traceback)

    def _request(
        self, request: Request, timeout: int | None, *, patient: bool = False
    ) -> Reply:
        """One native exchange (JSON in legacy mode); ``patient``: wait for
        the lock as long as it takes, ``timeout`` counting from then."""
        if self._protocol == "legacy":
            return self._legacy_request(request, timeout, False)
        frames = messages.encode_request(request)
        what = _describe(request)
        if patient:
            self._lock.acquire()
        started = time.monotonic()
        remaining = timeout if patient else self._lock_within(timeout, started, what)
        try:
            if self._closed:
                raise RuntimeError(f"client of {self.url} is closed")
            return self._channel.request(frames, request.request_id, remaining)
        except TimeoutError as exc:
            raise self._no_reply(exc, what, timeout, started) from None
        finally:
            self._lock.release()

    def _stop_request(self, request: Request, timeout: int) -> Reply:
        """The native STOP_SERVER exchange, on a socket of its own made
        without ``ZMQ_IMMEDIATE``.

        The server closes its connection right after acknowledging (a grace
        of 0.2 s). On the client's socket (``ZMQ_IMMEDIATE``) libzmq ends the
        connection's pipe when the connection drops, and with it a reply not
        read yet: a thread not scheduled within the grace (a loaded machine)
        lost the acknowledgement of a server that did stop. Without
        ``ZMQ_IMMEDIATE`` the pipe outlives the connection, as the older
        protocol's socket does (``_make_socket``). Same options, CURVE keys
        included, so the server authorises the request as the client's own.
        No ``PeerWatch``: the disconnect that follows the acknowledgement
        must not fail the call; ``timeout`` bounds it (ms).
        """
        frames = messages.encode_request(request)
        what = _describe(request)
        started, remaining = self._lock_open(timeout, what)
        try:
            sock = transport.make_socket(self._zmq_context, zmq.DEALER, self._options)
            try:
                sock.setsockopt(zmq.IMMEDIATE, 0)
                sock.connect(self.url)
                # close() and context.destroy() end it as a call in flight
                self._stop_channel = callpath.Channel(sock, self.url)
                return self._stop_channel.request(frames, request.request_id, remaining)
            finally:
                self._stop_channel = None
                # linger 0: a request still queued (no server) must not
                # stop a server that comes up later
                _lifecycle.close_socket(sock, 0)
        except TimeoutError as exc:
            raise self._no_reply(exc, what, timeout, started) from None
        finally:
            self._lock.release()

    def _legacy_request(
        self, request: Request, timeout: int | None, buffer_method: bool
    ) -> Reply:
        """One JSON exchange; a malformed reply becomes a failed Reply."""
        frame = json_codec.encode_request(request)
        what = _describe(request)
        started, remaining = self._lock_open(timeout, what)
        try:
            try:
                frames = self._channel.exchange([frame], remaining)
            except TimeoutError as exc:  # PeerLostError too
                # No request id: a late reply must land on a dead socket.
                self._reset_socket()
                raise self._no_reply(exc, what, timeout, started) from None
        finally:
            self._lock.release()
        try:
            return json_codec.decode_reply(request, frames, buffer_method)
        except ProtocolError as exc:
            _log.warning("malformed JSON reply from %s: %s", self.url, exc)
            return Reply(0, False, error=f"ProtocolError: {exc}")

    def _lock_open(self, timeout: int | None, what: str) -> tuple[float, int | None]:
        """``_lock_within`` from now, on a proxy not closed: the start of
        the call and the time left (ms); the caller releases the lock.

        Raises
        ------
        RuntimeError
            The proxy is closed (the lock is not held then).
        """
        started = time.monotonic()
        remaining = self._lock_within(timeout, started, what)
        if self._closed:
            self._lock.release()
            raise RuntimeError(f"client of {self.url} is closed")
        return started, remaining

    def _lock_within(
        self, timeout: int | None, started: float, what: str
    ) -> int | None:
        """Take the proxy's lock within the call's ``timeout`` (ms, from
        ``started``); return the time left for the call itself (ms).
        ``what`` names the call in errors (see ``_describe``).

        Raises
        ------
        TimeoutError
            Other calls held the lock for the whole timeout.
        """
        lock = self._lock
        if timeout is None:
            lock.acquire()
            return None
        if lock.acquire(False):  # not shared right now: no clock read
            return timeout
        if lock.acquire(timeout=max(timeout, 0) / 1000):
            remaining = timeout - int((time.monotonic() - started) * 1000)
            if remaining > 0:
                return remaining
            lock.release()
        raise TimeoutError(
            f"no reply to {what} from {self.url} within {timeout / 1000:g} s "
            "(waited for other calls on this proxy)"
        )

    def _no_reply(
        self, exc: TimeoutError, what: str, timeout: int | None, started: float
    ) -> TimeoutError:
        """The error of a call without reply, naming the call and the wait."""
        waited = time.monotonic() - started
        if isinstance(exc, PeerLostError):
            return PeerLostError(f"no reply to {what} after {waited:.1f} s: {exc}")
        detail = " (not connected)" if never_sent(exc) else ""
        limit = waited if timeout is None else timeout / 1000
        return TimeoutError(
            f"no reply to {what} from {self.url} within {limit:g} s{detail}"
        )

    def _watch_socket(self) -> None:
        """Watch the new socket's connection (before it connects)."""
        if self.url.startswith("inproc://"):
            return  # an inproc server cannot go away on its own
        # A native socket sends only on a live connection (IMMEDIATE): the
        # watch may skip draining for half a reconnect interval.
        fresh_ms = self._options.reconnect_ivl_ms // 2
        self._watch = PeerWatch(
            self.socket,
            self.url,
            self._options.dead_peer_ms,
            fresh_ms if self._protocol == "native" else 0,
        )
        self._channel.watch = self._watch

    def _make_socket(self) -> zmq.Socket:
        sock = transport.make_socket(self._zmq_context, zmq.DEALER, self._options)
        if self._protocol == "legacy":
            # Like the older REQ client: with IMMEDIATE a reply not read yet
            # is lost when the server closes the connection right after it
            # (STOP_SERVER). Queuing for a server that is down does no harm
            # here: a request that times out is dropped with its socket.
            sock.setsockopt(zmq.IMMEDIATE, 0)
        return sock

    def _reset_socket(self) -> None:
        """Replace the socket, dropping what it holds (caller holds the lock)."""
        if self._watch is not None:
            self._watch.close()
        # closes even when setting LINGER fails (ETERM: a context being
        # terminated would otherwise wait for this socket forever)
        _lifecycle.close_socket(self.socket, 0)
        self.socket = self._make_socket()
        self._channel.reset(self.socket)
        self._watch_socket()
        self.socket.connect(self.url)


def _describe(request: Request) -> str:
    """How a timeout names ``request``: ``'grab'``, ``property 'gain'``..."""
    if request.method:
        return repr(request.method)
    if request.event in (RPCEvents.PROPERTY_GET, RPCEvents.PROPERTY_SET):
        return f"property {request.name!r}"
    return f"the {request.event} request"
