"""ZeroMQ sockets for framerpc: creation, tuned options, URLs, endpoints.

The only module besides the client, server, signal receiver and registry
loops that touches sockets; it knows nothing about methods or messages.
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from . import framing, security
from .errors import ProtocolError

_log = logging.getLogger(__name__)

__all__ = [
    "SocketOptions",
    "DEFAULT_OPTIONS",
    "parse_url",
    "make_socket",
    "bind",
    "derive_endpoint",
    "connect_url_for",
    "close_quietly",
    "send_frames",
    "recv_frames",
    "Channel",
    "WAIT_SLICE_MS",
    "IO_IMPLEMENTATION",
]

# Plain ints: pyzmq's enum flags cost an enum operation per frame sent.
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)

_URL_RE = re.compile(r"^(tcp|ipc|inproc)://(.+)$")
_TCP_PORT_RE = re.compile(r"^(.*):(\d+|\*)$")


@dataclass(frozen=True, slots=True)
class SocketOptions:
    """Tuned socket options, in the units ZeroMQ uses.

    Attributes
    ----------
    linger_ms : int
        How long close() may wait to flush (ms): long enough to deliver a
        last reply, short enough that close never hangs on a dead peer.
    hwm : int
        Send and receive high-water marks (messages). Frames can be tens
        of MB, so the default 1000 could hold gigabytes in a queue.
    reconnect_ivl_ms, reconnect_ivl_max_ms : int
        First and largest reconnect interval (ms): devices on flaky Wi-Fi
        come back fast without a reconnect storm.
    tcp_keepalive_idle_s, tcp_keepalive_intvl_s : int
        TCP keepalive (s), so that a peer that vanished is noticed and a
        NAT or Wi-Fi access point does not silently drop an idle link.
    max_message_size : int
        Largest inbound frame the server accepts (bytes, -1 for no
        limit); a bad peer cannot make it allocate beyond this.
    security : Security or None
        Opt-in CURVE (see :mod:`framerpc.security`): bound sockets (server,
        signals, registry) use it as server, connecting sockets as client
        of ``security.server_public_key``. None: plain sockets.
    """

    linger_ms: int = 200
    hwm: int = 100
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 2000
    tcp_keepalive_idle_s: int = 60
    tcp_keepalive_intvl_s: int = 10
    max_message_size: int = 1 << 30
    security: security.Security | None = None


DEFAULT_OPTIONS = SocketOptions()


def parse_url(url: str) -> tuple[str, str, int | None]:
    """Split a ZeroMQ URL into ``(transport, address, port)``.

    ``port`` is None for ipc://, inproc:// and a tcp:// URL without port.

    Raises
    ------
    ValueError
        The URL is not tcp://, ipc:// or inproc://.
    """
    match = _URL_RE.match(url)
    if match is None:
        raise ValueError(f"unsupported URL {url!r}: use tcp://, ipc:// or inproc://")
    transport, rest = match.groups()
    if transport != "tcp":
        return transport, rest, None
    port_match = _TCP_PORT_RE.match(rest)
    if port_match is None or port_match.group(2) == "*":
        host = port_match.group(1) if port_match else rest
        return transport, host, None
    return transport, port_match.group(1), int(port_match.group(2))


def make_socket(
    context: zmq.Context,
    kind: int,
    options: SocketOptions = DEFAULT_OPTIONS,
    *,
    server: bool = False,
) -> zmq.Socket:
    """Create a socket of type ``kind`` with framerpc's tuned options."""
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, options.linger_ms)
    sock.setsockopt(zmq.SNDHWM, options.hwm)
    sock.setsockopt(zmq.RCVHWM, options.hwm)
    sock.setsockopt(zmq.RECONNECT_IVL, options.reconnect_ivl_ms)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, options.reconnect_ivl_max_ms)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, options.tcp_keepalive_idle_s)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, options.tcp_keepalive_intvl_s)
    if server:
        sock.setsockopt(zmq.MAXMSGSIZE, options.max_message_size)
    if options.security is not None:
        try:
            if server:
                lease = security.apply_server(sock, options.security)
                if lease is not None:
                    _leases[sock] = lease
            else:
                security.apply_client(sock, options.security)
        except BaseException:
            sock.close(linger=0)
            raise
    if kind == zmq.DEALER:
        # Queue requests only on completed connections: a call to a server
        # that is down times out instead of being delivered much later.
        sock.setsockopt(zmq.IMMEDIATE, 1)
    return sock


def bind(sock: zmq.Socket, url: str) -> tuple[str, int | None]:
    """Bind ``sock`` at ``url``; a tcp:// URL without port gets a free one.

    Returns
    -------
    tuple
        The bound endpoint and its TCP port (None for ipc:// and inproc://).
    """
    transport, address, port = parse_url(url)
    if transport == "tcp" and port is None:
        # The OS picks a free port: no retry loop, no collision.
        sock.bind(f"tcp://{address}:*")
    else:
        sock.bind(url)
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return endpoint, parse_url(endpoint)[2]


def derive_endpoint(url: str, suffix: str) -> str:
    """Endpoint for a companion socket of ``url`` (the signal PUB socket).

    tcp:// keeps the host and takes a free port; ipc:// and inproc:// add
    ``suffix`` to the path or name.
    """
    transport, address, _ = parse_url(url)
    if transport == "tcp":
        return f"tcp://{address}:*"
    return f"{transport}://{address}{suffix}"


