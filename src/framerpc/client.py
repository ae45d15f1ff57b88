"""RPCClient: a proxy that looks like the device's own class.

Requests go out on a DEALER socket with an empty delimiter frame (so REP
and ROUTER servers both answer) and a request id, so that a reply arriving
after its call timed out is recognised and dropped instead of being
returned to the next call.

The client also speaks the older JSON protocol (``framerpc.legacy``) to
servers in the field. By default it asks for the inventory in JSON, which
both kinds of server answer; a framerpc server marks its answer, and the
client then goes on natively. JSON messages carry no request id, so after a
timeout the legacy mode replaces its socket: a late reply goes to the old
socket and can never be returned to the next call.
"""

from __future__ import annotations

import abc
import functools
import inspect
import itertools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, Self, TypeVar

import zmq

from . import _lifecycle, _sigseq, _streamsub, legacy, protocol, transport
from ._peerwatch import PeerWatch
from ._restart import RestartWatcher
from .errors import PeerLostError, ProtocolError, RemoteError
from .property import RPCProperty
from .protocol import Reply, Request, RPCEvents
from .rpc import callpath
from .signal import RPCSignal, UntypedSignal
from .signal_receiver import RPCSignalReceiver

__all__ = ["NoResult", "RPCClient"]

_log = logging.getLogger(__name__)

C = TypeVar("C", bound=type)

#: Longest wait (ms) for the server's answer to stop_server().
_STOP_WAIT_MS = 1000
#: Longest wait (ms) for the signal subscription handshake.
_SYNC_WAIT_MS = 2000
#: Values of the ``protocol`` argument of ``RPCClient``.
_PROTOCOLS = ("auto", "native", "legacy")

ProtocolChoice = Literal["auto", "native", "legacy"]


class NoResult:
    """The outcome of a remote call that failed; always falsy.

    Parameters
    ----------
    error : str
        What went wrong (for a remote exception: ``"Type: message"``).
    traceback : str
        The remote traceback, or "" when there is none.
    """

    __slots__ = ("error", "traceback")

    def __init__(self, error: str, traceback: str) -> None:
        self.error = error
        self.traceback = traceback

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"NoResult({self.error!r})"


