"""Signal emissions carrying frames through shared memory (issue 14).

A same-host client whose RPC connection shook hands (``SHM_HELLO``,
``server.shm_frames``) claims its own fan-out subscriber (``server.fanout``;
``wire.shm``, "Signals"): it names the subscriber id its emissions carry,
the server sends that subscriber alone a random nonce, and the client
hands it back on the same connection. Only the owner of a subscription
sees its nonce: no client can bind another's subscriber or pin its slots.

Then each top-level argument array of ``shm_threshold`` bytes or more of
an emission is placed once for all bound subscribers: a ``FramePool``
frame in shared memory is referred to in place (no copy) for at most half
the pool's slots at a time, any other array is copied once into this
module's arena (bounded by ``shm_max_bytes``, as the replies' arena;
each holder counted the whole segment against its share,
``shm_client_share``, see ``shm_share``).
Each slot counts its holders (RPC connections, once per reference sent);
each release (``rl`` or ``SHM_RELEASE``, routed here by
``ShmServer.release`` for slots from ``SIGNAL_SLOT_BASE``) takes one off;
the slot is free when none is left (``shm_signal_holders``). References
come back without a release when the send is refused (a full queue) and
when ``ShmServer`` forgets the holder (goodbye, process ended,
unreachable). A subscriber that departs (found by the fan-out) is only
unbound: its client, still connected, may hold the arrays sent to it (a
viewer that closed its subscription keeps its last frames), and a slot
given back would be refilled under them. The client's word takes back
the rest: when its subscription ends while it stays connected, it sends
``SHM_SUBSCRIBER`` with ``[SUBSCRIPTION_ENDED, id, held]`` (``ended``),
and the references sent to that subscriber beyond the arrays ``held``
lists (sent, never received) come back (``shm_signal_reclaimed``).
References sent to a subscription that vanished unnoticed come back as
well when the client's claim of its new one says it does not hold them
(``shm_share.unheld``). Until then they count against its slots and
share. A subscriber holding ``shm_max_slots`` references or its share of
the arena, or a full arena, gets today's frames (``shm_signal_fallbacks``),
as does everyone else (other hosts, JSON, unclaimed, ``shm`` off on
either side).

Threads: ``publish`` runs in an emitting thread under the server's
signal lock, ``claim`` (and ``ended``), ``release`` and ``forget`` in the
serving thread, ``departed`` under the signal lock in the thread that
read the input; a lock of its own guards the slots (taken after the
signal lock, never before).
"""

from __future__ import annotations

import collections
import itertools
import logging
import secrets
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from .._ratelog import RateLimitedLog
from ..transport import shm as segments
from ..wire import framing
from ..wire import shm as wire_shm
from ..wire.messages import PROTOCOL_VERSION, RPCEvents, SignalEmission
from .shm_arena import Arena, first_generation, pool_frame_at
from .shm_share import copy_bytes, unheld, within
from .shm_signal_holders import Holders
from .shm_signal_holders import Slot as _Slot

if TYPE_CHECKING:
    from .fanout import Fanout, _Subscriber
    from .shm_frames import ShmServer

__all__ = ["ShmSignals"]

_log = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)
#: Most claims waiting for their nonce (older ones are dropped).
_MAX_PENDING = 64
_NONCE = 16
_NO = wire_shm.hello_reply(False)
_YES = wire_shm.hello_reply(True)


