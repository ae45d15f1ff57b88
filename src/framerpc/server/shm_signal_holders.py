"""Who holds a signal's shared-memory slot (issue 14, ``shm_signals``):
each reference sent to a claimed fan-out subscriber, counted for the
client that releases it (its RPC connection) and remembered per
subscriber, so that the client's word on a subscription that ended takes
back what was sent to it and never received.

- A slot's ``holders`` counts references per client: the caps and shares
  (``shm_max_slots``, ``shm_share``) are per client, and a release names
  a slot, not a subscriber.
- Its ``subs`` names the subscribers they were sent to, in the order they
  were sent, one entry per reference (a slot belongs to one emission, and
  an emission reaches a subscriber once). A client's release takes off
  its newest entry: a client reads one signal connection at a time, and a
  subscription of it that vanished before the server noticed is older
  than the one it reads.
- A subscriber that departs takes nothing back by itself: its client may
  still hold the arrays (a viewer that closed its subscription keeps its
  last frames), and a slot given back would be refilled under them. The
  client's word (``ended``: the subscription ended, these are the signal
  arrays I hold) takes back that subscriber's references beyond those it
  lists, counted in ``reclaimed``: sent, never received. With them go
  those of the client's older subscribers (lower ids), bound or departed:
  a client has one signal socket, closed now, and an older subscriber is
  a connection of that socket that dropped (``claim`` again); whether a
  release came before the word or after, nothing it sent them stays.
- A client forgotten (``forget``) loses them all.

Not thread-safe: ``ShmSignals`` uses it under its own lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_GONE", "Holders", "Slot"]

#: Most departed subscribers remembered for their client's word.
MAX_GONE = 4096


class Slot:
    """One signal slot: its ``generation``, the pool ``frame`` it keeps out
    (or None), the ``pool`` it pins (``id()`` of its free list, or 0), the
    ``arena`` segment it took (or None), and who holds it."""

    __slots__ = ("arena", "frame", "generation", "holders", "pool", "subs")

    def __init__(self, generation: int, frame: Any, arena: Any) -> None:
        self.generation = generation
        self.frame = frame  # a pool frame (keeps its pool slot out) or None
        self.pool = 0  # id() of the frame's pool's free list (counted pins)
        self.arena = arena  # an arena segment, back to the free list after
        self.holders: dict[bytes, int] = {}  # RPC identity -> references
        self.subs: dict[int, bytes] = {}  # subscriber id -> its RPC identity

    def _unsend(self, owner: bytes, count: int, keep: int | None) -> None:
        """Forget ``count`` of ``owner``'s subscribers' entries, newest
        first, ``keep``'s last."""
        mine = [sub for sub, who in reversed(self.subs.items()) if who == owner]
        if keep in mine:
            mine.remove(keep)
            mine.append(keep)
        for sub in mine[:count]:
            del self.subs[sub]


