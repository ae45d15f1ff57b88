"""RPCSignalReceiver: a thread that turns a server's published signals into
local ``RPCSignal`` emissions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import _lifecycle, _sigseq, transport
from ._peerwatch import PeerWatch
from .errors import ProtocolError
from .signal import RPCSignal
from .wire import json_codec as legacy
from .wire import messages as protocol
from .wire import shm as wire_shm

__all__ = ["RPCSignalReceiver"]

_log = logging.getLogger(__name__)

_POLL_MS = 100
#: JSON whitespace, as bytes of length 1 (see framerpc.server.fanout).
_JSON_SPACE = (b" ", b"\t", b"\n", b"\r")


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
    options : SocketOptions, optional
        Socket tuning.
    confirm_connection : bool
        Watch the connection so that ``wait_connected`` can tell when
        it is up (for publishers without the native handshake).
    server_monitor : zmq.Socket, optional
        Monitor socket of the client's request socket (disconnect and
        handshake events), owned by this thread from ``start`` on.
    server_watch : PeerWatch, optional
        The ``PeerWatch`` of the client's request
        socket, instead of ``server_monitor``: drained every 100 ms to
        notice a restart. Its owner closes it.
    on_reconnect : callable, optional
        Called in this thread when the server came back after a disconnect
        (a restart); returns the signal URL to use from now on, or None.

    Notes
    -----
    Listeners run in this thread. A listener's exception is logged and does
    not stop the receiver. Arguments are checked against the signal's
    types with coercion, so a ``tuple[int, str]`` argument that travelled as
    a list arrives as a tuple; arguments that fail the check are logged and
    emitted as received. Native (msgpack) and older JSON emissions are
    both understood.
    """

    def __init__(
        self,
        context: zmq.Context,
        url: str,
        signals: Mapping[str, RPCSignal],
        *,
        options: transport.SocketOptions = transport.DEFAULT_OPTIONS,
        confirm_connection: bool = False,
        server_monitor: zmq.Socket | None = None,
        server_watch: PeerWatch | None = None,
        on_reconnect: Callable[[], str | None] | None = None,
    ) -> None:
        super().__init__(name=f"RPCSignalReceiver({url})", daemon=True)
        self.context = context
        self.url = url
        self.signals = dict(signals)
        self._stop_flag = threading.Event()
        self._tokens: dict[str, threading.Event] = {}
        self._tokens_lock = threading.Lock()
        self._server_monitor = server_monitor
        self._server_watch = server_watch
        self._watch_losses = server_watch.losses if server_watch else 0
        self._on_reconnect = on_reconnect
        self._server_lost = False
        self._seq = _sigseq.SeqTracker(url)  # sigseq: checks emission numbers
        #: client.shm_signals.SignalShm once the client claimed shared memory
        self.shm: Any = None
        #: The server's id of this subscription (``wire.shm.subscriber_of``)
        self.subscriber: int | None = None
        self.socket = transport.make_socket(context, zmq.SUB, options)
        self._monitor: zmq.Socket | None = None
        try:
            self.socket.setsockopt(zmq.SUBSCRIBE, b"")
            if confirm_connection:  # before connect(), not to miss the event
                self._monitor = self.socket.get_monitor_socket(
                    zmq.EVENT_HANDSHAKE_SUCCEEDED
                )
            self.socket.connect(url)
        except BaseException:
            self._close_monitor()
            transport.close_quietly(self.socket)
            raise

    def run(self) -> None:
        """Receive and dispatch emissions until ``stop``."""
        sock = self.socket
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        if self._server_monitor is not None:
            poller.register(self._server_monitor, zmq.POLLIN)
        next_watch = 0.0
        try:
            while not self._stop_flag.is_set():
                ready = dict(poller.poll(_POLL_MS))
                if self._server_monitor in ready:
                    self._watch_server()
                if self._server_watch is not None:
                    now = time.monotonic()
                    if now >= next_watch:
                        next_watch = now + _POLL_MS / 1000
                        self._follow_watch()
                if sock not in ready:
                    continue
                # not recv_multipart: parts past RECV_FRAMES_KEPT are dropped
                frames = transport.recv_frames(sock)
                try:
                    self._dispatch(frames)
                except ProtocolError as exc:
                    _log.warning("ignored a malformed signal message: %s", exc)
                except Exception:  # a bug here must not silence the signals
                    _log.exception("ignored a signal message that failed")
                if self.shm is not None:  # the arrays its listeners let go
                    self.shm.flush()
        except zmq.ZMQError as exc:
            # ETERM: ctx.term() or ctx.destroy(), a clean stop
            if not (self._stop_flag.is_set() or _lifecycle.is_context_terminated(exc)):
                _log.error("signal receiver for %s failed: %s", self.url, exc)
        finally:
            self._close_monitor()  # confirm_connection without wait_connected
            transport.close_quietly(self._server_monitor)
            transport.close_quietly(sock)
            if self.shm is not None:  # ended: the client's word on what it holds
                try:
                    self.shm.ended()
                except Exception as exc:  # the slots stay until the client goes
                    _log.debug("no word on the end of %s: %s", self.url, exc)

    def stop(self) -> None:
        """Ask the thread to stop; it closes its socket within 0.1 s."""
        self._stop_flag.set()
        if self.ident is None:  # never started: nobody else will close it
            self._close_monitor()
            transport.close_quietly(self._server_monitor)
            transport.close_quietly(self.socket)

    def _watch_server(self) -> None:
        """Follow a restarted server: a new process binds a new signal port."""
        assert self._server_monitor is not None
        event = recv_monitor_message(self._server_monitor)["event"]
        if event == zmq.EVENT_DISCONNECTED:
            self._server_lost = True
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED and self._server_lost:
            self._on_server_back()

    def _follow_watch(self) -> None:
        """The ``server_watch`` twin of ``_watch_server``."""
        watch = self._server_watch
        assert watch is not None
        watch.drain()
        if watch.losses != self._watch_losses:
            self._server_lost = True
        if self._server_lost and watch.up:
            self._watch_losses = watch.losses
            self._on_server_back()

    def _on_server_back(self) -> None:
        self._server_lost = False
        try:
            url = self._on_reconnect() if self._on_reconnect else None
        except Exception as exc:
            if _lifecycle.is_context_terminated(exc):
                raise
            _log.exception("could not follow the restart of %s", self.url)
            return
        if url and url != self.url:
            _log.info("server restarted: signals now from %s", url)
            try:
                self.socket.disconnect(self.url)
            except zmq.ZMQError:
                pass  # not connected any more
            self.socket.connect(url)
            self.url = url

    def wait_connected(self, timeout_ms: int) -> bool:
        """Before ``start``: wait until the publisher connection is up.

        Needs ``confirm_connection=True``; for publishers without the native
        handshake. The subscription is sent right after the connection
        handshake, so an emission published once this returned True is
        received but for a race of about a network round trip.

        Returns
        -------
        bool
            Whether the connection handshake completed within ``timeout_ms``.

        Raises
        ------
        RuntimeError
            The receiver was started or made without ``confirm_connection``.
        """
        if self._monitor is None or self.ident is not None:
            raise RuntimeError("wait_connected needs confirm_connection, before start")
        deadline = time.monotonic() + timeout_ms / 1000
        try:
            while True:
                wait = int((deadline - time.monotonic()) * 1000)
                if wait <= 0 or not self._monitor.poll(wait):
                    return False
                event = recv_monitor_message(self._monitor)
                if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return True
        finally:
            self._close_monitor()

    def _close_monitor(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            # Called only by the thread that owns the SUB socket: the maker
            # before start(), else the receiver thread.
            self.socket.disable_monitor()
            transport.close_quietly(monitor)

    def forget_token(self, token: str) -> None:
        """Stop waiting for ``token`` (the handshake is over)."""
        with self._tokens_lock:
            self._tokens.pop(token, None)

    def expect_token(self, token: str) -> threading.Event:
        """Event set when the handshake ``token`` is received (see client)."""
        with self._tokens_lock:
            return self._tokens.setdefault(token, threading.Event())

    def _dispatch(self, frames: list) -> None:
        first = frames[0].buffer
        # a framerpc server's JSON emissions start with a subscriber prefix
        # of JSON whitespace (no msgpack header starts with those bytes)
        if protocol.is_legacy_frame(first) or first[:1] in _JSON_SPACE:
            emission = legacy.decode_signal(frames[0])
        elif self.shm is None:
            emission = protocol.decode_signal(frames)
        else:  # arrays may come as references into shared memory
            emission = self.shm.decode(frames)
        name = emission.name
        args: Sequence[Any] = emission.args  # validate_args makes a tuple of it
        if name == protocol.SYNC_SIGNAL:
            self.subscriber = wire_shm.subscriber_of(first)
            if args and type(args[0]) is bytes and self.shm is not None:
                self.shm.nonce(args[0])  # a claim's proof (client.shm_signals)
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
        # sigseq: drop malformed or repeated numbers, count gaps
        if not self._seq.accept(signal.sequence, name, emission.seq, emission.epoch):
            return
        try:
            args = signal.validate_args(*args, coerce=True)
        except (TypeError, RuntimeError) as exc:
            _log.warning("signal %s: %s; emitting the arguments as received", name, exc)
        try:
            signal.emit(*args)
        except Exception:
            _log.exception("a listener of signal %s raised", name)