class ShmSignals:
    """References in signal emissions for claimed subscribers (see the
    module).

    Parameters
    ----------
    shm : ShmServer
        The server's shared-memory clients (who may claim).
    fanout : Fanout
        The native signal socket's fanout.
    signal_lock : threading.Lock
        The server's signal lock (the fanout's socket is used under it).
    """

    def __init__(self, shm: ShmServer, fanout: Fanout, signal_lock: Any) -> None:
        self._shm = shm
        self._fanout = fanout
        self._signal_lock = signal_lock
        self.threshold = shm.threshold
        self.max_bytes = shm.max_bytes
        self.max_slots = shm.max_slots
        self.share = shm.share  # bytes of copies one holder may hold
        #: fan-out subscriber id -> the RPC identity that claimed it
        self.claims: dict[int, bytes] = {}
        #: nonce -> (subscriber id, identity, generation at its sending)
        self._pending: dict[bytes, tuple[int, bytes, int]] = {}
        self._bad_word = RateLimitedLog(_log)
        self._holders = Holders(self._free)
        self._slots = self._holders.slots  # number -> _Slot
        self._free_ids: list[int] = []
        self._next_id = wire_shm.SIGNAL_SLOT_BASE
        self._generations = itertools.count(first_generation())
        self._held = self._holders.held  # RPC identity -> references held
        self._bytes = self._holders.bytes  # RPC identity -> copies' bytes held
        self._pinned: dict[int, int] = {}  # pool (free list id) -> slots held
        self._arena = Arena(self.max_bytes, split=False)  # np.copyto: no worker
        self._lock = threading.Lock()
        self._fallback_log = RateLimitedLog(_log)
        self.refs = 0
        self.copies = 0
        self.fallbacks = 0
        self.returned = 0
        self.bogus = 0
        self.lost = 0  # references taken back at a claim again (never got)
        fanout.shm = self  # attached to both
        shm.signals = self

    # -- claims (serving thread) -------------------------------------------

    def claim(self, identity: bytes, value: Any) -> dict:
        """Answer ``SHM_SUBSCRIBER`` (``wire.shm``, "Signals"): ``[id]``,
        ``[nonce]``, or ``[nonce, held]`` (a claim again: see ``_settle``)."""
        if identity not in self._shm.clients or type(value) is not list:
            return _NO
        if len(value) == 3 and value[0] == wire_shm.SUBSCRIPTION_ENDED:
            return self.ended(identity, value)
        item = value[0] if 1 <= len(value) <= 2 else None
        if item is None:
            return _NO
        if type(item) is int:
            return _YES if self._send_nonce(identity, item) else _NO
        if type(item) is not bytes:
            return _NO
        with self._lock:
            entry = self._pending.pop(item, None)
            if entry is None or entry[1] != identity:
                self.bogus += 1
                return _NO
            if entry[0] not in self._fanout.subscribers:  # left meanwhile
                return _NO
            self.claims[entry[0]] = identity
            if len(value) == 2:
                self._settle(identity, value[1], entry[2], entry[0])
        _log.debug("subscriber %d bound to client %s", entry[0], identity.hex())
        return _YES

    def _settle(self, identity: bytes, held: Any, marker: int, ident: int) -> None:
        """Take back what a claim again says was lost (``shm_share``)."""
        for number, count in unheld(self._slots, identity, held, marker):
            self.lost += count
            self._holders.take_back(number, identity, count, keep=ident)

    def _send_nonce(self, identity: bytes, ident: int) -> bool:
        nonce = secrets.token_bytes(_NONCE)
        head = _header(SignalEmission("", [nonce]))
        fanout = self._fanout
        with self._signal_lock:
            if fanout.sock.closed:
                return False
            try:
                fanout.read_input()  # a subscriber that has just arrived
                sub = fanout.subscribers.get(ident)
                if sub is None:
                    return False
                fanout.sock.send(sub.prefix + head, _NOBLOCK)
            except zmq.ZMQError:  # its queue is full, or closing
                return False
            # slots of lower generations went out before the nonce
            marker = next(self._generations)
        with self._lock:
            while len(self._pending) >= _MAX_PENDING:
                del self._pending[next(iter(self._pending))]
            self._pending[nonce] = (ident, identity, marker)
        return True

    def departed(self, ident: int) -> None:
        """A subscriber left (the fanout forgot it, under the signal lock):
        unbind it. Its references stay until its client's releases, its
        word (``ended``) or its end: it may hold the arrays still."""
        with self._lock:
            who = self.claims.pop(ident, None)
            if who is not None:  # its client's word may still name it
                self._holders.left(ident, who)

    def ended(self, identity: bytes, value: list) -> dict:
        """The word ``[SUBSCRIPTION_ENDED, id, held]``: subscription ``id``
        ended, its client holds ``held`` (``[[slot, generation], ...]``,
        nil: too many to list). Unbind it, take back its references beyond
        ``held`` (none if nil); a malformed word or one naming a subscriber
        of another connection changes nothing (``{"shm": false}``)."""
        ident, held = value[1], value[2]
        pairs, bad = ([], 0) if held is None else wire_shm.parse_releases(held)
        keep = None if held is None else collections.Counter(pairs)
        with self._lock:
            own = type(ident) is int and identity in (
                self.claims.get(ident),
                self._holders.gone.get(ident),
            )
            if bad or not own:
                self.bogus += 1
                self._bad_word.warning(
                    "ignored the end of signal subscriber %r of client %s: "
                    "malformed or not its own",
                    ident,
                    identity.hex(),
                )
                return _NO
            taken = self._holders.ended(ident, identity, keep, self.claims)
        _log.debug(
            "subscriber %d of client %s ended: %d signal references taken back",
            ident,
            identity.hex(),
            taken,
        )
        return _YES

    # -- emissions (an emitting thread, under the signal lock) ---------------

    def publish(self, emission: SignalEmission) -> list[_Subscriber]:
        """Send the bound subscribers that can take them ``emission``'s
        arrays as references; the subscribers left for today's frames."""
        subs = list(self._fanout.subscribers.values())
        args = emission.args
        big = [
            i
            for i, arg in enumerate(args)
            if type(arg) is np.ndarray
            and arg.nbytes >= self.threshold
            and not arg.dtype.hasobject
            and arg.dtype.fields is None
        ]
        if not big:
            return subs
        with self._lock:
            claims, held, cap = self.claims, self._held, self.max_slots
            copied = copy_bytes(args, big)  # what its copies may take
            targets, rest = [], []
            for sub in subs:
                who = claims.get(sub.ident)
                if who is None:
                    rest.append(sub)
                elif held.get(who, 0) + len(big) > cap:
                    self._fallback("a subscriber holds %d slots", held.get(who, 0))
                    rest.append(sub)
                elif not within(self._bytes.get(who, 0), copied, self.share):
                    self._fallback("a subscriber holds %d bytes", self._bytes[who])
                    rest.append(sub)
                else:
                    targets.append((sub, who))
            if not targets:
                return subs
            refs, slots = self._place_all(args, big)
            if refs is None:
                return subs
            self._holders.give(slots, [(sub.ident, who) for sub, who in targets])
        xmap = wire_shm.make_signal_args(args, refs)
        frames = framing.encode(_header_dict(emission, xmap))
        before = [sub.dropped for sub, _ in targets]
        self._fanout._send_each(frames, len(_HEAD_PREFIX), [s for s, _ in targets])
        with self._lock:
            for (sub, _), dropped in zip(targets, before, strict=True):
                if sub.dropped != dropped:  # refused: its references come back
                    self.returned += 1
                    for number, slot in slots:
                        self._holders.withdraw(number, slot, sub.ident)
                else:
                    self.refs += len(slots)
        return rest

    def _place_all(
        self, args: list, big: list[int]
    ) -> tuple[dict[int, dict] | None, list[tuple[int, _Slot]]]:
        refs: dict[int, dict] = {}
        slots: list[tuple[int, _Slot]] = []
        for index in big:
            placed = self._place(args[index])
            if placed is None:  # undo the others: the socket takes them all
                for number, slot in slots:
                    if not slot.holders:
                        self._free(number)
                return None, []
            refs[index], number, slot = placed
            slots.append((number, slot))
        return refs, slots

    def _place(self, value: np.ndarray) -> tuple[dict, int, _Slot] | None:
        segment: segments.Segment | None  # None: the arena is full
        pooled = pool_frame_at(value)
        if pooled is not None:
            lease, segment, offset = pooled
            pool = id(lease._free)
            # at most half its slots (the camera keeps the rest, however
            # long subscribers hold frames): beyond, one copy
            depth = segment.size // segments.round_pages(value.nbytes)
            pinned = self._pinned.get(pool, 0)
            if pinned < depth // 2:
                placed = self._slot(segment, offset, value, value, None)
                placed[2].pool = pool
                self._pinned[pool] = pinned + 1
                return placed  # 0 copies
        segment = self._arena.take(value.nbytes)
        if segment is None:
            self._fallback("signal arena full (%d bytes)", self._arena.bytes)
            return None
        target = np.frombuffer(segment.map, value.dtype, value.size).reshape(
            value.shape
        )
        np.copyto(target, value, casting="no")
        self.copies += 1
        return self._slot(segment, 0, value, None, segment)

    def _slot(
        self,
        segment: segments.Segment,
        offset: int,
        value: np.ndarray,
        frame: Any,
        arena: Any,
    ) -> tuple[dict, int, _Slot]:
        if self._free_ids:
            number = self._free_ids.pop()
        else:
            number, self._next_id = self._next_id, self._next_id + 1
        slot = _Slot(next(self._generations), frame, arena)
        self._slots[number] = slot
        ref = wire_shm.make_ref(
            segment.name,
            offset,
            value.nbytes,
            number,
            slot.generation,
            value.dtype,
            value.shape,
        )
        return ref, number, slot

    def _fallback(self, why: str, *args: Any) -> None:
        self.fallbacks += 1
        self._fallback_log.warning(
            "shared memory for signals exhausted, frames sent: " + why, *args
        )

    # -- releases (serving thread) --------------------------------------------

    def release(self, owner: bytes, pairs: list[tuple[int, int]]) -> list:
        """Take one reference of ``owner`` off each signal slot ``pairs``
        names; the pairs that name replies' slots (below
        ``SIGNAL_SLOT_BASE``)."""
        rest = []
        with self._lock:
            for number, generation in pairs:
                if number < wire_shm.SIGNAL_SLOT_BASE:
                    rest.append((number, generation))
                    continue
                if not self._holders.release(owner, number, generation):
                    self.bogus += 1
        return rest

    def _free(self, number: int) -> None:
        slot = self._slots.pop(number)
        if slot.arena is not None:
            self._arena.give_back(slot.arena)
        if slot.pool:
            left = self._pinned.pop(slot.pool) - 1
            if left:
                self._pinned[slot.pool] = left
        slot.frame = None  # a pool frame's slot goes back with it
        self._free_ids.append(number)

    def holds(self, identity: bytes) -> bool:
        """Whether ``identity`` holds references (ShmServer probes it)."""
        return identity in self._held

    def forget(self, identity: bytes) -> None:
        """``ShmServer`` forgot ``identity``: unbind its subscribers and
        take back every reference it holds."""
        with self._lock:
            for ident in [i for i, who in self.claims.items() if who == identity]:
                del self.claims[ident]
            self._holders.forget(identity)

    def rename(self, old: bytes, new: bytes) -> None:
        """A client reconnected (``ShmServer``): its references move along."""
        with self._lock:
            for ident, who in list(self.claims.items()):
                if who == old:
                    self.claims[ident] = new
            self._holders.rename(old, new)

    def close(self) -> None:
        """Drop every slot and unlink the arena (the server stopped)."""
        with self._lock:
            self.claims.clear()
            self._holders.clear()
            self._arena.close()

    def stats(self) -> dict[str, int]:
        """The counters ``RPCServer.stats`` adds (see there)."""
        # read first: a count seen means its slots are out of slots_held
        reclaimed = self._holders.reclaimed
        return {
            "shm_signal_refs": self.refs,
            "shm_signal_copies": self.copies,
            "shm_signal_fallbacks": self.fallbacks,
            "shm_signal_refused": self.returned,
            "shm_signal_bogus": self.bogus,
            "shm_signal_slots_held": len(self._slots),
            "shm_signal_bound": len(self.claims),
            "shm_signal_lost": self.lost,
            "shm_signal_reclaimed": reclaimed,
        }


#: What ``fanout.encode_native`` starts with, up to the subscriber id.
_HEAD_PREFIX = b"\x87\xa1_\xc4\x04\0\0\0\0"


def _header_dict(emission: SignalEmission, x: Any) -> dict:
    """A native emission's header (``fanout.encode_native``'s layout: the
    subscriber id first, 7 keys) with ``x`` as given."""
    return {
        "_": b"\0\0\0\0",
        "v": PROTOCOL_VERSION,
        "e": RPCEvents.EMIT_SIGNAL.value,
        "s": emission.name,
        "x": x,
        "q": emission.seq,
        "ep": emission.epoch,
    }


def _header(emission: SignalEmission) -> bytes:
    """A small emission's one frame, without its subscriber prefix."""
    frames = framing.encode(_header_dict(emission, emission.args))
    return bytes(frames[0])[len(_HEAD_PREFIX) :]