class RPCClient:
    """Client side of an ``RPCServer``.

    Subclass both an interface and ``RPCClient`` and decorate the subclass
    with ``register_interface``; the interface's methods, properties
    and signals then act on the remote server. ``connect`` does the
    same without a subclass and returns a proxy typed as the interface.

    Parameters
    ----------
    context : zmq.Context
        Context for the client's sockets.
    url : str
        The server's URL (``tcp://host:port``, ``ipc://...``, ``inproc://...``).
    timeout : int
        How long (ms) to wait for the server's inventory.
    protocol : {"auto", "native", "legacy"}
        Wire protocol. ``"auto"`` asks for the inventory in JSON, which
        framerpc and older servers both answer, and then speaks framerpc's
        native protocol to a framerpc server of the same protocol version
        and the older JSON protocol to anything else. ``"native"`` and
        ``"legacy"`` skip the detection.
    options : SocketOptions, optional
        Socket tuning.
    raise_errors : bool
        When True, a remote failure of an interface method or property get
        raises ``RemoteError`` instead of returning a
        ``NoResult``, so that the declared return types hold.

    Raises
    ------
    TimeoutError
        The server did not answer within ``timeout`` ms.
    ValueError
        ``protocol`` is not one of the three choices, or ``url`` is
        malformed (``framerpc.transport.check_url``).

    Attributes
    ----------
    context, url, name
        The context, the server URL and the server's registry name.
    socket : zmq.Socket
        The DEALER socket (use the client's methods, not the socket).
    _json_methods, _buffer_methods : dict of str to int or None
        Remote methods and their timeouts (ms), from the inventory.
    _signals : dict of str to RPCSignal
        This instance's signals, by name.
    _properties : list of str
        Remote property names.
    _protocol : str
        The protocol in use: ``"native"`` or ``"legacy"``.

    Notes
    -----
    One client may be used from several threads: calls are serialised, and
    a call's timeout includes the time it waits for another thread's call.

    A call in flight whose server goes away (killed, restarted, host gone)
    raises ``PeerLostError``, a ``ConnectionError``
    that is also a ``TimeoutError``, even for a method registered with
    ``timeout=None``: a killed server at once (its kernel closes the
    connection), a vanished or frozen one within the heartbeat bound
    (``options.dead_peer_ms``, 4 s by default; see
    ``SocketOptions``). A call without timeout
    made while the server is unreachable raises it too once that bound
    has passed; a call with a timeout waits for the server to come back
    until its timeout passes (``TimeoutError``). The proxy reconnects by
    itself when the server is back.

    With the older protocol, values travel as JSON (tuples arrive as lists,
    bytes and arrays cannot be arguments), a buffer method's result arrives
    as ``(read-only memoryview, info)`` and signals are received on the TCP
    port the server gives (tcp:// URLs only). As with the older client,
    an emission right after connecting may be missed.
    """

    def __init__(
        self,
        context: zmq.Context,
        url: str,
        timeout: int = 1000,
        *,
        protocol: ProtocolChoice = "auto",
        options: transport.SocketOptions = transport.DEFAULT_OPTIONS,
        raise_errors: bool = False,
    ) -> None:
        transport.check_url(url, for_bind=False)
        if protocol not in _PROTOCOLS:
            raise ValueError(
                f"protocol must be one of {', '.join(_PROTOCOLS)}, got {protocol!r}"
            )
        self.context = context
        # framerpc's sockets live in a shadow of the context, so that
        # context.destroy() cannot close them under a thread using them;
        # self._destroy_hook stands in for them (see _lifecycle).
        self._zmq_context = _lifecycle.private_context(context)
        self.url = url
        self.name = ""
        self._raise_errors = raise_errors
        self._restart_watcher: RestartWatcher | None = None
        # Decides, with _constructed, who closes when destroy() races __init__.
        self._life_lock = threading.Lock()
        self._constructed = False
        self._timeout = timeout
        self._lock = threading.Lock()
        self._closed = False
        # A random start keeps ids of a restarted client apart from old ones.
        self._ids = itertools.count(random.randrange(1 << 30))
        self._json_methods: dict[str, int | None] = {}
        self._buffer_methods: dict[str, int | None] = {}
        self._signals: dict[str, RPCSignal] = {}
        self._properties: list[str] = []
        self._signal_receiver: RPCSignalReceiver | None = None
        self._options = options
        # The inventory request of "auto" is JSON: start in legacy mode.
        self._protocol = "native" if protocol == "native" else "legacy"
        self._destroy_hook = _lifecycle.DestroyHook(
            context, f"RPCClient {url}", self._on_context_destroy
        )
        try:
            self.socket = self._make_socket()
        except BaseException:  # a terminated context, a bad option
            self._destroy_hook.release()
            raise
        self._channel = callpath.Channel(self.socket, url)
        self._watch: PeerWatch | None = None
        try:
            self._watch_socket()
            self.socket.connect(url)
            self._load_inventory(protocol == "auto")
            with self._life_lock:
                if self._closed:  # context.destroy() came during __init__
                    raise RuntimeError(f"client of {url}: context destroyed")
                self._constructed = True
        except BaseException:
            self.close()
            raise

    # -- set-up -----------------------------------------------------------
    def _load_inventory(self, detect: bool) -> None:
        reply = self._request(
            Request(RPCEvents.GET_INVENTORY, next(self._ids)), self._timeout
        )
        inventory = reply.value if reply.ok else None
        if type(inventory) is not dict:
            raise ProtocolError(f"server at {self.url} sent no inventory: {reply}")
        if detect and legacy.is_framerpc_inventory(inventory):
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

    # -- calls ------------------------------------------------------------
    def execute(self, method_name: str, params: dict) -> tuple[bool, Any]:
        """Call a remote method.

        Parameters
        ----------
        method_name : str
            The remote method.
        params : dict
            ``{"args": [...], "kwargs": {...}}`` (both optional).

        Returns
        -------
        tuple
            ``(True, result)``, where a buffer method's result is
            ``(buffer, info)``, or ``(False, (error, traceback))``.

        Raises
        ------
        TimeoutError
            No reply within the method's timeout. The client stays usable.
        PeerLostError
            The server went away during the call (see the class notes); a
            ``TimeoutError`` too. The client stays usable.
        TypeError
            An argument cannot travel on the wire.
        """
        result = self._call(
            method_name, params.get("args", ()), dict(params.get("kwargs", {}))
        )
        if type(result) is NoResult:
            return False, (result.error, result.traceback)
        return True, result

    def _call(self, method_name: str, args: tuple | list, kwargs: dict) -> Any:
        """A proxy method's call: the result, ``(buffer, info)`` for a buffer
        method, or a ``NoResult`` when the remote side failed."""
        is_buffer = method_name in self._buffer_methods
        if is_buffer:
            timeout = self._buffer_methods[method_name]
        else:
            timeout = self._json_methods.get(method_name, self._timeout)
        if self._protocol == "native":  # the hot path: one call into the Channel
            what = repr(method_name)  # for errors: 'grab'
            started = time.monotonic()
            remaining = self._lock_within(timeout, started, what)
            try:
                if self._closed:
                    raise RuntimeError(f"client of {self.url} is closed")
                reply = self._channel.call(
                    next(self._ids), method_name, list(args), kwargs, remaining
                )
            except TimeoutError as exc:
                raise self._no_reply(exc, what, timeout, started) from None
            finally:
                self._lock.release()
        else:
            request = Request(RPCEvents.METHOD_CALL, 0, method_name, list(args), kwargs)
            reply = self._legacy_request(request, timeout, is_buffer)
        if not reply.ok:
            return NoResult(reply.error, reply.traceback)
        if reply.info is not None:
            return reply.value, reply.info
        return reply.value

    def _get_property(self, name: str) -> Any:
        reply = self._request(
            Request(RPCEvents.PROPERTY_GET, next(self._ids), name=name), self._timeout
        )
        return reply.value if reply.ok else NoResult(reply.error, reply.traceback)

    def _set_property(self, name: str, value: Any) -> None:
        reply = self._request(
            Request(RPCEvents.PROPERTY_SET, next(self._ids), name=name, value=value),
            self._timeout,
        )
        if not reply.ok:
            raise RemoteError(reply.error, reply.traceback)

    def _request(
        self, request: Request, timeout: int | None, *, patient: bool = False
    ) -> Reply:
        """One native exchange (JSON in legacy mode); ``patient``: wait for
        the lock as long as it takes, ``timeout`` counting from then."""
        if self._protocol == "legacy":
            return self._legacy_request(request, timeout, False)
        frames = protocol.encode_request(request)
        what = _describe(request)
        if patient:
            self._lock.acquire()
        started = time.monotonic()
        remaining = timeout if patient else self._lock_within(timeout, started, what)
        try:
            if self._closed:
                raise RuntimeError(f"client of {self.url} is closed")
            return self._channel.request(frames, request.request_id, remaining)
        except TimeoutError as exc:
            raise self._no_reply(exc, what, timeout, started) from None
        finally:
            self._lock.release()

    def _legacy_request(
        self, request: Request, timeout: int | None, buffer_method: bool
    ) -> Reply:
        """One JSON exchange; a malformed reply becomes a failed Reply."""
        frame = legacy.encode_request(request)
        what = _describe(request)
        started = time.monotonic()
        remaining = self._lock_within(timeout, started, what)
        try:
            if self._closed:
                raise RuntimeError(f"client of {self.url} is closed")
            try:
                frames = self._channel.exchange([frame], remaining)
            except TimeoutError as exc:  # PeerLostError too
                # No request id: a late reply must land on a dead socket.
                self._reset_socket()
                raise self._no_reply(exc, what, timeout, started) from None
        finally:
            self._lock.release()
        try:
            return legacy.decode_reply(request, frames, buffer_method)
        except ProtocolError as exc:
            _log.warning("malformed JSON reply from %s: %s", self.url, exc)
            return Reply(0, False, error=f"ProtocolError: {exc}")

    def _lock_within(
        self, timeout: int | None, started: float, what: str
    ) -> int | None:
        """Take the proxy's lock within the call's ``timeout`` (ms, from
        ``started``); return the time left for the call itself (ms).
        ``what`` names the call in errors (see ``_describe``).

        Raises
        ------
        TimeoutError
            Other calls held the lock for the whole timeout.
        """
        lock = self._lock
        if timeout is None:
            lock.acquire()
            return None
        if lock.acquire(False):  # not shared right now: no clock read
            return timeout
        if lock.acquire(timeout=max(timeout, 0) / 1000):
            remaining = timeout - int((time.monotonic() - started) * 1000)
            if remaining > 0:
                return remaining
            lock.release()
        raise TimeoutError(
            f"no reply to {what} from {self.url} within {timeout / 1000:g} s "
            "(waited for other calls on this proxy)"
        )

    def _no_reply(
        self, exc: TimeoutError, what: str, timeout: int | None, started: float
    ) -> TimeoutError:
        """The error of a call without reply, naming the call and the wait."""
        waited = time.monotonic() - started
        if isinstance(exc, PeerLostError):
            return PeerLostError(f"no reply to {what} after {waited:.1f} s: {exc}")
        detail = " (not connected)" if str(exc).startswith("no send") else ""
        limit = waited if timeout is None else timeout / 1000
        return TimeoutError(
            f"no reply to {what} from {self.url} within {limit:g} s{detail}"
        )

    def _watch_socket(self) -> None:
        """Watch the new socket's connection (before it connects)."""
        if self.url.startswith("inproc://"):
            return  # an inproc server cannot go away on its own
        # A native socket sends only on a live connection (IMMEDIATE): the
        # watch may skip draining for half a reconnect interval.
        fresh_ms = self._options.reconnect_ivl_ms // 2
        self._watch = PeerWatch(
            self.socket,
            self.url,
            self._options.dead_peer_ms,
            fresh_ms if self._protocol == "native" else 0,
        )
        self._channel.watch = self._watch

    def _make_socket(self) -> zmq.Socket:
        sock = transport.make_socket(self._zmq_context, zmq.DEALER, self._options)
        if self._protocol == "legacy":
            # Like the older REQ client: with IMMEDIATE a reply not read yet
            # is lost when the server closes the connection right after it
            # (STOP_SERVER). Queuing for a server that is down does no harm
            # here: a request that times out is dropped with its socket.
            sock.setsockopt(zmq.IMMEDIATE, 0)
        return sock

    def _reset_socket(self) -> None:
        """Replace the socket, dropping what it holds (caller holds the lock)."""
        self.socket.setsockopt(zmq.LINGER, 0)
        if self._watch is not None:
            self._watch.close()
        transport.close_quietly(self.socket)
        self.socket = self._make_socket()
        self._channel.reset(self.socket)
        self._watch_socket()
        self.socket.connect(self.url)

    # -- lifecycle --------------------------------------------------------
    def stop_server(self) -> bool:
        """Ask the server to stop; waits about a second at most.

        Returns
        -------
        bool
            Whether the server acknowledged the request.
        """
        try:
            reply = self._request(
                Request(RPCEvents.STOP_SERVER, next(self._ids)), _STOP_WAIT_MS
            )
        except (TimeoutError, RuntimeError) as exc:
            _log.warning("stop_server: %s", exc)
            return False
        return reply.ok

    def close(self) -> None:
        """Stop and join the proxy's threads (signal receiver, restart
        watcher), then close the socket; idempotent. Afterwards
        ``context.term()`` does not wait for this proxy."""
        self._closed = True
        self._channel.closed = True  # a call in flight raises RuntimeError
        _streamsub.close_all(self)  # streams: end and join the subscriptions
        receiver, self._signal_receiver = self._signal_receiver, None
        watcher, self._restart_watcher = self._restart_watcher, None
        for thread in (receiver, watcher):
            if thread is None:
                continue
            thread.stop()
            # A listener may close its own proxy: the receiver cannot join
            # itself; it ends once the listener returns.
            own_thread = thread is threading.current_thread()
            if thread.ident is not None and not own_thread:
                thread.join(timeout=2)
        with self._lock:  # wait for a call in flight to notice _closed
            if self._watch is not None:
                self._watch.close()
            transport.close_quietly(self.socket)
        self._destroy_hook.release()

    def _on_context_destroy(self, linger: int | None) -> None:
        """``context.destroy()``: make every thread drop this client's
        sockets without touching one another thread is using."""
        with self._life_lock:
            self._closed = True
            if not self._constructed:
                return  # __init__ owns the sockets and closes them itself
        self._channel.closed = True  # a call in flight ends within 0.1 s
        _streamsub.close_all(self, wait=False)  # streams: they close their sockets
        # The threads close their own sockets at their next turn or at the
        # ETERM of the term() that follows; never started, they close now.
        for thread in (self._signal_receiver, self._restart_watcher):
            if thread is not None:
                thread.stop()
        if self._lock.acquire(blocking=False):  # no call in flight
            try:
                self._close_watch()
                _lifecycle.close_socket(self.socket, linger)
            finally:
                self._lock.release()
        else:  # the calling thread owns the socket until its call ends
            threading.Thread(
                target=self._close_after_call,
                args=(linger,),
                name=f"RPCClient-close({self.url})",
                daemon=True,
            ).start()

    def _close_after_call(self, linger: int | None) -> None:
        with self._lock:
            self._close_watch()
            _lifecycle.close_socket(self.socket, linger)

    def _close_watch(self) -> None:
        """Close the watch's monitor socket: term() waits for every socket."""
        if self._watch is not None:
            self._watch.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} name={self.name!r}>"

    # -- interface binding ------------------------------------------------
    @classmethod
    def register_interface(cls, interface: type) -> Callable[[C], C]:
        """Class decorator binding ``interface`` to an RPCClient subclass.

        Every public function of the interface becomes a remote call that
        keeps its name, signature and docstring; every
        ``RPCProperty`` becomes a remote property (get
        returns ``NoResult`` on a remote error, set raises
        ``RemoteError``); signals stay per instance.

        Raises
        ------
        RuntimeError
            The decorated class does not inherit from both ``interface``
            and ``RPCClient``.
        TypeError
            A member of ``interface`` has the name of an RPCClient member
            (``close``, ``name``...), which it would replace.
        """

        def bind(klass: C) -> C:
            if not (issubclass(klass, interface) and issubclass(klass, RPCClient)):
                raise RuntimeError(
                    f"{klass.__name__} must inherit from both "
                    f"{interface.__name__} and RPCClient"
                )
            members = _public_members(interface)
            clashes = sorted(set(members) & _client_members())
            if clashes:
                raise TypeError(
                    f"{interface.__name__}.{clashes[0]} would replace "
                    f"RPCClient.{clashes[0]} in {klass.__name__}: rename it"
                    + (f" (also {', '.join(clashes[1:])})" if clashes[1:] else "")
                )
            for name, attr in members.items():
                if isinstance(attr, RPCProperty):
                    setattr(klass, name, _remote_property(name, attr))
                elif inspect.isfunction(attr):
                    setattr(klass, name, _remote_method(name, attr))
            abc.update_abstractmethods(klass)
            return klass

        return bind


