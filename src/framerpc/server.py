"""RPCServer: exposes a device's methods, properties and signals.

One thread runs ``RPCServer.serve_forever``: it receives requests on a
ROUTER socket, dispatches them to the decorated methods and replies with
the same routing envelope, so REQ and DEALER clients are both served and a
bad message never breaks the socket's state. Signals go out on a PUB
socket from whichever thread emits them.

Clients of the older JSON protocol (see ``framerpc.legacy``) are served
on the same socket: a frame 0 starting with ``{`` takes the JSON branch.
Their signals go out as JSON on a second PUB socket, bound at the first
JSON INIT_SIGNALS_HANDLING: native subscribers never see JSON (nor pay for
encoding it) and older subscribers never see msgpack.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Self, TypeVar, overload

import zmq

from . import (
    _lifecycle,
    _outbox,
    _sigseq,  # sigseq: signal emission numbers, property snapshots
    _streamhub,  # streams: RPCStream publishers and their hub thread
    framing,
    legacy,
    protocol,
    sdnotify,
    security,
    transport,
)
from ._describe import inventory_fields
from ._ratelog import RateLimitedLog
from .errors import ProtocolError, SerializationError
from .property import RPCProperty
from .protocol import Reply, Request, RPCEvents, SignalEmission
from .rpc import callpath
from .signal import RPCSignal

__all__ = ["RPCServer"]

_log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Default time (ms) a client waits for a method, as in the older API.
DEFAULT_METHOD_TIMEOUT = 10000
#: How often (s) the serve loop wakes with no request, to notice stop().
_POLL_S = 0.1
#: Most routing frames before the empty delimiter (REQ through proxies).
_MAX_ENVELOPE = 8
#: How long (s) the server keeps serving after answering STOP_SERVER: a
#: client's DEALER (IMMEDIATE) drops a reply it has not read yet when the
#: connection closes, so closing at once loses the acknowledgement.
_STOP_GRACE_S = 0.2
#: Frames of signal emissions from this size (bytes) are lent to libzmq and
#: counted against ``SocketOptions.signal_buffer_bytes``; smaller ones are
#: copied, and a stalled subscriber holds at most ``signal_hwm`` of them.
#: Lower for a small buffer, so that those stay within a quarter of it.
_SIGNAL_TRACK_MIN = 4096
#: Wait (ms) of the serve loop while replies wait for a client's queue: a
#: ROUTER cannot tell when one peer has room again (its POLLOUT means "some
#: peer has room"), so the loop retries this often, and twice as long
#: after each try that sent nothing (up to _POLL_S: a client that does not
#: read costs a few wake-ups a second).
_FLUSH_WAIT_MS = 2


def _method_decorator(kind: str, timeout: Any) -> Any:
    def mark(func: F, timeout: int | None) -> F:
        func.__rpc_kind__ = kind  # type: ignore[attr-defined]
        func.__rpc_timeout__ = timeout  # type: ignore[attr-defined]
        return func

    if callable(timeout):  # used bare: @RPCServer.register_method_json
        return mark(timeout, DEFAULT_METHOD_TIMEOUT)
    return functools.partial(mark, timeout=timeout)


class RPCServer:
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
        self._registry_link: Any = None
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
        self._backlog = _outbox.ReplyBacklog(
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
        self._legacy_signal_port: int | None = None
        self._stream_hub: _streamhub.StreamHub | None = None  # streams
        try:
            self.url, self.port = transport.bind(self._socket, url, options)
            self._signal_socket = transport.make_socket(
                self._zmq_context, zmq.PUB, options, server=True
            )
            self._signal_socket.setsockopt(zmq.SNDHWM, options.signal_hwm)
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
            framing.MAX_FRAMES,
            options.max_header_size,
            options.max_objects,
            options.max_depth,
        )
        # a flood of bad requests must not flood the log
        self._refusals = RateLimitedLog(_log)
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

    # -- decorators -------------------------------------------------------
    @overload
    @staticmethod
    def register_method_json(timeout: F) -> F: ...
    @overload
    @staticmethod
    def register_method_json(
        timeout: int | None = DEFAULT_METHOD_TIMEOUT,
    ) -> Callable[[F], F]: ...
    @staticmethod
    def register_method_json(timeout: Any = DEFAULT_METHOD_TIMEOUT) -> Any:
        """Expose a method whose result travels in the message header.

        Usable bare (``@RPCServer.register_method_json``) or called
        (``@RPCServer.register_method_json(timeout=500)``).

        Parameters
        ----------
        timeout : int or None
            How long (ms) a client waits for the result; None waits
            without limit.
        """
        return _method_decorator("json", timeout)

    @overload
    @staticmethod
    def register_method_buffer(timeout: F) -> F: ...
    @overload
    @staticmethod
    def register_method_buffer(
        timeout: int | None = DEFAULT_METHOD_TIMEOUT,
    ) -> Callable[[F], F]: ...
    @staticmethod
    def register_method_buffer(timeout: Any = DEFAULT_METHOD_TIMEOUT) -> Any:
        """Expose a method returning ``(buffer, info_dict)``.

        The buffer (bytes, bytearray, memoryview or numpy array) travels as
        its own frame without a copy, sent after the method returns: the
        server must not modify it once returned (over inproc:// the client
        reads it in place), or clients get torn frames; return a new array
        or a ``framerpc.FramePool`` frame. The client receives a read-only
        memoryview over the received frame (a read-only numpy array when
        the method returned an array) and the info dict.

        Parameters
        ----------
        timeout : int or None
            How long (ms) a client waits for the result; None waits
            without limit.
        """
        return _method_decorator("buffer", timeout)

    # -- discovery --------------------------------------------------------
    def _discover(self) -> None:
        attrs: dict[str, Any] = {}
        for klass in reversed(type(self).__mro__):
            attrs.update(vars(klass))
        for name, attr in attrs.items():
            kind = getattr(attr, "__rpc_kind__", None)
            if kind == "json":
                self._json_methods[name] = attr.__rpc_timeout__
            elif kind == "buffer":
                self._buffer_methods[name] = attr.__rpc_timeout__
            elif isinstance(attr, RPCProperty):
                self._rpc_properties[name] = attr
            elif isinstance(attr, RPCSignal):
                self._signals[name] = attr
        # framerpc.aio: `async def` methods run as tasks of serve() (aio.server)
        self._async_methods = {
            name
            for name in [*self._json_methods, *self._buffer_methods]
            if inspect.iscoroutinefunction(attrs[name])
        }
        # optional inventory fields: signatures, docstrings, signal types
        names = [*self._json_methods, *self._buffer_methods, *self._rpc_properties]
        members = {name: attrs[name] for name in [*names, *self._signals]}
        self._described = inventory_fields(members, type(self))

    def _inventory(self) -> dict:
        return {
            "json_methods": dict(self._json_methods),
            "buffer_methods": dict(self._buffer_methods),
            "signals": list(self._signals),
            "properties": list(self._rpc_properties),
            "name": self.name,
            "signal_url": self._signal_url,
            "signal_port": self._signal_port,
            **self._described,
            **_streamhub.inventory(self._stream_hub),  # streams (native only)
        }

    # -- registry ---------------------------------------------------------
    def register_to_registry(
        self,
        type_: str,
        name: str,
        registry_url: str,
        overwrite: bool = True,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> str:
        """Register this server with a ``DeviceRegistry``.

        While ``serve_forever`` runs, the server checks in with the
        registry and registers again if the registry forgot it.

        Parameters
        ----------
        type_ : str
            Device type.
        name : str
            Proposed name; the registry may change it to avoid a clash.
        registry_url : str
            The registry's URL, e.g. ``tcp://host:5555``.
        overwrite : bool
            Take the name from a device already holding it.
        clock : callable
            Monotonic time in seconds that schedules the check-ins (default
            ``time.monotonic``); tests pass a clock they move by hand.

        Returns
        -------
        str
            The name the registry accepted.

        Raises
        ------
        TimeoutError
            The registry did not answer.
        """
        from .registry import RegistryLink

        link = RegistryLink(
            self._zmq_context,
            registry_url,
            type_,
            name,
            self.url,
            self.alive_timeout,
            overwrite=overwrite,
            security=self._options.security,
            clock=clock,
        )
        try:
            self.name, self.uuid = link.register()
        except BaseException:
            link.close()
            raise
        if self._registry_link is not None:
            self._registry_link.close()
        self._registry_link = link
        self.registry_addr = registry_url
        return self.name

    def _unregister(self) -> None:
        link, self._registry_link = self._registry_link, None
        if link is not None:
            try:
                if not self._terminated:  # no request on a terminated context
                    link.unregister(timeout=500)
            finally:
                link.close()
        self.name, self.uuid, self.registry_addr = "", None, ""

    # -- serving ----------------------------------------------------------
    def serve_forever(self) -> None:
        """Serve requests until ``stop_server`` or a STOP_SERVER request
        (then for 0.2 s more, so that the client reads the acknowledgement).

        Closes the sockets and unregisters from the registry on return.
        A device with ``async def`` methods is served by ``serve`` in a
        new event loop of this thread.
        """
        if self._async_methods:  # framerpc.aio: needs an event loop
            return _aio_server().serve_blocking(self)
        if not self._serving.acquire(blocking=False):
            raise RuntimeError("serve_forever is already running")
        sock = self._socket
        self._serving_ident = threading.get_ident()
        try:
            if self._dead:  # stop_server() came first: nothing to serve
                _log.debug("serve_forever called on a stopped server")
                return
            sock.setsockopt(zmq.RCVTIMEO, int(_POLL_S * 1000))
            respond = self._responder.handle
            backlog = self._backlog
            flush_wait = _FLUSH_WAIT_MS
            sdnotify.ready()
            # the systemd watchdog: a tick per message only when it is on
            watchdog = self._watchdog if self._watchdog.enabled else None
            self._ready.set()
            # a plain attribute: Event.is_set() is a Python call per message
            while not self._stopping and (
                self._stop_at is None or time.monotonic() < self._stop_at
            ):
                try:
                    if not backlog.pending:
                        frames = transport.recv_frames(sock)
                    else:  # replies wait for room: retry sending them often
                        if backlog.flush():
                            flush_wait = _FLUSH_WAIT_MS
                        else:
                            flush_wait = min(2 * flush_wait, int(_POLL_S * 1000))
                        frames = None
                        if sock.poll(flush_wait, zmq.POLLIN):
                            frames = transport.recv_frames(sock, zmq.NOBLOCK)
                except zmq.Again:
                    frames = None
                if frames is not None:
                    # whose key _peer_key reads, also in the Responder's
                    # fallback; cleared after, not to keep the frames alive
                    self._message = frames
                    try:
                        # a client with replies waiting takes the general
                        # path, which queues its reply behind them (order)
                        if (backlog.pending and backlog.holds(frames)) or not respond(
                            frames
                        ):
                            self._handle(frames)
                    except Exception as exc:  # a bug here must not end serving
                        if _lifecycle.is_context_terminated(exc):
                            raise
                        _log.exception("unexpected error while handling a message")
                    finally:
                        self._message = None
                if watchdog is not None:
                    watchdog.tick()
                link = self._registry_link
                if link is not None:
                    link.tick()
                    # the link may have registered again under a new name
                    self.name, self.uuid = link.name, link.uuid
        except zmq.ZMQError as exc:
            if not _lifecycle.is_context_terminated(exc):
                raise
            # ctx.term() or ctx.destroy(): a clean stop, this thread closes
            # its own sockets below.
            self._terminated = True
            _log.debug("context of %s terminated: serving stops", self.url)
        finally:
            self._serving_ident = None
            self._shutdown()
            self._serving.release()

    async def serve(self) -> None:
        """Serve inside the running asyncio loop until stopped (as
        ``serve_forever``); ``async def`` methods run as concurrent tasks,
        sync ones inline on the loop. See ``framerpc.aio.server.serve``."""
        await _aio_server().serve(self)  # framerpc.aio

    def stop_server(self) -> None:
        """Stop serving, from any thread; unregisters from the registry.

        Returns at once; ``serve_forever`` returns within about 0.1 s.
        When the server is not serving, its sockets are closed now.
        """
        self._stopping = True
        if self._serving.acquire(blocking=False):
            try:
                self._shutdown()
            finally:
                self._serving.release()

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
            from .security import stop_handler

            stop_handler(self._zmq_context)  # it would not stop at ETERM
        with self._signal_lock:  # emitting threads use them only under it
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
            queue; ``dropped_signals``: emissions dropped for the signal
            buffer; ``signal_bytes_in_flight``: bytes of emissions libzmq
            still holds for subscribers (the counted frames, see
            ``SocketOptions.signal_buffer_bytes``).
        """
        backlog = self._backlog
        with self._signal_lock:
            in_flight = self._signal_budget.refresh()
            dropped_signals = self._signal_budget.dropped
        return {
            "dropped_replies": backlog.dropped,
            "reply_backlog": backlog.messages,
            "reply_backlog_bytes": backlog.nbytes,
            "dropped_signals": dropped_signals,
            "signal_bytes_in_flight": in_flight,
        }

    @property
    def dropped_replies(self) -> int:
        """Replies the server gave up on (see ``stats``)."""
        return self._backlog.dropped

    @property
    def dropped_signals(self) -> int:
        """Signal emissions dropped for the signal buffer (see ``stats``)."""
        return self._signal_budget.dropped

    def _close_sockets(self) -> None:
        if self._stream_hub is not None:  # streams: stop and join the hub
            self._stream_hub.close()
        transport.close_quietly(self._socket)
        with self._signal_lock:
            transport.close_quietly(self._signal_socket)
            transport.close_quietly(self._legacy_signal_socket)

    def _handle(self, frames: list) -> None:
        # [identity, b"", ...] from a DEALER or REQ peer is the common case
        if len(frames) > 2 and len(frames[1]) == 0:
            split = 1
        else:
            split = next(
                (i for i, f in enumerate(frames[:_MAX_ENVELOPE]) if len(f) == 0), None
            )
            if split is None:
                _log.warning("dropped a message without routing envelope")
                return
        envelope, body = frames[: split + 1], frames[split + 1 :]
        if not body:
            _log.warning("dropped a message without body")
            return
        try:
            decoded: Any = framing.decode(body, *self._limits)
        except ProtocolError as exc:
            decoded = exc
        self._handle_body(envelope, body, decoded)

    def _handle_body(self, envelope: list, body: list, decoded: Any) -> None:
        """Answer a request whose header was decoded once: ``decoded`` is
        the header dict or the exception decoding raised (the Responder's
        fallback, and the end of ``_handle``)."""
        try:
            if isinstance(decoded, Exception):
                raise decoded
            request = protocol.request_from_header(decoded)
        except ProtocolError as exc:
            # JSON never parses as msgpack (``{`` is an int followed by
            # extra data): testing for it here keeps it off the hot path.
            if protocol.is_legacy_frame(body[0].buffer):
                self._handle_legacy(envelope, body)
                return
            exc = ProtocolError(_clip(str(exc)))  # may quote the hostile bytes
            self._refusals.warning("malformed request: %s", exc)
            # the id lets the client's call fail at once instead of timing
            # out; read from the decoded header, or peeked (bounded work)
            rid: Any = decoded.get("i") if type(decoded) is dict else None
            if type(rid) is not int:
                rid = protocol.peek_request_id(body[0])
            reply = Reply(rid, False, error=f"ProtocolError: {exc}")
            self._send(envelope, protocol.encode_reply(reply))
            return
        self._send(envelope, self._dispatch(request), request.request_id)
        if request.event is RPCEvents.STOP_SERVER:
            self._stop_after_grace()

    def _stop_after_grace(self) -> None:
        # after STOP_SERVER, serve _STOP_GRACE_S more (see its comment);
        # only when _execute found the request authorised
        if self._stop_granted:
            self._stop_soon()

    def _stop_soon(self) -> None:
        # stop the serve loop _STOP_GRACE_S from now: a reply just sent is
        # read before the connection closes
        if self._stop_at is None:
            self._stop_at = time.monotonic() + _STOP_GRACE_S

    def _send(
        self, envelope: list, frames: list, request_id: int | None = None
    ) -> None:
        backlog = self._backlog
        if backlog.pending and backlog.holds(envelope):  # keep the order
            backlog.add(envelope + frames)
            return
        try:
            transport.send_frames(self._socket, envelope + frames, zmq.NOBLOCK)
        except (zmq.ZMQError, TypeError) as exc:
            self._send_failed(envelope, exc, request_id, frames)

    def _send_failed(
        self,
        envelope: list,
        exc: Exception,
        request_id: int | None,
        frames: list | None = None,
    ) -> None:
        if _lifecycle.is_context_terminated(exc):
            raise exc  # the serve loop stops quietly
        # EAGAIN: the client's queue is full (ROUTER_MANDATORY), nothing was
        # sent; the backlog keeps the reply until it has room.
        if isinstance(exc, zmq.Again) and frames is not None:
            self._backlog.add(envelope + frames)
            return
        # Another ZMQError (EHOSTUNREACH: the client left) loses the reply.
        if isinstance(exc, zmq.ZMQError):
            self._backlog.lost(1, f"could not send a reply: {exc}")
            return
        _log.warning("could not send a reply: %s", exc)
        # A TypeError comes before anything is sent (every frame is checked
        # first): a frame without the buffer interface; the caller gets an
        # error.
        if isinstance(exc, TypeError) and request_id is not None:
            error = f"TypeError: the result cannot be sent: {exc}"
            reply = Reply(request_id, False, error=error)
            self._send(envelope, protocol.encode_reply(reply))

    def _handle_legacy(self, envelope: list, body: list) -> None:
        """Answer a request of the older JSON protocol, as its tables say."""
        try:
            request = legacy.decode_request(body, *self._limits[1:])
        except ProtocolError as exc:
            text = _clip(str(exc))  # may quote the hostile bytes
            self._refusals.warning("malformed JSON request: %s", text)
            self._send(envelope, legacy.encode_error(f"ProtocolError: {text}"))
            return
        event = request.event
        if event is RPCEvents.GET_INVENTORY:
            frames = legacy.encode_inventory(self._inventory())
        elif event is RPCEvents.INIT_SIGNALS_HANDLING:
            try:
                frames = legacy.encode_signal_port(self._start_legacy_signals())
            except _NoSignalPort as exc:
                frames = legacy.encode_error(str(exc))
        elif (
            event is RPCEvents.METHOD_CALL
            and request.method not in self._json_methods
            and request.method not in self._buffer_methods
        ):
            frames = legacy.method_not_implemented(_clip(request.method))
        else:
            reply, is_buffer = self._execute(request)
            frames = legacy.encode_reply(event, reply, is_buffer)
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
                self._zmq_context, zmq.PUB, self._options, server=True
            )
            sock.setsockopt(zmq.SNDHWM, self._options.signal_hwm)
            try:
                _, port = transport.bind(
                    sock, transport.derive_endpoint(self.url, ""), self._options
                )
            except zmq.ZMQError as exc:
                transport.close_quietly(sock)
                _log.warning("cannot bind the JSON signal socket: %s", exc)
                raise _NoSignalPort(f"cannot bind a signal socket: {exc}") from exc
            self._legacy_signal_socket, self._legacy_signal_port = sock, port
            return port

    def _dispatch(self, request: Request) -> list:
        """Frames of the reply to a native request (the Responder answers
        the plain method calls before this)."""
        reply, is_buffer = self._execute(request)
        try:
            return protocol.encode_reply(reply, is_buffer)
        except Exception as exc:  # a result msgpack cannot carry
            return protocol.encode_reply(_failure(request, exc))

    def _execute(self, request: Request) -> tuple[Reply, bool]:
        """Run ``request``; returns the reply and whether it is a buffer's."""
        rid, event = request.request_id, request.event
        is_buffer = False
        try:
            if event is RPCEvents.METHOD_CALL:
                is_buffer = request.method in self._buffer_methods
                value, info = self._call(request)
            elif event is RPCEvents.PROPERTY_GET:
                # sigseq: with the notify signal's number, for snapshots
                name = self._property(request.name)
                value, info = _sigseq.read_property(
                    self, name, self._rpc_properties[name], self._sequencer
                )
            elif event is RPCEvents.PROPERTY_SET:
                setattr(self, self._property(request.name), request.value)
                value, info = None, None
            elif event is RPCEvents.GET_INVENTORY:
                value, info = self._inventory(), None
            elif event is RPCEvents.INIT_SIGNALS_HANDLING:
                # Published on the signal socket: the client's receiver sees
                # its token once its subscription is live (no slow joiner).
                self._publish_signal(protocol.SYNC_SIGNAL, request.name)
                value, info = self._inventory(), None
            else:  # STOP_SERVER
                refusal = self._stop_refusal()
                if refusal is not None:
                    _log.info("STOP_SERVER refused: %s", refusal)
                    return Reply(rid, False, error=f"PermissionError: {refusal}"), False
                self._stop_granted = True
                value, info = None, None
            return Reply(rid, True, value, info), is_buffer
        except _NotFound as exc:
            return Reply(rid, False, error=str(exc)), False
        except Exception as exc:
            return _failure(request, exc), False

    def _call(self, request: Request) -> tuple[Any, dict | None]:
        name = request.method
        if name not in self._json_methods and name not in self._buffer_methods:
            raise _NotFound(f"Method {_clip(name)} not implemented")
        if name in self._async_methods:  # framerpc.aio: only serve() runs them
            raise TypeError(f"async method {name} needs serve()'s native path")
        result = getattr(self, name)(*request.args, **request.kwargs)
        if name in self._json_methods:
            return result, None
        _check_buffer_result(name, result)
        return result

    def _method_failed(self, request_id: int, name: str, exc: Exception) -> list:
        """Error reply frames of method ``name`` that raised ``exc`` (for the
        Responder, from its ``except`` block)."""
        request = Request(RPCEvents.METHOD_CALL, request_id, name)
        return protocol.encode_reply(_failure(request, exc))

    def _stop_refusal(self) -> str | None:
        """Why the STOP_SERVER being handled may not stop the server (None:
        it may; see ``allow_remote_stop``)."""
        if not self.allow_remote_stop:
            return "this server does not accept remote stop requests"
        settings = self._options.security
        if settings is None:
            return None
        key = self._peer_key()
        if key is None:
            return "the client's key is unknown: only administrators may stop it"
        if key not in security.admin_keys(settings):
            return "only an administrator's key may stop this server"
        return None

    def _peer_key(self) -> str | None:
        """Z85 CURVE key of the client whose request is being handled (the
        ZAP handler's User-Id), or None."""
        frames = self._message
        if not frames:
            return None
        try:
            key = frames[-1].get("User-Id")
        except (zmq.ZMQError, AttributeError):  # no ZAP handler, or not a frame
            return None
        return key or None

    def _property(self, name: str) -> str:
        if name not in self._rpc_properties:
            raise _NotFound(f"Property {_clip(name)} not found")
        return name

    def _publish_signal(self, name: str, *args: Any) -> None:
        with self._signal_lock:
            sock = self._signal_socket
            if sock is None or sock.closed:
                return
            # sigseq: numbered and encoded under the lock, so that numbers
            # follow the order on the wire (the handshake "" is not numbered)
            seq = self._sequencer.stamp(name) if name else None
            epoch = self._sequencer.epoch if name else None
            emission = SignalEmission(name, list(args), seq, epoch)
            frames = protocol.encode_signal(emission)
            # PUB drops silently for a subscriber whose queue is full; the
            # budget bounds the bytes those queues hold (and counts drops)
            try:
                self._signal_budget.send(sock, frames, transport.send_frames)
            except zmq.ContextTerminated:  # ctx.term(): no one left to receive
                return
            # None until an older client asks for signals: no JSON cost before.
            legacy_sock = self._legacy_signal_socket
            if legacy_sock is not None and name:
                _publish_json_signal(legacy_sock, name, args, self._signal_budget)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} name={self.name!r}>"


