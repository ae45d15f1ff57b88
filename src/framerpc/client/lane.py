"""A sync client's side of the same-host lane (see docs/protocol.md,
"Same-host lane", and ``framerpc.transport.lane``).

When the server's answer to the shared-memory handshake offers a lane
(a Unix socket path, a lane id and a token), ``adopt`` connects to it,
sends the id and token, and once the server acknowledged, sets the
client's ``Channel.lane``: the Channel then hands each request to
``ClientLane.request``, which sends it as one packet and waits for the
reply on the lane *and* on the ZeroMQ socket (a reply too large for a
packet, or one the server's general path answers, comes over ZeroMQ).
A request too large for a packet, or one the lane cannot take right now,
goes over ZeroMQ as before. A lane the server closed (restart, a bad
packet) is dropped: later calls use ZeroMQ until the next handshake.

Used under the client's lock only, like the Channel.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Any

import msgpack
import zmq

from .. import transport
from ..errors import ProtocolError
from ..transport import lane as packets
from ..wire import messages
from ..wire import shm as wire_shm
from ..wire.messages import KEY_EVENT, KEY_VERSION, PROTOCOL_VERSION, Reply, RPCEvents

__all__ = ["ClientLane", "adopt", "drop"]

_log = logging.getLogger(__name__)

#: Longest wait (ms) for the server's acknowledgement of a new lane.
_ACK_WAIT_MS = 2000
#: Longest single wait (ms) of a call, as the Channel's: how soon a call
#: notices that another thread closed the client.
_SLICE_MS = 100
_NOBLOCK = int(zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)
#: How every METHOD_CALL header starts, after its map's size (both engines
#: encode ``v`` then ``e`` first: ``wire.messages.encode_call``).
_CALL = (
    msgpack.packb(KEY_VERSION)
    + msgpack.packb(PROTOCOL_VERSION)
    + msgpack.packb(KEY_EVENT)
    + msgpack.packb(RPCEvents.METHOD_CALL.value)
)


class ClientLane:
    """One connected, acknowledged lane (see the module).

    Parameters
    ----------
    sock : socket.socket
        The connected ``SOCK_SEQPACKET`` socket, acknowledged.
    url : str
        The server's URL, for messages.
    """

    def __init__(self, sock: socket.socket, url: str) -> None:
        self.sock = sock
        self._reader = packets.PacketReader()  # read under the proxy's lock
        self.url = url
        self.fd = sock.fileno()
        #: Requests sent on the lane (tests read it).
        self.sent = 0
        self._zsock: Any = None
        self._poller: zmq.Poller | None = None

    @property
    def closed(self) -> bool:
        """Whether the lane was closed (by ``close`` or the server)."""
        return self.fd < 0

    def close(self) -> None:
        """Close the lane's socket (idempotent)."""
        self.fd = -1
        self._poller = None
        self.sock.close()

    def request(
        self, channel: Any, frames: list, request_id: int, timeout: int | None
    ) -> Reply | None:
        """Send ``frames`` on the lane; return the reply to ``request_id``
        (from the lane or ``channel``'s ZeroMQ socket), as
        ``Channel.request``; None when the request did not go on the lane
        (too large, the lane full or gone): the caller sends it over
        ZeroMQ.

        Raises
        ------
        TimeoutError
            No reply within ``timeout`` ms (None: wait for ever).
        PeerLostError
            The server went away (``channel.watch``).
        RuntimeError
            ``channel.closed`` was set.
        """
        if self.fd < 0 or not _is_call(frames[0]):
            return None
        packet = packets.encode(frames)
        if packet is None:
            return None
        watch = channel.watch
        mark = watch.mark() if watch is not None else 0
        try:
            self.sock.sendmsg(packet, (), socket.MSG_DONTWAIT)
        except BlockingIOError:  # the server is behind: the socket path
            return None
        except OSError as exc:  # the server closed it (restart, refusal)
            if exc.errno == errno.EMSGSIZE:  # over the send buffer
                return None
            _log.debug("lane to %s closed: %s", self.url, exc)
            self.close()
            return None
        self.sent += 1
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        wait = _SLICE_MS if timeout is None else max(0, min(timeout, _SLICE_MS))
        while True:
            for item, _ in self._poller_of(channel.sock).poll(wait):
                body = self._lane_body() if item == self.fd else _zmq_body(item)
                if body is None:
                    continue
                try:
                    reply = messages.decode_reply(body)
                except ProtocolError as exc:
                    _log.debug("dropped a malformed reply from %s: %s", self.url, exc)
                    continue
                if reply.request_id == request_id or reply.request_id == -1:
                    return reply
                _log.debug("dropped a late reply to request %s", reply.request_id)
            if channel.closed:
                raise RuntimeError(f"client of {self.url} was closed during a call")
            if deadline is None:
                wait = _SLICE_MS
            else:
                now = time.monotonic()
                if now >= deadline:
                    raise TimeoutError(f"no reply from {self.url} in time")
                wait = max(0, min(int((deadline - now) * 1000) + 1, _SLICE_MS))
            if watch is not None:
                watch.check(mark, True, deadline is None)

    def send(self, frames: list) -> bool:
        """Send the one-way message ``frames`` (releases) on the lane;
        whether it went (else the caller sends it over ZeroMQ)."""
        packet = packets.encode(frames) if self.fd >= 0 else None
        if packet is None:
            return False
        try:
            self.sock.sendmsg(packet, (), socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:  # over the send buffer
                return False
            _log.debug("lane to %s closed: %s", self.url, exc)
            self.close()
            return False
        return True

    def _poller_of(self, zsock: Any) -> zmq.Poller:
        # one poller while the ZeroMQ socket stays (reset replaces it)
        poller = self._poller
        if poller is None or zsock is not self._zsock:
            poller = zmq.Poller()
            poller.register(zsock, _POLLIN)
            if self.fd >= 0:
                poller.register(self.fd, _POLLIN)
            self._poller, self._zsock = poller, zsock
        return poller

    def _lane_body(self) -> list | None:
        """The frames of the packet waiting on the lane; None (and the lane
        closed, waits go on on ZeroMQ alone) at its end or a bad packet."""
        try:
            packet = self._reader.read(self.sock, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            packet, why = b"", str(exc)
        else:
            why = "closed by the server"
        try:
            if packet and len(packet) <= packets.MAX_PACKET:
                return packets.decode(packet)
            why = why if not packet else "a packet over the bound"
        except ValueError as exc:
            why = str(exc)
        _log.debug("lane to %s dropped: %s", self.url, why)
        zsock = self._zsock
        self.close()
        self._poller_of(zsock)  # the ZeroMQ socket alone from now on
        return None


def _is_call(header: Any) -> bool:
    """Whether the header frame ``header`` is a METHOD_CALL's: only method
    calls take the lane (STOP_SERVER's authorisation reads the CURVE key of
    the ZeroMQ connection; properties and handshakes stay there too)."""
    if type(header) is not bytes:
        header = bytes(memoryview(header)[: len(_CALL) + 1])
    return header.startswith(_CALL, 1)


def _zmq_body(zsock: Any) -> list | None:
    """The body of the message waiting on the DEALER ``zsock`` (after its
    delimiter); None when there is none or it has no delimiter."""
    try:
        frames = transport.recv_frames(zsock, _NOBLOCK)
    except zmq.Again:
        return None
    if len(frames) >= 2 and len(frames[0]) == 0:
        return frames[1:]
    return None


def adopt(client: Any, answer: Any) -> None:
    """After a handshake answered ``answer`` (the reply's value): connect
    the lane it offers, or none (another server's answer, the option off),
    replacing ``client``'s current lane. Never raises for a lane that
    cannot be had: the client keeps ZeroMQ."""
    offer = answer.get("lane") if type(answer) is dict else None
    new = None
    if offer is not None and getattr(client._options, "lane", False):
        new = _connect(offer, client.url)
    if not client._lock.acquire(timeout=_ACK_WAIT_MS / 1000):
        if new is not None:  # a call holds the lock this long: next time
            new.close()
        return
    try:
        old, client._channel.lane = client._channel.lane, new
    finally:
        client._lock.release()
    if old is not None:
        old.close()


def flush(leases: Any, client: Any) -> None:
    """Send ``leases``' queued releases on ``client``'s lane, if it has
    one (the caller holds the client's lock): on the path of the calls, a
    call cannot overtake a release sent before it. What the lane does not
    take stays queued (for ZeroMQ)."""
    lane = client._channel.lane
    while lane is not None and leases.pending:
        batch = leases.take()
        if not lane.send(wire_shm.encode_release(batch)):
            leases.untake(batch)
            return


def drop(client: Any) -> None:
    """Close ``client``'s lane (the caller holds the client's lock)."""
    old, client._channel.lane = client._channel.lane, None
    if old is not None:
        old.close()


def _connect(offer: Any, url: str) -> ClientLane | None:
    """The lane of ``offer`` (``[path, id, token, packet bound]``),
    connected and acknowledged; None when it cannot be. An offer of
    another bound (or of none: a server of the 64 KiB lane) is not taken:
    packets one side sends could be over the other's bound."""
    if (
        not packets.AVAILABLE
        or type(offer) is not list
        or len(offer) != 4
        or offer[3] != packets.MAX_PACKET
        or type(offer[0]) is not str
        or type(offer[1]) is not int
        or type(offer[2]) is not bytes
        or len(offer[2]) != packets.TOKEN_BYTES
        or not 0 <= offer[1] < 1 << 32
    ):
        _log.debug("ignored a malformed lane offer from %s", url)
        return None
    path, lane_id, token, _ = offer
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    packets.size_buffers(sock)
    try:
        sock.settimeout(_ACK_WAIT_MS / 1000)
        sock.connect(path)
        sock.send(packets.hello(lane_id, token))
        if sock.recv(16) != packets.ACK:
            raise OSError("the server refused the lane")
        sock.setblocking(True)
    except OSError as exc:  # TimeoutError too
        _log.debug("no lane to %s: %s", url, exc)
        sock.close()
        return None
    _log.debug("calls to %s go over the same-host lane %s", url, path)
    return ClientLane(sock, url)
