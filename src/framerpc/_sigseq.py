"""Sequence numbers of signal emissions, and property snapshots.

Server side: ``Sequencer`` numbers each signal's emissions (1, 2, ... per
signal name, under the server's signal lock so that numbers follow the
order on the wire) and carries a random per-server ``epoch``, so that a
restarted server is told apart from a gap. ``read_property`` reads a
property together with its notify signal's current number, atomically
with respect to changes made through the property (``notify_lock``).

Client side: ``SeqTracker`` checks each received emission's number
against the previous one of the same signal, counts and logs gaps, and
drops emissions with malformed or repeated numbers. ``connect_snapshot``
implements ``RPCSignal.connect(callback, snapshot=True)``.

Wire keys (native signal header): ``q`` the sequence number, ``ep`` the
epoch; both absent in emissions of older servers and never in JSON.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._ratelog import RateLimitedLog

__all__ = [
    "SequenceState",
    "Sequencer",
    "SeqTracker",
    "connect_snapshot",
    "notify_lock",
    "read_property",
]

_log = logging.getLogger(__name__)

#: Header keys of a native signal emission (and of a property read's info).
KEY_SEQ = "q"
KEY_EPOCH = "ep"
#: Largest sequence number or epoch accepted (msgpack's unsigned 64-bit
#: range; anything else is hostile or broken).
_MAX_SEQ = (1 << 64) - 1
#: Attribute of a server object holding its notify lock.
_LOCK_ATTR = "_framerpc_notify_lock"
#: Emissions in a row numbered below the last one after which a receiver
#: takes the numbers as they come again: a bogus jump ahead (a broken or
#: hostile publisher) must not make it drop a signal for good.
RESYNC_AFTER = 8


# -- server side --------------------------------------------------------------
class Sequencer:
    """Per-signal emission counters of one server.

    Attributes
    ----------
    epoch : int
        Random 48-bit number of this server instance; a client seeing it
        change knows the server restarted and its numbers started again.
    """

    def __init__(self) -> None:
        self.epoch = random.getrandbits(48)
        self._counts: dict[str, int] = {}

    def stamp(self, name: str) -> int:
        """Number of the next emission of ``name`` (call under the lock that
        orders the emissions on the wire)."""
        seq = self._counts.get(name, 0) + 1
        self._counts[name] = seq
        return seq

    def current(self, name: str) -> int:
        """Number of the last emission of ``name`` (0: none yet)."""
        return self._counts.get(name, 0)


def notify_lock(obj: Any) -> threading.RLock:
    """The re-entrant lock serialising changes of ``obj``'s notifying
    properties (set and emit) with snapshot reads; made on first use."""
    namespace = getattr(obj, "__dict__", None)
    if not isinstance(namespace, dict):
        return _SHARED_LOCK
    lock = namespace.get(_LOCK_ATTR)
    if lock is None:
        lock = namespace.setdefault(_LOCK_ATTR, threading.RLock())  # atomic
    return lock


_SHARED_LOCK = threading.RLock()  # objects without a __dict__


def read_property(
    server: Any, name: str, prop: Any, sequencer: Sequencer
) -> tuple[Any, dict | None]:
    """Value of property ``name`` of ``server``, and the reply info telling
    which emission of its notify signal it corresponds to (``prop`` is
    the ``RPCProperty``).

    Returns
    -------
    tuple
        ``(value, info)``; ``info`` is ``{"q": seq, "ep": epoch}`` for a
        property with a notify signal, else None. Every change made through
        the property and emitted with a number up to ``seq`` is reflected
        in ``value``; every later one has a higher number.
    """
    signal = getattr(prop, "notify", None)
    notify = getattr(signal, "name", None)
    if notify is None:
        return getattr(server, name), None
    with notify_lock(server):
        value = getattr(server, name)
        seq = sequencer.current(notify)
    return value, {KEY_SEQ: seq, KEY_EPOCH: sequencer.epoch}


# -- client side --------------------------------------------------------------
@dataclass
class SequenceState:
    """What a client learnt from a signal's sequence numbers.

    Attributes
    ----------
    last : int or None
        Number of the last emission received (None: none yet, or the
        server does not number its emissions).
    epoch : int or None
        The server instance's epoch (changes when the server restarts).
    gaps : int
        Times one or more emissions were missing before the one received.
    missed : int
        Emissions missing in those gaps, in total.
    restarts : int
        Times the epoch changed (a server restart: numbering restarts;
        not counted as a gap).
    rejected : int
        Emissions dropped for a malformed, repeated or older number.
    """

    last: int | None = None
    epoch: int | None = None
    gaps: int = 0
    missed: int = 0
    restarts: int = 0
    rejected: int = 0
    # numbers in a row not above ``last`` (see SeqTracker.accept)
    behind: int = field(default=0, repr=False)


def _valid(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _MAX_SEQ


class SeqTracker:
    """Checks the numbers of one receiver's emissions (its thread only)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._gap_log = RateLimitedLog(_log)
        self._bad_log = RateLimitedLog(_log)
        # a publisher changing epochs at each emission must not flood the log
        self._restart_log = RateLimitedLog(_log)  # restarts are news: info()

    def accept(self, state: SequenceState, name: str, seq: Any, epoch: Any) -> bool:
        """Whether to pass on an emission of signal ``name`` numbered ``seq``
        in ``epoch`` (both None from an older server); updates ``state``,
        the signal's ``SequenceState``."""
        if seq is None and epoch is None:  # an older server: nothing to check
            return True
        if not (_valid(seq) and _valid(epoch)):
            state.rejected += 1
            self._bad_log.warning(
                "signal %s from %s: dropped an emission with a malformed "
                "sequence number (q=%.40r, ep=%.40r)",
                name,
                self.url,
                seq,
                epoch,
            )
            return False
        if state.epoch != epoch:
            if state.epoch is not None:
                state.restarts += 1
                self._restart_log.info(
                    "signal %s from %s: server restarted, numbering starts "
                    "again at %d (was %s)",
                    name,
                    self.url,
                    seq,
                    state.last,
                )
            state.epoch, state.last, state.behind = epoch, seq, 0
            return True
        last = state.last if state.last is not None else seq - 1
        if seq <= last:
            state.behind += 1
            if state.behind < RESYNC_AFTER:
                state.rejected += 1
                self._bad_log.warning(
                    "signal %s from %s: dropped emission %d, not after %d",
                    name,
                    self.url,
                    seq,
                    last,
                )
                return False
            self._bad_log.warning(
                "signal %s from %s: %d emissions in a row numbered at most "
                "%d; taking the numbers from %d on",
                name,
                self.url,
                state.behind,
                last,
                seq,
            )
            state.last, state.behind = seq, 0
            return True
        state.behind = 0
        if seq > last + 1:
            state.gaps += 1
            state.missed += seq - last - 1
            self._gap_log.warning(
                "signal %s from %s: %d emission(s) lost before number %d "
                "(%d gaps so far)",
                name,
                self.url,
                seq - last - 1,
                seq,
                state.gaps,
            )
        state.last = seq
        return True


