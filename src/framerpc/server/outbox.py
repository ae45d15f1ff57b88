"""What a server keeps for peers slower than it: replies a client's full
queue refused (``ReplyBacklog``) and the bytes of signal emissions
libzmq still holds for subscribers (``SignalBudget``).

Both are bounded; what goes beyond is dropped, counted, and logged at most
once a second (``RateLimitedLog``). The server calls them from its
serve loop (replies) or under its signal lock (emissions): neither locks.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import zmq

__all__ = ["RateLimitedLog", "ReplyBacklog", "SignalBudget"]

_log = logging.getLogger("framerpc.server")

_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
#: Fewest emissions in the list before ``SignalBudget.refresh`` scans it.
_REFRESH_MIN = 64


class RateLimitedLog:
    """A warning at most every ``interval`` seconds, with the count since.

    Parameters
    ----------
    logger : logging.Logger
        Where the warnings go.
    what : str
        What is counted, e.g. ``"replies dropped"``.
    interval : float
        Shortest time (s) between two warnings.
    """

    def __init__(self, logger: logging.Logger, what: str, interval: float = 1.0):
        self._logger = logger
        self._what = what
        self._interval = interval
        self._next = 0.0
        self._unlogged = 0

    def count(self, number: int, reason: str) -> None:
        """Note ``number`` more events; log now if the interval has passed."""
        self._unlogged += number
        now = time.monotonic()
        if now >= self._next:
            self._logger.warning(
                "%d %s in the last %.0f s (last: %s)",
                self._unlogged,
                self._what,
                self._interval,
                reason,
            )
            self._unlogged = 0
            self._next = now + self._interval


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
        self._warn = RateLimitedLog(_log, "replies dropped")

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
        self._warn.count(number, reason)

    def _forget(self, peer: bytes, reason: str) -> None:
        queue = self._queues.pop(peer)
        self.nbytes -= self._peer_bytes.pop(peer)
        self.messages -= len(queue)
        self.lost(len(queue), reason)


class SignalBudget:
    """Bytes of signal emissions not yet released by libzmq, bounded; and
    the emissions a subscriber's full queue did not take, counted.

    PUB's high-water mark counts messages, whatever their size: a
    subscriber that stops reading holds up to that many emissions in the
    server. Here every emission of at least ``track_min`` bytes is lent
    to libzmq with a ``zmq.MessageTracker`` (pyzmq's zero-copy send, in
    both engines: its frames of ``track_min`` bytes or more, or else its
    largest) and counted until libzmq releases it; an emission that would
    take the count over ``limit`` is dropped for everyone and counted.
    Smaller emissions are copied and not counted: the caller bounds them
    with the socket's high-water mark (``hwm * track_min`` per
    subscriber).

    PUB drops an emission for a subscriber whose queue is full without a
    word. Queues are first in, first out, so an emission released while an
    older one of the same socket is still held was not taken by the queue
    that holds the older one: ``refresh`` counts those
    (``dropped_for_some``), newest first so that "still held" is seen
    after "released". Not seen: an emission refused by a queue that holds
    only small (untracked) emissions.

    The high-water mark stays what the socket was bound with. Setting it
    per emission from the emission's size would bound each queue in bytes,
    but libzmq (4.3.5) can then stop a queue for good:
    ``benchmarks/hwm_live_change.py`` shows how.

    Parameters
    ----------
    limit : int
        Most bytes of counted emissions held at once.
    track_min : int
        Emissions of fewer bytes are copied, not counted.

    Attributes
    ----------
    in_flight : int
        Bytes of counted emissions libzmq may still hold (up to date after
        ``refresh``).
    dropped_for_all : int
        Emissions dropped for every subscriber (over ``limit``, or refused
        by the socket).
    dropped_for_some : int
        Emissions at least one subscriber's full queue did not take (seen
        by ``refresh``).
    """

    def __init__(self, limit: int, track_min: int) -> None:
        self.limit = limit
        self.track_min = track_min
        self.in_flight = 0
        self.dropped_for_all = 0
        self.dropped_for_some = 0
        self._entries: deque = deque()  # (trackers, nbytes, socket), oldest first
        self._refresh_at = _REFRESH_MIN
        self._warn = RateLimitedLog(_log, "signal emissions dropped")
        self._warn_some = RateLimitedLog(
            _log, "signal emissions not taken by a subscriber whose queue was full"
        )

    @property
    def dropped(self) -> int:
        """Emissions dropped, for everyone or for some subscribers."""
        return self.dropped_for_all + self.dropped_for_some

    def send(self, sock: zmq.Socket, frames: list, send_frames: Callable) -> bool:
        """Publish ``frames`` on ``sock`` without blocking, within budget.

        ``send_frames`` (the engine's) sends an emission that is not
        counted. Returns whether it was handed to libzmq.
        """
        sizes = [memoryview(frame).nbytes for frame in frames]
        nbytes = sum(sizes)
        if nbytes < self.track_min:
            try:
                send_frames(sock, frames, _NOBLOCK)
            except zmq.Again:  # PUB never refuses; a closing socket may
                self.drop("the signal socket refused it")
                return False
            return True
        self._release_oldest()
        if self.in_flight + nbytes > self.limit:
            self.refresh()
            if self.in_flight + nbytes > self.limit:
                self.drop(
                    f"{self.in_flight} B still held for subscribers, an "
                    f"emission of {nbytes} B would exceed {self.limit} B"
                )
                return False
        lend = [size >= self.track_min for size in sizes]
        if not any(lend):  # only small frames: track the largest
            lend[sizes.index(max(sizes))] = True
        trackers = []
        last = len(frames) - 1
        send = sock.send
        try:
            for index, frame in enumerate(frames):
                flags = (_SNDMORE if index < last else 0) | (
                    _NOBLOCK if index == 0 else 0
                )
                if lend[index]:
                    lent = zmq.Frame(frame, track=True, copy=False)
                    send(lent, flags, copy=False, track=True)
                    trackers.append(lent.tracker)
                else:
                    send(frame, flags)
        except zmq.Again:  # only the first frame may refuse: nothing sent
            self.drop("the signal socket refused it")
            return False
        self._entries.append((trackers, nbytes, sock))
        self.in_flight += nbytes
        if len(self._entries) >= self._refresh_at:
            self.refresh()
        return True

    def drop(self, reason: str) -> None:
        """Count one emission dropped for everyone; logged at most once a
        second."""
        self.dropped_for_all += 1
        self._warn.count(1, reason)

    def refresh(self) -> int:
        """Forget every emission libzmq released, counting those a
        subscriber's full queue did not take; returns ``in_flight``."""
        entries = self._entries
        # newest first: an older emission seen held *after* a newer one was
        # seen released was held when the newer one was released
        done = [all(t.done for t in entry[0]) for entry in reversed(entries)]
        done.reverse()
        kept: deque = deque()
        held = 0
        missed = 0
        holding: set = set()  # sockets with an older emission still held
        for entry, released in zip(entries, done, strict=True):
            if not released:
                holding.add(entry[2])
                kept.append(entry)
                held += entry[1]
            elif entry[2] in holding:
                missed += 1
        self._entries = kept
        self.in_flight = held
        # amortised: the next scan when the list has doubled
        self._refresh_at = max(_REFRESH_MIN, 2 * len(kept))
        if missed:
            self.dropped_for_some += missed
            self._warn_some.count(missed, "a subscriber does not read")
        return held

    def _release_oldest(self) -> None:
        # cheap and usually enough: emissions are released in order unless a
        # subscriber stalls (then refresh() scans as the list grows)
        entries = self._entries
        while entries and all(tracker.done for tracker in entries[0][0]):
            self.in_flight -= entries.popleft()[1]
