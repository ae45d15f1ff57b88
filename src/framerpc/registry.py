"""Device registry: a directory of running devices, and the calls to use it.

:class:`DeviceRegistry` is a thread that keeps ``name -> (device_type,
address)`` for the devices that registered and forgets those that stop
checking in. The module helpers (:func:`register_device` and friends) are
the client side, and :class:`RegistryLink` keeps one server registered
from inside its serve loop without ever blocking it.

The registry answers both the native msgpack messages of
:mod:`framerpc.protocol` and the JSON messages of the older protocol
(:mod:`framerpc.legacy`), told apart by frame 0; the request logic lives
once in :meth:`DeviceRegistry._handle_request`, which takes and returns
plain ``(event, payload)`` pairs.

The helpers and :class:`RegistryLink` send JSON, which framerpc and older
registries both understand: a device works with either registry without
configuration, and an older registry is never sent msgpack it cannot parse.
JSON messages carry no request id, so each request uses a socket of its own
(helpers) or one request is in flight per socket (link).
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import itertools
import logging
import math
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from . import legacy, protocol, transport
from .errors import ProtocolError
from .protocol import RegistryEvents, RegistryMessage
from .security import ClientKeys, Security, peer_key

__all__ = [
    "AliveCheckState",
    "DeviceDirectory",
    "DeviceRegistry",
    "RegistryEntry",
    "RegistryLink",
    "list_devices",
    "register_device",
    "send_alive_check",
    "unregister_device",
]

_log = logging.getLogger(__name__)

#: Seconds a device stays listed without checking in, as in the older API.
DEFAULT_ALIVE_TIMEOUT = 20.0
#: Most entries of a registry, unless its ``max_devices`` says otherwise: a
#: flood of registrations cannot grow it without bound (an entry with its
#: indexes takes about 1 KB).
DEFAULT_MAX_DEVICES = 10_000
#: Longest ``alive_timeout`` a registry accepts unless its
#: ``max_alive_timeout`` says otherwise: a silent device is forgotten at
#: the latest 10 minutes after its last check-in.
DEFAULT_MAX_ALIVE_TIMEOUT = 600.0
#: Most routing frames before the empty delimiter (REQ through proxies).
_MAX_ENVELOPE = 8
#: Most messages handled in a row before the loop checks stop and deadlines.
_MAX_BATCH = 100
#: Unanswered check-ins after which a link considers the registry gone.
_MAX_UNANSWERED = 3
#: Shortest check-in interval of a link (s), whatever its alive timeout.
_MIN_INTERVAL = 0.05
#: Registry messages are tiny: refuse large ones before they are read.
_REGISTRY_OPTIONS = dataclasses.replace(
    transport.DEFAULT_OPTIONS, max_message_size=1 << 20
)
_WILDCARD_HOSTS = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]"}
#: Requests answered in JSON: the older protocol's three, and LIST_DEVICES so
#: that list_devices() gets a clean UNSUPPORTED from an older registry.
_JSON_REQUESTS = frozenset(
    {
        RegistryEvents.REGISTER,
        RegistryEvents.UNREGISTER,
        RegistryEvents.CHECK_ALIVE,
        RegistryEvents.LIST_DEVICES,
    }
)

DeviceCallback = Callable[[str, str, str], Any]


class AliveCheckState(enum.Enum):
    """Outcome of :func:`send_alive_check`."""

    ok = "ok"
    unknown = "unknown"
    unreachable = "unreachable"


class _BadRequest(ValueError):
    """A request payload lacks a field or has one of the wrong type."""


_MISSING = object()


def _field(
    payload: dict, key: str, kinds: tuple[type, ...], default: Any = _MISSING
) -> Any:
    """Return ``payload[key]`` after checking its type (bool is not a number)."""
    if key not in payload:
        if default is _MISSING:
            raise _BadRequest(f"payload lacks field {key!r}")
        return default
    value = payload[key]
    if type(value) not in kinds:
        names = " or ".join(kind.__name__ for kind in kinds)
        raise _BadRequest(f"field {key!r} must be {names}, got {type(value).__name__}")
    return value


def _timeout_field(payload: dict) -> float | None:
    """The request's ``alive_timeout``; None when it does not say."""
    value = _field(payload, "alive_timeout", (int, float, type(None)), None)
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0:
        raise _BadRequest(f"field 'alive_timeout' must be positive, got {value!r}")
    return float(value)


def _unsupported(event: Any, error: str) -> tuple[RegistryEvents, dict]:
    req_event = str(event) if isinstance(event, str) else None
    return RegistryEvents.UNSUPPORTED, {"req_event": req_event, "error": error}


