"""Typed proxies without a proxy class: ``connect`` and ``closing``.

``framerpc.connect(Camera, ctx, url)`` returns an ``RPCClient``
bound to ``Camera`` that a type checker sees as a ``Camera`` (a TypeVar
carries the interface's type), raising ``RemoteError`` on a
remote failure so that the interface's return types hold.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TypeVar, cast

import zmq

from . import transport
from .client.rpc_client import ProtocolChoice, RPCClient

__all__ = ["closing", "connect"]

T = TypeVar("T")


def connect(
    interface: Callable[..., T],
    context: zmq.Context,
    url: str,
    *,
    timeout: int = 1000,
    raise_errors: bool = True,
    protocol: ProtocolChoice = "auto",
    options: transport.SocketOptions = transport.DEFAULT_OPTIONS,
) -> T:
    """Connect to a server of ``interface``; the proxy is typed as one.

    The typed way to get a proxy: ``framerpc.connect(Camera, ctx, url)``
    returns an object a type checker sees as a ``Camera``, without writing
    a proxy class. Close it with ``closing`` (or
    ``proxy.close()`` at run time: it is an ``RPCClient``).

    Parameters
    ----------
    interface : type
        The interface class (abstract or not) shared with the server.
    context, url, timeout, protocol, options
        As for ``RPCClient``.
    raise_errors : bool
        A remote failure raises ``RemoteError`` instead of
        returning ``NoResult``, so that the interface's return types
        hold (default True here, False for ``RPCClient``).

    Returns
    -------
    interface
        An ``RPCClient`` subclass instance bound to ``interface``.

    Raises
    ------
    TypeError
        ``interface`` is not a class, or has members named like the
        client's own (see ``register_interface``).
    TimeoutError
        The server did not answer within ``timeout`` ms.
    """
    if not isinstance(interface, type):
        raise TypeError(f"connect() needs an interface class, got {interface!r}")
    proxy = _proxy_class(interface)(
        context,
        url,
        timeout,
        protocol=protocol,
        options=options,
        raise_errors=raise_errors,
    )
    return cast(T, proxy)


@contextlib.contextmanager
def closing(proxy: T) -> Iterator[T]:
    """Context manager that closes ``proxy`` (from ``connect``) at exit.

    ``with framerpc.closing(framerpc.connect(Camera, ctx, url)) as camera:``
    keeps the interface's type for ``camera``, which ``with`` on the proxy
    itself cannot (the interface has no ``__enter__``).

    Raises
    ------
    TypeError
        ``proxy`` is not an ``RPCClient``.
    """
    if not isinstance(proxy, RPCClient):
        raise TypeError(f"closing() needs a framerpc proxy, got {type(proxy).__name__}")
    try:
        yield proxy
    finally:
        proxy.close()


@functools.cache
def _proxy_class(interface: type) -> type[RPCClient]:
    """The proxy class of ``interface`` (one per interface)."""
    namespace = {
        "__module__": interface.__module__,
        "__qualname__": f"{interface.__qualname__}Proxy",
        # the interface's own __init__, if any, comes first in the MRO
        "__init__": RPCClient.__init__,
    }
    klass = type(f"{interface.__name__}Proxy", (interface, RPCClient), namespace)
    return RPCClient.register_interface(interface)(klass)
