"""Streams of an asyncio proxy: ``proxy.frames.subscribe(...)`` on the loop.

Each ``RPCStream`` of the interface is a ``StreamSlot`` of the proxy
class, which gives an ``AsyncStream`` per proxy: ``subscribe`` makes an
``AsyncSubscription`` (``framerpc.aio._subscription``), ``latest`` reads
one frame. The client calls ``apply_inventory`` whenever it reads the
server's inventory (at opening, and after a restart, when a tcp server's
stream socket has a new port) and ``aclose_all``/``close_all_now`` when it
closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .. import transport
from ..stream import Policy, RPCStream, check_policy
from ._subscription import AsyncSubscription

__all__ = [
    "AsyncStream",
    "AsyncSubscription",
    "StreamSlot",
    "aclose_all",
    "apply_inventory",
    "close_all_now",
]

_log = logging.getLogger(__name__)


class _Streams:
    """A client's streams: the server's stream URL by name, the handles."""

    __slots__ = ("handles", "urls")

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self.handles: dict[str, AsyncStream] = {}


def _state(client: Any) -> _Streams:
    state = client.__dict__.get("_aio_streams")
    if state is None:
        state = client.__dict__["_aio_streams"] = _Streams()
    return state


class AsyncStream:
    """A remote ``RPCStream`` on an asyncio proxy: ``subscribe``, ``latest``.

    ``async with cam.frames.subscribe(policy="latest") as sub: async for
    frame, info in sub: ...``, or ``cam.frames.subscribe(callback=show)``
    for a callback run on the loop. The policies, frames and ``info`` are
    those of the sync proxy's stream (``framerpc.RPCStream.subscribe``).
    """

    def __init__(self, client: Any, name: str, doc: str = "") -> None:
        self._client = client
        self.name = name
        self.doc = doc
        self._subs: list[AsyncSubscription] = []

    @property
    def url(self) -> str | None:
        """The server's stream socket, when it serves this stream."""
        return _state(self._client).urls.get(self.name)

    def subscribe(
        self,
        callback: Callable[[Any, dict[str, Any]], object] | None = None,
        *,
        policy: Policy = "latest",
        queue: int | None = None,
    ) -> AsyncSubscription:
        """Receive the stream's frames on the loop, with flow control.

        Parameters
        ----------
        callback : callable, optional
            Called as ``callback(frame, info)`` on the loop for each frame;
            the next frame is asked for when it returns (an ``async def``
            callback: when its coroutine, run as a task, ends). Frames go
            to the callback one at a time, in order. Without it, iterate
            the returned subscription.
        policy : {"latest", "queue"}
            ``latest``: only the newest frame; frames published while the
            consumer was busy are dropped for it alone (counted in
            ``info["dropped"]``). ``queue``: up to ``queue`` frames are
            kept for it in the server, then the oldest are dropped (counted).
        queue : int, optional
            Queue length for ``policy="queue"`` (default 8, at most 256).

        Returns
        -------
        AsyncSubscription
            Already subscribing: await it, or enter its ``async with``, to
            wait for the server's acknowledgement; iterate it with ``async
            for`` for ``(frame, info)``.

        Raises
        ------
        ValueError
            A bad policy or queue length.
        RuntimeError
            The proxy is closed, belongs to another loop, or its server has
            no such stream.
        RemoteError
            (When awaited or entered) the server refused the subscription.
        """
        window = check_policy(policy, queue)
        client = self._client
        link = client._link
        if link._closed or link._loop is None:
            raise RuntimeError(f"client of {client.url} is closed")
        if asyncio.get_running_loop() is not link._loop:
            raise RuntimeError(
                f"client of {client.url} belongs to another event loop: "
                "use it from the loop it was opened in"
            )
        if self.url is None:
            raise RuntimeError(
                f"the server at {client.url} has no stream {self.name!r}"
            )
        sub = AsyncSubscription(self, policy, window, callback)
        self._subs.append(sub)
        return sub

    async def latest(self, timeout: float | None = 10.0) -> tuple[Any, dict[str, Any]]:
        """One frame: the next one published (a ``latest`` subscription of
        one frame, closed after).

        Raises
        ------
        TimeoutError
            No frame within ``timeout`` seconds.
        """
        async with self.subscribe(policy="latest") as sub:
            return await sub.get(timeout)

    @property
    def subscriptions(self) -> list[AsyncSubscription]:
        """The live subscriptions of this proxy to this stream."""
        return list(self._subs)

    def _forget(self, sub: AsyncSubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def __repr__(self) -> str:
        return f"<AsyncStream {self.name} of {self._client.url}>"


class StreamSlot:
    """Class attribute of an asyncio proxy for one remote stream."""

    def __init__(self, name: str, stream: RPCStream) -> None:
        self.name = name
        self.stream = stream
        self.__doc__ = stream.doc or None

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        handles = _state(obj).handles
        handle = handles.get(self.name)
        if handle is None:
            handle = handles[self.name] = AsyncStream(obj, self.name, self.stream.doc)
        return handle

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"stream {self.name!r} cannot be assigned")


def apply_inventory(client: Any, inventory: dict) -> None:
    """Learn the server's streams and stream URL from its native inventory
    (a restarted tcp server binds its stream socket on a new port)."""
    state = _state(client)
    names, url = inventory.get("streams"), inventory.get("stream_url")
    if type(names) is not list or type(url) is not str:
        state.urls = {}  # a server without streams
        return
    try:
        url = transport.connect_url_for(client.url, url)
    except ValueError:
        _log.warning("ignored a malformed stream URL %r", url[:200])
        return
    state.urls = {name: url for name in names if type(name) is str}


def has_streams(client: Any) -> bool:
    """Whether the client's server serves streams (per its inventory)."""
    return bool(_state(client).urls)


def _subscriptions(client: Any) -> list[AsyncSubscription]:
    handles = client.__dict__.get("_aio_streams")
    if handles is None:
        return []
    return [sub for handle in handles.handles.values() for sub in handle._subs]


async def aclose_all(client: Any) -> None:
    """Close every subscription of ``client`` (it closes)."""
    for sub in _subscriptions(client):
        await sub.aclose()


def close_all_now(client: Any, linger: int | None = None) -> None:
    """Close every subscription without awaiting (``Context.destroy()``)."""
    for sub in _subscriptions(client):
        sub.close(linger)
