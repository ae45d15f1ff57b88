"""A server's side of the same-host lane (see docs/protocol.md,
"Same-host lane", and ``framerpc.transport.lane``).

The sync serve loop (``serve_forever``) listens on a ``SOCK_SEQPACKET``
Unix socket in a ``0700`` directory of its own. The shared-memory
handshake's yes offers each client a lane id and a random token
(``offer``); a connection from a process of the server's own user
(``SO_PEERCRED``) whose first packet carries a live id and its token
(compared in constant time) is bound to the routing identity that
received the offer. Its packets are then answered as if they had come
from that identity over ZeroMQ: the Responder's reply goes back as one
packet when it fits, else over ZeroMQ (the client waits on both).
Anything else (another user, a wrong token, an offer used already, a
packet over the bound or malformed, more connections than
``MAX_CONNECTIONS``) closes that connection, logged at most once a
second; the server goes on serving. A full table makes room by closing
its oldest connection still without a hello, else the bound ones whose
client's ZeroMQ connection is gone (``_make_room``); only a table of
live bound ones refuses.

Used from the serving thread only; ``stats`` from any.
"""

from __future__ import annotations

import collections
import errno
import hmac
import itertools
import logging
import os
import secrets
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Callable
from typing import Any

import zmq

from .. import transport
from .._ratelog import RateLimitedLog
from ..transport import lane as packets
from .shm_frames import probe

__all__ = ["LaneServer", "MAX_CONNECTIONS", "MAX_OFFERS"]

_log = logging.getLogger(__name__)

#: Most lane connections a server keeps (bound or not yet); beyond it the
#: oldest not yet bound is closed, else the bound ones whose client is gone,
#: else the new one (its client keeps ZeroMQ).
MAX_CONNECTIONS = 64
#: Most offers kept (one per client identity that shook hands); the
#: oldest goes first (its client, if it has not connected yet, keeps ZeroMQ).
MAX_OFFERS = 256
#: How long (s) after an offer the serve loop polls the lane (the client
#: connects within its acknowledgement wait, ``client.lane``).
_EXPECT_S = 5.0
#: How often (s) at most a full table of bound connections probes their
#: clients (``_make_room``): a flood of connections costs one round of
#: probes a second, not one per connection.
_GONE_SWEEP_S = 1.0
_PEERCRED = struct.Struct("3i")
_POLLIN = int(zmq.POLLIN)


