"""The slow paths of an asyncio call's send (``Link``'s base class): a
turn under ``MAX_IN_FLIGHT`` and room to send (or a connection). Both
await, so the call has its future (its timer can end them); the fast
path sends at once and needs neither. (Moved out of ``_link`` to keep it
under the line limit.)"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from .._peerwatch import PeerWatch
from ._fdwatch import FdWatch

__all__ = ["SendWaits"]

#: How often (s) a call that could not send tries again and checks that
#: its server is still there (the link's peer-watch period).
_RETRY_S = 0.1


class SendWaits:
    """The link's waits before a send (see the module)."""

    if TYPE_CHECKING:  # the Link's
        url: str
        _loop: asyncio.AbstractEventLoop | None
        _closed: bool
        _in_flight: int
        _limit: int
        _slot_waiters: deque[asyncio.Future]
        _fdwatch: FdWatch | None
        _watch: PeerWatch | None

        def _try_send(self, message: list) -> bool: ...

    async def _send_slowly(self, message: list, entry: Any) -> None:
        """Send ``message`` for ``entry`` (a ``_Pending``) once a slot is
        free and the socket has room; ``entry`` gets its future here."""
        future = entry.future = self._loop.create_future()  # type: ignore[union-attr]
        if self._in_flight >= self._limit or self._slot_waiters:
            await self._wait_slot(future)
            if self._watch is not None:
                entry.mark = self._watch.mark()
            if self._try_send(message):
                return
        await self._send_later(message, entry, future)

    async def _wait_slot(self, future: asyncio.Future) -> None:
        """Wait, in turn, until fewer than ``MAX_IN_FLIGHT`` calls are in
        flight, or until the call's timer fires (``_Expired``)."""
        while True:
            slot = self._loop.create_future()  # type: ignore[union-attr]
            self._slot_waiters.append(slot)
            try:
                await asyncio.wait((slot, future), return_when=asyncio.FIRST_COMPLETED)
                if future.done():
                    future.result()  # raises _Expired, or the closing error
                if self._closed:
                    raise RuntimeError(f"client of {self.url} was closed during a call")
            except BaseException:
                if not slot.done():
                    slot.cancel()
                    self._slot_waiters.remove(slot)
                elif not slot.cancelled():
                    self._free_slot()  # its turn goes to the next in line
                raise
            if self._in_flight < self._limit:
                return

    def _free_slot(self) -> None:
        """A call ended: the first call waiting for a slot may send."""
        while self._slot_waiters:
            slot = self._slot_waiters.popleft()
            if not slot.done():
                slot.set_result(None)
                return

    async def _send_later(
        self, message: list, entry: Any, future: asyncio.Future
    ) -> None:
        """Wait for room to send (or a connection) until the call's timer
        fires; a call without timeout gives up after the dead-peer bound."""
        watch = self._watch
        while True:
            if future.done():
                future.result()  # raises _Expired
            writable = asyncio.ensure_future(
                self._fdwatch.writable(_RETRY_S)  # type: ignore[union-attr]
            )
            done, _ = await asyncio.wait(
                (writable, future), return_when=asyncio.FIRST_COMPLETED
            )
            if writable not in done:
                writable.cancel()
            if self._closed:
                raise RuntimeError(f"client of {self.url} was closed during a call")
            if self._try_send(message):
                return
            if watch is not None:
                watch.check(entry.mark, False, entry.endless)
                entry.mark = watch.mark()
