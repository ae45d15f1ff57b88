"""Binding an interface to an RPCClient subclass: its public functions
become remote calls and its ``RPCProperty`` members remote properties
(``RPCClient.register_interface``)."""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import RemoteError
from ..property import RPCProperty
from .calls import NoResult

if TYPE_CHECKING:
    from .rpc_client import RPCClient

__all__ = ["bind_interface"]

C = TypeVar("C", bound=type)


def bind_interface(client_class: type, interface: type) -> Callable[[C], C]:
    """The class decorator of ``RPCClient.register_interface`` (see there);
    ``client_class`` is RPCClient, whose members the interface may not
    replace."""

    def bind(klass: C) -> C:
        if not (issubclass(klass, interface) and issubclass(klass, client_class)):
            raise RuntimeError(
                f"{klass.__name__} must inherit from both "
                f"{interface.__name__} and RPCClient"
            )
        members = _public_members(interface)
        clashes = sorted(set(members) & _client_members(client_class))
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


@functools.cache
def _client_members(client_class: type) -> frozenset[str]:
    """Public names of an RPCClient: attributes set by __init__ included."""
    names = {name for name in dir(client_class) if not name.startswith("_")}
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
