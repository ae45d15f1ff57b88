"""What a server keeps for clients slower than it: replies a client's full
queue refused (``ReplyBacklog``), bounded; what goes beyond is dropped,
counted, and logged at most once a second (``framerpc._ratelog``). The server
calls it from its serve loop: it does not lock. (Signal emissions are
bounded per subscriber by ``framerpc.server.fanout``.)
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import zmq

from .._ratelog import RateLimitedLog

__all__ = ["ReplyBacklog"]

_log = logging.getLogger("framerpc.server")

_NOBLOCK = int(zmq.NOBLOCK)


def _nbytes(frames: list) -> int:
    return sum(memoryview(frame).nbytes for frame in frames)


class ReplyBacklog:
    """Replies waiting for their client's queue to have room, per client.

    A ROUTER with ``ROUTER_MANDATORY`` refuses a reply to a client whose
    queue is full (``zmq.Again``) instead of dropping it silently; the
    server hands it to ``add`` and calls ``flush`` from its serve
    loop until the client has read enough. Replies to one client leave in
    the order they were added.

    Parameters
    ----------
    sock : zmq.Socket
        The server's ROUTER socket.
    send_frames : callable
        ``(sock, frames, flags)``: the I/O engine's ``send_frames``.
    max_messages, max_bytes : int
        Bounds per client (replies and their bytes).
    max_total_bytes : int
        Bound in bytes over all clients.

    Attributes
    ----------
    dropped : int
        Replies given up on: beyond a bound, to a client that left
        (EHOSTUNREACH), or still waiting when the server stopped.
    messages, nbytes : int
        What is held now, over all clients.
    """

    def __init__(
        self,
        sock: zmq.Socket,
        send_frames: Callable,
        max_messages: int,
        max_bytes: int,
        max_total_bytes: int,
    ) -> None:
        self._sock = sock
        self._send_frames = send_frames
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._max_total = max_total_bytes
        self._queues: dict[bytes, deque] = {}
        self._peer_bytes: dict[bytes, int] = {}
        self.messages = 0
        self.nbytes = 0
        self.dropped = 0
        self._warn = RateLimitedLog(_log)

    @property
    def pending(self) -> bool:
        """Whether any reply is waiting."""
        return bool(self._queues)

    def holds(self, envelope: list) -> bool:
        """Whether replies to the client of ``envelope`` are waiting (a new
        one must queue behind them)."""
        return bytes(envelope[0]) in self._queues

    def add(self, message: list) -> None:
        """Keep ``message`` (routing envelope first) until its client has
        room, or drop and count it when a bound is reached."""
        peer = bytes(message[0])
        size = _nbytes(message)
        queue = self._queues.get(peer)
        held = self._peer_bytes.get(peer, 0)
        if queue is not None and len(queue) >= self._max_messages:
            self.lost(1, f"{self._max_messages} replies already wait for a client")
            return
        if held + size > self._max_bytes or self.nbytes + size > self._max_total:
            self.lost(1, f"a reply of {size} B exceeds the backlog's byte bound")
            return
        if queue is None:
            queue = self._queues[peer] = deque()
        queue.append((message, size))
        self._peer_bytes[peer] = held + size
        self.messages += 1
        self.nbytes += size

    def flush(self) -> bool:
        """Send what the clients' queues take now, without blocking.

        Returns whether anything left the backlog (sent or given up on).
        """
        before = self.messages
        send, sock = self._send_frames, self._sock
        for peer in list(self._queues):
            queue = self._queues[peer]
            while queue:
                message, size = queue[0]
                try:
                    send(sock, message, _NOBLOCK)
                except zmq.Again:  # still full: keep the rest, in order
                    break
                except zmq.ZMQError as exc:  # EHOSTUNREACH: the client left
                    self._forget(peer, f"client gone ({exc})")
                    break
                queue.popleft()
                self._peer_bytes[peer] -= size
                self.messages -= 1
                self.nbytes -= size
            if not queue and peer in self._queues:
                del self._queues[peer]
                del self._peer_bytes[peer]
        return self.messages != before

    def clear(self, reason: str) -> None:
        """Give up on every waiting reply (the server stops)."""
        for peer in list(self._queues):
            self._forget(peer, reason)

    def lost(self, number: int, reason: str) -> None:
        """Count ``number`` replies given up on; logged at most once a second."""
        self.dropped += number
        self._warn.count(number, "replies dropped", reason)

    def _forget(self, peer: bytes, reason: str) -> None:
        queue = self._queues.pop(peer)
        self.nbytes -= self._peer_bytes.pop(peer)
        self.messages -= len(queue)
        self.lost(len(queue), reason)