def _split_envelope(frames: list) -> tuple[list, list] | None:
    """Split ``frames`` after the first empty frame; None without one."""
    for index, frame in enumerate(frames[:_MAX_ENVELOPE]):
        if len(frame) == 0:
            return frames[: index + 1], frames[index + 1 :]
    return None


def _connect_url(endpoint: str) -> str:
    """URL a client on this machine uses to reach a bound ``endpoint``."""
    kind, host, port = transport.parse_url(endpoint)
    if kind != "tcp" or host not in _WILDCARD_HOSTS:
        return endpoint
    return f"tcp://{_WILDCARD_HOSTS[host]}:{port}"


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
    :meth:`devices`, whose cost is that of its own output.

    Ownership: each entry records the ``owner`` given at registration (the
    client's CURVE key, or None without security). Only a request with the
    same owner can replace the entry (same address, or ``overwrite``),
    check in for it or unregister it. With every owner None, as in a
    registry without security, these are the older protocol's rules.

    Not thread-safe: one thread calls it (:class:`DeviceRegistry` guards it
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
        Called with each :class:`RegistryEntry` added or removed (removal
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
        # address -> uuid -> device: several owners may share an address
        self._by_address: dict[str, dict[str, _Device]] = {}
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
        same_address = [
            d for d in self._by_address.get(address, {}).values() if d.owner == owner
        ]
        holder = self._by_name.get(name) if name else None
        take_name = (
            holder is not None
            and overwrite
            and holder.owner == owner
            and holder.address != address
        )
        if len(self) - len(same_address) - take_name >= self.max_devices:
            raise _BadRequest(
                f"the registry is full ({self.max_devices} devices, its max_devices)"
            )
        for old in same_address:
            _log.info("%s re-registers; replacing %r", address, old.name)
            self._remove(old)
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
        self._by_address.setdefault(address, {})[device.uuid] = device
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
        same_address = self._by_address[device.address]
        del same_address[device.uuid]
        if not same_address:
            del self._by_address[device.address]
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


class DeviceRegistry(threading.Thread):
    """Directory of the devices on a network, served from its own thread.

    The socket is bound in the constructor, so a busy port raises here and
    :attr:`port` is known before :meth:`start`. The table itself is a
    :class:`DeviceDirectory`: every request costs O(1) or O(log n).

    Names have owners. A registration returns a token (its uuid) and only
    that token unregisters or checks in for the entry. With ``security``
    (CURVE), the entry also belongs to the client key that registered it:
    only that key can check in for it, unregister it, or replace it (by
    registering the same address again, or the same name with
    ``overwrite``); a device restarted with the same key takes its entry
    back at once. Another key, allowed or not, can neither evict nor
    overwrite it: asking for a held name gets it the next free one
    (``name-1``...), as any name collision does, and registering a held
    address adds an entry of its own beside the holder's. Check-ins and
    unregistrations for another key's entry are answered ``success:
    false``, as for an unknown token. An entry that expired frees its name.
    Without ``security`` the older protocol's rules hold (same address
    replaces, ``overwrite`` takes a name): such a registry trusts its
    network.

    Parameters
    ----------
    context : zmq.Context
        Context of the registry socket.
    addr : str
        Host to bind (``"*"`` for all interfaces), or a full URL
        (``tcp://host:port``, ``ipc://path``, ``inproc://name``), in which
        case ``port`` is ignored.
    port : str, int or None
        TCP port; ``"*"``, ``"0"``, 0 or None let the OS pick a free one.
    default_alive_timeout : float
        Seconds a device stays listed without checking in, when its
        messages do not say.
    poll_interval : float
        Longest wait (s) for a message before the loop checks deadlines
        and :meth:`stop`; capped at 0.1.
    security : Security, optional
        CURVE settings of the registry socket; entries are then owned by
        client keys (see above).
    max_devices : int
        Most entries (default 10,000); a REGISTER beyond gets an error
        reply (UNSUPPORTED).
    max_alive_timeout : float
        Longest ``alive_timeout`` accepted (default 600 s); a REGISTER or
        CHECK_ALIVE asking for more gets an error reply.
    clock : callable
        Monotonic time in seconds used for deadlines (default
        :func:`time.monotonic`); tests pass a clock they move by hand.

    Attributes
    ----------
    context, addr
        As given.
    port : int or None
        The bound TCP port (None for ipc:// and inproc://).
    url : str
        URL a client on this machine can connect to.

    Raises
    ------
    zmq.ZMQError
        The address cannot be bound (e.g. the port is taken).
    ValueError
        ``addr`` is a URL of an unsupported transport, or a limit is not
        positive.
    """

    def __init__(
        self,
        context: zmq.Context,
        addr: str = "*",
        port: str | int | None = "5555",
        *,
        default_alive_timeout: float = DEFAULT_ALIVE_TIMEOUT,
        poll_interval: float = 0.1,
        security: Security | None = None,
        max_devices: int = DEFAULT_MAX_DEVICES,
        max_alive_timeout: float = DEFAULT_MAX_ALIVE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name="framerpc-registry", daemon=True)
        self.context = context
        self.addr = addr
        if "://" in addr:
            bind_url = addr
        elif port in ("*", "0", 0, None):
            bind_url = f"tcp://{addr}"
        else:
            bind_url = f"tcp://{addr}:{port}"
        transport.check_url(bind_url, for_bind=True)
        self._clock = clock
        # Callbacks are collected during a request and fired after it,
        # outside the lock (a callback may call get_devices()).
        self._events: list[tuple[bool, RegistryEntry]] = []
        self._directory = DeviceDirectory(
            default_alive_timeout=default_alive_timeout,
            max_devices=max_devices,
            max_alive_timeout=max_alive_timeout,
            clock=clock,
            on_added=lambda entry: self._events.append((True, entry)),
            on_removed=lambda entry: self._events.append((False, entry)),
        )
        self._poll_ms = max(1, int(min(poll_interval, 0.1) * 1000))
        self._secured = security is not None
        # Under CURVE the owner of an entry is the client key, which libzmq
        # reports (as the User-Id) only when a ZAP handler runs.
        self._keys_lease: ClientKeys | None = None
        if security is not None and security.allowed_clients_dir is None:
            self._keys_lease = ClientKeys(context)
        options = dataclasses.replace(_REGISTRY_OPTIONS, security=security)
        try:
            self._sock = transport.make_socket(
                context, zmq.ROUTER, options, server=True
            )
        except BaseException:
            self._release_keys()
            raise
        try:
            self.endpoint, self.port = transport.bind(self._sock, bind_url)
        except BaseException:
            transport.close_quietly(self._sock)
            self._release_keys()
            raise
        self.url = _connect_url(self.endpoint)
        # The directory is changed only by the registry thread, under the
        # lock, so that get_devices() from other threads sees a consistent view.
        self._lock = threading.Lock()
        self._added_callbacks: list[DeviceCallback] = []
        self._removed_callbacks: list[DeviceCallback] = []
        self._stop_event = threading.Event()
        # Decides who closes the socket when stop() races with start().
        self._life_lock = threading.Lock()
        self._running = False

    # -- public API -------------------------------------------------------
    def get_devices(self) -> dict[str, tuple[str, str]]:
        """Return ``{name: (device_type, address)}``: a copy, from any thread."""
        with self._lock:
            return self._directory.devices()

    def get_entry(self, name: str) -> RegistryEntry | None:
        """The entry named ``name`` (owner, deadline...), or None; any thread."""
        with self._lock:
            return self._directory.entry(name)

    def add_new_device_callback(self, callback: DeviceCallback) -> None:
        """Call ``callback(device_type, address, name)`` for each new device.

        Callbacks run in the registry thread; their exceptions are logged.
        """
        with self._lock:
            self._added_callbacks.append(callback)

    def add_device_removed_callback(self, callback: DeviceCallback) -> None:
        """Call ``callback(device_type, address, name)`` for each removed device.

        Removal covers unregistering, a missed deadline and replacement by a
        device taking the name or the address. Runs in the registry thread.
        """
        with self._lock:
            self._removed_callbacks.append(callback)

    def stop(self) -> None:
        """Ask the loop to stop; returns at once (then :meth:`join`).

        Safe to call twice. A registry never started closes its socket now.
        """
        with self._life_lock:
            self._stop_event.set()
            if not self._running:
                self._close_socket()

    def run(self) -> None:
        """Serve requests and prune silent devices until :meth:`stop`."""
        with self._life_lock:
            if self._stop_event.is_set():
                self._close_socket()
                return
            self._running = True
        _log.info("device registry listening at %s", self.endpoint)
        try:
            while not self._stop_event.is_set():
                try:
                    if self._sock.poll(self._poll_ms, zmq.POLLIN):
                        self._serve_batch()
                    self._prune()
                except zmq.ContextTerminated:
                    _log.warning("registry context terminated; stopping")
                    break
                except Exception:
                    # A failed turn must not end the registry; the wait stops
                    # a persistent fault from spinning the CPU.
                    _log.exception("device registry loop error")
                    self._stop_event.wait(self._poll_ms / 1000)
        finally:
            self._close_socket()
            _log.info("device registry at %s stopped", self.endpoint)

    # -- socket side ------------------------------------------------------
    def _release_keys(self) -> None:
        if self._keys_lease is not None:
            self._keys_lease.close()

    def _close_socket(self) -> None:
        if self._sock.closed:
            return
        # close() frees the address later, in ZeroMQ's I/O thread; unbinding
        # first frees an inproc name at once (and a TCP port sooner), so a
        # registry restarted at the same URL can bind.
        try:
            self._sock.unbind(self.endpoint)
        except zmq.ZMQError:
            pass
        transport.close_quietly(self._sock)
        self._release_keys()

    def _serve_batch(self) -> None:
        for _ in range(_MAX_BATCH):
            try:
                # Frames (copy=False) carry the sender's CURVE key (User-Id).
                received = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            owner = peer_key(received[0]) if self._secured else None
            self._prune()
            self._process([frame.bytes for frame in received], owner)

    def _prune(self) -> None:
        with self._lock:
            self._directory.prune()
        self._fire_events()

    def _process(self, frames: list, owner: str | None = None) -> None:
        """Answer one received message (routing envelope included)."""
        split = _split_envelope(frames)
        if split is None:
            _log.warning("dropped a registry message without routing envelope")
            return
        envelope, body = split
        if body and protocol.is_legacy_frame(body[0]):
            self._process_json(envelope, body, owner)
            return
        try:
            message = protocol.decode_registry(body)
        except ProtocolError as exc:
            header = protocol.peek_header(body[0]) if body else {}
            event, request_id = header.get("e"), header.get("i")
            event = event if isinstance(event, str) else None
            request_id = request_id if type(request_id) is int else 0
            _log.warning("malformed registry message: %s", exc)
            reply_event, reply_payload = _unsupported(event, str(exc))
        else:
            request_id = message.request_id
            try:
                reply_event, reply_payload = self._handle_request(
                    message.event, message.payload, owner
                )
            except Exception as exc:
                _log.exception("registry failed on %s", message.event)
                reply_event, reply_payload = _unsupported(
                    message.event, f"internal error: {type(exc).__name__}: {exc}"
                )
        reply = RegistryMessage(reply_event, reply_payload, request_id)
        try:
            self._sock.send_multipart(
                envelope + protocol.encode_registry(reply), zmq.NOBLOCK
            )
        except zmq.ZMQError as exc:  # peer gone or queue full: drop the reply
            _log.warning("could not send a registry reply: %s", exc)

    def _process_json(self, envelope: list, body: list, owner: str | None) -> None:
        """Answer a JSON message as the older protocol's table says (plus
        LIST_DEVICES); unknown events get exactly ``{"req_event": E}``."""
        reply_event: RegistryEvents = RegistryEvents.UNSUPPORTED
        try:
            message = legacy.decode_registry(body)
        except ProtocolError as exc:
            _log.warning("malformed JSON registry message: %s", exc)
            reply_payload: dict = {"req_event": legacy.peek_event(body[0])}
        else:
            event = message.event
            if event not in _JSON_REQUESTS:
                _log.warning("unsupported JSON registry event %s", event)
                reply_payload = {"req_event": str(event)}
            else:
                try:
                    reply_event, reply_payload = self._handle_request(
                        event, message.payload, owner
                    )
                except Exception as exc:
                    _log.exception("registry failed on %s", event)
                    reply_event, reply_payload = _unsupported(
                        event, f"internal error: {type(exc).__name__}: {exc}"
                    )
        reply = legacy.encode_registry(RegistryMessage(reply_event, reply_payload))
        try:
            self._sock.send_multipart([*envelope, reply], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone or queue full: drop the reply
            _log.warning("could not send a registry reply: %s", exc)

    # -- request logic (no sockets) ---------------------------------------
    def _handle_request(
        self, event: str, payload: dict, owner: str | None = None
    ) -> tuple[RegistryEvents, dict]:
        """Apply one request from ``owner`` and return its reply as
        ``(event, payload)``.

        Never raises for a bad request: it answers UNSUPPORTED with the reason.
        """
        handlers: dict[str, Callable[[dict, str | None], tuple]] = {
            RegistryEvents.REGISTER: self._on_register,
            RegistryEvents.UNREGISTER: self._on_unregister,
            RegistryEvents.CHECK_ALIVE: self._on_check_alive,
            RegistryEvents.LIST_DEVICES: self._on_list_devices,
        }
        handler = handlers.get(event) if isinstance(event, str) else None
        if handler is None:
            _log.warning("unsupported registry event %r", event)
            return _unsupported(event, f"{event!s} is not a registry request")
        if type(payload) is not dict:
            return _unsupported(event, "payload must be a map")
        if self._secured and owner is None and handler != self._on_list_devices:
            # Fail closed: without the key nobody could own the entry.
            return _unsupported(event, f"{event!s}: the client's CURVE key is unknown")
        try:
            with self._lock:
                return handler(payload, owner)
        except _BadRequest as exc:
            _log.warning("bad %s request: %s", event, exc)
            return _unsupported(event, f"{event!s}: {exc}")
        finally:
            self._fire_events()

    def _on_register(
        self, payload: dict, owner: str | None
    ) -> tuple[RegistryEvents, dict]:
        name, device_uuid = self._directory.register(
            _field(payload, "device_type", (str,)),
            _field(payload, "addr", (str,)),
            _field(payload, "name", (str,), ""),
            _field(payload, "overwrite", (bool,), False),
            _timeout_field(payload),
            owner,
        )
        return RegistryEvents.REGISTER_ACK, {"name": name, "uuid": device_uuid}

    def _on_unregister(
        self, payload: dict, owner: str | None
    ) -> tuple[RegistryEvents, dict]:
        success = self._directory.unregister(_field(payload, "uuid", (str,)), owner)
        return RegistryEvents.ACK, {"req_event": "UNREGISTER", "success": success}

    def _on_check_alive(
        self, payload: dict, owner: str | None
    ) -> tuple[RegistryEvents, dict]:
        device_uuid = _field(payload, "uuid", (str,))
        # Without a timeout in the check, keep the one given at registration.
        success = self._directory.check_in(device_uuid, _timeout_field(payload), owner)
        return RegistryEvents.ACK, {"req_event": "CHECK_ALIVE", "success": success}

    def _on_list_devices(
        self, payload: dict, owner: str | None
    ) -> tuple[RegistryEvents, dict]:
        devices = {
            name: [device_type, address]
            for name, (device_type, address) in self._directory.devices().items()
        }
        return RegistryEvents.DEVICES, {"devices": devices}

    def _fire_events(self) -> None:
        """Run the callbacks of the entries added and removed (registry thread)."""
        if not self._events:
            return
        events, self._events = self._events, []
        with self._lock:
            added, removed = list(self._added_callbacks), list(self._removed_callbacks)
        for is_added, entry in events:
            for callback in added if is_added else removed:
                try:
                    callback(entry.device_type, entry.address, entry.name)
                except Exception:
                    _log.exception("registry callback %r failed", callback)


# -- client side ------------------------------------------------------------


def _close_now(sock: zmq.Socket | None) -> None:
    """Close without linger: an unanswered request must not arrive later."""
    if sock is not None and not sock.closed:
        sock.setsockopt(zmq.LINGER, 0)
        transport.close_quietly(sock)


def _decode_reply(frames: list) -> RegistryMessage:
    """The JSON registry reply in ``frames`` (envelope, if any, dropped)."""
    split = _split_envelope(frames)
    return legacy.decode_registry(split[1] if split is not None else frames)


def _client_options(security: Security | None) -> transport.SocketOptions:
    if security is None:
        return transport.DEFAULT_OPTIONS
    return dataclasses.replace(transport.DEFAULT_OPTIONS, security=security)


def _exchange(
    context: zmq.Context,
    registry_url: str,
    event: RegistryEvents,
    payload: dict,
    timeout: float,
    security: Security | None = None,
) -> RegistryMessage:
    """Send one JSON request on a short-lived DEALER socket; return the reply.

    A fresh socket per request stands in for request ids: the first reply
    it receives answers this request.

    Raises
    ------
    TimeoutError
        No reply within ``timeout`` ms (the registry could not even be
        reached, or it did not answer).
    ProtocolError
        The reply is malformed.
    """
    transport.check_url(registry_url, for_bind=False)
    deadline = time.monotonic() + timeout / 1000

    def remaining_ms() -> int:
        return max(0, int((deadline - time.monotonic()) * 1000))

    frame = legacy.encode_registry(RegistryMessage(event, payload))
    sock = transport.make_socket(context, zmq.DEALER, _client_options(security))
    try:
        sock.connect(registry_url)
        # IMMEDIATE is set: a DEALER is writable only once connected, so an
        # absent registry shows here instead of as a blocked send.
        if not sock.poll(remaining_ms(), zmq.POLLOUT):
            raise TimeoutError(f"registry at {registry_url} is unreachable")
        # The empty delimiter makes REP and ROUTER registries both answer.
        sock.send_multipart([b"", frame], zmq.NOBLOCK)
        if sock.poll(remaining_ms(), zmq.POLLIN):
            return _decode_reply(sock.recv_multipart())
        raise TimeoutError(
            f"registry at {registry_url} did not answer {event} within {timeout} ms"
        )
    except zmq.Again as exc:  # writable, then the connection dropped
        raise TimeoutError(f"registry at {registry_url} is unreachable") from exc
    finally:
        _close_now(sock)


def _expect(reply: RegistryMessage, event: RegistryEvents) -> dict:
    """Payload of ``reply`` if it is ``event``; RuntimeError on UNSUPPORTED."""
    if reply.event is RegistryEvents.UNSUPPORTED:
        raise RuntimeError(
            f"registry refused {reply.payload.get('req_event')}: "
            f"{reply.payload.get('error', '')}"
        )
    if reply.event is not event:
        raise ProtocolError(f"expected {event} from the registry, got {reply.event}")
    return reply.payload


def _ack_success(reply: RegistryMessage) -> bool:
    success = _expect(reply, RegistryEvents.ACK).get("success")
    if type(success) is not bool:
        raise ProtocolError("registry ACK lacks a bool 'success'")
    return success


def register_device(
    context: zmq.Context,
    registry_url: str,
    device_type: str,
    addr: str,
    name: str = "",
    overwrite: bool = True,
    alive_timeout: float = 20,
    timeout: float = 1000,
    *,
    security: Security | None = None,
) -> tuple[str, str]:
    """Register a device with the registry at ``registry_url``.

    Parameters
    ----------
    context : zmq.Context
        Context for the short-lived request socket.
    registry_url : str
        The registry's URL, e.g. ``tcp://host:5555``.
    device_type, addr, name : str
        Device type, its server URL and the proposed name (empty: the
        registry names it ``<device_type>-N``).
    overwrite : bool
        Take the name from a device already holding it; otherwise the
        registry picks ``name-1``, ``name-2``...
    alive_timeout : float
        Seconds the registry keeps the device without a check-in.
    timeout : float
        Longest wait for the answer (ms).

    Returns
    -------
    tuple of str
        ``(accepted_name, uuid)``.

    Raises
    ------
    TimeoutError
        The registry did not answer in time.
    RuntimeError
        The registry refused the request (UNSUPPORTED).
    """
    payload = {
        "device_type": device_type,
        "addr": addr,
        "name": name,
        "overwrite": overwrite,
        "alive_timeout": alive_timeout,
    }
    reply = _exchange(
        context, registry_url, RegistryEvents.REGISTER, payload, timeout, security
    )
    body = _expect(reply, RegistryEvents.REGISTER_ACK)
    accepted, device_uuid = body.get("name"), body.get("uuid")
    if type(accepted) is not str or type(device_uuid) is not str:
        raise ProtocolError("REGISTER_ACK needs a str name and uuid")
    return accepted, device_uuid


def unregister_device(
    context: zmq.Context,
    registry_url: str,
    uuid: str,
    timeout: float = 1000,
    *,
    security: Security | None = None,
) -> bool:
    """Remove the device ``uuid``; False when the registry did not know it.

    Raises
    ------
    TimeoutError
        The registry did not answer within ``timeout`` ms.
    RuntimeError
        The registry refused the request (UNSUPPORTED).
    """
    reply = _exchange(
        context,
        registry_url,
        RegistryEvents.UNREGISTER,
        {"uuid": uuid},
        timeout,
        security,
    )
    return _ack_success(reply)


def send_alive_check(
    context: zmq.Context,
    registry_url: str,
    uuid: str,
    alive_timeout: float = 20,
    timeout: float = 1000,
    *,
    security: Security | None = None,
) -> AliveCheckState:
    """Check in for device ``uuid``: its deadline moves to now + ``alive_timeout``.

    Returns
    -------
    AliveCheckState
        ``ok``; ``unknown`` when the registry does not know the uuid;
        ``unreachable`` when it did not answer within ``timeout`` ms.
    """
    payload = {"uuid": uuid, "alive_timeout": alive_timeout}
    try:
        reply = _exchange(
            context,
            registry_url,
            RegistryEvents.CHECK_ALIVE,
            payload,
            timeout,
            security,
        )
    except TimeoutError:
        return AliveCheckState.unreachable
    return AliveCheckState.ok if _ack_success(reply) else AliveCheckState.unknown


def list_devices(
    context: zmq.Context,
    registry_url: str,
    timeout: float = 1000,
    *,
    security: Security | None = None,
) -> dict[str, tuple[str, str]]:
    """Return the registry's ``{name: (device_type, address)}``.

    Raises
    ------
    TimeoutError
        The registry did not answer within ``timeout`` ms.
    """
    reply = _exchange(
        context, registry_url, RegistryEvents.LIST_DEVICES, {}, timeout, security
    )
    devices = _expect(reply, RegistryEvents.DEVICES).get("devices")
    if type(devices) is not dict:
        raise ProtocolError("DEVICES needs a 'devices' map")
    try:
        return {
            name: (device_type, address)
            for name, (device_type, address) in devices.items()
        }
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed DEVICES entry: {exc}") from exc


class RegistryLink:
    """Keeps one server registered, from inside its single-threaded loop.

    :meth:`register` blocks once; then :meth:`tick`, called every loop turn,
    never blocks: it checks in every ``alive_timeout / 3`` seconds on a
    long-lived DEALER socket and reads answers without waiting. A registry
    that forgot the device (it restarted) gets a new REGISTER under the
    current name; one that stays silent for 3 check-ins is reported gone,
    and check-ins go on until it is back.

    Messages are JSON, understood by framerpc and older registries alike.
    They carry no request id, so one request at most is in flight per
    socket: the socket of an unanswered request is replaced before the
    next one, and a late answer can never be taken for the next request's.
    The first check-in comes within a third of the older registries'
    default 20 s deadline, since they may ignore ``alive_timeout`` in
    REGISTER.

    Parameters
    ----------
    context : zmq.Context
        Context for the link's sockets.
    registry_url : str
        The registry's URL.
    device_type, name, address : str
        Device type, proposed name and the server's URL.
    alive_timeout : float
        Seconds the registry keeps the device without a check-in.
    overwrite : bool
        For the first registration: take the name from its holder.
    security : Security, optional
        CURVE settings of the link's sockets (this device's key pair and the
        registry's public key).
    clock : callable
        Monotonic time in seconds that schedules the check-ins (default
        :func:`time.monotonic`); tests pass a clock they move by hand.

    Attributes
    ----------
    name : str
        The name the registry accepted (may change on re-registration).
    uuid : str or None
        The registry's id of the device; None when not registered.
    registry_url : str
        As given.
    """

    def __init__(
        self,
        context: zmq.Context,
        registry_url: str,
        device_type: str,
        name: str,
        address: str,
        alive_timeout: float,
        overwrite: bool = True,
        *,
        security: Security | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        transport.check_url(registry_url, for_bind=False)
        self.context = context
        self._clock = clock
        self.security = security
        self.registry_url = registry_url
        self.device_type = device_type
        self.name = name
        self.address = address
        self.alive_timeout = float(alive_timeout)
        self.overwrite = overwrite
        self.uuid: str | None = None
        self.interval = max(self.alive_timeout / 3, _MIN_INTERVAL)
        self._sock: zmq.Socket | None = None
        self._pending: RegistryEvents | None = None  # request awaiting a reply
        self._outbox: list | None = None  # its frames, until the socket takes them
        self._sent_at = 0.0  # when the socket took them
        self._unanswered = 0
        self._next_check = 0.0
        self._closed = False

    def register(self, timeout: float = 1000) -> tuple[str, str]:
        """Register now (blocking); returns ``(accepted_name, uuid)``.

        Raises
        ------
        TimeoutError
            The registry did not answer within ``timeout`` ms.
        RuntimeError
            The registry refused the request.
        """
        self.name, self.uuid = register_device(
            self.context,
            self.registry_url,
            self.device_type,
            self.address,
            self.name,
            overwrite=self.overwrite,
            alive_timeout=self.alive_timeout,
            timeout=timeout,
            security=self.security,
        )
        self._pending, self._outbox, self._unanswered = None, None, 0
        self._next_check = self._clock() + self._first_check_delay()
        return self.name, self.uuid

    def tick(self, now: float | None = None) -> None:
        """Check in when due and read answers; never blocks.

        Parameters
        ----------
        now : float, optional
            The link's clock read by the caller, to save a call.
        """
        if self._closed or self.uuid is None:
            return
        if now is None:
            now = self._clock()
        try:
            self._read_replies()
            self._flush()
            if now < self._next_check:
                return
            if self._pending is not None and now - self._sent_at < self.interval:
                return  # it went out late (connecting): give it its full time
            self._next_check = now + self.interval
            if self._pending is not None:
                self._count_unanswered()
            self._send(
                RegistryEvents.CHECK_ALIVE,
                {"uuid": self.uuid, "alive_timeout": self.alive_timeout},
            )
        except zmq.ZMQError as exc:
            # The serve loop must go on; a fresh socket may do better.
            _log.warning("registry link error: %s", exc)
            self._reset_socket()

    def unregister(self, timeout: float = 1000) -> bool:
        """Unregister (blocking, best effort); False if it did not happen.

        Check-ins stop either way. Never raises for a silent registry.
        """
        device_uuid, self.uuid = self.uuid, None
        self._pending, self._outbox = None, None
        if device_uuid is None:
            return False
        try:
            return unregister_device(
                self.context,
                self.registry_url,
                device_uuid,
                timeout=timeout,
                security=self.security,
            )
        except (TimeoutError, RuntimeError, ProtocolError, zmq.ZMQError) as exc:
            _log.warning("could not unregister %r: %s", self.name, exc)
            return False

    def close(self) -> None:
        """Close the link's socket; idempotent. Does not unregister."""
        self._closed = True
        _close_now(self._sock)
        self._sock = None

    # -- internals ----------------------------------------------------------
    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            options = _client_options(self.security)
            self._sock = transport.make_socket(self.context, zmq.DEALER, options)
            self._sock.connect(self.registry_url)
        return self._sock

    def _reset_socket(self) -> None:
        # Dropping the socket drops requests still queued for a dead peer,
        # and reconnects where the transport would not (inproc).
        _close_now(self._sock)
        self._sock = None

    def _send(self, event: RegistryEvents, payload: dict) -> None:
        self._pending = event
        message = RegistryMessage(event, payload)
        self._outbox = [b"", legacy.encode_registry(message)]
        self._flush()

    def _flush(self) -> None:
        """Hand the outgoing request to the socket once it is connected."""
        if self._outbox is None:
            return
        try:
            self._socket().send_multipart(self._outbox, zmq.NOBLOCK)
        except zmq.Again:
            return  # not connected yet (IMMEDIATE): retried next tick
        self._outbox = None
        self._sent_at = self._clock()

    def _count_unanswered(self) -> None:
        sent = self._outbox is None
        self._pending, self._outbox = None, None
        self._unanswered += 1
        if self._unanswered == _MAX_UNANSWERED:
            _log.warning(
                "registry at %s seems gone (%d check-ins unanswered); retrying",
                self.registry_url,
                self._unanswered,
            )
        # A request that went out may still be answered: only a new socket
        # cannot receive that late answer. One never sent (not connected)
        # needs none, but now and then a fresh socket reconnects where the
        # transport would not (inproc); not every time, as connecting takes time.
        if sent or self._unanswered % _MAX_UNANSWERED == 0:
            self._reset_socket()

    def _read_replies(self) -> None:
        sock = self._sock
        while sock is not None and sock.poll(0, zmq.POLLIN):
            frames = sock.recv_multipart(zmq.NOBLOCK)
            try:
                reply = _decode_reply(frames)
            except ProtocolError as exc:
                _log.warning("malformed reply from the registry: %s", exc)
                continue
            if self._pending is None:
                _log.debug("ignored an unexpected registry reply (%s)", reply.event)
                continue
            self._pending = None
            if self._unanswered >= _MAX_UNANSWERED:
                _log.info("registry at %s answers again", self.registry_url)
            self._unanswered = 0
            self._on_reply(reply)

    def _first_check_delay(self) -> float:
        return min(self.interval, DEFAULT_ALIVE_TIMEOUT / 3)

    def _on_reply(self, reply: RegistryMessage) -> None:
        payload = reply.payload
        if reply.event is RegistryEvents.ACK:
            if payload.get("success") is False:
                # The registry restarted or pruned us: register again, without
                # taking the name from whoever may hold it now.
                _log.info("registry forgot %r; registering again", self.name)
                self._send(
                    RegistryEvents.REGISTER,
                    {
                        "device_type": self.device_type,
                        "addr": self.address,
                        "name": self.name,
                        "overwrite": False,
                        "alive_timeout": self.alive_timeout,
                    },
                )
        elif reply.event is RegistryEvents.REGISTER_ACK:
            name, device_uuid = payload.get("name"), payload.get("uuid")
            if type(name) is str and type(device_uuid) is str:
                if name != self.name:
                    _log.info("registered again as %r (was %r)", name, self.name)
                else:
                    _log.info("registered again as %r", name)
                self.name, self.uuid = name, device_uuid
                self._next_check = min(
                    self._next_check, self._clock() + self._first_check_delay()
                )
            else:
                _log.warning("malformed REGISTER_ACK: %r", payload)
        elif reply.event is RegistryEvents.UNSUPPORTED:
            _log.warning("registry refused a request: %s", payload.get("error"))
        else:
            _log.warning("unexpected registry reply %s", reply.event)