class _SnapshotListener:
    """Connected in place of a ``snapshot=True`` callback: holds back the
    emissions received while the snapshot is read, then passes on only
    those numbered after it. Compares equal to its callback, so that
    ``disconnect(callback)`` finds it."""

    def __init__(self, signal: Any, callback: Callable[..., Any]) -> None:
        self.signal = signal
        self.callback = callback
        self._lock = threading.Lock()
        self._held: list[tuple[Any, Any, tuple]] | None = []
        self._epoch: int | None = None
        self._seq: int | None = None  # drop emissions up to this in _epoch

    def __call__(self, *args: Any) -> None:
        state: SequenceState = self.signal.sequence
        seq, epoch = state.last, state.epoch  # of the emission being made
        with self._lock:
            if self._held is not None:
                self._held.append((seq, epoch, args))
                return
            if self._covered(seq, epoch):
                return
        self.callback(*args)

    def _covered(self, seq: Any, epoch: Any) -> bool:
        """Whether the snapshot already reflects emission ``seq``."""
        return (
            self._seq is not None
            and epoch == self._epoch
            and seq is not None
            and seq <= self._seq
        )

    def release(self, value: Any, seq: int | None, epoch: int | None) -> None:
        """Deliver the snapshot ``value`` (read at ``seq``, ``epoch``), then
        the held emissions after it, and pass on the later ones."""
        with self._lock:  # the receiver thread waits meanwhile: order kept
            self._seq, self._epoch = seq, epoch
            held, self._held = self._held or [], None
            self.callback(value)
            for e_seq, e_epoch, args in held:
                if not self._covered(e_seq, e_epoch):
                    try:
                        self.callback(*args)
                    except Exception:
                        name = self.signal.name
                        _log.exception("a listener of signal %s raised", name)

    def abandon(self) -> None:
        """The snapshot could not be read: disconnect."""
        try:
            self.signal.disconnect(self)
        except ValueError:
            pass

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _SnapshotListener):
            return self is other
        return bool(self.callback == other)

    def __hash__(self) -> int:
        return hash(self.callback)


