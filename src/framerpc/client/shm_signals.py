"""A sync client's signals through shared memory (issue 14): claiming its
fan-out subscriber, and emissions whose arrays are references.

Once the client shook hands for shared memory (``client.shm``) and its
signal receiver saw its subscriber id (the handshake token's emission
names it, ``wire.shm.subscriber_of``), ``claim`` sends ``SHM_SUBSCRIBER``
with that id; the server sends the subscription alone a nonce, which the
receiver passes here, and ``claim`` hands it back on the RPC connection
(``wire.shm``, "Signals"; ``server.shm_signals``). From then on the
receiver decodes emissions with ``SignalShm.decode``: an array that came
as a reference is a read-only numpy array over the server's segment (no
copy), whose base is a lease of the client's ``ShmLink``: it is released
when the array and its views are garbage collected, batched with the
client's next call or by the link's timer, as buffer replies are.

An older server answers the claim with an error, a server with ``shm``
off with ``false``: the signals keep today's frames, silently.

After a handshake again that the server answered yes (a restarted or
reconnected server, ``client.shm_retry``), the subscription is a new one
for that server, with a new id, and claimed by nobody: the link's timer
thread (``ShmLink``) then calls ``reclaim``, which learns the new id (the
emission of a handshake token names it, ``inventory._sync_signals``) and
claims it, up to ``shm_retry.CLAIM_TRIES`` times, while no call is in
flight. ``claim`` meanwhile declines (it would name the old id). So does
an emission that names another subscriber id than the bound one: the
signal socket alone reconnected (its connection dropped, the RPC one did
not). Such a claim lists the signal slots the client holds (``held``):
the server takes back the references it sent the vanished subscription
that never arrived.

When the receiver stops while the client stays open (its subscription
alone closed), its thread sends, once the SUB socket is closed, the
client's word (``word``: ``[SUBSCRIPTION_ENDED, id, held]``): the server
takes back what it sent that subscription beyond the arrays the client
holds, which keep their slots. ``close`` sends goodbye instead. A call
in flight holds the proxy's lock, maybe for long: the receiver then
leaves the word due and ends; the link's timer thread sends it once no
call holds the lock (``send_due``), listing what the client holds then
(after the SUB socket closed, that only shrinks). A word the socket
could not send (not connected) is tried ``_WORD_TRIES`` times.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ..rpc.callpath import never_sent
from ..wire import messages
from ..wire import shm as wire_shm
from ..wire.messages import Request, RPCEvents, SignalEmission

__all__ = ["SignalShm", "accepted", "claim", "held", "reclaim", "send_due"]

_log = logging.getLogger(__name__)

#: Longest wait (s) for the server's nonce on the signal socket.
_NONCE_WAIT_S = 2.0
#: Longest wait (s) of the receiver's end for the proxy's lock (a release
#: flush, a short call) before it leaves its word to the timer thread.
_WORD_LOCK_S = 0.05
#: Tries of a word the socket could not send (not connected).
_WORD_TRIES = 5
#: link -> {subscriber id: tries left} of the words not sent yet
_due: weakref.WeakKeyDictionary[Any, dict[int, int]] = weakref.WeakKeyDictionary()
_due_lock = threading.Lock()
#: What ``_send_word`` did.
_SENT, _BUSY, _UNSENT = "sent", "busy", "unsent"


class SignalShm:
    """The receiver's side (see the module): decodes emissions with
    ``leases`` and collects the nonces the server sends this subscription.

    Parameters
    ----------
    leases : client.shm.Leases
        The link whose leases release the signal arrays.
    send : callable, optional
        Sends the queued releases now if it can, without blocking
        (``flush`` calls it).
    end : callable, optional
        Called with this object once the subscription ended while its
        client stays connected (``ended``): it sends the client's word.
    """

    def __init__(
        self,
        leases: Any,
        send: Callable[[], None] | None = None,
        end: Callable[[SignalShm], Any] | None = None,
    ) -> None:
        self.leases = leases
        self._send = send
        self._end = end
        self._nonces: collections.deque[bytes] = collections.deque(maxlen=8)
        self._arrived = threading.Event()
        #: the subscriber id the server bound (set by a claim that succeeded)
        self.claimed: int | None = None

    def decode(self, frames: list) -> SignalEmission:
        """An emission with its references resolved (``wire.shm``).

        Raises
        ------
        ProtocolError
            A malformed emission or reference, or a segment that cannot be
            mapped (the references' slots are released all the same).
        """
        if self.claimed is not None:  # a new subscription: claim it again
            ident = wire_shm.subscriber_of(frames[0].buffer)
            if ident is not None and ident != self.claimed:
                self.claimed = None
                self.leases.retry.claim_again()
        emission, refs = wire_shm.decode_signal(frames)
        args = emission.args
        failed = None
        for index, ref in refs:
            try:
                args[index] = self.leases.resolve(ref)
            except Exception as exc:  # resolved ones are released on GC
                failed = failed or exc
        if failed is not None:
            raise failed
        return emission

    def flush(self) -> None:
        """Send the queued releases now if no call is in flight (the
        receiver calls it after each emission: a listener that did not keep
        the array frees its slot at once, not at the link's next timer;
        a pool frame's slot goes back to the camera that soon)."""
        if self.leases.pending and self._send is not None:
            self._send()

    def ended(self) -> Any:
        """The subscription ended (its socket closed: nothing more is
        read): what ``end`` returns (an awaitable for the asyncio client),
        once; None after, or when it was never bound."""
        end, self._end = self._end, None
        return end(self) if end is not None and self.claimed is not None else None

    def nonce(self, value: bytes) -> None:
        """A nonce the server sent this subscription (receiver thread)."""
        self._nonces.append(value)
        self._arrived.set()

    def take_nonce(self) -> bytes | None:
        """The oldest nonce received and not taken yet, or None."""
        try:
            return self._nonces.popleft()
        except IndexError:
            return None

    def next_nonce(self, timeout: float) -> bytes | None:
        """The next nonce received within ``timeout`` s, or None."""
        deadline = time.monotonic() + timeout
        while True:
            nonce = self.take_nonce()
            if nonce is not None:
                return nonce
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._arrived.clear()
            if self._nonces:
                continue
            self._arrived.wait(left)


def accepted(reply: Any) -> bool:
    """Whether a reply to ``SHM_SUBSCRIBER`` says yes."""
    answer = reply.value if reply.ok else None
    return type(answer) is dict and answer.get(wire_shm.REF_KEY) is True


def claim(client: Any) -> bool:
    """Claim ``client``'s signal subscriber for references (see the
    module); whether the server bound it. Called once the client has its
    shared-memory link and its signal receiver is subscribed; False
    without asking while claims after a handshake again are due
    (``reclaim`` makes them)."""
    link = client._shm
    if link is not None and link.retry.claims_due:
        return False
    return _claim(client)


def reclaim(client: Any) -> bool:
    """One of the claims due after a handshake again (see the module):
    learn the subscription's new id, then claim it; whether it is bound.
    The timer thread calls it (not the receiver: its thread dispatches
    the token and the nonce)."""
    link, receiver = client._shm, _receiving(client)
    if link is None or not link.retry.claims_due:
        return False
    if receiver is None or client._closed:
        link.retry.claims_due = 0
        return False
    link.retry.claims_due -= 1
    receiver.subscriber = None  # the old server's id
    try:
        client._sync_signals()  # the token's emission names the new one
    except (TimeoutError, RuntimeError) as exc:
        _log.debug("signal subscription of %s not back: %s", client.url, exc)
        return False
    if _claim(client, again=True):
        link.retry.claims_due = 0
        return True
    return False


def held(leases: Any) -> list[list[int]] | None:
    """The signal slots ``leases`` holds (arrays alive, releases queued),
    as a claim again lists them (``server.shm_share.unheld``); None when
    they are too many for one message (the server then takes nothing back).
    """
    for _ in range(8):  # a lease collected meanwhile changes the sets
        try:
            # the queue first: a lease collected in between moves from the
            # arrays alive to the queue, and listed twice it would keep a
            # reference no release frees; missed, its release frees it
            pairs = list(leases.pending)
            pairs += leases._live.signal_slots()
            break
        except RuntimeError:
            continue
    else:
        return None
    base = wire_shm.SIGNAL_SLOT_BASE
    slots = [[slot, generation] for slot, generation in pairs if slot >= base]
    return slots if len(slots) <= wire_shm.MAX_RELEASES else None


def _claim(client: Any, again: bool = False) -> bool:
    link, receiver = client._shm, _receiving(client)
    if link is None or receiver is None or receiver.subscriber is None:
        return False
    shm = SignalShm(
        link,
        lambda: _send_releases(client, link),
        lambda shm: _end(client, link, receiver, shm),
    )
    receiver.shm = shm  # before the claim: the nonce comes through it
    ident = receiver.subscriber
    if not _ask(client, [ident]):
        receiver.shm = None
        return False
    # another client's claim of ours may send us its nonce too: the
    # server takes only the one it sent for our connection
    deadline = time.monotonic() + _NONCE_WAIT_S
    while (left := deadline - time.monotonic()) > 0:
        nonce = shm.next_nonce(left)
        if nonce is None:
            break
        # a claim again: what we hold, once every earlier emission was read
        slots = held(link) if again else None
        if _ask(client, [nonce] if slots is None else [nonce, slots]):
            shm.claimed = ident
            _log.debug("signal arrays from %s may use shared memory", client.url)
            return True
    _log.debug("signal subscriber of %s not bound", client.url)
    return False  # receiver.shm stays: a reference can come only if bound


def _receiving(client: Any) -> Any:
    """``client``'s signal receiver, None if it has none or it was stopped
    (its subscription alone closed: nothing to claim any more)."""
    receiver = client._signal_receiver
    if receiver is None or receiver._stop_flag.is_set() or not receiver.is_alive():
        return None
    return receiver


def word(ident: int, leases: Any) -> list:
    """``SHM_SUBSCRIBER``'s ``x`` saying subscription ``ident`` ended and
    the client holds the signal arrays of ``leases`` (``held``; nil when
    too many: the server then only unbinds it)."""
    return [wire_shm.SUBSCRIPTION_ENDED, ident, held(leases)]


def _end(client: Any, link: Any, receiver: Any, shm: SignalShm) -> None:
    """The receiver's subscription ended (its thread, its socket closed):
    send the word if the client stays open (``close`` says goodbye
    instead); while a call holds the proxy's lock, leave it due for the
    link's timer thread (``send_due``): the receiver ends at once."""
    if client._closed or client._signal_receiver is not receiver:
        return
    ident = shm.claimed
    if client._shm is not link or ident is None:
        return
    if _send_word(client, link, ident, _WORD_LOCK_S) != _SENT:
        with _due_lock:
            _due.setdefault(link, {})[ident] = _WORD_TRIES
        link._start_timer()  # it may not run yet: no array was received


def send_due(client: Any, link: Any) -> None:
    """Send the words ``link`` left due (see the module) while no call
    holds ``client``'s lock; the link's timer thread calls it each tick."""
    with _due_lock:
        due = dict(_due.get(link, ()))
    for ident, tries in due.items():
        done = _send_word(client, link, ident, 0)
        if done == _BUSY:
            return  # a call in flight: at a later tick
        with _due_lock:
            left = _due.get(link, {})
            if done == _UNSENT and tries > 1:
                left[ident] = tries - 1
            else:  # sent (answered or not: the server reads it), or given up
                left.pop(ident, None)


def _send_word(client: Any, link: Any, ident: int, wait: float) -> str:
    """Send the word on subscription ``ident`` if the proxy's lock comes
    within ``wait`` s (``_BUSY`` if not); ``_UNSENT`` when the socket
    could not send it (not connected), else ``_SENT``. It lists what the
    client holds when it goes (under the lock: no release in between)."""
    lock = client._lock
    if not lock.acquire(timeout=wait):
        return _BUSY
    try:
        if client._closed or client._shm is not link:
            return _SENT  # goodbye instead, or no shared memory any more
        request = Request(
            RPCEvents.SHM_SUBSCRIBER, next(client._ids), value=word(ident, link)
        )
        frames = messages.encode_request(request)
        reply = client._channel.request(frames, request.request_id, client._timeout)
    except TimeoutError as exc:  # PeerLostError too
        _log.debug("word on the signals of %s: %s", client.url, exc)
        return _UNSENT if never_sent(exc) else _SENT
    except RuntimeError as exc:  # closed meanwhile: goodbye instead
        _log.debug("word on the signals of %s: %s", client.url, exc)
        return _SENT
    finally:
        lock.release()
    if not accepted(reply):
        _log.debug("word on the signals of %s refused: %s", client.url, reply)
    return _SENT


def _send_releases(client: Any, link: Any) -> None:
    if client._lock.acquire(blocking=False):  # else the next call, the timer
        try:
            if not client._closed:
                link.flush(client.socket)
        finally:
            client._lock.release()


def _ask(client: Any, value: list) -> bool:
    request = Request(RPCEvents.SHM_SUBSCRIBER, next(client._ids), value=value)
    try:
        reply = client._request(request, client._timeout)
    except (TimeoutError, RuntimeError) as exc:
        _log.debug("no shared memory for signals of %s: %s", client.url, exc)
        return False
    return accepted(reply)
