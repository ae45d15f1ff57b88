"""The registry's table: no sockets, no threads, an injected clock.

Indexes by token (uuid), name and address, a heap of deadlines and name
sequences make every request O(1) or O(log n) amortised.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
import uuid as uuid_mod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._common import (
    DEFAULT_ALIVE_TIMEOUT,
    DEFAULT_MAX_ALIVE_TIMEOUT,
    DEFAULT_MAX_DEVICES,
    _BadRequest,
)

__all__ = ["DeviceDirectory", "RegistryEntry"]

# The package's logger, named as before the split: "framerpc.registry".
_log = logging.getLogger(__package__)


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """A snapshot of one entry of a registry (its token left out).

    Attributes
    ----------
    name, device_type, address : str
        As registered (the name as accepted).
    owner : str or None
        Under CURVE, the Z85 public key of the client that registered it;
        None for a registry without security.
    alive_timeout : float
        Seconds the entry stays without a check-in.
    deadline : float
        Clock time after which the entry is removed, unless checked in.
    """

    name: str
    device_type: str
    address: str
    owner: str | None
    alive_timeout: float
    deadline: float


@dataclass(slots=True, eq=False)
class _Device:
    device_type: str
    address: str
    name: str
    alive_timeout: float
    deadline: float
    uuid: str
    owner: str | None
    # Expiry heap: the deadline and ticket of this device's live heap item.
    scheduled: float = 0.0
    ticket: int = -1


class _NameSequence:
    """The names ``base-i``, ``i >= start``, handed out smallest free first.

    ``next`` is the lowest index never examined; ``freed`` a heap of indices
    below it whose names were freed (some may be taken again since: checked
    when popped).
    """

    __slots__ = ("freed", "next", "queued", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.next = start
        self.freed: list[int] = []
        self.queued: set[int] = set()


def _split_index(name: str) -> tuple[str, int] | None:
    """``("cam", 3)`` for ``"cam-3"``; None unless the tail is a plain index."""
    base, sep, tail = name.rpartition("-")
    if not sep or not tail.isdigit() or (tail != "0" and tail[0] == "0"):
        return None
    return base, int(tail)


class DeviceDirectory:
    """The registry's table of devices, without sockets or threads.

    Every request costs O(1) or O(log n) (amortised) in the number n of
    entries: entries are indexed by token (uuid), name and address, and
    deadlines sit in a heap, so nothing scans the table except
    ``devices``, whose cost is that of its own output.

    Ownership: each entry records the ``owner`` given at registration (the
    client's CURVE key, or None without security). Only a request with the
    same owner can replace the entry (same address, or ``overwrite``),
    check in for it or unregister it. With every owner None, as in a
    registry without security, these are the older protocol's rules.

    Not thread-safe: one thread calls it (``DeviceRegistry`` guards it
    with its lock).

    Parameters
    ----------
    default_alive_timeout : float
        Seconds an entry stays without a check-in when its request does
        not say.
    max_devices : int
        Most entries; a REGISTER that would add one more is refused.
    max_alive_timeout : float
        Longest ``alive_timeout`` accepted; longer ones are refused.
    clock : callable
        Returns the current time in seconds (monotonic); injectable so
        that tests move time by hand.
    on_added, on_removed : callable, optional
        Called with each ``RegistryEntry`` added or removed (removal
        covers unregistering, expiry and replacement).

    Raises
    ------
    ValueError
        A limit is not positive, or the default timeout exceeds the cap.
    """

    def __init__(
        self,
        *,
        default_alive_timeout: float = DEFAULT_ALIVE_TIMEOUT,
        max_devices: int = DEFAULT_MAX_DEVICES,
        max_alive_timeout: float = DEFAULT_MAX_ALIVE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        on_added: Callable[[RegistryEntry], Any] | None = None,
        on_removed: Callable[[RegistryEntry], Any] | None = None,
    ) -> None:
        if type(max_devices) is not int or max_devices < 1:
            raise ValueError(f"max_devices must be a positive int, got {max_devices!r}")
        if not (0 < max_alive_timeout < math.inf):
            raise ValueError(
                f"max_alive_timeout must be positive, got {max_alive_timeout!r}"
            )
        if not (0 < default_alive_timeout <= max_alive_timeout):
            raise ValueError(
                f"default_alive_timeout must be in (0, {max_alive_timeout}], "
                f"got {default_alive_timeout!r}"
            )
        self.default_alive_timeout = float(default_alive_timeout)
        self.max_devices = max_devices
        self.max_alive_timeout = float(max_alive_timeout)
        self.clock = clock
        self._on_added = on_added
        self._on_removed = on_removed
        self._by_uuid: dict[str, _Device] = {}  # insertion order: listing order
        self._by_name: dict[str, _Device] = {}
        # (address, owner) -> device: one entry per owner and address (a new
        # one replaces it), while owners never see each other's entries.
        self._by_address: dict[tuple[str, str | None], _Device] = {}
        self._expiry: list[tuple[float, int, _Device]] = []
        self._tickets = itertools.count()
        self._sequences: dict[tuple[str, int], _NameSequence] = {}

    def __len__(self) -> int:
        return len(self._by_uuid)

    # -- requests -----------------------------------------------------------
    def register(
        self,
        device_type: str,
        address: str,
        name: str = "",
        overwrite: bool = False,
        alive_timeout: float | None = None,
        owner: str | None = None,
    ) -> tuple[str, str]:
        """Add a device; returns ``(accepted_name, uuid)``.

        Entries of ``owner`` at ``address`` are replaced (a device that
        restarted). An empty ``name`` becomes ``<device_type>-N``; a name
        held by another entry becomes ``name-N``, unless ``overwrite`` and
        the holder has the same owner, which is then removed. Entries of
        other owners are never touched.

        Raises
        ------
        ValueError
            ``alive_timeout`` is over the cap, or the directory is full.
        """
        timeout = self._check_timeout(alive_timeout)
        now = self.clock()
        self.prune(now)
        same_address = self._by_address.get((address, owner))
        holder = self._by_name.get(name) if name else None
        take_name = (
            holder is not None
            and overwrite
            and holder.owner == owner
            and holder is not same_address
        )
        if len(self) - (same_address is not None) - take_name >= self.max_devices:
            raise _BadRequest(
                f"the registry is full ({self.max_devices} devices, its max_devices)"
            )
        if same_address is not None:
            _log.info("%s re-registers; replacing %r", address, same_address.name)
            self._remove(same_address)
        if not name:
            name = self._free_name(device_type, 0)
        elif name in self._by_name:
            holder = self._by_name[name]
            if take_name:
                _log.info("%s takes the name %r over", address, name)
                self._remove(holder)
            else:
                if overwrite:
                    _log.warning(
                        "%s may not take %r: another client key registered it",
                        address,
                        name,
                    )
                name = self._free_name(name, 1)
        device = _Device(
            device_type,
            address,
            name,
            timeout,
            now + timeout,
            uuid_mod.uuid4().hex,
            owner,
        )
        self._by_uuid[device.uuid] = device
        self._by_name[name] = device
        self._by_address[(address, owner)] = device
        self._schedule(device)
        _log.info("registered %s %r at %s", device_type, name, address)
        if self._on_added is not None:
            self._on_added(self._entry(device))
        return name, device.uuid

    def unregister(self, device_uuid: str, owner: str | None = None) -> bool:
        """Remove the entry ``device_uuid``; False if unknown or not ``owner``'s."""
        device = self._owned(device_uuid, owner, "unregister")
        if device is None:
            return False
        self._remove(device)
        return True

    def check_in(
        self,
        device_uuid: str,
        alive_timeout: float | None = None,
        owner: str | None = None,
    ) -> bool:
        """Move the entry's deadline to now + ``alive_timeout`` (default: the
        entry's own); False if unknown or not ``owner``'s.

        Raises
        ------
        ValueError
            ``alive_timeout`` is over the cap.
        """
        if alive_timeout is not None:
            self._check_timeout(alive_timeout)
        now = self.clock()
        self.prune(now)
        device = self._owned(device_uuid, owner, "check in for")
        if device is None:
            return False
        if alive_timeout is not None:
            device.alive_timeout = float(alive_timeout)
        device.deadline = now + device.alive_timeout
        if device.deadline < device.scheduled:
            self._schedule(device)  # earlier than its heap item: a new item
        return True

    def devices(self) -> dict[str, tuple[str, str]]:
        """``{name: (device_type, address)}``, in registration order."""
        return {d.name: (d.device_type, d.address) for d in self._by_uuid.values()}

    def listing(self) -> dict[str, list[str]]:
        """``{name: [device_type, address]}``: the LIST_DEVICES payload, made
        in one pass (at 50,000 entries every allocation counts)."""
        return {d.name: [d.device_type, d.address] for d in self._by_uuid.values()}

    def entry(self, name: str) -> RegistryEntry | None:
        """The entry named ``name``, or None."""
        device = self._by_name.get(name)
        return None if device is None else self._entry(device)

    def prune(self, now: float | None = None) -> int:
        """Remove the entries whose deadline passed; returns how many.

        Costs O(log n) per heap item due, nothing when none is.
        """
        if now is None:
            now = self.clock()
        removed = 0
        # self._expiry, not a local: a removal may rebuild the heap.
        while self._expiry and self._expiry[0][0] < now:
            _, ticket, device = heapq.heappop(self._expiry)
            if device.ticket != ticket or self._by_uuid.get(device.uuid) is not device:
                continue  # stale: the device left, or has a newer item
            if device.deadline < now:
                _log.info("device %s missed its deadline", device.name)
                self._remove(device)
                removed += 1
            else:
                self._schedule(device)  # checked in since: due later
        return removed

    # -- internals ----------------------------------------------------------
    def _check_timeout(self, alive_timeout: float | None) -> float:
        if alive_timeout is None:
            return self.default_alive_timeout
        if not (0 < alive_timeout < math.inf):
            raise _BadRequest(
                f"field 'alive_timeout' must be positive, got {alive_timeout!r}"
            )
        if alive_timeout > self.max_alive_timeout:
            raise _BadRequest(
                f"field 'alive_timeout' must be at most {self.max_alive_timeout:g} s "
                f"(the registry's max_alive_timeout), got {alive_timeout!r}"
            )
        return float(alive_timeout)

    def _owned(self, device_uuid: str, owner: str | None, what: str) -> _Device | None:
        device = self._by_uuid.get(device_uuid)
        if device is None:
            _log.debug("request for unknown uuid %s", device_uuid)
            return None
        if device.owner != owner:
            # Answered like an unknown token: the reply tells nothing.
            _log.warning("a client key may not %s %r: not its owner", what, device.name)
            return None
        return device

    @staticmethod
    def _entry(device: _Device) -> RegistryEntry:
        return RegistryEntry(
            device.name,
            device.device_type,
            device.address,
            device.owner,
            device.alive_timeout,
            device.deadline,
        )

    def _schedule(self, device: _Device) -> None:
        device.scheduled, device.ticket = device.deadline, next(self._tickets)
        heapq.heappush(self._expiry, (device.deadline, device.ticket, device))
        self._compact()

    def _compact(self) -> None:
        if len(self._expiry) > 2 * len(self._by_uuid) + 64:
            # Mostly stale items (devices gone): rebuild, O(n) once per n
            # stale items, so O(1) amortised.
            self._expiry = [(d.scheduled, d.ticket, d) for d in self._by_uuid.values()]
            heapq.heapify(self._expiry)

    def _remove(self, device: _Device) -> None:
        del self._by_uuid[device.uuid]
        del self._by_name[device.name]
        del self._by_address[(device.address, device.owner)]
        self._name_freed(device.name)
        self._compact()
        _log.info(
            "removed %s %r at %s", device.device_type, device.name, device.address
        )
        if self._on_removed is not None:
            self._on_removed(self._entry(device))

    def _free_name(self, base: str, start: int) -> str:
        """The free name ``base-i`` with the smallest ``i >= start``."""
        sequence = self._sequences.get((base, start))
        if sequence is None:
            sequence = self._sequences[(base, start)] = _NameSequence(start)
        while sequence.freed:
            index = heapq.heappop(sequence.freed)
            sequence.queued.discard(index)
            if f"{base}-{index}" not in self._by_name:
                return f"{base}-{index}"
        # Each index is passed over once: amortised O(1) per name.
        while f"{base}-{sequence.next}" in self._by_name:
            sequence.next += 1
        sequence.next += 1
        return f"{base}-{sequence.next - 1}"

    def _name_freed(self, name: str) -> None:
        split = _split_index(name)
        if split is None:
            return
        base, index = split
        for start in (0, 1):
            sequence = self._sequences.get((base, start))
            if sequence is None or not start <= index < sequence.next:
                continue
            if index not in sequence.queued:
                sequence.queued.add(index)
                heapq.heappush(sequence.freed, index)
            if len(sequence.queued) == sequence.next - start:
                del self._sequences[(base, start)]  # all free: start afresh
