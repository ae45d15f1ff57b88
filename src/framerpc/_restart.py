"""RestartWatcher: a proxy without signals follows a server restarted on its URL.

A proxy with signals learns of a restart through its signal receiver, which
watches the request socket's connection (see :mod:`framerpc.signal_receiver`).
A proxy without signals has no such thread; this one watches the same
monitor events and reads the server's inventory again once a server is
back after a disconnect, so method tables, timeouts and name follow the
new process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import _lifecycle, transport

__all__ = ["RestartWatcher"]

_log = logging.getLogger(__name__)

#: Longest wait (ms) of the watcher: how soon it notices stop().
_POLL_MS = 100


class RestartWatcher(threading.Thread):
    """Call ``on_reconnect`` each time the server comes back after a disconnect.

    Parameters
    ----------
    monitor : zmq.Socket
        Monitor socket of the proxy's request socket (disconnect and
        handshake events); this thread owns it from :meth:`start` on and
        closes it.
    url : str
        The server's URL, for messages.
    on_reconnect : callable
        Called in this thread after a restart (reads the inventory again);
        its result is ignored, its exceptions are logged.
    """

    def __init__(
        self, monitor: zmq.Socket, url: str, on_reconnect: Callable[[], object]
    ) -> None:
        super().__init__(name=f"RestartWatcher({url})", daemon=True)
        self.url = url
        self._monitor = monitor
        self._on_reconnect = on_reconnect
        self._stop_flag = threading.Event()

    def run(self) -> None:
        """Watch until :meth:`stop` or the context's termination."""
        monitor = self._monitor
        server_lost = False
        try:
            while not self._stop_flag.is_set():
                if not monitor.poll(_POLL_MS):
                    continue
                event = recv_monitor_message(monitor)["event"]
                if event == zmq.EVENT_DISCONNECTED:
                    server_lost = True
                elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED and server_lost:
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
        finally:
            transport.close_quietly(monitor)

    def stop(self) -> None:
        """Ask the thread to stop; it closes its socket within 0.1 s."""
        self._stop_flag.set()
        if self.ident is None:  # never started: nobody else will close it
            transport.close_quietly(self._monitor)
