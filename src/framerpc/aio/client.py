"""AsyncClient: an asyncio proxy of an ``RPCServer``, on ``zmq.asyncio``.

One DEALER socket per client, as in the sync client, and one reader task:
calls from any number of tasks go out on the socket at once (a request is
sent whole, without an await between its frames) and wait on a future of
their own, which the reader resolves when the reply carrying their
request id arrives. Nothing is held across an await, so calls overlap; a
reply whose call was cancelled or timed out finds no future and is
dropped.

The socket is an ordinary socket made by ``framerpc.transport`` (same
options, CURVE, message I/O engine: compiled or pure twin); a
``zmq.asyncio`` shadow of it waits for readiness on the event loop, and
the messages themselves move through ``transport.send_frames`` /
``transport.recv_frames`` without blocking. Every method must be called
from the loop the client was opened on.

Only framerpc's native protocol is spoken (no older JSON servers).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import uuid
from typing import Any, Self

import zmq

from .. import _lifecycle, protocol, transport
from .._peerwatch import PeerWatch
from ..client import NoResult
from ..errors import PeerLostError, ProtocolError, RemoteError
from ..protocol import Reply, Request, RPCEvents
from ._fdwatch import FdWatch
from ._signals import SignalHub

__all__ = ["AsyncClient"]

_log = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
#: How often (s) calls in flight check that their server is still there.
_WATCH_S = 0.1
#: Longest wait (s) for the signal subscription handshake.
_SYNC_WAIT_S = 2.0
#: Longest wait (ms) for the server's answer to stop_server().
_STOP_WAIT_MS = 1000


class _Pending:
    """A call in flight: its future, its deadline (loop time, None: no
    timeout) and what the peer watch needs."""

    __slots__ = ("deadline", "endless", "future", "mark", "sent")

    def __init__(self, future: asyncio.Future, deadline: float | None) -> None:
        self.future = future
        self.deadline = deadline
        self.mark = 0
        self.endless = deadline is None
        self.sent = False


class AsyncClient:
    """asyncio client of an ``RPCServer`` (framerpc's native protocol).

    Make one with ``framerpc.aio.connect`` (a proxy of an interface) or
    ``await AsyncClient.open(url)`` (untyped: ``call`` and friends), and
    close it with ``aclose`` or ``async with``.

    Parameters
    ----------
    url : str
        The server's URL.
    context : zmq.Context, optional
        Context for the sockets (a plain or an asyncio one); default
        ``zmq.Context.instance()``.
    timeout : int
        How long (ms) to wait for the inventory, and for property access.
    options : SocketOptions, optional
        Socket tuning, as for ``RPCClient``.
    raise_errors : bool
        Whether a remote failure of a method or property get raises
        ``RemoteError`` (True) or returns a ``NoResult`` (False).

    Notes
    -----
    Timeouts behave as in the sync client: a method waits for its own
    timeout from the inventory (``None``: without limit) and raises
    ``TimeoutError``; a call whose server goes away raises
    ``PeerLostError`` (see ``RPCClient``). A cancelled call's reply is
    dropped when it comes; the client stays usable after both.
    """

    def __init__(
        self,
        url: str,
        *,
        context: zmq.Context | None = None,
        timeout: int = 1000,
        options: transport.SocketOptions = transport.DEFAULT_OPTIONS,
        raise_errors: bool = False,
    ) -> None:
        transport.check_url(url, for_bind=False)
        self.url = url
        self.name = ""
        self.context = context if context is not None else zmq.Context.instance()
        self._timeout = timeout
        self._options = options
        self._raise_errors = raise_errors
        self._ids = itertools.count(random.randrange(1 << 30))
        self._pending: dict[int, _Pending] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._socket: zmq.Socket | None = None
        self._fdwatch: FdWatch | None = None
        self._watch: PeerWatch | None = None
        self._tasks: list[asyncio.Task] = []
        self._busy = asyncio.Event()
        self._json_methods: dict[str, int | None] = {}
        self._buffer_methods: dict[str, int | None] = {}
        self._properties: list[str] = []
        self._signal_names: list[str] = []
        self._signal_hub: SignalHub | None = None

    # -- opening ----------------------------------------------------------
    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> Self:
        """Connect to the server at ``url`` and read its inventory.

        Keyword arguments are those of the class.

        Raises
        ------
        TimeoutError
            The server did not answer within ``timeout`` ms.
        """
        client = cls(url, **kwargs)
        await client._open()
        return client

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        # a plain shadow of the user's context: framerpc's own socket list
        # (see _lifecycle), plain sockets for the transport's message I/O
        zctx = _lifecycle.private_context(_plain(self.context))
        sock = transport.make_socket(zctx, zmq.DEALER, self._options)
        self._socket = sock
        try:
            if not self.url.startswith("inproc://"):  # cannot go away alone
                fresh_ms = self._options.reconnect_ivl_ms // 2  # see PeerWatch
                self._watch = PeerWatch(
                    sock, self.url, self._options.dead_peer_ms, fresh_ms
                )
            sock.connect(self.url)
            self._fdwatch = FdWatch(sock, self._on_readable)
            if self._watch is not None:
                self._tasks.append(
                    asyncio.create_task(
                        self._watch_peer(), name=f"aio-watch {self.url}"
                    )
                )
            await self._load_inventory()
        except BaseException:
            await self.aclose()
            raise

    async def _load_inventory(self) -> None:
        reply = await self._request(
            Request(RPCEvents.GET_INVENTORY, next(self._ids)), self._timeout
        )
        inventory = reply.value if reply.ok else None
        if type(inventory) is not dict or "signal_url" not in inventory:
            raise ProtocolError(f"server at {self.url} sent no inventory: {reply}")
        self.name = inventory.get("name", "")
        self._json_methods = dict(inventory.get("json_methods", {}))
        self._buffer_methods = dict(inventory.get("buffer_methods", {}))
        self._properties = list(inventory.get("properties", []))
        self._signal_names = list(inventory.get("signals", []))
        if self._signal_names:
            signal_url = transport.connect_url_for(self.url, inventory["signal_url"])
            zctx = _lifecycle.private_context(_plain(self.context))
            types = {
                name: slot.signal
                for name in self._signal_names
                if (slot := getattr(type(self), name, None)) is not None
                and hasattr(slot, "signal")
            }
            self._signal_hub = SignalHub(zctx, signal_url, self._options, types)
            await self._sync_signals()
            if self._watch is not None:
                self._tasks.append(
                    asyncio.create_task(
                        self._follow_restarts(), name=f"aio-restarts {self.url}"
                    )
                )

    async def _sync_signals(self) -> None:
        """Wait until the subscription is live, so no emission is missed."""
        hub = self._signal_hub
        assert hub is not None
        token = uuid.uuid4().hex
        seen = hub.expect_token(token)
        deadline = asyncio.get_running_loop().time() + _SYNC_WAIT_S
        try:
            while not seen.is_set() and asyncio.get_running_loop().time() < deadline:
                request = Request(
                    RPCEvents.INIT_SIGNALS_HANDLING, next(self._ids), name=token
                )
                await self._request(request, self._timeout)
                try:
                    await asyncio.wait_for(seen.wait(), 0.02)
                except TimeoutError:
                    pass
        finally:
            hub.forget_token(token)
        if not seen.is_set():
            _log.warning("signal subscription to %s not confirmed", self.url)

    # -- calls ------------------------------------------------------------
    async def call(self, method_name: str, *args: Any, **kwargs: Any) -> Any:
        """Call a remote method: its result, ``(buffer, info)`` for a buffer
        method; on a remote failure a ``NoResult`` (or ``RemoteError``
        with ``raise_errors``).

        Raises
        ------
        TimeoutError
            No reply within the method's timeout.
        PeerLostError
            The server went away during the call.
        TypeError
            An argument cannot travel on the wire.
        RuntimeError
            The client is closed.
        """
        # _call inlined: one coroutine less per call
        if method_name in self._buffer_methods:
            timeout = self._buffer_methods[method_name]
        else:
            timeout = self._json_methods.get(method_name, self._timeout)
        rid = next(self._ids)
        frames = protocol.encode_call(rid, method_name, list(args), kwargs)
        reply = await self._exchange(frames, rid, timeout, method_name)
        if not reply.ok:
            return self._failed(reply)
        if reply.info is not None:
            return reply.value, reply.info
        return reply.value

    async def execute(self, method_name: str, params: dict) -> tuple[bool, Any]:
        """``RPCClient.execute``'s twin: ``(True, result)`` or ``(False,
        (error, traceback))``, whatever ``raise_errors`` says."""
        reply = await self._call(
            method_name, params.get("args", ()), dict(params.get("kwargs", {}))
        )
        if not reply.ok:
            return False, (reply.error, reply.traceback)
        if reply.info is not None:
            return True, (reply.value, reply.info)
        return True, reply.value

    async def _call(self, method_name: str, args: Any, kwargs: dict) -> Reply:
        if method_name in self._buffer_methods:
            timeout = self._buffer_methods[method_name]
        else:
            timeout = self._json_methods.get(method_name, self._timeout)
        rid = next(self._ids)
        frames = protocol.encode_call(rid, method_name, list(args), kwargs)
        return await self._exchange(frames, rid, timeout, method_name)

    async def get_property(self, name: str) -> Any:
        """The remote property ``name`` (a ``NoResult`` on a remote error,
        or ``RemoteError`` with ``raise_errors``)."""
        reply = await self._request(
            Request(RPCEvents.PROPERTY_GET, next(self._ids), name=name), self._timeout
        )
        return reply.value if reply.ok else self._failed(reply)

    async def set_property(self, name: str, value: Any) -> None:
        """Set the remote property ``name``.

        Raises
        ------
        RemoteError
            The server refused the value (as the sync proxy's set does).
        """
        reply = await self._request(
            Request(RPCEvents.PROPERTY_SET, next(self._ids), name=name, value=value),
            self._timeout,
        )
        if not reply.ok:
            raise RemoteError(reply.error, reply.traceback)

    async def stop_server(self) -> bool:
        """Ask the server to stop (waits about a second at most); whether
        it acknowledged."""
        try:
            reply = await self._request(
                Request(RPCEvents.STOP_SERVER, next(self._ids)), _STOP_WAIT_MS
            )
        except (TimeoutError, RuntimeError) as exc:
            _log.warning("stop_server: %s", exc)
            return False
        return reply.ok

    def _failed(self, reply: Reply) -> NoResult:
        if self._raise_errors:
            raise RemoteError(reply.error, reply.traceback)
        return NoResult(reply.error, reply.traceback)

    async def _request(self, request: Request, timeout: int | None) -> Reply:
        frames = protocol.encode_request(request)
        return await self._exchange(
            frames, request.request_id, timeout, request.method, request
        )

    async def _exchange(
        self,
        frames: list,
        rid: int,
        timeout: int | None,
        method: str,
        request: Request | None = None,
    ) -> Reply:
        """Send a request and wait for the reply carrying ``rid``; errors
        name ``method``, or ``request`` when given."""
        if self._closed or self._loop is None:
            raise RuntimeError(f"client of {self.url} is closed")
        loop = self._loop
        if asyncio.get_running_loop() is not loop:  # its sockets live there
            raise RuntimeError(
                f"client of {self.url} belongs to another event loop: "
                "use it from the loop it was opened in"
            )
        future = loop.create_future()
        watch = self._watch
        started = loop.time()
        deadline = None if timeout is None else started + timeout / 1000
        entry = _Pending(future, deadline)
        # registered before the send: the deadline timer sees sends waiting
        self._pending[rid] = entry
        try:
            if deadline is not None and (
                self._timer is None or deadline < self._timer_at
            ):
                self._arm(deadline)
            message = [b"", *frames]
            if watch is not None:
                entry.mark = watch.mark()
            if not self._try_send(message):
                await self._send_later(message, entry, future)
            entry.sent = True
            if watch is not None and not self._busy.is_set():
                self._busy.set()
            return await future
        except _Expired:
            what = _describe(request) if request is not None else repr(method)
            raise TimeoutError(
                f"no reply to {what} from {self.url} within {timeout / 1000:g} s"  # type: ignore[operator]
            ) from None
        except PeerLostError as exc:
            what = _describe(request) if request is not None else repr(method)
            waited = loop.time() - started
            raise PeerLostError(
                f"no reply to {what} after {waited:.1f} s: {exc}"
            ) from None
        finally:
            self._pending.pop(rid, None)

    def _arm(self, deadline: float) -> None:
        """Have ``_expire_due`` run at ``deadline`` (loop time).

        One timer for all calls, set for the earliest deadline: a timer
        per call (scheduled, then cancelled at the reply) cost 15 us of a
        90 us echo call.
        """
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._expire_due)  # type: ignore[union-attr]

    def _expire_due(self) -> None:
        """Fail the calls whose deadline passed; re-arm for the next one."""
        self._timer = None
        now = self._loop.time()  # type: ignore[union-attr]
        upcoming: float | None = None
        for entry in self._pending.values():
            deadline = entry.deadline
            if deadline is None or entry.future.done():
                continue
            if deadline <= now:
                entry.future.set_exception(_Expired())
            elif upcoming is None or deadline < upcoming:
                upcoming = deadline
        if upcoming is not None:
            self._arm(upcoming)

    def _try_send(self, message: list) -> bool:
        try:
            transport.send_frames(self._socket, message, _NOBLOCK)
        except zmq.Again:  # not connected (IMMEDIATE) or the queue is full
            return False
        # a send may take the wake-up of a reply that came meanwhile
        self._fdwatch.kick()  # type: ignore[union-attr]
        return True

    async def _send_later(
        self, message: list, entry: _Pending, future: asyncio.Future
    ) -> None:
        """Wait for room to send (or a connection) until the call's timer
        fires; a call without timeout gives up after the dead-peer bound."""
        watch = self._watch
        while True:
            if future.done():
                future.result()  # raises _Expired
            writable = asyncio.ensure_future(
                self._fdwatch.writable(_WATCH_S)  # type: ignore[union-attr]
            )
            done, _ = await asyncio.wait(
                (writable, future), return_when=asyncio.FIRST_COMPLETED
            )
            if writable not in done:
                writable.cancel()
            if self._closed:
                raise RuntimeError(f"client of {self.url} was closed during a call")
            if self._try_send(message):
                return
            if watch is not None:
                watch.check(entry.mark, False, entry.endless)
                entry.mark = watch.mark()

    def _on_readable(self) -> None:
        """The one reader (run by the socket's FdWatch): hand each reply to
        the future of its call; drops late and malformed ones."""
        sock = self._socket
        if sock is None:
            return
        recv = transport.recv_frames
        pending = self._pending
        events = sock.getsockopt
        try:
            # ZMQ_EVENTS first: a zmq.Again raised at the end of each drain
            # cost more than the check (about 5 us)
            while int(events(_EVENTS)) & _POLLIN:
                frames = recv(sock, _NOBLOCK)
                if len(frames) < 2 or len(frames[0]) != 0:
                    _log.warning("dropped a reply without delimiter from %s", self.url)
                    continue
                try:
                    reply = protocol.decode_reply(frames[1:])
                except ProtocolError as exc:
                    _log.warning("dropped a malformed reply from %s: %s", self.url, exc)
                    continue
                entry = pending.pop(reply.request_id, None)
                if entry is None or entry.future.done():
                    _log.debug("dropped a late reply to request %s", reply.request_id)
                    continue
                entry.future.set_result(reply)
        except zmq.Again:  # not expected after POLLIN; the next wake-up reads
            return
        except zmq.ZMQError as exc:  # the socket closed or the context ended
            if not self._closed:
                _log.debug("reader of %s stopped: %s", self.url, exc)
            self._fail_all(RuntimeError(f"client of {self.url} stopped: {exc}"))
            raise

    async def _watch_peer(self) -> None:
        """While calls are in flight, check every 0.1 s that their server
        is still there (``PeerWatch``, as the sync client's wait slices)."""
        watch = self._watch
        assert watch is not None
        while True:
            await self._busy.wait()
            await asyncio.sleep(_WATCH_S)
            for entry in list(self._pending.values()):
                if not entry.sent:  # _send_later checks those
                    continue
                try:
                    watch.check(entry.mark, True, entry.endless)
                except PeerLostError as exc:
                    if not entry.future.done():
                        entry.future.set_exception(exc)
            if not self._pending:
                self._busy.clear()

    async def _follow_restarts(self) -> None:
        """Every 0.1 s, as the sync client's signal receiver: when the
        connection came back after a loss (a restarted server binds a new
        signal port), read the inventory again and follow its signals."""
        watch, hub = self._watch, self._signal_hub
        assert watch is not None and hub is not None
        losses = watch.losses
        while True:
            await asyncio.sleep(_WATCH_S)
            watch.drain()
            if watch.losses == losses or not watch.up:
                continue
            seen = watch.losses
            try:
                reply = await self._request(
                    Request(RPCEvents.GET_INVENTORY, next(self._ids)), self._timeout
                )
            except (TimeoutError, RuntimeError) as exc:
                _log.warning("inventory of restarted %s: %s", self.url, exc)
                continue  # tried again at the next turn
            losses = seen
            inventory = reply.value if reply.ok else None
            if type(inventory) is dict and type(inventory.get("signal_url")) is str:
                hub.follow(transport.connect_url_for(self.url, inventory["signal_url"]))

    def _fail_all(self, exc: BaseException) -> None:
        for entry in list(self._pending.values()):
            if not entry.future.done():
                entry.future.set_exception(exc)
        self._pending.clear()

    # -- signals ----------------------------------------------------------
    @property
    def signal_hub(self) -> SignalHub:
        """The subscription to the server's signals (``SignalHub``).

        Raises
        ------
        RuntimeError
            The server has no signals.
        """
        if self._signal_hub is None:
            raise RuntimeError(f"server at {self.url} has no signals")
        return self._signal_hub

    # -- lifecycle --------------------------------------------------------
    async def aclose(self) -> None:
        """Stop the client's tasks and close its sockets; idempotent.

        Calls in flight raise ``RuntimeError``; iterators of its signals
        end.
        """
        if self._closed and self._socket is None:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fail_all(RuntimeError(f"client of {self.url} was closed during a call"))
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        hub, self._signal_hub = self._signal_hub, None
        if hub is not None:
            await hub.aclose()
        if self._fdwatch is not None:
            await self._fdwatch.aclose()  # before the socket closes
            self._fdwatch = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        sock, self._socket = self._socket, None
        transport.close_quietly(sock)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} name={self.name!r}>"


class _Expired(Exception):
    """A call's timer fired (becomes the TimeoutError that names the call)."""


def _plain(context: zmq.Context) -> zmq.Context:
    """A plain (blocking) context on the same libzmq context."""
    if isinstance(context, zmq.asyncio.Context):
        return zmq.Context.shadow(context.underlying)
    return context


def _describe(request: Request) -> str:
    if request.method:
        return repr(request.method)
    if request.event in (RPCEvents.PROPERTY_GET, RPCEvents.PROPERTY_SET):
        return f"property {request.name!r}"
    return f"the {request.event} request"
