"""PeerWatch: whether the server of a client's DEALER socket is still there.

A call in flight has no other way to learn that its server went away: the
request is gone with the connection, and the DEALER just waits. libzmq
reports connections on a monitor socket (``zmq_socket_monitor``): the
ZMTP handshake of each new connection (``EVENT_HANDSHAKE_SUCCEEDED``) and
the end of each (``EVENT_DISCONNECTED``: the peer closed it, its kernel
did because it was killed, or the heartbeat timed out). A PeerWatch counts
them.

Nobody reads the monitor in the background. The client's
``Channel`` drains it before a request (so that
an old disconnect is not blamed on the new request), and again each time
a wait slice (100 ms) passes without a reply; the signal receiver, when
there is one, drains it every 100 ms too, to follow a server restart. A
lock keeps the monitor socket to one thread at a time.

Draining costs a ``ZMQ_EVENTS`` check (a system call, 1-5 us measured),
so the drain before a request is skipped when the last one is younger
than ``fresh_ms``. That is safe on a DEALER with ``ZMQ_IMMEDIATE``: it
sends only on a live connection, and after a disconnect libzmq waits at
least ``ZMQ_RECONNECT_IVL`` before it connects again. So with ``fresh_ms``
below that interval, a disconnect since the last drain means the request
cannot go out until a slice of the send loop (which drains) has passed.
Calls in quick succession thus cost no system call.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import uuid

import zmq

from .errors import PeerLostError

__all__ = ["PeerWatch"]

_log = logging.getLogger(__name__)

_EVENTS = int(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_HANDSHAKE_SUCCEEDED = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_POLLIN = int(zmq.POLLIN)
_EVENTS_OPT = int(zmq.EVENTS)
_NOBLOCK = int(zmq.NOBLOCK)


class PeerWatch:
    """Connection events of one connecting socket (see the module).

    Create it before ``sock.connect()`` so that no event is missed, in the
    thread that owns ``sock``; ``close`` it in that thread, before
    ``sock`` closes.

    Parameters
    ----------
    sock : zmq.Socket
        The client's DEALER socket (not yet connected).
    url : str
        The server's URL, for messages.
    dead_peer_ms : int or None
        How long a call may wait for a server that is not connected before
        ``check`` gives up (None: as long as the call's own timeout).
    fresh_ms : int
        ``mark`` does not drain again within this long of the last
        drain: below the socket's reconnect interval, and only with
        ``ZMQ_IMMEDIATE`` (0: always drain).

    Attributes
    ----------
    losses : int
        Connections lost so far.
    up : bool
        Whether a connection is up (as of the last drain).
    down_since : float or None
        ``time.monotonic()`` of the drain that saw the connection go down;
        None while it is up or before it was ever up.
    """

    def __init__(
        self,
        sock: zmq.Socket,
        url: str,
        dead_peer_ms: int | None,
        fresh_ms: int = 0,
    ) -> None:
        self.url = url
        self.dead_peer_ms = dead_peer_ms
        self._fresh_s = fresh_ms / 1000
        self._drained = -1e9  # time.monotonic() of the last drain
        self.losses = 0
        self.up = False
        self.down_since: float | None = None
        self._lock = threading.Lock()
        self._sock = sock
        address = f"inproc://framerpc-peerwatch-{uuid.uuid4().hex}"
        sock.monitor(address, _EVENTS)
        self._monitor: zmq.Socket | None = sock.context.socket(zmq.PAIR)
        try:
            self._monitor.connect(address)
        except BaseException:
            self.close()
            raise

    def drain(self) -> None:
        """Read the events queued on the monitor (never waits for one)."""
        with self._lock:
            monitor = self._monitor
            if monitor is None:
                return
            # read before looking: later events are after this time
            self._drained = time.monotonic()
            while int(monitor.getsockopt(_EVENTS_OPT)) & _POLLIN:
                frames = monitor.recv_multipart(_NOBLOCK)
                if len(frames) != 2 or len(frames[0]) != 6:
                    continue  # not a monitor event: cannot happen on this PAIR
                event = struct.unpack("=hi", frames[0])[0]
                if event == _DISCONNECTED:
                    self.losses += 1
                    self.up = False
                    self.down_since = time.monotonic()
                    _log.debug("connection to %s lost", self.url)
                elif event == _HANDSHAKE_SUCCEEDED:
                    self.up = True
                    self.down_since = None

    def mark(self) -> int:
        """Drain (unless fresh), then return the loss count: call right
        before sending."""
        if time.monotonic() - self._drained >= self._fresh_s:
            self.drain()
        return self.losses

    def check(self, mark: int, sent: bool, endless: bool) -> None:
        """Drain; raise if the call that took ``mark`` cannot be answered.

        Parameters
        ----------
        mark : int
            What ``mark`` returned before the request was sent.
        sent : bool
            Whether the request went out (False while waiting to send).
        endless : bool
            Whether the call has no timeout: only such a call gives up on
            a server that is down (a call with a timeout waits for the
            server to come back until its timeout passes, as documented).

        Raises
        ------
        PeerLostError
            A connection was lost since ``mark`` while the request was out,
            or (``endless``) the server has been unreachable for
            ``dead_peer_ms``.
        """
        self.drain()
        if sent and self.losses != mark:
            raise PeerLostError(
                f"lost the connection to {self.url} while waiting for a reply"
            )
        down_since = self.down_since
        if (
            endless
            and self.dead_peer_ms is not None
            and down_since is not None
            and time.monotonic() - down_since >= self.dead_peer_ms / 1000
        ):
            raise PeerLostError(
                f"{self.url} unreachable for {time.monotonic() - down_since:.1f} s"
            )

    def close(self) -> None:
        """Stop monitoring and close the monitor socket; idempotent."""
        with self._lock:
            monitor, self._monitor = self._monitor, None
            if monitor is None:
                return
            if not self._sock.closed:
                try:
                    self._sock.disable_monitor()
                except zmq.ZMQError:
                    pass
            monitor.close(linger=0)
