"""A client's side of same-host shared memory: the handshake, read-only
arrays mapped on the server's segments, and their release.

After the inventory, a native client of an ``ipc://`` or ``tcp://`` server
creates a ``0600`` probe segment holding a random nonce and sends
``SHM_HELLO`` (see ``framerpc.wire.shm``). Only a server on the same host
running as the same user can read the probe; it then answers buffer
calls of ``SocketOptions.shm_threshold`` bytes or more with a reference
to a segment instead of the frame. An older server answers with an error
and a server with ``shm=False`` with ``false``: the client then gets
today's frames, silently. A server that does not answer in time (busy)
is asked again later, the client on the socket meanwhile
(``framerpc.client.shm_retry``: when, and why no call waits for it).

A reference becomes a read-only numpy array over the segment, mapped
read-only (``PROT_READ``). The array's base is a lease
(``framerpc.wire.shmpath``, compiled or pure): when the array and every
view of it are gone, the lease queues its slot for release. Queued
releases go out, batched, with the client's next call (in its header),
or within ``_FLUSH_S`` from a timer thread in a message
of their own, whichever is first.

``Leases`` (the arrays, their releases, the goodbye) and the handshake's
parts (``eligible``, ``make_probe``, ``hello_accepted``) need no thread
and no loop: the asyncio client (``framerpc.aio._shm``) uses them with a
loop timer instead of the thread.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
from typing import Any

import numpy as np
import zmq

from .. import transport
from ..transport import shm as segments
from ..wire import shm as wire_shm
from ..wire import shmpath
from ..wire.messages import Request, RPCEvents
from . import lane as lanes
from . import shm_retry, shm_signals

__all__ = [
    "Leases",
    "ShmLink",
    "connect",
    "eligible",
    "hello_accepted",
    "make_probe",
]

_log = logging.getLogger(__name__)

#: Longest time (s) a released slot waits for the client's next call
#: before the timer thread sends the release.
_FLUSH_S = 0.2
_NOBLOCK = int(zmq.NOBLOCK)


#: The base of every received array (the live engine's).
_Lease = shmpath.Lease


class Leases:
    """One client's attached segments, its arrays over them and their
    queued releases (no thread, no loop: see the module)."""

    def __init__(self) -> None:
        # names this link to the server across reconnections (a new
        # connection has a new routing id; see ``handshake``)
        self.token = secrets.token_bytes(16)
        self.cache = segments.AttachCache()
        self.pending: collections.deque[tuple[int, int]] = collections.deque()
        self._live = shmpath.Tally()  # leases alive (their arrays)
        self._lookup = self.cache.lookup  # a hit: no Python call
        #: The handshake's outcome and back-off (``shm_retry``).
        self.retry = shm_retry.HandshakeRetry()

    def _leased(self) -> None:
        """Called at each array made (the release timer starts here)."""

    def resolve(self, value: dict) -> np.ndarray:
        """The read-only array a reference names (see the module).

        Raises
        ------
        ProtocolError
            A malformed reference, or a segment that cannot be mapped or
            is too small for it (its slot is released all the same).
        """
        self._leased()
        return shmpath.resolve(value, self._lookup, self.pending, self._live)

    def take(self) -> list[tuple[int, int]]:
        """The queued releases, at most ``MAX_RELEASES`` (a request carries
        them, see ``wire.shm.encode_call_releasing``)."""
        pending = self.pending
        batch: list[tuple[int, int]] = []  # not list[...](): a generic alias per call
        while pending and len(batch) < wire_shm.MAX_RELEASES:
            batch.append(pending.popleft())
        return batch

    def call_frames(
        self, request_id: int, method: str, args: list, kwargs: dict
    ) -> tuple[list, list[tuple[int, int]]]:
        """Frames of a METHOD_CALL carrying the queued releases, and those
        (taken: ``untake`` them if the call is not sent; put back here
        when an argument cannot be encoded)."""
        return shmpath.call_frames(request_id, method, args, kwargs, self.pending)

    def untake(self, pairs: list[tuple[int, int]]) -> None:
        """Queue ``pairs`` (taken, then not sent) again, first in line."""
        self.pending.extendleft(reversed(pairs))

    def flush(self, sock: Any) -> None:
        """Send the queued releases on ``sock`` without blocking (the
        caller holds the client's lock); what a full queue refuses stays
        queued."""
        pending = self.pending
        while pending:
            batch = self.take()
            try:
                transport.send_frames(
                    sock, [b"", *wire_shm.encode_release(batch)], _NOBLOCK
                )
            except zmq.Again:  # not connected, or the queue is full
                pending.extendleft(reversed(batch))
                return
            except zmq.ZMQError as exc:  # the server reclaims them anyway
                _log.debug("could not send shared-memory releases: %s", exc)
                return

    def goodbye(self, sock: Any) -> None:
        """At close (under the client's lock): send the queued releases and,
        when no array of ours is alive any more and the server said yes to
        the handshake, an empty release, which tells the server it may
        forget this client. With arrays alive the server keeps their slots
        until this process ends (they stay correct)."""
        self.flush(sock)
        if self._live or self.pending or not self.retry.accepted:
            return
        try:
            transport.send_frames(sock, [b"", *wire_shm.encode_release([])], _NOBLOCK)
        except zmq.ZMQError as exc:  # the server reclaims when we exit
            _log.debug("could not say goodbye to the server: %s", exc)

    def close(self) -> None:
        """Forget the mappings; arrays still alive keep theirs."""
        self.cache.close()


class ShmLink(Leases):
    """The sync client's ``Leases``: handshake through its lock, releases
    flushed by a timer thread.

    Parameters
    ----------
    client : RPCClient
        Whose lock and socket the releases use.
    """

    def __init__(self, client: Any) -> None:
        super().__init__()
        self._client = client
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._timer_lock = threading.Lock()
        self.retry.on_again = self._start_timer  # it makes the claims due

    def handshake(self) -> bool | None:
        """Shake hands (again, after a reconnection: the server then moves
        the slots this link holds to the new connection); whether the
        server said yes, None when it did not answer in time: the timer
        thread then tries again later (``shm_retry``)."""
        answer = _hello(self._client, self.token)
        self.retry.answered(answer)
        if answer is None:
            self._start_timer()
        return answer

    def flush(self, sock: Any) -> None:
        """``Leases.flush``, on the client's same-host lane first when it
        has one (``client.lane``: a call cannot overtake the release)."""
        lanes.flush(self, self._client)
        super().flush(sock)

    def _retry(self) -> None:
        """The timer thread's handshake retry, while no call holds the
        client's lock (else at a later tick); a final no (an older server,
        ``shm=False``) drops the link, as after a restart."""
        client = self._client
        if client._closed or client._lock.locked():
            return
        answer = self.handshake()
        if answer is False:
            if client._shm is self:
                client._shm = None
            self.close()  # this thread ends with it
        elif answer and client._signal_receiver is not None:
            shm_signals.claim(client)  # a late yes: signals' arrays too

    def resolve(self, value: dict) -> np.ndarray:
        """``Leases.resolve`` with ``_leased`` inlined (a Python call less
        per array)."""
        if self._timer is None:
            self._start_timer()
        return shmpath.resolve(value, self._lookup, self.pending, self._live)

    def _leased(self) -> None:
        if self._timer is None:
            self._start_timer()

    def _start_timer(self) -> None:
        with self._timer_lock:  # a lease and a handshake retry may race
            if self._timer is not None or self._stop.is_set():
                return
            self._timer = threading.Thread(
                target=self._run_timer, name="framerpc-shm-release", daemon=True
            )
            self._timer.start()

    def _run_timer(self) -> None:
        client = self._client
        while not self._stop.wait(_FLUSH_S):
            if self.retry.wait() == 0:  # a handshake without an answer
                self._retry()
            if self.retry.claims_due and not client._lock.locked():
                shm_signals.reclaim(client)  # a new handshake: a new claim
            if not client._lock.locked():  # a word a call in flight delayed
                shm_signals.send_due(client, self)
            if not self.pending or not client._lock.acquire(blocking=False):
                continue  # a call in flight flushes them itself
            try:
                if not client._closed:
                    self.flush(client.socket)
            except Exception:  # a closed socket: nothing left to do
                _log.debug("shared-memory release timer", exc_info=True)
            finally:
                client._lock.release()

    def close(self) -> None:
        """Stop the timer (the caller flushes first, under the lock) and
        forget the mappings; arrays still alive keep theirs."""
        self._stop.set()
        timer = self._timer
        if timer is not None and timer is not threading.current_thread():
            timer.join(timeout=2)
        super().close()


def eligible(options: Any, protocol: str, url: str) -> bool:
    """Whether a client may shake hands at all (shared memory on, a host
    with segments, the native protocol, an ``ipc://`` or ``tcp://`` URL)."""
    return (
        options.shm
        and segments.AVAILABLE
        and protocol == "native"
        and url.startswith(("ipc://", "tcp://"))
    )


def connect(client: Any) -> ShmLink | None:
    """Shake hands for shared memory with ``client``'s server; the link, or
    None when shared memory is off, unavailable or refused. A server that
    did not answer in time gets a link too, on the socket until a later
    handshake succeeds (``shm_retry``)."""
    if not eligible(client._options, client._protocol, client.url):
        return None
    link = ShmLink(client)
    if link.handshake() is False:
        return None  # no timer started yet
    return link


def make_probe(token: bytes) -> tuple[segments.Segment, bytes] | None:
    """The probe segment of one handshake holding a nonce and ``token``,
    and that secret (the request's value); None when no segment can be
    made. The caller closes the probe once the server answered."""
    secret = secrets.token_bytes(16) + token
    try:
        probe = segments.Segment(len(secret))
    except OSError as exc:
        _log.debug("no shared-memory probe: %s", exc)
        return None
    try:
        probe.map[: len(secret)] = secret
    except BaseException:
        probe.close()
        raise
    return probe, secret


def hello_accepted(reply: Any, url: str) -> bool:
    """Whether the handshake's ``reply`` says yes (anything but
    ``{"shm": true}`` says no: an older server, ``shm=False``)."""
    answer = reply.value if reply.ok else None
    if type(answer) is not dict or answer.get(wire_shm.REF_KEY) is not True:
        _log.debug("no shared memory with %s: %s", url, reply.error or answer)
        return False
    _log.debug("buffer replies from %s may come through shared memory", url)
    return True


def _hello(client: Any, token: bytes) -> bool | None:
    """One handshake (see the module): a nonce and this link's ``token``
    in a probe segment, named in ``SHM_HELLO``; whether the server said yes
    (None: no answer in time)."""
    made = make_probe(token)
    if made is None:
        return False
    probe, secret = made
    try:
        request = Request(
            RPCEvents.SHM_HELLO, next(client._ids), name=probe.name, value=secret
        )
        reply = client._request(request, client._timeout)
    except (TimeoutError, RuntimeError) as exc:
        _log.debug("no shared-memory handshake with %s: %s", client.url, exc)
        return None
    finally:
        probe.close()
    accepted = hello_accepted(reply, client.url)
    lanes.adopt(client, reply.value if accepted else None)  # or drop the old
    return accepted
