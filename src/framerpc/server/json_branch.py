"""The older JSON protocol on the server's socket: answering its requests
and binding its JSON signal socket at the first INIT_SIGNALS_HANDLING."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import zmq

from .. import transport
from ..errors import ProtocolError
from ..wire import json_codec
from ..wire.messages import RPCEvents
from .dispatch import _clip

if TYPE_CHECKING:
    from .._ratelog import RateLimitedLog
    from ..wire.messages import Reply, Request
    from .fanout import Fanout, SignalFanouts

__all__ = ["JsonBranchMixin"]

_log = logging.getLogger(__name__)


class JsonBranchMixin:
    """RPCServer's JSON branch (see ``RPCServer``)."""

    # set by RPCServer.__init__
    url: str
    _zmq_context: zmq.Context
    _options: transport.SocketOptions
    _limits: tuple[int, int, int, int]
    _refusals: RateLimitedLog
    _json_methods: dict[str, int | None]
    _buffer_methods: dict[str, int | None]
    _signal_lock: threading.Lock
    _signal_port: int | None
    _signal_budget: SignalFanouts
    _legacy_signal_socket: zmq.Socket | None
    _legacy_signal_fanout: Fanout | None
    _legacy_signal_port: int | None

    if TYPE_CHECKING:  # DiscoveryMixin's, DispatchMixin's, ServeLoopMixin's

        def _inventory(self) -> dict: ...

        def _execute(self, request: Request) -> tuple[Reply, bool]: ...

        def _send(
            self, envelope: list, frames: list, request_id: int | None = None
        ) -> None: ...

        def _stop_after_grace(self) -> None: ...

    def _handle_legacy(self, envelope: list, body: list) -> None:
        """Answer a request of the older JSON protocol, as its tables say."""
        try:
            request = json_codec.decode_request(body, *self._limits[1:])
        except ProtocolError as exc:
            text = _clip(str(exc))  # may quote the hostile bytes
            self._refusals.warning("malformed JSON request: %s", text)
            self._send(envelope, json_codec.encode_error(f"ProtocolError: {text}"))
            return
        event = request.event
        if event is RPCEvents.GET_INVENTORY:
            frames = json_codec.encode_inventory(self._inventory())
        elif event is RPCEvents.INIT_SIGNALS_HANDLING:
            try:
                frames = json_codec.encode_signal_port(self._start_legacy_signals())
            except _NoSignalPort as exc:
                frames = json_codec.encode_error(str(exc))
        elif (
            event is RPCEvents.METHOD_CALL
            and request.method not in self._json_methods
            and request.method not in self._buffer_methods
        ):
            frames = json_codec.method_not_implemented(_clip(request.method))
        else:
            reply, is_buffer = self._execute(request)
            frames = json_codec.encode_reply(event, reply, is_buffer)
        self._send(envelope, frames)
        if event is RPCEvents.STOP_SERVER:
            self._stop_after_grace()

    def _start_legacy_signals(self) -> int:
        """TCP port of the JSON signal socket, bound at the first call.

        Raises
        ------
        _NoSignalPort
            The server is not on TCP (the older protocol describes the
            signal socket by a port only) or the port cannot be bound.
        """
        with self._signal_lock:
            if self._legacy_signal_port is not None:
                return self._legacy_signal_port
            if self._signal_port is None:
                raise _NoSignalPort(
                    f"signals of a server at {self.url} have no TCP port; "
                    "connect with framerpc's native protocol"
                )
            sock = transport.make_socket(
                self._zmq_context, zmq.XPUB, self._options, server=True
            )
            sock.setsockopt(zmq.SNDHWM, self._options.signal_hwm)
            # per-subscriber delivery, JSON-whitespace prefixes (fanout)
            legacy = self._signal_budget.attach(sock, json=True)
            try:
                _, port = transport.bind(
                    sock, transport.derive_endpoint(self.url, ""), self._options
                )
            except zmq.ZMQError as exc:
                transport.close_quietly(sock)
                self._signal_budget.fanouts.remove(legacy)
                _log.warning("cannot bind the JSON signal socket: %s", exc)
                raise _NoSignalPort(f"cannot bind a signal socket: {exc}") from exc
            assert port is not None  # on tcp://, as the server is (_signal_port)
            self._legacy_signal_socket, self._legacy_signal_port = sock, port
            self._legacy_signal_fanout = legacy
            return port


class _NoSignalPort(RuntimeError):
    """JSON signals cannot be offered; the message says why."""
