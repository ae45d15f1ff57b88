"""Same-host buffer replies through shared memory: the server's slots.

A client that shook hands (``SHM_HELLO``, see ``framerpc.wire.shm``)
receives a buffer method's array of ``SocketOptions.shm_threshold`` bytes
or more as a reference into a segment of ``/dev/shm``:

- a frame of a ``FramePool`` whose slots lie in shared memory is referred
  to where it is (zero copies); the server keeps the frame (hence its
  pool slot) until the client releases it, so it cannot be refilled
  while the client reads it. When the pool has no free slot left, or the
  client holds half its slots already (``shm_share``), the frame is
  copied instead (as below) and its slot returns at once: clients holding
  frames never starve the camera of slots;
- any other array is copied once into a server-owned segment (the
  arena), one segment per slot, reused for arrays of the same size.

Each handout is a slot number and a generation, owned by the client
(routing id) it was sent to until that client releases it. A release
that names a slot the sender does not hold, or an old generation, is
ignored and counted. Bounds: ``shm_max_slots`` handouts per client,
``shm_max_bytes`` of arena segments in all, of which one client may hold
its share (``shm_client_share``, see ``shm_share``), ``_MAX_CLIENTS``
clients.
When a bound is hit the reply goes over the socket as it always did
(counted in ``stats["shm_fallbacks"]``, logged at most once a second):
shared memory never blocks or fails a call.

A client whose process ended (checked every ``_SWEEP_S`` against the
process id and start time named by its probe segment, from the serve
loop and before each reply) gets its slots reclaimed. So does a client
whose connection is gone (closed, or dropped by libzmq when its
heartbeats timed out: a frozen process, a cut link): each sweep sends
the clients holding slots a probe (``wire.shm.encode_probe``), which
the ROUTER (``ROUTER_MANDATORY``) refuses with ``EHOSTUNREACH`` when the
connection is gone. A client unreachable for one heartbeat bound more
(``SocketOptions.dead_peer_ms``, at least ``_SWEEP_S``) loses its slots:
that leaves a client whose link came back the time to shake hands again
with its token, which moves its slots to the new connection. A client
of another pid namespace (a container sharing ``/dev/shm``, see
``transport.shm``) cannot be checked by process id: it is probed, slots
or not, and forgotten only when unreachable.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

import numpy as np
import zmq

from .. import _lifecycle
from .._ratelog import RateLimitedLog
from ..pool import _Lease as _PoolLease
from ..transport import SocketOptions
from ..transport import shm as segments
from ..wire import messages, shmpath
from ..wire import shm as wire_shm
from .shm_arena import Arena, first_generation, pool_frame_at
from .shm_share import Share, share_limit

__all__ = ["ShmServer", "probe"]

_log = logging.getLogger(__name__)

#: How often (s) the serve loop checks that shared-memory clients live.
_SWEEP_S = 1.0
#: Most clients with shared memory at a time (later ones use the socket).
_MAX_CLIENTS = 1024
#: Bytes of the client token at the end of a handshake's nonce.
_TOKEN = 16
#: How long (s) an unreachable client keeps its slots when heartbeats are
#: off (else one heartbeat bound): the default heartbeat bound.
_GRACE_S = 4.0
_PROBE = wire_shm.encode_probe()


def probe(sock: zmq.Socket, identity: bytes) -> bool | None:
    """Send the client of routing id ``identity`` the probe (a reply
    clients drop) on the ROUTER ``sock`` (``ROUTER_MANDATORY``): whether
    its connection is there. False when the ROUTER refuses it with
    EHOSTUNREACH, True when sent or its queue is full, None when the send
    failed otherwise (logged). ETERM is raised."""
    try:
        sock.send_multipart([identity, b"", *_PROBE], zmq.NOBLOCK)
    except zmq.Again:  # its queue is full: the connection is there
        return True
    except zmq.ZMQError as exc:
        if _lifecycle.is_context_terminated(exc):
            raise
        if exc.errno == zmq.EHOSTUNREACH:
            return False
        _log.debug("probe of %s failed: %s", identity.hex(), exc)
        return None
    return True


class _Client:
    __slots__ = ("local", "lost_at", "pid", "share", "slots", "start", "token")

    def __init__(
        self, pid: int, start: int, token: bytes = b"", local: bool = True
    ) -> None:
        self.pid = pid
        self.start = start
        # its process is in our pid namespace (else only probes tell it gone)
        self.local = local
        self.token = token  # names the client across reconnections
        self.slots: set[int] = set()
        self.lost_at: float | None = None  # when a probe first failed
        self.share = Share()  # its copies' bytes and pool frames (shm_share)


class ShmServer:
    """A server's shared-memory clients, slots and arena (see the module).

    Used from the serving thread only; ``stats`` from any.

    Parameters
    ----------
    options : SocketOptions
        ``shm``, ``shm_threshold``, ``shm_max_bytes``, ``shm_max_slots``,
        ``shm_copy_thread``, and the heartbeat bound ``dead_peer_ms``.
    sock : zmq.Socket, optional
        The server's ROUTER (``ROUTER_MANDATORY``), to probe the clients
        holding slots; without it only ended processes are reclaimed.
    """

    def __init__(self, options: SocketOptions, sock: zmq.Socket | None = None) -> None:
        self.enabled = bool(options.shm) and segments.AVAILABLE
        self.threshold = options.shm_threshold
        self.max_bytes = options.shm_max_bytes
        self.max_slots = options.shm_max_slots
        #: bytes of copies one client may hold (``shm_share``)
        self.share = share_limit(self.max_bytes, options.shm_client_share)
        self.clients: dict[bytes, _Client] = {}
        # slot -> (owner, generation, holder, arena): the client it went
        # to, a pool frame that stays out until released (or None), the
        # arena segment that goes back to the free list after (or None);
        # a tuple, not an object: one fewer Python call per reply
        self._handouts: dict[int, tuple[bytes, int, Any, Any]] = {}
        self._free_ids: list[int] = []
        self._next_id = 0
        self._generations = itertools.count(first_generation())
        self._arena = Arena(self.max_bytes, options.shm_copy_thread)
        self._next_sweep = 0.0
        self._next_drop = 0.0
        self._sock = sock
        bound = options.dead_peer_ms
        self._grace = max(_SWEEP_S, _GRACE_S if bound is None else bound / 1000)
        self.probes = 0  # probes sent (tests wait on it)
        self._fallback_log = RateLimitedLog(_log)
        self.replies = 0
        self.copies = 0
        self.fallbacks = 0
        self.bogus_releases = 0
        self.reclaimed = 0
        self.signals: Any = None  # shm_signals.ShmSignals: signals' slots

    # -- handshake ---------------------------------------------------------

    def hello(self, identity: bytes, probe: str, nonce: bytes) -> dict:
        """Answer a client's ``SHM_HELLO``: whether it may use shared memory."""
        capable = False
        owner = segments.parse_name(probe)
        if len(self.clients) >= _MAX_CLIENTS and identity not in self.clients:
            self._drop_unreachable()
        if (
            self.enabled
            and owner is not None
            and owner[0] == os.getuid()
            and (identity in self.clients or len(self.clients) < _MAX_CLIENTS)
            and 8 <= len(nonce) <= 64
        ):
            capable = segments.read_probe(probe, len(nonce)) == nonce
        if capable and identity not in self.clients:
            assert owner is not None
            token = nonce[-_TOKEN:] if len(nonce) >= 2 * _TOKEN else b""
            self.clients[identity] = self._reconnected(identity, owner, token) or (
                _Client(owner[1], owner[2], token, segments.same_namespace(probe))
            )
        _log.debug("shared memory for client %s: %s", identity.hex(), capable)
        return wire_shm.hello_reply(capable)

    def _drop_unreachable(self) -> None:
        """Table full: forget the clients holding no slot whose connection
        is gone (closed without a goodbye, process still alive), which
        ``tick`` never probes; at most once every ``_SWEEP_S``. Without it
        such entries stayed until their process ended, and once
        ``_MAX_CLIENTS`` of them had piled up no client got shared memory."""
        now = time.monotonic()
        if self._sock is None or now < self._next_drop:
            return
        self._next_drop = now + _SWEEP_S
        for identity, client in list(self.clients.items()):
            if client.slots:
                continue  # tick's probes and grace apply
            if probe(self._sock, identity) is False:
                self.forget(identity)

    def _reconnected(
        self, identity: bytes, owner: tuple[int, int, int], token: bytes
    ) -> _Client | None:
        """The entry of the same client (process and token) under an old
        routing id, moved with its slots to ``identity``; None if none."""
        if not token:
            return None
        for old, client in self.clients.items():
            if client.token == token and (client.pid, client.start) == owner[1:]:
                del self.clients[old]
                client.lost_at = None
                if self.signals is not None:
                    self.signals.rename(old, identity)
                for slot in client.slots:
                    self._handouts[slot] = (identity, *self._handouts[slot][1:])
                return client
        return None

    # -- replies -------------------------------------------------------------

    def reply(self, identity: Any, request_id: int, result: tuple) -> list:
        """Frames of a buffer method's reply to the client of routing id
        ``identity`` (a frame or bytes): a reference when it can be one,
        else today's frames. ``result`` was checked already."""
        value, info = result
        clients = self.clients
        if clients:
            # also here: the asyncio serve loop has no tick (its clock
            # test inlined: a Python call per reply less)
            if time.monotonic() >= self._next_sweep:
                self.tick()
            # bytes(b) parses its arguments (1k instructions) to return b
            owner = identity if type(identity) is bytes else bytes(identity)
            client = clients.get(owner)
            if (
                client is not None
                and type(value) is np.ndarray
                and value.nbytes >= self.threshold
                and not value.dtype.hasobject  # pointers: the socket path refuses
            ):
                frames = self._place(owner, client, value, request_id, info)
                if frames is not None:
                    return frames
        return messages.encode_result(request_id, value, info, buffer_reply=True)

    def _place(
        self,
        owner: bytes,
        client: _Client,
        value: np.ndarray,
        request_id: int,
        info: dict,
    ) -> list | None:
        """The reply naming a new slot of ``owner`` (``wire_shm.make_ref``'s
        reference) for ``value``: a pool frame where it lies, held until
        released; any other array copied into an arena segment, last: the
        work before it runs on caches that a copy of megabytes would evict.
        None when a bound is hit. A reply that cannot be made frees the
        slot. (One function: a Python call per reply costs more than the
        code it would share.)"""
        slots = client.slots
        if len(slots) >= self.max_slots:
            self._fallback("client holds %d slots", len(slots))
            return None
        share = client.share
        nbytes = value.nbytes
        pooled = None
        if type(value.base) is _PoolLease:  # only then can it be a pool frame
            pooled = pool_frame_at(value)
        arena: segments.Segment | None = None
        # at most half the pool per client (shm_share)
        if pooled is not None and share.pin(pooled[0], pooled[1], nbytes):
            _, segment, offset = pooled
            name = segment.name
            holder: np.ndarray | None = value  # zero copies: it stays out
        else:
            held = share.bytes  # its share: one copy always (shm_share)
            if held and held + nbytes > self.share:
                self._fallback("client holds %d bytes of copies", held)
                return None
            arena = self._arena.take(nbytes)
            if arena is None:
                self._fallback("arena full (%d bytes)", self._arena.bytes)
                return None
            share.bytes = held + arena.size
            name, offset, holder = arena.name, 0, None
        free_ids = self._free_ids
        if free_ids:
            slot = free_ids.pop()
        else:
            slot = self._next_id
            self._next_id = slot + 1
        generation = next(self._generations)
        self._handouts[slot] = (owner, generation, holder, arena)
        slots.add(slot)
        try:
            frames = shmpath.ref_reply(
                request_id, name, offset, value, slot, generation, info
            )
            if arena is not None:
                shmpath.copy_into(arena, value, self._arena.split)
                self.copies += 1
        except BaseException:  # an info dict msgpack refuses
            self._free(slot)
            raise
        self.replies += 1
        return frames

    def _fallback(self, why: str, *args: Any) -> None:
        self.fallbacks += 1
        self._fallback_log.warning(
            "shared memory exhausted, reply sent over the socket: " + why, *args
        )

    # -- releases and reclaiming -------------------------------------------

    def release(self, identity: Any, value: list) -> None:
        """A client's ``SHM_RELEASE``: free the slots it names that it holds."""
        owner = identity if type(identity) is bytes else bytes(identity)
        if type(value) is list and not value:  # goodbye: the client closed
            self.forget(owner)
            return
        pairs, signal_pairs, bad = shmpath.split_releases(value)
        if bad:
            self.bogus_releases += bad
        if signal_pairs:
            if self.signals is not None:  # signal slots: shm_signals' own
                self.signals.release(owner, signal_pairs)
            else:  # no such slot here: refused below
                pairs += signal_pairs
        handouts = self._handouts
        client = self.clients.get(owner)
        for slot, generation in pairs:
            handout = handouts.get(slot)
            if handout is None or handout[0] != owner or handout[1] != generation:
                self.bogus_releases += 1
                continue
            del handouts[slot]
            self._freed(slot, client, handout[2], handout[3])

    def _free(self, slot: int) -> None:
        owner, _, holder, arena = self._handouts.pop(slot)
        self._freed(slot, self.clients.get(owner), holder, arena)

    def _freed(
        self, slot: int, client: _Client | None, holder: Any, arena: Any
    ) -> None:
        """The rest of freeing ``slot`` once out of the handouts (``release``
        calls it with what it looked up already: one call per slot less).
        A pool frame (``holder``) goes back to its pool with the tuple."""
        if client is not None:
            client.slots.discard(slot)
            if arena is not None:
                client.share.bytes -= arena.size
            elif holder is not None:
                client.share.unpin(holder)
        if arena is not None:
            self._arena.give_back(arena)
        self._free_ids.append(slot)

    def tick(self) -> None:
        """Reclaim the slots of clients whose process ended or whose
        connection is gone (at most once every ``_SWEEP_S``; the serve loop
        calls it)."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_S
        for identity, client in list(self.clients.items()):
            if client.local and not segments.process_alive(client.pid, client.start):
                self.forget(identity)
            elif self._sock is not None and (
                client.slots
                or not client.local
                or (self.signals and self.signals.holds(identity))
            ):
                self._probe(self._sock, identity, client, now)

    def _probe(
        self, sock: zmq.Socket, identity: bytes, client: _Client, now: float
    ) -> None:
        """Probe a client holding slots; reclaim them once it has been
        unreachable for ``_grace`` (see the module)."""
        self.probes += 1
        there = probe(sock, identity)
        if there is None:
            return
        if there:
            client.lost_at = None
        elif client.lost_at is None:
            client.lost_at = now
        elif now - client.lost_at >= self._grace:
            _log.info(
                "client %s unreachable for %.1f s: its %d shared-memory "
                "slots are reclaimed",
                identity.hex(),
                now - client.lost_at,
                len(client.slots),
            )
            self.forget(identity)

    def forget(self, identity: bytes) -> None:
        """Drop a client and reclaim every slot it holds."""
        if self.signals is not None:
            self.signals.forget(identity)
        client = self.clients.pop(identity, None)
        if client is None:
            return
        slots = list(client.slots)
        for slot in slots:
            self._free(slot)
        # counted once they are free: stats read from another thread that
        # sees the count sees the slots back
        self.reclaimed += len(slots)
        _log.debug("reclaimed the shared-memory slots of %s", identity.hex())

    def close(self) -> None:
        """Reclaim everything and unlink the arena."""
        for identity in list(self.clients):
            self.forget(identity)
        if self.signals is not None:
            self.signals.close()
        self._arena.close()

    def stats(self) -> dict[str, int]:
        """The counters ``RPCServer.stats`` adds (see there)."""
        return {
            "shm_replies": self.replies,
            "shm_copies": self.copies,
            "shm_fallbacks": self.fallbacks,
            "shm_bogus_releases": self.bogus_releases,
            "shm_reclaimed": self.reclaimed,
            "shm_slots_held": len(self._handouts),
            **(self.signals.stats() if self.signals is not None else {}),
        }