class Holders:
    """The signal slots and what each client holds of them (see the
    module).

    Parameters
    ----------
    free : callable
        Called with a slot's number once nobody holds it (it gives the
        slot's memory back and removes it from ``slots``).

    Attributes
    ----------
    slots : dict
        Slot number -> ``Slot``.
    held : dict
        RPC identity -> references it holds.
    bytes : dict
        RPC identity -> bytes of the copies' segments it holds (each
        reference counts its whole segment).
    reclaimed : int
        References taken back at a client's word on a subscription that
        ended, and from forgotten clients.
    """

    def __init__(self, free: Callable[[int], None]) -> None:
        self.slots: dict[int, Slot] = {}
        self.held: dict[bytes, int] = {}
        self.bytes: dict[bytes, int] = {}
        self.reclaimed = 0
        #: departed subscriber id -> its client, until the client's word
        self.gone: dict[int, bytes] = {}
        self._free = free

    def give(
        self, slots: list[tuple[int, Slot]], targets: list[tuple[int, bytes]]
    ) -> None:
        """One reference of each of ``slots`` to each ``(subscriber id,
        RPC identity)`` of ``targets``."""
        for _, slot in slots:
            for sub, who in targets:
                slot.holders[who] = slot.holders.get(who, 0) + 1
                slot.subs[sub] = who
        size = sum(slot.arena.size for _, slot in slots if slot.arena)
        for _, who in targets:
            self.held[who] = self.held.get(who, 0) + len(slots)
            if size:
                self.bytes[who] = self.bytes.get(who, 0) + size

    def take_back(
        self,
        number: int,
        owner: bytes,
        count: int,
        sub: int | None = None,
        keep: int | None = None,
    ) -> None:
        """Take ``count`` of ``owner``'s references off slot ``number``:
        subscriber ``sub``'s (one), else those of its newest subscribers,
        ``keep``'s last (a claim again of ``keep``: the references it says
        never arrived went to its other subscribers); frees the slot when
        nobody holds it any more."""
        slot = self.slots[number]
        if sub is not None:
            del slot.subs[sub]
        else:
            slot._unsend(owner, count, keep)
        left = slot.holders[owner] - count
        if left > 0:
            slot.holders[owner] = left
        else:
            del slot.holders[owner]
        held = self.held.get(owner, 0) - count
        if held > 0:
            self.held[owner] = held
        else:
            self.held.pop(owner, None)
        if slot.arena is not None:
            left = self.bytes.pop(owner, 0) - slot.arena.size * count
            if left > 0:
                self.bytes[owner] = left
        if not slot.holders:
            self._free(number)

    def withdraw(self, number: int, slot: Slot, sub: int) -> None:
        """Take back the reference of ``slot`` (number ``number``) sent to
        subscriber ``sub``, if it has it still (a refused send: meanwhile
        the serving thread may have forgotten or renamed its client)."""
        owner = slot.subs.get(sub)
        if owner is not None and self.slots.get(number) is slot:
            self.take_back(number, owner, 1, sub)

    def release(self, owner: bytes, number: int, generation: int) -> bool:
        """One release of ``owner`` for ``(number, generation)``; False
        when it names a slot ``owner`` does not hold."""
        slot = self.slots.get(number)
        if slot is None or slot.generation != generation or owner not in slot.holders:
            return False
        self.take_back(number, owner, 1)
        return True

    def left(self, sub: int, owner: bytes) -> None:
        """Subscriber ``sub`` of client ``owner`` departed: remember it for
        the client's word (the oldest forgotten beyond ``MAX_GONE``: their
        references then stay until the client goes)."""
        while len(self.gone) >= MAX_GONE:
            del self.gone[next(iter(self.gone))]
        self.gone[sub] = owner

    def ended(
        self,
        sub: int,
        owner: bytes,
        keep: Counter | None,
        claims: dict[int, bytes] | None = None,
    ) -> int:
        """Client ``owner`` says its subscription ``sub`` ended and it holds
        the ``[slot, generation]`` pairs ``keep`` counts (None: it did not
        say, nothing is taken back): unbind it (``claims``: subscriber id
        -> client) with the client's older subscribers (see the module),
        and take back the references sent to them beyond those; how many."""
        if claims is not None:
            older = [s for s, who in claims.items() if who == owner and s < sub]
            for ident in [sub, *older]:
                claims.pop(ident, None)
        self.gone.pop(sub, None)
        if keep is None or owner not in self.held:
            return 0
        for ident in [s for s, who in self.gone.items() if who == owner and s < sub]:
            del self.gone[ident]
        taken = 0
        for number, slot in list(self.slots.items()):
            # sub's references first, then those of its older subscribers
            # (a newer one's, none from framerpc, may still arrive: kept)
            mine = [s for s, who in slot.subs.items() if who == owner and s <= sub]
            mine.sort(key=lambda s: s != sub)
            # more references than arrays alive: these never arrived
            extra = len(mine) - keep[(number, slot.generation)]
            for ident in mine[: max(0, extra)]:
                taken += 1
                self.take_back(number, owner, 1, ident)
        self.reclaimed += taken  # once free (stats read unlocked)
        return taken

    def forget(self, identity: bytes) -> None:
        """Take back every reference ``identity`` holds."""
        for sub in [sub for sub, who in self.gone.items() if who == identity]:
            del self.gone[sub]
        if identity not in self.held:
            return
        for number, slot in list(self.slots.items()):
            count = slot.holders.get(identity)
            if count:
                self.take_back(number, identity, count)
                self.reclaimed += count  # once free (stats read unlocked)

    def rename(self, old: bytes, new: bytes) -> None:
        """Client ``old`` is now ``new`` (a reconnection)."""
        for sub, who in self.gone.items():
            if who == old:
                self.gone[sub] = new
        if old in self.bytes:
            self.bytes[new] = self.bytes.pop(old)
        if old not in self.held:
            return
        self.held[new] = self.held.pop(old)
        for slot in self.slots.values():
            if old in slot.holders:
                slot.holders[new] = slot.holders.pop(old)
                for sub, who in slot.subs.items():
                    if who == old:
                        slot.subs[sub] = new

    def clear(self) -> None:
        """Nobody holds anything: free every slot (the server stopped)."""
        self.held.clear()
        self.bytes.clear()
        self.gone.clear()
        for number in list(self.slots):
            slot = self.slots[number]
            slot.holders.clear()
            slot.subs.clear()
            self._free(number)
