"""RestartWatcher: a proxy without signals follows a server restarted on its URL.

A proxy with signals learns of a restart through its signal receiver, which
drains the proxy's ``PeerWatch``. A proxy without
signals has no such thread; this one drains the same watch (libzmq allows one
monitor per socket, so the two cannot each have their own) and reads the
server's inventory again once a server is back after a disconnect, so method
tables, timeouts and name follow the new process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import zmq

from .. import _lifecycle
from .._peerwatch import PeerWatch

__all__ = ["RestartWatcher"]

_log = logging.getLogger(__name__)

#: How often (s) the watcher drains the watch: how soon it notices a
#: restart, and how soon it notices stop().
_POLL_S = 0.1


class RestartWatcher(threading.Thread):
    """Call ``on_reconnect`` each time the server comes back after a disconnect.

    Parameters
    ----------
    watch : PeerWatch
        The proxy's watch of its request socket; the watcher only drains
        it (under the watch's own lock) and never closes it.
    url : str
        The server's URL, for messages.
    on_reconnect : callable
        Called in this thread after a restart (reads the inventory again);
        its result is ignored, its exceptions are logged.
    """

    def __init__(
        self, watch: PeerWatch, url: str, on_reconnect: Callable[[], object]
    ) -> None:
        super().__init__(name=f"RestartWatcher({url})", daemon=True)
        self.url = url
        self._watch = watch
        self._on_reconnect = on_reconnect
        self._stop_flag = threading.Event()

    def run(self) -> None:
        """Watch until ``stop`` or the context's termination."""
        watch = self._watch
        losses = watch.losses
        server_lost = False
        try:
            while not self._stop_flag.wait(_POLL_S):
                watch.drain()
                if watch.losses != losses:
                    losses = watch.losses
                    server_lost = True
                if server_lost and watch.up:
                    server_lost = False
                    _log.info("server at %s is back: reading its inventory", self.url)
                    try:
                        self._on_reconnect()
                    except Exception as exc:
                        if _lifecycle.is_context_terminated(exc):
                            raise
                        _log.exception("could not follow the restart of %s", self.url)
        except zmq.ZMQError as exc:
            if not (self._stop_flag.is_set() or _lifecycle.is_context_terminated(exc)):
                _log.error("restart watcher for %s failed: %s", self.url, exc)

    def stop(self) -> None:
        """Ask the thread to stop; it returns within 0.1 s."""
        self._stop_flag.set()
