"""RPCClient: a proxy that looks like the device's own class.

Requests go out on a DEALER socket with an empty delimiter frame (so REP
and ROUTER servers both answer) and a request id, so that a reply arriving
after its call timed out is recognised and dropped instead of being
returned to the next call.

The client also speaks the older JSON protocol (``framerpc.wire.json_codec``) to
servers in the field. By default it asks for the inventory in JSON, which
both kinds of server answer; a framerpc server marks its answer, and the
client then goes on natively. JSON messages carry no request id, so after a
timeout the legacy mode replaces its socket: a late reply goes to the old
socket and can never be returned to the next call.

This module holds the class, its construction and its lifecycle; the
jobs are mixins: ``inventory`` (protocol detection, signals, restarts),
``calls`` (calls and properties) and ``interface`` (interface binding).
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
from collections.abc import Callable
from typing import Literal, Self, TypeVar

import zmq

from .. import _lifecycle, transport
from .._peerwatch import PeerWatch
from ..rpc import callpath
from ..signal import RPCSignal
from ..signal_receiver import RPCSignalReceiver
from ..wire.messages import Request, RPCEvents
from . import lane as _lanes
from . import shm as _shmlink
from . import shm_signals as _shmsig
from . import streams as _streamsub
from .calls import CallsMixin, NoResult
from .interface import bind_interface
from .inventory import InventoryMixin
from .restart import RestartWatcher

__all__ = ["NoResult", "RPCClient"]

_log = logging.getLogger(__name__)

C = TypeVar("C", bound=type)

#: Longest wait (ms) for the server's answer to stop_server().
_STOP_WAIT_MS = 1000
#: Values of the ``protocol`` argument of ``RPCClient``.
_PROTOCOLS = ("auto", "native", "legacy")

ProtocolChoice = Literal["auto", "native", "legacy"]


class RPCClient(InventoryMixin, CallsMixin):
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
        self._stop_channel = None
        self._watch: PeerWatch | None = None
        self._shm: _shmlink.ShmLink | None = None
        try:
            self._watch_socket()
            self.socket.connect(url)
            self._load_inventory(protocol == "auto")
            self._shm = _shmlink.connect(self)  # same host and user: shm
            shm, receiver = self._shm, self._signal_receiver
            if shm is not None and shm.retry.accepted and receiver is not None:
                _shmsig.claim(self)  # signals' arrays through shared memory too
            with self._life_lock:
                if self._closed:  # context.destroy() came during __init__
                    raise RuntimeError(f"client of {url}: context destroyed")
                self._constructed = True
        except BaseException:
            self.close()
            raise

    # -- lifecycle --------------------------------------------------------
    def stop_server(self) -> bool:
        """Ask the server to stop; waits about a second at most.

        Returns
        -------
        bool
            Whether the server acknowledged the request.
        """
        request = Request(RPCEvents.STOP_SERVER, next(self._ids))
        try:
            if self._protocol == "native":
                reply = self._stop_request(request, _STOP_WAIT_MS)
            else:  # the older protocol's socket keeps an unread reply
                reply = self._request(request, _STOP_WAIT_MS)
        except (TimeoutError, RuntimeError) as exc:
            _log.warning("stop_server: %s", exc)
            return False
        return reply.ok

    def close(self) -> None:
        """Stop and join the proxy's threads (signal receiver, restart
        watcher), then close the socket; idempotent. Afterwards
        ``context.term()`` does not wait for this proxy."""
        self._closed = True
        self._interrupt_calls()
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
        shm, self._shm = self._shm, None
        if shm is not None:  # its timer thread takes the lock
            shm.close()
        with self._lock:  # wait for a call in flight to notice _closed
            _lanes.drop(self)  # the same-host lane (client.lane)
            if shm is not None:  # the releases queued so far, and goodbye
                shm.goodbye(self.socket)
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
        self._interrupt_calls()  # a call in flight ends within 0.1 s
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

    def _interrupt_calls(self) -> None:
        """Make a call in flight raise RuntimeError at its next wait slice."""
        self._channel.closed = True
        stopping = self._stop_channel  # stop_server() has its own socket
        if stopping is not None:
            stopping.closed = True

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

        return bind_interface(RPCClient, interface)
