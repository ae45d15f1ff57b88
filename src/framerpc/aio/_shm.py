"""Same-host shared memory for the asyncio client (see
``framerpc.client.shm`` for the sync client's, whose code this reuses).

After the inventory, ``connect`` shakes hands as the sync client does
(same probe, same request, same answers: an older server, ``inproc://``
or ``shm=False`` on either side leave the client on the socket). Buffer
replies that are references become read-only arrays over the server's
segment (``Leases.resolve``). Released slots ride on the client's next
method call (``call``), or go out in a message of their own from
a loop timer within ``_FLUSH_S`` (no thread). ``aclose`` says goodbye; a
restarted or reconnected server gets a new handshake (``rehandshake``).
A handshake without an answer in time is tried again by a task of the
client, beside its calls, which never wait for it
(``framerpc.client.shm_retry``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from ..client import shm as shared
from ..wire.messages import Reply, Request, RPCEvents
from . import _shm_signals

__all__ = ["AioShm", "connect", "rehandshake"]

_log = logging.getLogger(__name__)

#: Longest time (s) a released slot waits for the client's next call
#: before the loop timer sends it (as the sync client's timer thread).
_FLUSH_S = shared._FLUSH_S


class AioShm(shared.Leases):
    """The asyncio client's ``Leases``: handshake through the client's
    link, releases flushed by a loop timer.

    Parameters
    ----------
    client : AsyncClient
        Whose link (socket, request ids) the handshake and releases use.
    """

    def __init__(self, client: Any) -> None:
        super().__init__()
        self._client = client
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._retrying: asyncio.Task | None = None

    async def handshake(self) -> bool | None:
        """Shake hands (again after a reconnection: the same server moves
        the slots this client holds to the new connection); whether the
        server said yes, None when it did not answer in time: a task of
        the client then tries again later (``shm_retry``)."""
        answer = await self._hello()
        self.retry.answered(answer)
        if answer is None and self._retrying is None and not self._closed:
            client = self._client
            task = client._loop.create_task(
                self._retry_later(), name=f"aio-shm-retry {client.url}"
            )
            self._retrying = task
            client._tasks.append(task)  # aclose cancels it
            task.add_done_callback(self._retried)
        return answer

    async def _retry_later(self) -> None:
        """Shake hands again after the back-off until the server answers; a
        final no (an older server, ``shm=False``) drops the link."""
        try:
            while not self._closed:
                wait = self.retry.wait()
                if wait is None:
                    return
                await asyncio.sleep(wait)
                answer = await self.handshake()
                client = self._client
                if answer is False:
                    if client._shm is self:
                        client._shm = None
                    self.close()
                    return
                if answer and client._signal_hub is not None:
                    await _shm_signals.claim(client)  # a late yes: signals too
        finally:  # at once: a handshake answered None later starts a new task
            self._retrying = None

    def _retried(self, task: asyncio.Task) -> None:
        tasks = self._client._tasks
        if task in tasks:
            tasks.remove(task)

    async def _hello(self) -> bool | None:
        """One handshake: whether the server said yes, None when it did not
        answer in time."""
        client = self._client
        made = shared.make_probe(self.token)
        if made is None:
            return False
        probe, secret = made
        try:
            request = Request(
                RPCEvents.SHM_HELLO, next(client._ids), name=probe.name, value=secret
            )
            reply = await client._request(request, client._timeout)
        except (TimeoutError, RuntimeError) as exc:
            _log.debug("no shared-memory handshake with %s: %s", client.url, exc)
            return None
        finally:
            probe.close()
        return shared.hello_accepted(reply, client.url)

    def call(
        self, rid: int, method: str, args: list, kwargs: dict, timeout: int | None
    ) -> Coroutine[Any, Any, Reply]:
        """A method call carrying the queued releases (in its header); they
        are queued again when the request is never sent (a call cancelled
        or timed out while it waited for the connection or its turn).
        Await the result: the link's own coroutine (no coroutine of its
        own, 2 us of a call)."""
        frames, pairs = self.call_frames(rid, method, args, kwargs)
        return self._client._exchange(
            frames, rid, timeout, method, unsent=lambda: self.untake(pairs)
        )

    def _leased(self) -> None:
        # the timer runs from the first array to the close: a lease can be
        # collected in any thread at any time, the timer sends its release
        if self._timer is None and not self._closed:
            loop = self._client._loop
            self._timer = loop.call_later(_FLUSH_S, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._closed:
            return
        if self.pending:
            self.send_releases()
        self._timer = self._client._loop.call_later(_FLUSH_S, self._tick)

    def send_releases(self) -> None:
        """Send the queued releases now, without blocking (in the loop)."""
        link = self._client._link
        sock = link._socket
        if sock is None:
            return
        try:
            self.flush(sock)
        except Exception:  # a closed socket: the server reclaims them
            _log.debug("shared-memory releases", exc_info=True)
        link.sent_aside()

    def goodbye_now(self) -> None:
        """At close, before the socket closes: the queued releases and, with
        no array alive, the goodbye (``Leases.goodbye``)."""
        link = self._client._link
        sock = link._socket
        if sock is None:
            return
        try:
            self.goodbye(sock)
        except Exception:  # a closed socket: the server reclaims them
            _log.debug("shared-memory goodbye", exc_info=True)
        link.sent_aside()

    def close(self) -> None:
        """Stop the timer and forget the mappings (arrays alive keep
        theirs); in the loop's thread."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        retrying = self._retrying
        if retrying is not None and retrying is not _current_task():
            retrying.cancel()
        super().close()


async def connect(client: Any) -> AioShm | None:
    """Shake hands for shared memory with ``client``'s server; the link, or
    None when shared memory is off, unavailable or refused."""
    if not shared.eligible(client._options, "native", client.url):
        return None
    link = AioShm(client)
    if await link.handshake() is False:
        link.close()
        return None
    return link  # also without an answer in time: it tries again


def _current_task() -> asyncio.Task | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # closed from a thread without a running loop
        return None


async def rehandshake(client: Any) -> None:
    """After a reconnection (a restarted server, a network cut): shake
    hands again; a server that says no drops the client to the socket."""
    link = client._shm
    if link is None:
        return
    if await link.handshake() is False:
        if client._shm is link:
            client._shm = None
        link.close()