def connect_url_for(server_url: str, endpoint: str) -> str:
    """URL a client should connect to for a server-side ``endpoint``.

    A tcp endpoint bound on a wildcard host (``0.0.0.0``, ``*``) is not
    reachable as such: keep the host the client used to reach the server.
    """
    transport, host, _ = parse_url(server_url)
    end_transport, _, end_port = parse_url(endpoint)
    if transport == "tcp" and end_transport == "tcp" and end_port is not None:
        return f"tcp://{host}:{end_port}"
    return endpoint


# Authenticator leases of secured bound sockets, released when they close.
_leases: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def close_quietly(sock: zmq.Socket | None) -> None:
    """Close ``sock`` if it is open (and its CURVE lease); never raises."""
    if sock is None:
        return
    if not sock.closed:
        try:
            sock.close()
        except zmq.ZMQError:
            pass
    lease = _leases.pop(sock, None)
    if lease is not None:
        lease.close()


def send_frames(sock: zmq.Socket, frames: list, flags: int = 0) -> None:
    """Send ``frames`` as one multipart message, large ones without a copy.

    Cheaper than ``send_multipart`` for the few frames of an RPC message.
    With ``flags=zmq.NOBLOCK``, :class:`zmq.Again` means nothing was sent:
    once the first frame is queued, the rest of the message follows.

    Ownership: pyzmq keeps a reference to each buffer of 64 KiB or more
    until libzmq has sent it; smaller frames are copied.
    """
    for index, frame in enumerate(frames):
        # Check the whole message first: a frame refused halfway would leave
        # a partial multipart message queued on the socket.
        if type(frame) is not bytes and type(frame) is not zmq.Frame:
            try:
                memoryview(frame)
            except TypeError:
                raise TypeError(
                    f"frame {index} ({type(frame).__name__}) does not support "
                    "the buffer protocol"
                ) from None
    last = len(frames) - 1
    send = sock.send
    for index, frame in enumerate(frames):
        send(frame, (_SNDMORE if index < last else 0) | flags, copy=False)
        flags = 0


def recv_frames(sock: zmq.Socket, flags: int = 0) -> list:
    """Receive one multipart message as a list of :class:`zmq.Frame`.

    Frames are not copied; a memoryview of a frame keeps it alive. Raises
    :class:`zmq.Again` when ``RCVTIMEO`` passes or with ``zmq.NOBLOCK``
    and no message.
    """
    recv = sock.recv
    frame = recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = recv(0, copy=False)
        frames.append(frame)
    return frames


#: Longest single wait (ms) of a :class:`Channel`: how soon a call notices
#: that another thread closed its client.
WAIT_SLICE_MS = 100


class Channel:
    """Request/reply exchanges on one DEALER socket, one at a time.

    A request goes out behind an empty delimiter frame (what a REQ socket
    adds, so REP and ROUTER servers both answer); the reply that carries its
    id comes back. Replies without delimiter, malformed or late ones are
    dropped and logged. Waits last at most :data:`WAIT_SLICE_MS`, so that
    setting :attr:`closed` from another thread ends a call.

    Parameters
    ----------
    sock : zmq.Socket
        A connected DEALER socket.
    url : str
        The peer's URL, for messages.
    decode_reply : callable
        ``frames -> reply``: the reply's ``request_id`` attribute is
        matched; :class:`~framerpc.errors.ProtocolError` drops the reply.

    Attributes
    ----------
    sock : zmq.Socket
        Replace it with :meth:`reset`.
    closed : bool
        Set it to make a call in progress raise RuntimeError.
    """

    def __init__(self, sock: zmq.Socket, url: str, decode_reply: Callable) -> None:
        self.sock = sock
        self.url = url
        self.decode_reply = decode_reply
        self.closed = False
        self._rcvtimeo = -1

    def reset(self, sock: zmq.Socket) -> None:
        """Use ``sock`` from now on (after replacing a stuck socket)."""
        self.sock = sock
        self._rcvtimeo = -1

    def request(self, frames: list, request_id: int, timeout: int | None) -> Any:
        """Send ``frames``; return the decoded reply to ``request_id``.

        A reply with id -1 (the server could not read the request's id) is
        returned too.

        Raises
        ------
        TimeoutError
            No reply within ``timeout`` ms (None: wait for ever).
        RuntimeError
            :attr:`closed` was set.
        """
        deadline = _deadline(timeout)
        self._send(frames, deadline)
        wait = _first_wait(timeout)
        while True:
            body = self._receive_body(deadline, wait)
            try:
                reply = self.decode_reply(body)
            except ProtocolError as exc:
                _log.warning("dropped a malformed reply from %s: %s", self.url, exc)
            else:
                if reply.request_id == request_id or reply.request_id == -1:
                    return reply
                _log.debug("dropped a late reply to request %s", reply.request_id)
            wait = self._wait_ms(deadline)

    def exchange(self, frames: list, timeout: int | None) -> list:
        """Send ``frames``; return the frames of the next reply (after its
        delimiter), whichever request it answers. Raises as :meth:`request`.
        """
        deadline = _deadline(timeout)
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


def _deadline(timeout: int | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout / 1000


def _first_wait(timeout: int | None) -> int:
    # from the timeout: the clock was read for the deadline a moment ago
    return WAIT_SLICE_MS if timeout is None else max(0, min(timeout, WAIT_SLICE_MS))


#: Which message I/O is live: "compiled" (framerpc._zmqio, libzmq called
#: directly) or "pure" (the code above). Follows framing.IMPLEMENTATION.
IO_IMPLEMENTATION = "pure"
if framing.IMPLEMENTATION == "compiled":
    try:
        from ._zmqio import (  # type: ignore[no-redef]
            Channel,
            recv_frames,
            send_frames,
        )

        IO_IMPLEMENTATION = "compiled"
    except ImportError as exc:
        _log.debug("compiled message I/O unavailable, using pure Python: %s", exc)
