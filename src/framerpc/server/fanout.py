"""Signal emissions delivered subscriber by subscriber, each bounded in
bytes (issue 11): an XPUB socket in manual mode gives every subscriber a
private prefix, and each emission is sent once per subscriber.

A PUB socket bounds each subscriber's queue in messages only, and a byte
budget shared by all lets one stalled subscriber stop the others. Here
(``benchmarks/xpub_per_subscriber.py`` has the idea alone):

- With ``XPUB_MANUAL`` the socket passes each subscription up instead of
  applying it; ``setsockopt(SUBSCRIBE, prefix)`` right after reading one
  subscribes the pipe that sent it to a prefix of its own. A subscription
  to everything (``b""``, what every framerpc and older client sends) gets
  one; other topics are ignored (they never matched an emission).
- Native emissions start with that prefix: their header map's first key
  ``"_"`` holds the subscriber's id (4 bytes), and the map always has 7
  keys (``q`` and ``ep`` are nil when not numbered), so the prefix is the
  same bytes for every emission. Decoders skip unknown keys: today's
  clients read these emissions unchanged.
- JSON emissions (the older protocol's socket) start with a prefix made of
  JSON whitespace only, 12 base-4 digits over ``b" \\t\\n\\r"``: a JSON
  parser skips it.
- Frames of ``track_min`` bytes or more are lent to libzmq once per
  emission (one ``zmq.Frame``, ``copy=False``) and sent to each
  subscriber by reference (libzmq counts references: no copy of the
  payload). Once per ``limit / GRAINS`` bytes sent to a subscriber, its
  emission's last large frame goes as a frame of its own with a
  ``zmq.MessageTracker``: its pipe releases messages in order, so a
  tracker's release says that emission and every earlier one were
  released. The server thus knows per subscriber the bytes libzmq may
  still hold (a subscriber may be counted up to ``limit / GRAINS`` more
  than that). An emission that would take a subscriber over ``limit`` is
  not sent to it, and counted. ``XPUB_NODROP`` makes a queue full by
  ``signal_hwm`` refuse (``EAGAIN``) instead of dropping silently:
  counted the same way.
- The socket's input is read under the signal lock before emissions (at
  most every ``READ_INTERVAL``, and before every handshake token), when
  the serve loop is idle and when ``stats`` is read, a bounded number of
  messages at a time, with ``MAXMSGSIZE`` small (an XPUB keeps every
  message a peer sends until it is read; a bigger one disconnects that
  peer). A subscriber's queue is empty until its subscription was read:
  the handshake's token is an emission, it reaches it only after that.
- A subscriber that leaves shows up as a bare ``b"\\x00"`` that does not
  say who. libzmq frees what its queue held when the socket is next used
  (an emission, ``stats``): its tracked bytes come back. Its record is
  found at the next arrival or once the input is read; a second ``b""``
  from a pipe that has a prefix is ignored (``fanout_probe`` says how,
  and why a read stops after ``READ_WORK`` records probed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import zmq

from .._ratelog import RateLimitedLog
from ..errors import SerializationError
from ..wire import json_codec
from ..wire.messages import SignalEmission
from . import fanout_probe
from .fanout_subscriber import (
    _JSON_DIGITS,
    _NATIVE_HEAD,
    Fence,
    _Subscriber,
    encode_native,
    json_prefix,
    native_prefix,
)

__all__ = ["SignalFanouts", "Fanout", "json_prefix", "native_prefix"]

_log = logging.getLogger("framerpc.server")

_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_SUBSCRIBE = int(zmq.SUBSCRIBE)
_UNSUBSCRIBE = int(zmq.UNSUBSCRIBE)
#: Largest message a peer may send on a signal socket (a subscription is
#: one byte and the topic); a larger one disconnects the peer. libzmq
#: applies it to the handshake's commands too: CURVE's INITIATE takes
#: about 300 bytes, more with metadata.
MAX_INPUT = 4096
#: Most input messages read at a time (before an emission, or ``stats``).
READ_MAX = 4096
#: Records probed at most by one read of the input (an arrival probes
#: every record, 2 socket options each): a few ms, then the serve loop
#: answers other clients before the next read (issue 11).
READ_WORK = 1024
#: Shortest time (s) between two reads of the input before emissions.
READ_INTERVAL = 0.005
#: A subscriber's emissions are tracked once per ``limit / GRAINS`` bytes:
#: it may be counted as holding that much more than libzmq holds for it.
GRAINS = 32


class SignalFanouts:
    """The counters of a server's signal sockets, and their fanouts.

    Parameters
    ----------
    limit : int
        Most bytes of counted emissions libzmq may hold for one subscriber.
    track_min : int
        Emissions of fewer bytes are copied and not counted (a stalled
        subscriber holds at most ``signal_hwm`` of them).

    Attributes
    ----------
    dropped_for_all : int
        Emissions sent to nobody: larger than ``limit``. (One whose
        arguments JSON cannot carry is logged, not counted: the native
        subscribers got it.)
    dropped_for_some : int
        Emissions not sent to one subscriber, once per such subscriber:
        its bytes held would exceed ``limit``, or its queue was full.
    """

    def __init__(self, limit: int, track_min: int) -> None:
        self.limit = limit
        self.track_min = track_min
        #: Bytes sent to a subscriber between two tracked emissions.
        self.grain = max(track_min, limit // GRAINS)
        self.dropped_for_all = 0
        self.dropped_for_some = 0
        self.fanouts: list[Fanout] = []
        self._warn_all = RateLimitedLog(_log)
        self._warn_some = RateLimitedLog(_log)

    @property
    def dropped(self) -> int:
        """Both counters together."""
        return self.dropped_for_all + self.dropped_for_some

    def attach(self, sock: zmq.Socket, json: bool = False) -> Fanout:
        """Make ``sock`` (an XPUB, before it is bound) deliver per
        subscriber; returns its fanout."""
        fanout = Fanout(self, sock, json)
        self.fanouts.append(fanout)
        return fanout

    def refresh(self) -> int:
        """Read the sockets' input, forget what libzmq released; the bytes
        it still holds for all subscribers."""
        total = 0
        for fanout in self.fanouts:
            if not fanout.sock.closed:
                try:
                    fanout.read_input()
                except zmq.ZMQError:  # ctx.term() under way: nothing to read
                    pass
            total += fanout.held()
        return total

    def close(self) -> None:
        """Close what the fanouts opened themselves (under the lock)."""
        for fanout in self.fanouts:
            fanout.close()

    def drop_for_all(self, reason: str) -> None:
        self.dropped_for_all += 1
        self._warn_all.warning(
            "signal emissions dropped for every subscriber: %s", reason
        )

    def drop_for_one(self, sub: _Subscriber, reason: str) -> None:
        self.dropped_for_some += 1
        sub.dropped += 1
        # INFO: a subscriber that stops reading (or is going away) is its
        # own doing, counted in stats; the others are served all the same
        self._warn_some.info(
            "signal emissions dropped for a subscriber that does not read: %s", reason
        )


class Fanout:
    """Per-subscriber delivery on one XPUB socket (see the module)."""

    def __init__(self, owner: SignalFanouts, sock: zmq.Socket, json: bool) -> None:
        sock.setsockopt(zmq.XPUB_MANUAL, 1)
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_INPUT)
        self.owner = owner
        self.sock = sock
        self.json = json
        self._prefix = json_prefix if json else native_prefix
        self._next_id = 1
        self.subscribers: dict[int, _Subscriber] = {}
        #: Departures read and not yet matched to a subscriber.
        self.unresolved = 0
        #: Input messages that were neither b"" subscriptions nor cancels.
        self.ignored = 0
        self._probe = True  # TOPICS_COUNT works (libzmq >= 4.3.5)
        self._read_at = 0.0  # monotonic time of the next read before emitting
        self._probe_url: str | None = None  # inproc endpoint of the finder
        self._finder: fanout_probe.Finder | None = None
        self.shm: Any = None  # shm_signals.ShmSignals: references for some

    def __iter__(self) -> Iterator[_Subscriber]:
        return iter(self.subscribers.values())

    def held(self) -> int:
        return sum(sub.release() for sub in self.subscribers.values())

    # -- input ---------------------------------------------------------------
    def read_input(self, most: int = READ_MAX, work: int = READ_WORK) -> bool:
        """Read up to ``most`` input messages or until about ``work``
        records were probed (an arrival probes each): new subscribers get
        their prefix, departures are noted. True when input may be left."""
        sock = self.sock
        # EVENTS is an int option (pyzmq types get() as int | bytes)
        events = cast("Callable[[int], int]", sock.getsockopt)
        spent = 0
        for _ in range(most):
            if spent and spent >= work:  # one message at least
                return True
            if not events(_EVENTS) & _POLLIN:
                fanout_probe.find_departed(self, work - spent)
                return False
            message = sock.recv(_NOBLOCK)
            spent += 1
            if message == b"\x01":
                spent += self._arrived()
            elif message == b"\x00":
                spent += self._cancelled()
            elif message == fanout_probe.PROBE_MESSAGE and self._finder is not None:
                self._finder.scanning = True  # its pipe is the last one read
                spent += self._finder.step(work - spent)
            elif message != fanout_probe.PROBE_GONE:
                self.ignored += 1
        return True

    def close(self) -> None:
        """Close the departure finder's pipe, if open."""
        if self._finder is not None:
            self._finder.close()

    def _arrived(self) -> int:
        # probe each prefix on the new pipe (the last one read): its own
        # prefix is a second b"" from it; then departed records, if any
        # (the new pipe is live); returns the records probed
        probed = 0
        if self._probe and self.subscribers:
            sock = self.sock
            try:
                if fanout_probe.holds_one(sock, self.subscribers.values()):
                    self.ignored += 1
                    return len(self.subscribers)
                probed = len(self.subscribers)
                if self.unresolved:  # all looked at: the new pipe is live
                    subs = list(self.subscribers.values())
                    for sub in fanout_probe.gone(sock, iter(subs), probed)[0]:
                        self._forget(sub)
                    self.unresolved = 0
                    probed *= 2
            except zmq.ZMQError:  # no TOPICS_COUNT: records stay, bytes come back
                self._probe = False
        ident = self._next_id
        self._next_id = ident + 1 if ident < 0xFFFF_FFFF else 1
        prefix = self._prefix(ident)
        self.sock.setsockopt(_SUBSCRIBE, prefix)
        self.subscribers[ident] = _Subscriber(ident, prefix)
        return probed

    def _cancelled(self) -> int:
        # a pipe that cancelled b"" (its pipe is the last one read: find its
        # record now) or that left (no last pipe: found at the next arrival)
        if self._probe:
            try:
                if fanout_probe.last_pipe_live(self.sock):
                    sub = fanout_probe.holds_one(self.sock, self.subscribers.values())
                    if sub is not None:
                        self.sock.setsockopt(_UNSUBSCRIBE, sub.prefix)
                        self._forget(sub)
                        return len(self.subscribers)
            except zmq.ZMQError:
                self._probe = False
        self.unresolved += 1
        return 0

    def _forget(self, sub: _Subscriber) -> None:
        del self.subscribers[sub.ident]
        if self.shm is not None:
            self.shm.departed(sub.ident)

    # -- output --------------------------------------------------------------
    def publish(self, emission: SignalEmission) -> None:
        """Send ``emission`` to every subscriber within its bound (the
        caller holds the signal lock)."""
        # the input every READ_INTERVAL (a getsockopt costs microseconds),
        # and always before a handshake token: it must reach a subscriber
        # that has just subscribed
        now = time.monotonic()
        if now >= self._read_at or not emission.name:
            self._read_at = now + READ_INTERVAL
            self.read_input()
        if not self.subscribers:
            return
        if self.json:
            try:
                body = json_codec.encode_signal(emission)
            except SerializationError as exc:
                _log.warning(
                    "signal %s not sent to JSON subscribers: %s", emission.name, exc
                )
                return
            frames: list = [body]
            skip = 0
        else:
            frames = encode_native(emission)
            skip = len(_NATIVE_HEAD) + 4
            if self.shm is not None and self.shm.claims and emission.name:
                # same-host subscribers that claimed theirs get references
                rest = self.shm.publish(emission)
                if rest:
                    self._send_each(frames, skip, rest)
                return
        self._send_each(frames, skip)

    def _send_each(
        self, frames: list, skip: int, subs: list[_Subscriber] | None = None
    ) -> None:
        owner = self.owner
        sizes = [memoryview(frame).nbytes for frame in frames]
        head = frames[0][skip:] if skip else frames[0]
        nbytes = sum(sizes) + (0 if skip else _JSON_DIGITS)
        limit = owner.limit
        if nbytes > limit:
            owner.drop_for_all(
                f"an emission of {nbytes} B exceeds the bound of {limit} B "
                "per subscriber"
            )
            return
        send = self.sock.send
        if subs is None:
            subs = list(self.subscribers.values())
        if nbytes < owner.track_min and len(frames) == 1:  # small: the fast path
            for sub in subs:
                try:
                    send(sub.prefix + head, _NOBLOCK)
                except zmq.Again:  # its queue is full (signal_hwm)
                    owner.drop_for_one(sub, "its queue is full")
            return
        counted = nbytes >= owner.track_min
        # frames lent once for all subscribers: libzmq shares them (a
        # reference count), a new pyzmq Frame per send would cost ~30 us
        rest: list = [
            zmq.Frame(part, copy=False) if size >= owner.track_min else part
            for part, size in zip(frames[1:], sizes[1:], strict=True)
        ]
        lent = [i for i, part in enumerate(rest) if type(part) is zmq.Frame]
        last_lent = lent[-1] if lent else -1
        big_head = sizes[0] >= owner.track_min
        last = len(rest)
        grain = owner.grain
        fence = Fence()
        for sub in subs:
            if counted and sub.held + nbytes > limit:
                if sub.release() + nbytes > limit and fence.over(sub, nbytes, limit):
                    owner.drop_for_one(
                        sub,
                        f"{sub.held} B still held for it, an emission of "
                        f"{nbytes} B would exceed {limit} B",
                    )
                    continue
            # tracked once per ``grain`` bytes sent to it (a tracker's
            # release tells that every earlier emission was released too)
            track = counted and sub.tail + nbytes >= grain
            first = sub.prefix + head
            tracker = None
            try:
                if big_head or (track and last_lent < 0):
                    frame = zmq.Frame(first, track=track and last_lent < 0, copy=False)
                    send(frame, (_SNDMORE if rest else 0) | _NOBLOCK, copy=False)
                    tracker = frame.tracker
                else:
                    send(first, (_SNDMORE if rest else 0) | _NOBLOCK)
            except zmq.Again:  # its queue is full (signal_hwm): nothing sent
                owner.drop_for_one(sub, "its queue is full")
                continue
            for index, part in enumerate(rest):
                flags = _SNDMORE if index < last - 1 else 0
                if track and index == last_lent:  # its own Frame, tracked
                    frame = zmq.Frame(frames[index + 1], track=True, copy=False)
                    send(frame, flags, copy=False)
                    tracker = frame.tracker
                else:
                    send(part, flags, copy=False)
            if not counted:
                continue
            sub.held += nbytes
            if track and tracker is not None:
                sub.pending.append((tracker, sub.tail + nbytes))
                sub.tail = 0
            else:
                sub.tail += nbytes
