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
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..client.shm_signals import SignalShm, accepted
from ..wire.messages import Request, RPCEvents

__all__ = ["claim"]

_log = logging.getLogger(__name__)

#: Longest wait (s) for the server's nonce on the signal socket.
_NONCE_WAIT_S = 2.0
#: How often (s) the claim looks for the nonce meanwhile.
_POLL_S = 0.005


async def claim(client: Any) -> bool:
    """Claim ``client``'s signal subscription for references (see the
    module); whether the server bound it."""
    link, hub = client._shm, client._signal_hub
    if link is None or hub is None or hub.subscriber is None:
        return False
    shm = SignalShm(link, link.send_releases)
    hub.shm = shm  # before the claim: the nonce comes through it
    if not await _ask(client, [hub.subscriber]):
        hub.shm = None
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _NONCE_WAIT_S
    while loop.time() < deadline:
        nonce = shm.take_nonce()
        if nonce is None:
            await asyncio.sleep(_POLL_S)
        elif await _ask(client, [nonce]):  # only ours is accepted
            _log.debug("signal arrays from %s may use shared memory", client.url)
            return True
    _log.debug("signal subscription of %s not bound", client.url)
    return False


async def _ask(client: Any, value: list) -> bool:
    request = Request(RPCEvents.SHM_SUBSCRIBER, next(client._ids), value=value)
    try:
        reply = await client._request(request, client._timeout)
    except (TimeoutError, RuntimeError) as exc:
        _log.debug("no shared memory for signals of %s: %s", client.url, exc)
        return False
    return accepted(reply)