class _Conn:
    """One accepted lane connection; ``identity`` None until its HELLO."""

    __slots__ = ("fd", "identity", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.identity: bytes | None = None


class LaneServer:
    """The lane of one server (see the module).

    Parameters
    ----------
    router : zmq.Socket
        The server's ROUTER socket, polled together with the lane.
    send : callable
        ``(envelope, frames, request_id)``: sends a reply over ZeroMQ
        (the server's ``_send``: backlog and failures as for any reply).
    """

    def __init__(self, router: zmq.Socket, send: Callable) -> None:
        self._router = router
        self._send = send
        self._reader = packets.PacketReader()  # the serving thread's
        self._dir: str | None = None
        self._listener: socket.socket | None = None
        self._conns: dict[int, _Conn] = {}
        self._offers: collections.OrderedDict[int, tuple[bytes, bytes]] = (
            collections.OrderedDict()
        )
        self._by_identity: dict[bytes, int] = {}
        self._ids = itertools.count(secrets.randbelow(1 << 30))
        self._poller: zmq.Poller | None = None
        # the turns left of the current round (``_poll``): lane fds, the
        # listener's fd, the ROUTER last
        self._ready: collections.deque = collections.deque()
        self._refusals = RateLimitedLog(_log)
        self._expect_until = 0.0
        self._next_gone_sweep = 0.0
        #: Whether the serve loop polls the lane (and the ROUTER) instead
        #: of a blocking receive on the ROUTER alone: while connections
        #: are open or an offer is recent (``tick``), so that a server
        #: without lane clients pays nothing for the lane.
        self.active = False
        self.path = ""
        #: The only user whose processes may connect (``SO_PEERCRED``).
        self.uid = os.getuid()
        #: Requests received on the lane, replies sent on it, replies
        #: that went over ZeroMQ instead, connections refused or dropped.
        self.calls = 0
        self.replies = 0
        self.zmq_replies = 0
        self.refused = 0

    # -- life ------------------------------------------------------------

    def start(self) -> bool:
        """Listen (the serve loop calls it once serving); False when no
        lane can be made here (then no offer is made)."""
        if self._listener is not None:
            return True
        if not packets.AVAILABLE:
            return False
        try:
            self._dir = tempfile.mkdtemp(prefix="framerpc-lane-")  # 0700
            path = os.path.join(self._dir, "lane")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            listener.bind(path)
            os.chmod(path, 0o600)
            listener.listen(16)
            listener.setblocking(False)
        except OSError as exc:
            _log.warning("no same-host lane: %s", exc)
            self.close()
            return False
        self._listener, self.path = listener, path
        self._poller = None
        return True

    def close(self) -> None:
        """Close every connection and the listener, remove the directory."""
        for conn in list(self._conns.values()):
            self._drop(conn)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._offers.clear()
        self._by_identity.clear()
        self._poller = None
        self._ready.clear()
        self.path = ""

    # -- offers ----------------------------------------------------------

    def offer(self, identity: bytes) -> list | None:
        """``[path, lane id, token, packet bound]`` for the client of
        routing id ``identity`` (a new one at each handshake); None when not
        listening."""
        if self._listener is None:
            return None
        old = self._by_identity.pop(identity, None)
        if old is not None:
            self._offers.pop(old, None)
        while len(self._offers) >= MAX_OFFERS:
            _, (gone, _) = self._offers.popitem(last=False)
            self._by_identity.pop(gone, None)
        lane_id = next(self._ids) & 0xFFFFFFFF
        token = secrets.token_bytes(packets.TOKEN_BYTES)
        self._offers[lane_id] = (identity, token)
        self._by_identity[identity] = lane_id
        self._expect_until = time.monotonic() + _EXPECT_S
        self.active = True
        return [self.path, lane_id, token, packets.MAX_PACKET]

    # -- serving -----------------------------------------------------------

    def tick(self) -> None:
        """Now and then (the serve loop's shared-memory ticks): stop
        polling once no connection is open and no offer is recent."""
        if self.active and not self._conns:
            self.active = time.monotonic() < self._expect_until

    def receive(self, timeout_ms: int) -> tuple[list, Any]:
        """Wait up to ``timeout_ms`` for a message on the ROUTER or the
        lane, handling the lane's connections and hellos meanwhile.

        Returns
        -------
        (frames, reply)
            The message's frames (``[identity, b"", *body]`` for a lane
            packet) and, for a lane packet, the callable the Responder
            replies with (None for the ROUTER's messages).

        Raises
        ------
        zmq.Again
            Nothing arrived.
        """
        router, ready = self._router, self._ready
        polled = False
        while True:
            if not ready:
                if polled:
                    raise zmq.Again()
                ready.extend(self._poll(timeout_ms))
                polled = True
                continue
            item = ready.popleft()
            if item is router:
                try:
                    return _recv_router(router), None
                except zmq.Again:  # a stale turn (the loop read it meanwhile)
                    continue
            conn = self._conns.get(item)
            if conn is not None:
                frames = self._read(conn)
                if frames is not None:
                    return frames, _Reply(self, conn)
            elif self._listener is not None and item == self._listener.fileno():
                self._accept()

    def _poll(self, timeout_ms: int) -> list:
        """One round: what is readable now (waiting up to ``timeout_ms``),
        each lane connection once, then the ROUTER. ``receive`` takes one
        message from each before polling again, so that a peer that keeps
        its lane full gets one turn per round like every other: before,
        the lane always came first, and a client flooding it (one-way
        releases, 4.8 kB each) left the ZeroMQ clients 63 echo calls in
        4 s (p99 0.95 s) and a second lane client a median of 109 ms.
        The lane before the ROUTER: what a client sent on its lane before
        a message over ZeroMQ is handled first (its one-way release, then
        a call too large for a packet)."""
        poller = self._poller
        if poller is None:
            poller = self._poller = zmq.Poller()
            poller.register(self._router, _POLLIN)
            if self._listener is not None:
                poller.register(self._listener.fileno(), _POLLIN)
            for fd in self._conns:
                poller.register(fd, _POLLIN)
        router, items, routed = self._router, [], False
        for item, _ in poller.poll(timeout_ms):
            if item is router:
                routed = True
            else:
                items.append(item)
        if routed:  # its turn last
            items.append(router)
        return items

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        try:
            _, uid, _ = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
        except OSError:
            uid = -1
        if uid == self.uid and len(self._conns) >= MAX_CONNECTIONS:
            self._make_room()
        if uid != self.uid or len(self._conns) >= MAX_CONNECTIONS:
            self.refused += 1
            self._refusals.warning(
                "refused a lane connection (uid %s, %d connections)",
                uid,
                len(self._conns),
            )
            sock.close()
            return
        sock.setblocking(False)
        packets.size_buffers(sock)
        conn = _Conn(sock)
        self._conns[conn.fd] = conn
        if self._poller is not None:
            self._poller.register(conn.fd, _POLLIN)

    def _make_room(self) -> None:
        """Table full: close the oldest connection that has not sent its
        hello yet; if every one is bound, those whose client's ZeroMQ
        connection is gone.

        Before, connections that never sent a hello stayed until their
        peer closed them: 64 of them (a process of the same user connecting
        and keeping quiet) kept every later client off the lane for as long
        as they stayed open. A client sends its hello as soon as it
        connected, and each round reads it (``_poll``) while the listener
        accepts one connection: it is not the oldest for long. Bound ones
        of frozen (SIGSTOPped) clients likewise stayed: libzmq drops such a
        client's ZeroMQ connection when its heartbeats time out, and the
        probe then finds it gone.
        """
        for conn in self._conns.values():  # in the order they were accepted
            if conn.identity is None:
                self._refuse(conn, "no hello before the table filled")
                return
        now = time.monotonic()
        if now < self._next_gone_sweep:
            return
        self._next_gone_sweep = now + _GONE_SWEEP_S
        for conn in list(self._conns.values()):
            # ROUTER_MANDATORY refuses a probe for a connection it lost
            if (
                conn.identity is not None
                and probe(self._router, conn.identity) is False
            ):
                self._refuse(conn, "its client's ZeroMQ connection is gone")

    def _read(self, conn: _Conn) -> list | None:
        """The frames of a request packet of ``conn`` (None: it was a
        hello, nothing, or the connection was dropped)."""
        try:
            packet = self._reader.read(conn.sock)
        except BlockingIOError:
            return None
        except OSError:
            packet = b""
        if not packet:  # the client closed it
            self._drop(conn)
            return None
        if len(packet) > packets.MAX_PACKET:
            self._refuse(conn, "a packet over the bound")
            return None
        if conn.identity is None:
            self._hello(conn, packet)
            return None
        try:
            body = packets.decode(packet)
        except ValueError as exc:
            self._refuse(conn, str(exc))
            return None
        self.calls += 1
        return [conn.identity, b"", *body]

    def _hello(self, conn: _Conn, packet: bytes) -> None:
        parsed = packets.parse_hello(packet)
        offer = self._offers.get(parsed[0]) if parsed is not None else None
        if parsed is None or offer is None:
            self._refuse(conn, "no valid hello")
        elif not hmac.compare_digest(offer[1], parsed[1]):
            self._refuse(conn, "a wrong token")
        else:
            # one connection per offer: a token cannot bind many
            del self._offers[parsed[0]]
            if self._by_identity.get(offer[0]) == parsed[0]:
                del self._by_identity[offer[0]]
            conn.identity = offer[0]
            try:
                conn.sock.send(packets.ACK)
            except OSError:
                self._drop(conn)

    def _refuse(self, conn: _Conn, why: str) -> None:
        self.refused += 1
        self._refusals.warning("closed a lane connection: %s", why)
        self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        if self._conns.pop(conn.fd, None) is not None and self._poller is not None:
            self._poller.unregister(conn.fd)
        conn.sock.close()

    def reply(self, conn: _Conn, envelope: list, frames: list, request_id: Any) -> None:
        """Send the reply ``frames`` to a lane request of ``conn``: one
        packet when it fits and the lane has room, else over ZeroMQ."""
        packet = packets.encode(frames)
        if packet is not None and conn.fd in self._conns:
            self.replies += 1  # before: a reader of stats sees it once replied
            try:
                conn.sock.sendmsg(packet)
                return
            except BlockingIOError:  # the client does not read the lane
                self.replies -= 1
            except OSError as exc:
                self.replies -= 1
                if exc.errno != errno.EMSGSIZE:  # the client went: ZeroMQ
                    self._drop(conn)  # tells the rest (EMSGSIZE: too big)
        self.zmq_replies += 1
        self._send(envelope, frames, request_id)

    def stats(self) -> dict[str, int]:
        """The counters ``RPCServer.stats`` adds (see there)."""
        return {
            "lane_calls": self.calls,
            "lane_replies": self.replies,
            "lane_zmq_replies": self.zmq_replies,
            "lane_refused": self.refused,
            "lane_connections": len(self._conns),
        }


class _Reply:
    """The Responder's reply callable for one lane request."""

    __slots__ = ("conn", "lane")

    def __init__(self, lane: LaneServer, conn: _Conn) -> None:
        self.lane, self.conn = lane, conn

    def __call__(self, envelope: list, frames: list, request_id: Any) -> None:
        self.lane.reply(self.conn, envelope, frames, request_id)


def _recv_router(router: zmq.Socket) -> list:
    return transport.recv_frames(router, int(zmq.NOBLOCK))
