"""Client side of ``RPCStream``: a proxy's stream handles.

``apply_inventory`` (called by the proxy whenever it reads an inventory)
gives the proxy a ``StreamHandle`` per stream, in its ``__dict__`` under
the stream's name, and keeps their ``url`` current across server
restarts; each ``subscribe`` starts a ``Subscription`` thread
(``framerpc._subscription``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .. import transport
from ..stream import Policy, RPCStream, check_policy, declared_streams
from ..wire.messages import Request, RPCEvents
from .subscription import Subscription

__all__ = ["StreamHandle", "Subscription", "apply_inventory", "close_all"]

_log = logging.getLogger(__name__)


class StreamHandle(RPCStream):
    """A proxy's side of one remote ``RPCStream``: ``subscribe``, ``latest``."""

    def __init__(self, proxy: Any, name: str, doc: str = "") -> None:
        super().__init__(doc)
        self.name = name
        self._proxy = proxy
        self.url: str | None = None  # the server's stream socket, once known
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(
        self,
        callback: Callable[[Any, dict[str, Any]], object] | None = None,
        *,
        policy: Policy = "latest",
        queue: int | None = None,
    ) -> Subscription:
        """Receive the stream's frames, with flow control.

        Parameters
        ----------
        callback : callable, optional
            Called as ``callback(frame, info)`` in the subscription's
            thread for each frame; the next frame is asked for when it
            returns. Without it, iterate the returned subscription.
        policy : {"latest", "queue"}
            ``latest``: only the newest frame; frames published while the
            consumer was busy are dropped for it alone (counted in
            ``info["dropped"]``). ``queue``: up to ``queue`` frames are
            kept for it, then the oldest are dropped (counted).
        queue : int, optional
            Queue length for ``policy="queue"`` (default 8, at most 256).

        Returns
        -------
        Subscription
            Iterable of ``(frame, info)``, with ``close()`` and ``get()``;
            a context manager.

        Notes
        -----
        Returns once the server acknowledged the subscription (or after
        the proxy's timeout, with a warning logged, when it does not
        answer; the subscription goes on trying): frames published from
        then on are delivered as the policy says.

        Raises
        ------
        ValueError
            A bad policy or queue length.
        RemoteError
            The server refused the subscription (no such stream, too many
            subscribers).
        RuntimeError
            The proxy is closed, speaks the older JSON protocol (which has
            no streams) or the server has no such stream.
        """
        window = check_policy(policy, queue)
        self._resolve()
        sub = Subscription(self, policy, window, callback)
        with self._lock:
            self._subs.append(sub)
        sub.start()
        # like signals: frames published once this returns are delivered
        wait = self._proxy._timeout  # ms; never endless (a server may be down)
        if not sub._answered.wait((wait if wait is not None else 2000) / 1000):
            _log.warning("subscription to stream %s not confirmed yet", self.name)
        elif sub._error is not None:
            error = sub._error
            sub.close()
            raise error
        return sub

    def latest(self, timeout: float | None = 10.0) -> tuple[Any, dict[str, Any]]:
        """One frame: the next one published (a ``latest`` subscription of
        one frame).

        Raises
        ------
        TimeoutError
            No frame within ``timeout`` seconds.
        """
        with self.subscribe(policy="latest") as sub:
            return sub.get(timeout)

    def close_all(self, wait: bool = True) -> None:
        """Close every subscription of this handle (the proxy closes)."""
        with self._lock:
            subs, self._subs = list(self._subs), []
        for sub in subs:
            if wait:
                sub.close()
            else:
                sub.stop()

    def _forget(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _resolve(self) -> None:
        """Learn the stream URL: a proxy in ``auto`` mode read the JSON
        inventory, which does not list streams, so ask natively once."""
        proxy = self._proxy
        if proxy._closed:
            raise RuntimeError(f"client of {proxy.url} is closed")
        if self.url is not None:
            return
        if proxy._protocol != "native":
            raise RuntimeError(
                f"stream {self.name}: the server at {proxy.url} speaks the older "
                "JSON protocol, which has no streams"
            )
        request = Request(RPCEvents.GET_INVENTORY, next(proxy._ids))
        reply = proxy._request(request, proxy._timeout)
        if reply.ok and type(reply.value) is dict:
            proxy._apply_inventory(reply.value)
        if self.url is None:
            raise RuntimeError(f"the server at {proxy.url} has no stream {self.name!r}")


def _handles(proxy: Any) -> dict[str, StreamHandle]:
    return proxy.__dict__.setdefault("_stream_handles", {})


def apply_inventory(proxy: Any, inventory: dict) -> None:
    """Make or update the proxy's stream handles from an inventory.

    Declared streams of the proxy's interface get a handle at once; those
    of a native inventory (``streams``, ``stream_url``) too, with the URL
    (which changes when the server restarted on a new port).
    """
    handles = _handles(proxy)
    names = inventory.get("streams")
    listed = [n for n in names if type(n) is str] if type(names) is list else []
    docs = inventory.get("stream_docs")
    docs = docs if type(docs) is dict else {}
    for name in [*declared_streams(type(proxy)), *listed]:
        if name in handles or not name.isidentifier() or name.startswith("_"):
            continue
        existing = getattr(type(proxy), name, None)
        if existing is not None and not isinstance(existing, RPCStream):
            continue  # would hide a method of the client
        doc = docs.get(name)
        handles[name] = StreamHandle(proxy, name, doc if type(doc) is str else "")
        proxy.__dict__[name] = handles[name]
    url = inventory.get("stream_url")
    if type(url) is not str or type(names) is not list:
        return  # a JSON inventory, or a server without streams
    try:
        url = transport.connect_url_for(proxy.url, url)
    except ValueError:
        _log.warning("ignored a malformed stream URL %r", url[:200])
        return
    for name, handle in handles.items():
        handle.url = url if name in listed else None


def close_all(proxy: Any, wait: bool = True) -> None:
    """Close every subscription of ``proxy`` (``wait=False``: only ask)."""
    for handle in list(proxy.__dict__.get("_stream_handles", {}).values()):
        handle.close_all(wait)


def stream_names(proxy: Any) -> list[str]:
    """Names of the server's streams known to ``proxy``."""
    return sorted(n for n, h in _handles(proxy).items() if h.url is not None)