def _aio_server() -> Any:
    """framerpc.aio.server, imported when first needed (framerpc.aio)."""
    from .aio import server

    return server


def _signal_budget(options: transport.SocketOptions) -> _outbox.SignalBudget:
    """The byte budget of the signal sockets: ``signal_buffer_bytes`` less
    what stalled subscribers may hold in uncounted (copied) frames, at most
    ``signal_hwm`` emissions of one such frame per signal socket (2)."""
    total, hwm = options.signal_buffer_bytes, max(1, options.signal_hwm)
    track_min = max(64, min(_SIGNAL_TRACK_MIN, total // (8 * hwm)))
    return _outbox.SignalBudget(max(0, total - 2 * hwm * track_min), track_min)


#: framing.decode's own limits: (max_frames, max_header, max_objects, max_depth).
_DEFAULT_LIMITS = (
    framing.MAX_FRAMES,
    framing.MAX_HEADER_SIZE,
    framing.MAX_OBJECTS,
    framing.MAX_DEPTH,
)


def _check_buffer_result(name: str, result: Any) -> None:
    """Raise the TypeError of a buffer method's result that is not
    ``(bytes-like or numpy array, dict)``."""
    if (
        type(result) is not tuple
        or len(result) != 2
        or not isinstance(result[1], dict)
        or not isinstance(result[0], transport.BUFFER_TYPES)
    ):
        raise TypeError(
            f"buffer method {name} must return (bytes-like or numpy array, "
            f"dict), got {_describe(result)}"
        )


def _failure(request: Request, exc: Exception) -> Reply:
    """Error reply for ``exc``, raised while serving ``request`` (call it
    from the ``except`` block: it takes the traceback being handled)."""
    error = _clip(f"{type(exc).__name__}: {exc}")
    _log.info(
        "%s %s failed: %s", request.event, _clip(request.method or request.name), error
    )
    return Reply(
        request.request_id,
        False,
        error=error,
        traceback=_clip(traceback.format_exc(), _MAX_TRACEBACK),
    )


#: Longest error text (characters) a reply or log line carries: a request
#: can make an exception quote its own bytes (a 16 MiB keyword name, event
#: or method name), which would otherwise come back and go to the log whole.
_MAX_ERROR_TEXT = 2000
#: Longest traceback text of a reply (the frames' lines stay readable).
_MAX_TRACEBACK = 64 * 1024


def _clip(text: str, limit: int = _MAX_ERROR_TEXT) -> str:
    """``text``, cut to ``limit`` characters (its tail, where a traceback
    names the error, is kept) with a note of what was left out."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}...[{len(text) - 2 * half} characters cut]...{text[-half:]}"


class _NotFound(LookupError):
    """An unknown method or property: a plain error reply, no traceback."""


class _NoSignalPort(RuntimeError):
    """JSON signals cannot be offered; the message says why."""


def _publish_json_signal(
    sock: zmq.Socket, name: str, args: tuple, budget: _outbox.SignalBudget
) -> None:
    """Publish one emission to older subscribers (caller holds the lock)."""
    try:
        frame = legacy.encode_signal(SignalEmission(name, list(args)))
    except SerializationError as exc:
        _log.warning("signal %s not sent to JSON subscribers: %s", name, exc)
        return
    budget.send(sock, [frame], transport.send_frames)


def _describe(value: Any) -> str:
    if type(value) is tuple:
        return "(" + ", ".join(type(v).__name__ for v in value) + ")"
    return type(value).__name__
