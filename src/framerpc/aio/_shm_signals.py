"""The asyncio client's signals through shared memory (issue 14): the
claim of its signal subscription, as the sync client's
(``framerpc.client.shm_signals``), awaited on the loop.

After the proxy shook hands (``aio._shm``) and its ``SignalHub`` saw its
subscriber id, ``claim`` sends ``SHM_SUBSCRIBER`` with the id, waits for
the nonce the server sends that subscription alone and hands it back.
The hub then decodes emissions with a ``SignalShm`` over the proxy's
``AioShm`` leases: an array that came as a reference is a read-only array
mapped on the server's segment, released when collected (sent at once
after the emission's callbacks and iterators took it, else by the loop
timer or with the next call).

After a handshake again that the server answered yes (a restarted or
reconnected server: ``client.shm_retry``), the subscription is a new one
with a new id: the link's ``on_again`` (set by the first ``claim``) starts
a task that learns the new id (the client's ``_sync_signals``) and claims
it, up to ``shm_retry.CLAIM_TRIES`` times, as the sync client's
``reclaim`` (with the signal slots the client holds: ``held``); so does
an emission naming another subscriber id. ``claim`` meanwhile declines.

The hub closed alone (``signal_hub.aclose()``, the proxy open) sends the
server the client's word on what it still holds (``_end``), as the sync
client's receiver does when it stops, and is never claimed again (a
handshake again claims nothing for it). Calls overlap, so only the bound
on calls in flight (``_link.MAX_IN_FLIGHT``) can leave the word no turn:
it is not sent then (a release going out meanwhile would pass it), nor
is it when the socket could not send it within the timeout (not
connected, its queue full). A task of the client then tries it every
``_FLUSH_S`` (the release timer's pace) once a turn is free, listing what
the client holds then; a word the socket could not send is tried
``_WORD_TRIES`` times, as the sync client's.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from ..client import shm as shared
from ..client.shm_signals import _WORD_TRIES, SignalShm, accepted, held, word
from ..wire import messages
from ..wire.messages import Request, RPCEvents

__all__ = ["claim"]

_log = logging.getLogger(__name__)

#: Longest wait (s) for the server's nonce on the signal socket.
_NONCE_WAIT_S = 2.0
#: How often (s) the claim looks for the nonce meanwhile.
_POLL_S = 0.005
#: link -> its claims' task after a handshake again (one at a time)
_reclaiming: weakref.WeakKeyDictionary[Any, asyncio.Task] = weakref.WeakKeyDictionary()


async def claim(client: Any) -> bool:
    """Claim ``client``'s signal subscription for references (see the
    module); whether the server bound it. False without asking while
    claims after a handshake again are due (their task makes them)."""
    link = client._shm
    if link is None:
        return False
    link.retry.on_again = lambda: _reclaim_soon(client, link)
    if link.retry.claims_due:
        return False
    return await _claim(client)


def _reclaim_soon(client: Any, link: Any) -> None:
    """The link's handshake was answered yes again: start the task of its
    claims (in the loop; see the module)."""
    if client._shm is not link or link._closed or link in _reclaiming:
        return
    task = client._loop.create_task(
        _reclaim(client, link), name=f"aio-shm-claim {client.url}"
    )
    _reclaiming[link] = task
    client._tasks.append(task)  # aclose cancels it
    task.add_done_callback(lambda done: _reclaimed(client, link, done))


def _reclaimed(client: Any, link: Any, task: asyncio.Task) -> None:
    if _reclaiming.get(link) is task:
        del _reclaiming[link]
    if task in client._tasks:
        client._tasks.remove(task)


async def _reclaim(client: Any, link: Any) -> None:
    """Learn the subscription's new id, then claim it, until bound or the
    tries are spent."""
    retry = link.retry
    while retry.claims_due > 0 and client._shm is link:
        hub = client._signal_hub
        if hub is None or hub.closed:  # closed alone: nothing to claim
            break
        retry.claims_due -= 1
        hub.subscriber = None  # the old server's id
        try:
            await client._sync_signals()  # the token's emission names it
        except (TimeoutError, RuntimeError) as exc:
            _log.debug("signal subscription of %s not back: %s", client.url, exc)
            continue
        if await _claim(client, again=True):
            break
    retry.claims_due = 0


async def _claim(client: Any, again: bool = False) -> bool:
    link, hub = client._shm, client._signal_hub
    if link is None or hub is None or hub.closed or hub.subscriber is None:
        return False
    shm = SignalShm(link, link.send_releases, lambda shm: _end(client, link, hub, shm))
    hub.shm = shm  # before the claim: the nonce comes through it
    ident = hub.subscriber
    if not await _ask(client, [ident]):
        hub.shm = None
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _NONCE_WAIT_S
    while loop.time() < deadline:
        nonce = shm.take_nonce()
        if nonce is None:
            await asyncio.sleep(_POLL_S)
        else:  # only ours is accepted; a claim again lists what we hold
            slots = held(link) if again else None
            if await _ask(client, [nonce] if slots is None else [nonce, slots]):
                shm.claimed = ident
                _log.debug("signal arrays from %s may use shared memory", client.url)
                return True
    _log.debug("signal subscription of %s not bound", client.url)
    return False


async def _end(client: Any, link: Any, hub: Any, shm: SignalShm) -> None:
    """The hub closed alone (``signal_hub.aclose()``), the proxy stays
    open: send the word on what the client holds (``client.shm_signals``,
    ``word``), bounded by its timeout; without a turn or unsent, leave it
    to a task (see the module). Not when the proxy closes (its goodbye
    gives everything back)."""
    ident = shm.claimed
    if client._signal_hub is not hub or client._shm is not link or ident is None:
        return
    try:
        if await _send_word(client, link, ident):
            return
        task = client._loop.create_task(
            _send_later(client, link, ident), name=f"aio-shm-word {client.url}"
        )
        client._tasks.append(task)  # aclose cancels it
        task.add_done_callback(lambda done: _forget(client, done))
    except Exception as exc:  # the slots stay until the client goes
        _log.debug("no word on the end of %s's signals: %s", client.url, exc)


async def _send_later(client: Any, link: Any, ident: int) -> None:
    """The word, tried every ``_FLUSH_S`` while the client keeps its
    shared memory, until sent or ``_WORD_TRIES`` sends failed (no turn
    is no try: the calls in flight end, or the client closes)."""
    tries = _WORD_TRIES
    while tries > 0:
        await asyncio.sleep(shared._FLUSH_S)
        if client._shm is not link or link._closed:
            return  # goodbye instead, or no shared memory any more
        sent = await _send_word(client, link, ident)
        if sent:
            return
        if sent is False:
            tries -= 1
    _log.debug("word on the signals of %s not sent", client.url)


async def _send_word(client: Any, link: Any, ident: int) -> bool | None:
    """Send the word on subscription ``ident``: None without a turn (no
    try), False when the socket could not send it within the timeout,
    else True (answered or not: the server reads it). It lists what the
    client holds when it is made, and goes at once (no release in
    between) unless the socket cannot take it, a release neither.
    """
    calls = client._link
    if calls._in_flight >= calls._limit or calls._slot_waiters:
        return None
    request = Request(
        RPCEvents.SHM_SUBSCRIBER, next(client._ids), value=word(ident, link)
    )
    unsent: list[bool] = []
    try:
        reply = await client._exchange(
            messages.encode_request(request),
            request.request_id,
            client._timeout,
            request.method,
            request,
            lambda: unsent.append(True),
        )
    except (TimeoutError, RuntimeError) as exc:  # PeerLostError too
        _log.debug("word on the signals of %s: %s", client.url, exc)
        return not unsent
    if not accepted(reply):
        _log.debug("word on the signals of %s refused: %s", client.url, reply)
    return True


def _forget(client: Any, task: asyncio.Task) -> None:
    if task in client._tasks:
        client._tasks.remove(task)


async def _ask(client: Any, value: list) -> bool:
    request = Request(RPCEvents.SHM_SUBSCRIBER, next(client._ids), value=value)
    try:
        reply = await client._request(request, client._timeout)
    except (TimeoutError, RuntimeError) as exc:
        _log.debug("no shared memory for signals of %s: %s", client.url, exc)
        return False
    return accepted(reply)
