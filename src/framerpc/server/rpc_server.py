"""RPCServer: exposes a device's methods, properties and signals.

One thread runs ``RPCServer.serve_forever``: it receives requests on a
ROUTER socket, dispatches them to the decorated methods and replies with
the same routing envelope, so REQ and DEALER clients are both served and a
bad message never breaks the socket's state. Signals go out on an XPUB
socket, subscriber by subscriber (``fanout``), from whichever thread
emits them.

Clients of the older JSON protocol (see ``framerpc.wire.json_codec``) are served
on the same socket: a frame 0 starting with ``{`` takes the JSON branch.
Their signals go out as JSON on a second XPUB socket, bound at the first
JSON INIT_SIGNALS_HANDLING: native subscribers never see JSON (nor pay for
encoding it) and older subscribers never see msgpack.

This module holds the class, its construction and lifecycle; the jobs are
mixins in this package: ``decorators``, ``discovery``, ``registration``,
``serve_loop``, ``dispatch``, ``json_branch``, ``publishing`` (and the
reply backlog in ``outbox``, the per-subscriber signal bound in
``fanout``).
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Self

import zmq

from .. import _lifecycle, _sigseq, sdnotify, transport
from .._ratelog import RateLimitedLog
from ..limits import MAX_DEPTH, MAX_FRAMES, MAX_HEADER_SIZE, MAX_OBJECTS
from ..property import RPCProperty
from ..rpc import callpath
from ..signal import RPCSignal
from . import fanout, outbox
from . import streams as _streamhub
from .decorators import DecoratorsMixin
from .discovery import DiscoveryMixin
from .dispatch import DispatchMixin, _check_buffer_result
from .json_branch import JsonBranchMixin
from .lane import LaneServer
from .publishing import PublishingMixin, _signal_budget
from .registration import RegistrationMixin
from .serve_loop import ServeLoopMixin
from .shm_frames import ShmServer
from .shm_signals import ShmSignals

__all__ = ["RPCServer"]

_log = logging.getLogger(__name__)

#: framing.decode's own limits: (max_frames, max_header, max_objects, max_depth).
_DEFAULT_LIMITS = (
    MAX_FRAMES,
    MAX_HEADER_SIZE,
    MAX_OBJECTS,
    MAX_DEPTH,
)


class RPCServer(
    DecoratorsMixin,
    DiscoveryMixin,
    RegistrationMixin,
    ServeLoopMixin,
    DispatchMixin,
    JsonBranchMixin,
    PublishingMixin,
):
    """Serve an interface's implementation to ``RPCClient`` proxies.

    Subclass both the interface and ``RPCServer``, decorate the remotely
    callable methods with ``register_method_json`` or
    ``register_method_buffer``, then call ``start`` (serve in a
    background thread; ``close`` or leaving a ``with`` block stops it)
    or ``serve_forever`` (serve in the calling thread).

    Parameters
    ----------
    context : zmq.Context
        Context for the server's sockets.
    url : str
        Where to listen: ``tcp://host:port``, ``tcp://host`` (a free port is
        picked, see ``port``), ``ipc://path`` or ``inproc://name``.
    alive_timeout : int
        Seconds after which a registry forgets this server if it stops
        checking in (it checks in three times per period while serving).
    options : SocketOptions, optional
        Socket tuning (high-water marks, largest accepted message, ipc://
        file mode, reply backlog and signal buffer bounds...).
    allow_remote_stop : bool
        Whether a client's STOP_SERVER request (``RPCClient.stop_server()``
        or the older protocol's) may stop the server. True (the default,
        as before) lets any client stop a server without security; a
        server with CURVE security honours it only from the keys in
        ``Security.admin_keys_dir`` (none without it). False refuses it
        from everyone: the client gets an error reply (``stop_server()``
        returns False) and the server goes on serving. ``stop_server``
        on the server object always works.

    Attributes
    ----------
    context, url, alive_timeout, port
        As given; ``url`` is the bound endpoint and ``port`` its TCP port
        (None for ipc:// and inproc://).
    uuid, name, registry_addr
        Set by ``register_to_registry`` (None, "" and "" before).
    stats : dict
        Counters of what the server gave up on (see ``stats``).
    """

    def __init__(
        self,
        context: zmq.Context,
        url: str,
        alive_timeout: int = 60,
        *,
        options: transport.SocketOptions = transport.DEFAULT_OPTIONS,
        allow_remote_stop: bool = True,
    ) -> None:
        transport.check_url(url, for_bind=True)
        self.context = context
        # framerpc's sockets live in a shadow of the context, so that
        # context.destroy() cannot close them under the serving thread;
        # self._destroy_hook stands in for them (see _lifecycle).
        self._zmq_context = _lifecycle.private_context(context)
        self.alive_timeout = alive_timeout
        self._options = options
        self.allow_remote_stop = allow_remote_stop
        self._stop_granted = False  # the last STOP_SERVER was authorised
        self._message: list | None = None  # frames of the request in _handle
        self.uuid: str | None = None
        self.name = ""
        self.registry_addr = ""
        self._registry_link = None
        self._json_methods, self._buffer_methods = {}, {}
        self._rpc_properties: dict[str, RPCProperty] = {}
        self._signals: dict[str, RPCSignal] = {}
        self._discover()
        self._stopping = False  # set by stop_server(), from any thread
        self._stop_at: float | None = None  # set by a STOP_SERVER request
        # systemd's watchdog when run under it (NOTIFY_SOCKET), else no-op
        self._watchdog = sdnotify.Watchdog()
        self._serving = threading.Lock()
        self._serving_ident: int | None = None  # the thread in serve_forever
        self._thread: threading.Thread | None = None  # start()'s thread
        self._ready = threading.Event()  # serve_forever is answering (or over)
        self._terminated = False  # the context is (being) terminated
        self._dead = False
        self._signal_lock = threading.Lock()
        self._sequencer = _sigseq.Sequencer()  # sigseq: emission numbers
        self._socket = transport.make_socket(
            self._zmq_context, zmq.ROUTER, options, server=True
        )
        # A reply to a full queue raises EAGAIN (kept in the backlog) and one
        # to a client that left EHOSTUNREACH (counted), instead of a silent
        # drop; every send is then non-blocking (a blocking one would wait).
        self._socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._backlog = outbox.ReplyBacklog(
            self._socket,
            transport.send_frames,
            options.reply_backlog_messages,
            options.reply_backlog_bytes,
            options.reply_backlog_total_bytes,
        )
        self._signal_budget = _signal_budget(options)
        self._signal_socket: zmq.Socket | None = None
        # JSON signals for older clients: bound on their first request.
        self._legacy_signal_socket: zmq.Socket | None = None
        self._legacy_signal_fanout: fanout.Fanout | None = None
        self._legacy_signal_port: int | None = None
        self._stream_hub: _streamhub.StreamHub | None = None  # streams
        try:
            self.url, self.port = transport.bind(self._socket, url, options)
            self._signal_socket = transport.make_socket(
                self._zmq_context, zmq.XPUB, options, server=True
            )
            self._signal_socket.setsockopt(zmq.SNDHWM, options.signal_hwm)
            # per-subscriber delivery and byte bound (fanout), before bind
            self._signal_fanout = self._signal_budget.attach(self._signal_socket)
            self._signal_url, self._signal_port = transport.bind(
                self._signal_socket,
                transport.derive_endpoint(self.url, ".signals"),
                options,
            )
            self._stream_hub = _streamhub.attach(self)  # streams: None without any
        except Exception:
            self._close_sockets()
            raise
        for name in self._signals:
            getattr(self, name).connect(functools.partial(self._publish_signal, name))
        # the bounds of one received message (see SocketOptions)
        self._limits = (
            MAX_FRAMES,
            options.max_header_size,
            options.max_objects,
            options.max_depth,
        )
        # a flood of bad requests must not flood the log
        self._refusals = RateLimitedLog(_log)
        self._shm = ShmServer(options, self._socket)  # same-host shared memory
        if self._shm.enabled:  # and references in signals (shm_signals)
            ShmSignals(self._shm, self._signal_fanout, self._signal_lock)
        # same-host calls over a Unix socket (server.lane), with shm only
        self._lane = (
            LaneServer(self._socket, self._send)
            if self._shm.enabled and options.lane
            else None
        )
        # answers plain method calls; _handle_body takes everything else
        # with the same envelope, _handle the other envelopes
        self._responder = callpath.Responder(
            self._socket,
            self,
            self._json_methods,
            self._buffer_methods,
            _check_buffer_result,
            self._method_failed,
            self._send_failed,
            fallback=self._handle_body,
            # None: the defaults, without passing them on each call
            limits=None if self._limits == _DEFAULT_LIMITS else self._limits,
        )
        self._destroy_hook = _lifecycle.DestroyHook(
            context, f"RPCServer {self.url}", self._on_context_destroy
        )

    def start(self, timeout: float = 10.0) -> None:
        """Serve in a background thread; return once requests are answered.

        Pair it with ``close`` (or use the server as a context manager).

        Parameters
        ----------
        timeout : float
            Longest wait (s) for the serving thread to start.

        Raises
        ------
        RuntimeError
            The server was started already, is stopped, or its thread did
            not start serving within ``timeout``.
        """
        if self._dead:
            raise RuntimeError(f"server at {self.url} is stopped")
        if self._thread is not None or self._serving_ident is not None:
            raise RuntimeError(f"server at {self.url} is already serving")
        thread = threading.Thread(
            target=self._serve_in_thread, name=f"RPCServer({self.url})", daemon=True
        )
        self._thread = thread
        thread.start()
        if not self._ready.wait(timeout) or not thread.is_alive() or self._dead:
            raise RuntimeError(f"server at {self.url} did not start serving")

    def _serve_in_thread(self) -> None:
        try:
            self.serve_forever()
        except Exception:
            _log.exception("server at %s stopped on an error", self.url)
        finally:
            self._ready.set()  # start() must not wait for a thread that ended

    def close(self, timeout: float = 10.0) -> None:
        """Stop serving, wait until serving has stopped, close the sockets.

        Unregisters from the registry. Idempotent; callable from any
        thread. Called from a method the server is running, it only
        stops the server, 0.2 s after the method's reply (the serving
        thread cannot wait for itself).
        Afterwards ``context.term()`` returns at once.

        Parameters
        ----------
        timeout : float
            Longest wait (s) for the serving thread (a method still running
            delays it).
        """
        if self._serving_ident == threading.get_ident():
            # From a method: its reply goes out first, and the client must
            # read it before the connection closes (see _STOP_GRACE_S).
            self._stop_soon()
            return
        self.stop_server()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        # serve_forever may run in a thread of the caller's: wait for it too
        if self._serving.acquire(timeout=timeout):
            try:
                self._shutdown()  # a no-op when serve_forever closed it all
            finally:
                self._serving.release()
        else:
            _log.warning("server at %s still serving after %s s", self.url, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _on_context_destroy(self, linger: int | None) -> None:
        """``context.destroy()``: stop without touching the serving thread's
        sockets (it closes them at its next turn or at the ETERM of the
        ``term()`` that follows); close the others here, as their owner."""
        self._terminated = True  # no unregistering: the context goes next
        self._stopping = True
        if self._options.security is not None:
            from ..transport.authenticator import stop_handler

            stop_handler(self._zmq_context)  # it would not stop at ETERM
        with self._signal_lock:  # emitting threads use them only under it
            self._signal_budget.close()  # the fanouts' own pipes
            for sock in (self._signal_socket, self._legacy_signal_socket):
                _lifecycle.close_socket(sock, linger)
        if self._stream_hub is not None:  # streams: its thread closes its sockets
            self._stream_hub.stop()
        if self._serving.acquire(blocking=False):  # nobody serves
            try:
                self._shutdown()
            finally:
                self._serving.release()

    def _shutdown(self) -> None:
        if self._dead:
            return
        self._dead = True
        sdnotify.stopping()
        try:
            self._unregister()
        except Exception:
            _log.exception("could not unregister %s from the registry", self.url)
        finally:
            if self._backlog.pending:  # a last try, then count what is left
                self._backlog.flush()
                self._backlog.clear("the server stopped")
            self._close_sockets()
            self._shm.close()  # unlinks its segments
            lane = getattr(self, "_lane", None)
            if lane is not None:  # and the lane's socket, its directory
                lane.close()
            hook = getattr(self, "_destroy_hook", None)
            if hook is not None:
                hook.release()

    @property
    def stats(self) -> dict[str, int]:
        """Counters of what the server held for slow peers or gave up on.

        Returns
        -------
        dict
            ``dropped_replies``: replies given up on (a client's backlog
            over ``SocketOptions.reply_backlog_*``, a client that left, or
            still waiting at stop); ``reply_backlog`` and
            ``reply_backlog_bytes``: replies waiting now for a client's
            queue; ``dropped_signals``: signal emissions dropped, the sum
            of ``dropped_signals_for_all`` (sent to nobody: larger than a
            subscriber's byte bound) and ``dropped_signals_for_some``
            (not sent to a subscriber over its byte bound or whose queue
            was full, once per such subscriber);
            ``signal_bytes_in_flight``: bytes of emissions libzmq still
            holds for all subscribers together (those of 4 KiB or more,
            at most ``SocketOptions.signal_buffer_bytes`` per subscriber).
            Shared memory (``framerpc.server.shm_frames``): ``shm_replies`` sent as
            references, ``shm_copies`` of them copied into the server's
            segments (the others were pool frames, not copied),
            ``shm_fallbacks`` sent over the socket because a bound was hit,
            ``shm_bogus_releases`` ignored, ``shm_reclaimed`` slots taken
            back from clients that ended or whose connection was lost,
            ``shm_slots_held`` now. Same-host lane (``server.lane``):
            ``lane_calls`` received on it, ``lane_replies`` sent on it,
            ``lane_zmq_replies`` to lane calls sent over ZeroMQ (too large
            for a packet), ``lane_refused`` connections refused or closed,
            ``lane_connections`` now. Signals (``server.shm_signals``, with
            shared memory on): ``shm_signal_refs``, ``shm_signal_copies``,
            ``shm_signal_fallbacks``, ``shm_signal_refused``,
            ``shm_signal_bogus``, ``shm_signal_slots_held``, ``shm_signal_bound``,
            ``shm_signal_lost``, ``shm_signal_reclaimed`` (references taken
            back at a client's word on a subscription that ended, and from
            ended or lost clients).
        """
        backlog = self._backlog
        with self._signal_lock:
            in_flight = self._signal_budget.refresh()
            dropped_signals = self._signal_budget.dropped
            for_all = self._signal_budget.dropped_for_all
        return {
            "dropped_replies": backlog.dropped,
            "reply_backlog": backlog.messages,
            "reply_backlog_bytes": backlog.nbytes,
            "dropped_signals": dropped_signals,
            "dropped_signals_for_all": for_all,
            "dropped_signals_for_some": dropped_signals - for_all,
            "signal_bytes_in_flight": in_flight,
            **self._shm.stats(),
            **(self._lane.stats() if self._lane is not None else {}),
        }

    @property
    def dropped_replies(self) -> int:
        """Replies the server gave up on (see ``stats``)."""
        return self._backlog.dropped

    @property
    def dropped_signals(self) -> int:
        """Signal emissions dropped (see ``stats``)."""
        return self._signal_budget.dropped

    def _close_sockets(self) -> None:
        if self._stream_hub is not None:  # streams: stop and join the hub
            self._stream_hub.close()
        transport.close_quietly(self._socket)
        with self._signal_lock:
            self._signal_budget.close()  # the fanouts' own pipes
            transport.close_quietly(self._signal_socket)
            transport.close_quietly(self._legacy_signal_socket)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} name={self.name!r}>"
