"""AsyncClient: an asyncio proxy of an ``RPCServer``.

The calls go through a ``Link`` (the request socket, its one reader and
the calls in flight, see ``_link``); this module reads the inventory,
subscribes to the signals and offers the calls, property access and
lifecycle. Every method must be called from the loop the client was
opened on.

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

from .. import _lifecycle, transport
from ..client import NoResult
from ..errors import ProtocolError, RemoteError
from ..wire import messages as protocol
from ..wire.messages import Reply, Request, RPCEvents
from . import _shm, _shm_signals, _streams
from ._link import Link, private_context
from ._signals import SignalHub

__all__ = ["AsyncClient"]

_log = logging.getLogger(__name__)

#: How often (s) the client looks for a restarted server (as the sync one).
_WATCH_S = 0.1
#: Longest wait (s) for the signal subscription handshake.
_SYNC_WAIT_S = 2.0
#: Longest wait (ms) for the server's answer to stop_server().
_STOP_WAIT_MS = 1000


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
        self._link = Link(url, options)
        self._exchange = self._link.exchange
        self._stop_link: Link | None = None  # of a stop_server() in progress
        self._tasks: list[asyncio.Task] = []
        self._json_methods: dict[str, int | None] = {}
        self._buffer_methods: dict[str, int | None] = {}
        self._properties: list[str] = []
        self._signal_names: list[str] = []
        self._signal_hub: SignalHub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._destroy_hook: _lifecycle.DestroyHook | None = None
        self._shm: _shm.AioShm | None = None  # same host and user: see _shm

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
        # context.destroy() closes this client's sockets instead of hanging
        # in term() (framerpc's sockets are on a shadow: see _lifecycle)
        self._destroy_hook = _lifecycle.DestroyHook(
            self.context, f"AsyncClient {self.url}", self._on_context_destroy
        )
        try:
            self._link.open(self.context)
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
        _streams.apply_inventory(self, inventory)  # streams: their URL
        self._shm = await _shm.connect(self)  # same host and user: shm
        if self._signal_names:
            signal_url = transport.connect_url_for(self.url, inventory["signal_url"])
            zctx = private_context(self.context)
            types = {
                name: slot.signal
                for name in self._signal_names
                if (slot := getattr(type(self), name, None)) is not None
                and hasattr(slot, "signal")
            }
            self._signal_hub = SignalHub(zctx, signal_url, self._options, types)
            await self._sync_signals()
            if self._shm is not None and self._shm.retry.accepted:
                await _shm_signals.claim(self)  # signals' arrays through shm too
        # streams too follow a restarted server (a new stream_url), and
        # shared memory (a new handshake)
        if self._link.watch is not None and (
            self._signal_names or _streams.has_streams(self) or self._shm is not None
        ):
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
        rid, shm = next(self._ids), self._shm
        if shm is None or not shm.pending:
            frames = protocol.encode_call(rid, method_name, list(args), kwargs)
            reply = await self._exchange(frames, rid, timeout, method_name)
        else:  # released slots ride along
            reply = await shm.call(rid, method_name, list(args), kwargs, timeout)
        if not reply.ok:
            return self._failed(reply)
        if reply.info is not None:
            if shm is not None and type(reply.value) is dict:  # a reference
                return self._shm_array(reply.value), reply.info
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
            if self._shm is not None and type(reply.value) is dict:  # a reference
                return True, (self._shm_array(reply.value), reply.info)
            return True, (reply.value, reply.info)
        return True, reply.value

    async def _call(self, method_name: str, args: Any, kwargs: dict) -> Reply:
        if method_name in self._buffer_methods:
            timeout = self._buffer_methods[method_name]
        else:
            timeout = self._json_methods.get(method_name, self._timeout)
        rid, shm = next(self._ids), self._shm
        if shm is None or not shm.pending:
            frames = protocol.encode_call(rid, method_name, list(args), kwargs)
            return await self._exchange(frames, rid, timeout, method_name)
        # released slots ride along
        return await shm.call(rid, method_name, list(args), kwargs, timeout)

    def _shm_array(self, value: dict) -> Any:
        """The read-only array a shared-memory reference names."""
        shm = self._shm
        if shm is None:  # closed during the call: the mapping is gone
            raise RuntimeError(f"client of {self.url} was closed during a call")
        return shm.resolve(value)

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
        it acknowledged. Sent on a socket of its own without
        ``ZMQ_IMMEDIATE``, whose unread reply outlives the connection the
        server closes (see ``RPCClient._stop_request``)."""
        request = Request(RPCEvents.STOP_SERVER, next(self._ids))
        link = self._stop_link = Link(self.url, self._options, immediate=False)
        try:
            self._link.check_usable()  # the client's: open, on its loop
            link.open(self.context)
            frames = protocol.encode_request(request)
            reply = await link.exchange(
                frames, request.request_id, _STOP_WAIT_MS, request.method, request
            )
        except (TimeoutError, RuntimeError) as exc:
            _log.warning("stop_server: %s", exc)
            return False
        finally:
            self._stop_link = None
            # linger 0: a request still queued (no server) must not stop a
            # server that comes up later
            await link.aclose(0)
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

    async def _follow_restarts(self) -> None:
        """Every 0.1 s, as the sync client's signal receiver: when the
        connection came back after a loss (a restarted server binds a new
        signal port), read the inventory again and follow its signals."""
        watch, hub = self._link.watch, self._signal_hub
        assert watch is not None
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
            if type(inventory) is dict:
                _streams.apply_inventory(self, inventory)  # streams: new URL
                await _shm.rehandshake(self)  # shared memory: shake hands again
            if (
                hub is not None
                and type(inventory) is dict
                and type(inventory.get("signal_url")) is str
            ):
                hub.follow(transport.connect_url_for(self.url, inventory["signal_url"]))

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
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await _streams.aclose_all(self)  # streams: their iterations end
        hub, self._signal_hub = self._signal_hub, None
        if hub is not None:
            await hub.aclose()
        shm, self._shm = self._shm, None
        if shm is not None:  # the releases queued so far, and goodbye
            shm.close()
            shm.goodbye_now()
        await self._link.aclose()
        if self._stop_link is not None:  # its stop_server() returns False
            self._stop_link.close_now(0)
        if self._destroy_hook is not None:
            self._destroy_hook.release()

    def _on_context_destroy(self, linger: int | None) -> None:
        """``context.destroy()`` (any thread): close the sockets in the
        loop's thread, which owns them, before ``term()`` waits for them."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or not loop.is_running():
            self._close_now(linger)  # nothing else is using the sockets
            return
        try:
            loop.call_soon_threadsafe(self._close_now, linger)
        except RuntimeError:  # the loop closed meanwhile
            self._close_now(linger)

    def _close_now(self, linger: int | None) -> None:
        """Close everything without awaiting (``aclose`` still may be
        awaited after); calls in flight raise ``RuntimeError``."""
        for task in self._tasks:
            task.cancel()
        _streams.close_all_now(self, linger)  # streams
        hub = self._signal_hub
        if hub is not None:
            hub.close_now(linger)
        shm, self._shm = self._shm, None
        if shm is not None:
            shm.close()
        self._link.close_now(linger, "stopped: its context was destroyed")
        if self._stop_link is not None:
            self._stop_link.close_now(0, "stopped: its context was destroyed")

    @property
    def _pending(self) -> dict:
        """The calls in flight, by request id (for tests)."""
        return self._link._pending

    @property
    def _socket(self) -> zmq.Socket | None:
        return self._link._socket

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} name={self.name!r}>"
