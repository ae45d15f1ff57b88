"""RPCSignalReceiver: a thread that turns a server's published signals into
local :class:`~framerpc.RPCSignal` emissions."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import zmq

from . import protocol, transport
from .errors import ProtocolError
from .signal import RPCSignal

__all__ = ["RPCSignalReceiver"]

_log = logging.getLogger(__name__)

_POLL_MS = 100


class RPCSignalReceiver(threading.Thread):
    """Subscribe to a server's signal socket and emit the local signals.

    Parameters
    ----------
    context : zmq.Context
        Context for the SUB socket.
    url : str
        The server's signal endpoint (``signal_url`` of its inventory).
    signals : dict of str to RPCSignal
        Local signals to emit, by remote signal name.

    Notes
    -----
    Listeners run in this thread. A listener's exception is logged and does
    not stop the receiver. Arguments are checked against the signal's
    types with coercion, so a ``tuple[int, str]`` argument that travelled as
    a list arrives as a tuple; arguments that fail the check are logged and
    emitted as received.
    """

    def __init__(
        self,
        context: zmq.Context,
        url: str,
        signals: Mapping[str, RPCSignal],
        *,
        options: transport.SocketOptions = transport.DEFAULT_OPTIONS,
    ) -> None:
        super().__init__(name=f"RPCSignalReceiver({url})", daemon=True)
        self.context = context
        self.url = url
        self.signals = dict(signals)
        self._stop_flag = threading.Event()
        self._tokens: dict[str, threading.Event] = {}
        self._tokens_lock = threading.Lock()
        self.socket = transport.make_socket(context, zmq.SUB, options)
        try:
            self.socket.setsockopt(zmq.SUBSCRIBE, b"")
            self.socket.connect(url)
        except BaseException:
            self.socket.close()
            raise

    def run(self) -> None:
        """Receive and dispatch emissions until :meth:`stop`."""
        sock = self.socket
        try:
            while not self._stop_flag.is_set():
                if not sock.poll(_POLL_MS):
                    continue
                frames = sock.recv_multipart(copy=False)
                try:
                    self._dispatch(frames)
                except ProtocolError as exc:
                    _log.warning("ignored a malformed signal message: %s", exc)
        except zmq.ZMQError as exc:
            if not self._stop_flag.is_set():
                _log.error("signal receiver for %s failed: %s", self.url, exc)
        finally:
            transport.close_quietly(sock)

    def stop(self) -> None:
        """Ask the thread to stop; it closes its socket within 0.1 s."""
        self._stop_flag.set()
        if self.ident is None:  # never started: nobody else will close it
            transport.close_quietly(self.socket)

    def forget_token(self, token: str) -> None:
        """Stop waiting for ``token`` (the handshake is over)."""
        with self._tokens_lock:
            self._tokens.pop(token, None)

    def expect_token(self, token: str) -> threading.Event:
        """Event set when the handshake ``token`` is received (see client)."""
        with self._tokens_lock:
            return self._tokens.setdefault(token, threading.Event())

    def _dispatch(self, frames: list) -> None:
        if protocol.is_legacy_frame(frames[0].buffer):
            name, args = _decode_json_emission(frames[0].bytes)
        else:
            emission = protocol.decode_signal(frames)
            name, args = emission.name, emission.args
        if name == protocol.SYNC_SIGNAL:
            if args and type(args[0]) is str:
                # Other clients' tokens arrive too: only ours are awaited.
                with self._tokens_lock:
                    seen = self._tokens.get(args[0])
                if seen is not None:
                    seen.set()
            return
        signal = self.signals.get(name)
        if signal is None:
            _log.debug("no local signal named %r", name)
            return
        try:
            args = signal.validate_args(*args, coerce=True)
        except (TypeError, RuntimeError) as exc:
            _log.warning("signal %s: %s; emitting the arguments as received", name, exc)
        try:
            signal.emit(*args)
        except Exception:
            _log.exception("a listener of signal %s raised", name)


def _decode_json_emission(data: bytes) -> tuple[str, list]:
    """Emission published by a server of the older JSON protocol."""
    try:
        message: Any = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: deep nesting
        raise ProtocolError(f"signal frame is not JSON: {exc}") from exc
    if (
        type(message) is not dict
        or message.get("event") != protocol.RPCEvents.EMIT_SIGNAL
        or type(message.get("signal")) is not str
        or type(message.get("args", [])) is not list
    ):
        raise ProtocolError("JSON signal message needs event, signal and args")
    return message["signal"], message.get("args", [])
