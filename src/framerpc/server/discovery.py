"""What a server offers: finding its decorated methods, properties and
signals (``_discover``), and the inventory it sends to clients."""

from __future__ import annotations

import inspect
from typing import Any

from .._describe import inventory_fields
from ..property import RPCProperty
from ..signal import RPCSignal
from . import streams as _streamhub

__all__ = ["DiscoveryMixin"]


class DiscoveryMixin:
    """RPCServer's discovery and inventory (see ``RPCServer``)."""

    # set by RPCServer.__init__ (the tables empty, for _discover to fill)
    name: str
    _json_methods: dict[str, int | None]
    _buffer_methods: dict[str, int | None]
    _rpc_properties: dict[str, RPCProperty]
    _signals: dict[str, RPCSignal]
    _signal_url: str
    _signal_port: int | None
    _stream_hub: _streamhub.StreamHub | None

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
