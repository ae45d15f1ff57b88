"""asyncio proxies of an interface: ``framerpc.aio.connect``.

A proxy class per interface, built once: each public function of the
interface becomes a coroutine method that keeps its name, signature and
docstring; each ``RPCProperty`` an attribute whose value is a
``RemoteProperty`` (``await proxy.mode``, ``await proxy.mode.set(v)``);
each ``RPCSignal`` an ``AsyncSignal``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import zmq

from .. import transport
from ..client.interface import _public_members
from ..property import RPCProperty
from ..signal import RPCSignal
from ..stream import RPCStream
from ..wire import messages as protocol
from . import _follow  # sigseq: RemoteProperty.follow
from ._signals import AsyncSignal
from ._streams import StreamSlot
from .client import AsyncClient

__all__ = ["AsyncProxy", "RemoteProperty", "connect", "proxy_class"]

T = TypeVar("T")
P = TypeVar("P")


class RemoteProperty:
    """A remote property of one asyncio proxy.

    ``await proxy.gain`` (or ``await proxy.gain.get()``) reads it,
    ``await proxy.gain.set(value)`` writes it; ``proxy.gain.notify`` is
    its notify signal (an ``AsyncSignal``) when it has one. Assigning
    ``proxy.gain = value`` is refused: an assignment cannot be awaited.
    """

    __slots__ = ("_client", "name", "notify")

    def __init__(self, client: AsyncClient, name: str, notify: AsyncSignal | None):
        self._client = client
        self.name = name
        self.notify = notify

    async def get(self) -> Any:
        """The remote value (a ``NoResult`` on a remote error, or
        ``RemoteError`` with ``raise_errors``)."""
        return await self._client.get_property(self.name)

    async def set(self, value: Any) -> None:
        """Set the remote value; ``RemoteError`` when the server refuses."""
        await self._client.set_property(self.name, value)

    async def follow(self, callback: Callable[..., Any]) -> None:
        """Call ``callback`` with the current value, then with each change
        (from the notify signal), none lost or repeated in between; the
        value's call is done when this returns. ``notify.disconnect(
        callback)`` ends it.

        Raises
        ------
        TypeError
            The property has no notify signal.
        RemoteError
            It could not be read (then nothing stays connected).
        """
        if self.notify is None:  # sigseq: see aio/_follow.py
            raise TypeError(f"property {self.name} has no notify signal to follow")
        await _follow.follow(self._client, self.name, self.notify, callback)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.get().__await__()

    def __repr__(self) -> str:
        return f"<RemoteProperty {self.name} of {self._client.url}>"


class _PropertySlot:
    """Class attribute of a proxy for one remote property."""

    def __init__(self, name: str, notify: str | None, doc: str | None) -> None:
        self.name = name
        self.notify = notify
        self.__doc__ = doc

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        notify = getattr(obj, self.notify) if self.notify else None
        return RemoteProperty(obj, self.name, notify)

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(
            f"remote property {self.name!r} of an asyncio proxy: use "
            f"'await proxy.{self.name}.set(value)'"
        )


class _SignalSlot:
    """Class attribute of a proxy for one remote signal."""

    def __init__(self, name: str, signal: RPCSignal) -> None:
        self.name = name
        self.signal = signal

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return AsyncSignal(obj.signal_hub, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"signal {self.name!r} cannot be assigned")


def _remote_method(name: str, func: Callable) -> Callable:
    encode_call = protocol.encode_call

    @functools.wraps(func)
    async def remote(self: AsyncClient, *args: Any, **kwargs: Any) -> Any:
        # AsyncClient.call inlined: one coroutine less per call (2 us)
        buffer_methods = self._buffer_methods
        if name in buffer_methods:
            timeout = buffer_methods[name]
        else:
            timeout = self._json_methods.get(name, self._timeout)
        rid, shm = next(self._ids), self._shm
        if shm is None or not shm.pending:
            frames = encode_call(rid, name, list(args), kwargs)
            reply = await self._exchange(frames, rid, timeout, name)
        else:  # released shared-memory slots ride along
            reply = await shm.call(rid, name, list(args), kwargs, timeout)
        if not reply.ok:
            return self._failed(reply)
        if reply.info is not None:
            if shm is not None and type(reply.value) is dict:  # a reference
                return self._shm_array(reply.value), reply.info
            return reply.value, reply.info
        return reply.value

    remote.__isabstractmethod__ = False  # type: ignore[attr-defined]
    return remote


class AsyncProxy(AsyncClient, Generic[T]):
    """An asyncio proxy of interface ``T`` (the base of every class that
    ``proxy_class`` makes).

    Type checkers see the ``AsyncClient`` members; the interface's own
    are ``Any`` unless mypy runs with ``framerpc.aio.mypy_plugin``, which
    types each method as a coroutine of its return type (Python's typing
    cannot write "T with its methods made async").
    """

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...


@functools.cache
def _client_members() -> frozenset[str]:
    names = {name for name in dir(AsyncClient) if not name.startswith("_")}
    return frozenset(names | {"context", "url", "name"})


@functools.cache
def proxy_class(interface: type) -> type[AsyncProxy[Any]]:
    """The asyncio proxy class of ``interface`` (one per interface).

    Raises
    ------
    TypeError
        ``interface`` is not a class, or a member has the name of an
        ``AsyncClient`` member (``call``, ``aclose``, ``name``...).
    """
    if not isinstance(interface, type):
        raise TypeError(f"connect() needs an interface class, got {interface!r}")
    members = _public_members(interface)
    clashes = sorted(set(members) & _client_members())
    if clashes:
        raise TypeError(
            f"{interface.__name__}.{clashes[0]} would replace "
            f"AsyncClient.{clashes[0]}: rename it"
        )
    signal_names = {
        id(attr): name for name, attr in members.items() if isinstance(attr, RPCSignal)
    }
    namespace: dict[str, Any] = {
        "__module__": interface.__module__,
        "__qualname__": f"{interface.__qualname__}AsyncProxy",
        "__doc__": interface.__doc__,
        "_interface": interface,
    }
    for name, attr in members.items():
        if isinstance(attr, RPCProperty):
            notify = attr.notify
            namespace[name] = _PropertySlot(
                name, signal_names.get(id(notify)) if notify else None, attr.__doc__
            )
        elif isinstance(attr, RPCSignal):
            namespace[name] = _SignalSlot(name, attr)
        elif isinstance(attr, RPCStream):
            namespace[name] = StreamSlot(name, attr)
        elif inspect.isfunction(attr):
            namespace[name] = _remote_method(name, attr)
    return type(f"{interface.__name__}AsyncProxy", (AsyncProxy,), namespace)


class _Opening(Coroutine[Any, Any, P], Generic[P]):
    """What ``connect`` returns: await it for the proxy, use it in ``async
    with`` (the proxy is closed at the end of the block), or hand it to
    ``asyncio.create_task`` / ``gather`` (it is a coroutine)."""

    def __init__(self, klass: type[AsyncProxy[Any]], url: str, kwargs: dict) -> None:
        self._klass = klass
        self._url = url
        self._kwargs = kwargs
        self._proxy: Any = None
        self._coro: Coroutine[Any, Any, P] | None = None

    async def _open(self) -> P:
        proxy: P = await self._klass.open(self._url, **self._kwargs)  # type: ignore[assignment]
        return proxy

    def _opening(self) -> Coroutine[Any, Any, P]:
        if self._coro is None:
            self._coro = self._open()
        return self._coro

    # -- a coroutine: what asyncio.create_task drives -----------------------
    def send(self, value: Any) -> Any:
        return self._opening().send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None and tb is None:
            return self._opening().throw(typ)
        return self._opening().throw(typ, val, tb)  # the deprecated form

    def close(self) -> None:
        if self._coro is not None:
            self._coro.close()

    def __await__(self) -> Generator[Any, None, P]:
        return self._opening().__await__()

    async def __aenter__(self) -> P:
        proxy = await self._opening()
        self._proxy = proxy
        return proxy

    async def __aexit__(self, *exc_info: object) -> None:
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            await proxy.aclose()


def connect(
    interface: Callable[..., T],
    url: str,
    *,
    context: zmq.Context | None = None,
    timeout: int = 1000,
    raise_errors: bool = True,
    options: transport.SocketOptions = transport.DEFAULT_OPTIONS,
) -> _Opening[AsyncProxy[T]]:
    """Connect an asyncio proxy of ``interface`` to the server at ``url``.

    ``async with framerpc.aio.connect(Camera, url) as cam:`` opens it and
    closes it at the end of the block; ``cam = await
    framerpc.aio.connect(Camera, url)`` opens it (close it with ``await
    cam.aclose()``); ``asyncio.create_task(connect(...))`` opens it in a
    task. The proxy is an ``AsyncProxy[Camera]``: with mypy's
    ``framerpc.aio.mypy_plugin`` its methods type-check as coroutines of
    the interface's return types.

    Parameters
    ----------
    interface : type
        The interface class shared with the server.
    url : str
        The server's URL.
    context : zmq.Context, optional
        Default ``zmq.Context.instance()``.
    timeout, options
        As for ``RPCClient``.
    raise_errors : bool
        A remote failure raises ``RemoteError`` (default, as with
        ``framerpc.connect``); False returns a ``NoResult``.

    Raises
    ------
    TypeError
        ``interface`` is not a class or clashes with the client's members.
    TimeoutError
        The server did not answer within ``timeout`` ms (when awaited).
    """
    kwargs = {
        "context": context,
        "timeout": timeout,
        "raise_errors": raise_errors,
        "options": options,
    }
    if not isinstance(interface, type):  # before proxy_class's cache
        raise TypeError(f"connect() needs an interface class, got {interface!r}")
    return _Opening(proxy_class(interface), url, kwargs)
