"""The native inventory's optional descriptions (signatures, docs, signal
types) that ``framerpc inspect`` shows; older JSON peers never see them."""

from __future__ import annotations

from abc import ABC, abstractmethod

from framerpc._describe import signature_text
from framerpc.client import RPCClient
from framerpc.property import RPCProperty
from framerpc.server import RPCServer
from framerpc.signal import RPCSignal


class Shutter(ABC):
    """The interface declares the types and the docs."""

    opened = RPCSignal(bool, "list[int]")
    exposure = RPCProperty(doc="Exposure time in ms.\n\nMore text.")

    @abstractmethod
    def open(self, ms: int = 10) -> bool:
        """Open the shutter for ``ms`` milliseconds.

        More text.
        """


class ShutterServer(Shutter, RPCServer):
    @RPCServer.register_method_json
    def open(self, ms=10):  # overrides without repeating types or docs
        return True

    @RPCProperty
    def exposure(self) -> int:  # the interface documents it
        return 5

    @RPCServer.register_method_json
    def plain(self, a, *rest, b=None, **options):
        return a


def test_the_native_inventory_describes_members(ctx, serve):
    server = serve(ShutterServer(ctx, "inproc://shutter-describe"))
    with RPCClient(ctx, server.url, protocol="native") as client:
        assert client._signatures == {
            "open": "(ms: int = 10) -> bool",
            "plain": "(a, *rest, b=None, **options)",
        }
        assert client._docs == {
            "open": "Open the shutter for ``ms`` milliseconds.",
            "exposure": "Exposure time in ms.",
        }
        assert client._signal_types == {"opened": ["bool", "list[int]"]}
    # the JSON inventory (what "auto" reads) carries none of them
    with RPCClient(ctx, server.url) as client:
        assert client._protocol == "native"
        assert (client._signatures, client._docs, client._signal_types) == ({}, {}, {})


def test_a_signature_python_cannot_tell_is_empty():
    assert signature_text(len) == "(obj, /)"
    assert signature_text(dict.fromkeys) != ""
    assert signature_text(object()) == ""
