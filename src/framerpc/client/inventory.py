"""How a client reads the server's inventory: protocol detection, the
signal subscription (native handshake or the older JSON signals) and
following a restarted server."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING

from .. import _sigseq, transport
from .._peerwatch import PeerWatch
from ..errors import ProtocolError
from ..signal import RPCSignal, UntypedSignal
from ..signal_receiver import RPCSignalReceiver
from ..wire import json_codec
from ..wire.messages import Reply, Request, RPCEvents
from . import streams as _streamsub
from .restart import RestartWatcher

if TYPE_CHECKING:
    import zmq

    from .shm import ShmLink

__all__ = ["InventoryMixin"]

_log = logging.getLogger(__name__)

#: Longest wait (ms) for the signal subscription handshake.
_SYNC_WAIT_MS = 2000


class InventoryMixin:
    """RPCClient's set-up from the inventory (see ``RPCClient``)."""

    # set by RPCClient.__init__
    url: str
    name: str
    _zmq_context: zmq.Context
    _timeout: int
    _lock: threading.Lock
    _closed: bool
    _protocol: str
    _options: transport.SocketOptions
    _ids: itertools.count[int]
    _json_methods: dict[str, int | None]
    _buffer_methods: dict[str, int | None]
    _signals: dict[str, RPCSignal]
    _properties: list[str]
    _signal_receiver: RPCSignalReceiver | None
    _restart_watcher: RestartWatcher | None
    _watch: PeerWatch | None
    _shm: ShmLink | None

    if TYPE_CHECKING:  # CallsMixin's

        def _request(
            self, request: Request, timeout: int | None, *, patient: bool = False
        ) -> Reply: ...

        def _reset_socket(self) -> None: ...

    def _load_inventory(self, detect: bool) -> None:
        reply = self._request(
            Request(RPCEvents.GET_INVENTORY, next(self._ids)), self._timeout
        )
        inventory = reply.value if reply.ok else None
        if type(inventory) is not dict:
            raise ProtocolError(f"server at {self.url} sent no inventory: {reply}")
        if detect and json_codec.is_framerpc_inventory(inventory):
            self._protocol = "native"
            with self._lock:
                self._reset_socket()  # with the native socket options
        _log.debug("speaking the %s protocol to %s", self._protocol, self.url)
        self._apply_inventory(inventory)
        for name in inventory.get("signals", []):
            local = getattr(self, name, None)
            self._signals[name] = (
                local if isinstance(local, RPCSignal) else UntypedSignal()
            )
        _sigseq.bind_snapshots(self, self._signals)  # sigseq: connect(snapshot=)
        if not self._signals:
            if self._protocol == "native" and not self.url.startswith("inproc://"):
                self._watch_restarts()
            return
        if self._protocol == "legacy":
            self._start_legacy_signals()
            return
        signal_url = transport.connect_url_for(self.url, inventory["signal_url"])
        # A restarted server binds a new signal port: the receiver watches
        # our connection and follows (inproc servers cannot restart apart).
        self._signal_receiver = RPCSignalReceiver(
            self._zmq_context,
            signal_url,
            self._signals,
            options=self._options,
            server_watch=self._watch,
            on_reconnect=self._reload_inventory,
        )
        self._signal_receiver.start()
        self._sync_signals()

    def _watch_restarts(self) -> None:
        """Without signals, no receiver follows a restarted server: a
        watcher thread reads its inventory again when it comes back."""
        if self._watch is None:
            return
        watcher = RestartWatcher(self._watch, self.url, self._reload_inventory)
        self._restart_watcher = watcher
        watcher.start()

    def _reload_inventory(self) -> str | None:
        """After a server restart: read its inventory again; return the
        URL of its (new) signal socket, or None when it does not answer."""
        try:
            # patient: a user's long call must not make us give up the signals
            reply = self._request(
                Request(RPCEvents.GET_INVENTORY, next(self._ids)),
                self._timeout,
                patient=True,
            )
        except (TimeoutError, RuntimeError) as exc:
            if not self._closed:  # close() while reading it: nothing to say
                _log.warning("inventory of restarted %s: %s", self.url, exc)
            return None
        inventory = reply.value if reply.ok else None
        if type(inventory) is not dict or "signal_url" not in inventory:
            return None
        self._apply_inventory(inventory)
        shm = getattr(self, "_shm", None)
        if shm is not None and shm.handshake() is False:  # a new connection
            self._shm = None  # the server has shared memory no more
            shm.close()
        return transport.connect_url_for(self.url, inventory["signal_url"])

    def _apply_inventory(self, inventory: dict) -> None:
        self.name = inventory.get("name", "")
        self._json_methods = dict(inventory.get("json_methods", {}))
        self._buffer_methods = dict(inventory.get("buffer_methods", {}))
        self._properties = list(inventory.get("properties", []))
        # optional fields (framerpc servers, native inventory only)
        extra = {key: value for key, value in inventory.items() if type(value) is dict}
        self._signatures: dict[str, str] = extra.get("signatures", {})
        self._docs: dict[str, str] = extra.get("docs", {})
        self._signal_types: dict[str, list[str]] = extra.get("signal_types", {})
        _streamsub.apply_inventory(self, inventory)  # streams: handles and URL

    def _start_legacy_signals(self) -> None:
        """Subscribe to an older server's JSON signals (tcp:// only)."""
        reply = self._request(
            Request(RPCEvents.INIT_SIGNALS_HANDLING, 0), self._timeout
        )
        kind, host, _ = transport.parse_url(self.url)
        port = reply.value
        if not reply.ok or kind != "tcp" or type(port) is not int:
            _log.warning(
                "no signals from %s: %s", self.url, reply.error or f"port {port!r}"
            )
            return
        receiver = RPCSignalReceiver(
            self._zmq_context,
            f"tcp://{host}:{port}",
            self._signals,
            options=self._options,
            confirm_connection=True,
        )
        self._signal_receiver = receiver
        # No handshake exists in the older protocol: waiting for the
        # connection narrows the window in which an emission is missed.
        if not receiver.wait_connected(_SYNC_WAIT_MS):
            _log.warning("signal connection to %s not confirmed", self.url)
        receiver.start()

    def _sync_signals(self) -> None:
        """Wait until the subscription is live, so no emission is missed."""
        assert self._signal_receiver is not None
        token = uuid.uuid4().hex
        seen = self._signal_receiver.expect_token(token)
        deadline = time.monotonic() + _SYNC_WAIT_MS / 1000
        while not seen.is_set() and time.monotonic() < deadline:
            request = Request(
                RPCEvents.INIT_SIGNALS_HANDLING, next(self._ids), name=token
            )
            self._request(request, self._timeout)
            seen.wait(0.02)
        self._signal_receiver.forget_token(token)
        if not seen.is_set():
            _log.warning("signal subscription to %s not confirmed", self.url)