def _describe(request: Request) -> str:
    """How a timeout names ``request``: ``'grab'``, ``property 'gain'``..."""
    if request.method:
        return repr(request.method)
    if request.event in (RPCEvents.PROPERTY_GET, RPCEvents.PROPERTY_SET):
        return f"property {request.name!r}"
    return f"the {request.event} request"


@functools.cache
def _client_members() -> frozenset[str]:
    """Public names of an RPCClient: attributes set by __init__ included."""
    names = {name for name in dir(RPCClient) if not name.startswith("_")}
    return frozenset(names | {"context", "url", "name", "socket"})


def _public_members(interface: type) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for klass in reversed(interface.__mro__):
        if klass in (object, abc.ABC):
            continue
        members.update((k, v) for k, v in vars(klass).items() if not k.startswith("_"))
    return members


def _remote_method(name: str, func: Callable) -> Callable:
    @functools.wraps(func)
    def remote(self: RPCClient, *args: Any, **kwargs: Any) -> Any:
        result = self._call(name, args, kwargs)
        if self._raise_errors and type(result) is NoResult:
            raise RemoteError(result.error, result.traceback)
        return result

    remote.__isabstractmethod__ = False  # type: ignore[attr-defined]
    return remote


def _remote_property(name: str, prop: RPCProperty) -> RPCProperty:
    def fget(self: RPCClient) -> Any:
        value = self._get_property(name)
        if self._raise_errors and type(value) is NoResult:
            raise RemoteError(value.error, value.traceback)
        return value

    def fset(self: RPCClient, value: Any) -> None:
        self._set_property(name, value)

    return RPCProperty(fget, fset, doc=prop.__doc__, notify=prop.notify)
