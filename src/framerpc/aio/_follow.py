"""``await proxy.prop.follow(callback)``: a property's current value, then
its changes, none lost or repeated (the asyncio twin of the threaded
proxy's ``connect(callback, snapshot=True)``, see framerpc._sigseq)."""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import _sigseq
from ..errors import RemoteError
from ..wire.messages import Request, RPCEvents

__all__ = ["follow"]

_log = logging.getLogger(__name__)


class _Follower:
    """Connected in place of the callback: holds back emissions until the
    snapshot is delivered, then drops those it already reflects. Equal to
    its callback, so that ``disconnect(callback)`` finds it."""

    def __init__(self, signal: Any, callback: Callable[..., Any]) -> None:
        self.signal = signal
        self.callback = callback
        self.held: deque[tuple[Any, Any, tuple]] | None = deque()
        self.seq: int | None = None
        self.epoch: int | None = None

    def __call__(self, *args: Any) -> Any:
        state = self.signal.sequence  # of the emission being dispatched
        if self.held is not None:
            self.held.append((state.last, state.epoch, args))
            return None
        if self.covered(state.last, state.epoch):
            return None
        return self.callback(*args)

    def covered(self, seq: Any, epoch: Any) -> bool:
        return (
            self.seq is not None
            and epoch == self.epoch
            and seq is not None
            and seq <= self.seq
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Follower):
            return self is other
        return bool(self.callback == other)

    def __hash__(self) -> int:
        return hash(self.callback)


async def _call(callback: Callable[..., Any], *args: Any) -> None:
    result = callback(*args)
    if inspect.isawaitable(result):
        await result


async def follow(
    client: Any, name: str, signal: Any, callback: Callable[..., Any]
) -> None:
    """Connect ``callback`` to ``signal`` (the notify signal of property
    ``name``), then call it with the current value and each later change.

    Raises
    ------
    TypeError
        ``callback`` is not callable.
    RemoteError
        The property could not be read (nothing stays connected).
    """
    if not callable(callback):
        raise TypeError(f"{callback!r} is not callable")
    follower = _Follower(signal, callback)
    signal.connect(follower)  # first: no change after the read is missed
    try:
        reply = await client._request(
            Request(RPCEvents.PROPERTY_GET, next(client._ids), name=name),
            client._timeout,
        )
        if not reply.ok:
            raise RemoteError(reply.error, reply.traceback)
    except BaseException:
        signal.disconnect(follower)
        raise
    info = reply.info
    if (
        isinstance(info, dict)
        and _sigseq._valid(info.get("q"))
        and _sigseq._valid(info.get("ep"))
    ):
        follower.seq, follower.epoch = info["q"], info["ep"]
    held = follower.held
    assert held is not None
    try:
        await _call(callback, reply.value)
    finally:
        # emissions that came meanwhile, in order (more may come while an
        # async callback runs: they join the queue)
        while held:
            seq, epoch, args = held.popleft()
            if not follower.covered(seq, epoch):
                try:
                    await _call(callback, *args)
                except Exception:
                    _log.exception("a callback of signal %s raised", signal.name)
        follower.held = None