def bind_snapshots(client: Any, signals: dict[str, Any]) -> None:
    """Give each notify signal of ``client``'s remote properties (declared
    on its interface class with ``notify=``) the reader that
    ``connect(..., snapshot=True)`` uses."""
    for klass in reversed(type(client).__mro__):
        for name, attr in vars(klass).items():
            if not isinstance(attr, property):
                continue
            notify = getattr(attr, "notify", None)
            signal = signals.get(getattr(notify, "name", None) or "")
            if signal is not None:
                signal.snapshot_reader = functools.partial(_read_remote, client, name)


def _read_remote(client: Any, name: str) -> tuple[Any, dict | None]:
    """Read property ``name`` through ``client``: its value and the reply's
    info (the sequence number it corresponds to; None from older servers)."""
    from .errors import RemoteError
    from .wire.messages import Request, RPCEvents

    reply = client._request(
        Request(RPCEvents.PROPERTY_GET, next(client._ids), name=name), client._timeout
    )
    if not reply.ok:
        raise RemoteError(reply.error, reply.traceback)
    return reply.value, reply.info


def connect_snapshot(signal: Any, callback: Callable[..., Any]) -> None:
    """``signal.connect(callback, snapshot=True)``: see ``RPCSignal.connect``.

    Raises
    ------
    TypeError
        The signal is not a client-side notify signal of a property, or
        ``callback`` is a weak reference.
    Exception
        Whatever reading the property raised (then nothing stays connected).
    """
    reader = getattr(signal, "snapshot_reader", None)
    if reader is None:
        raise TypeError(
            f"{signal!r} is not the notify signal of a remote property: "
            "snapshot=True needs one (on a client proxy)"
        )
    if isinstance(callback, weakref.ref):
        raise TypeError("snapshot=True takes a callable, not a weak reference")
    with signal._lock:
        if any(c == callback for c in signal.connections):
            return  # already connected: nothing, as for connect()
    listener = _SnapshotListener(signal, callback)
    signal.connect(listener)  # first: no change after the read is missed
    try:
        value, info = reader()
    except BaseException:
        listener.abandon()
        raise
    seq = epoch = None
    if (
        isinstance(info, dict)
        and _valid(info.get(KEY_SEQ))
        and _valid(info.get(KEY_EPOCH))
    ):
        seq, epoch = info[KEY_SEQ], info[KEY_EPOCH]
    elif info is not None:
        _log.warning("snapshot of %s: malformed sequence info %.80r", signal.name, info)
    listener.release(value, seq, epoch)
