"""Device classes shared by the socket tests: an interface, its server, its proxy.

``Camera`` follows the pattern of api.md: the interface declares signals,
abstract methods and properties; ``CameraServer`` implements it behind
``RPCServer``; ``CameraProxy`` is the client side. ``ExtendedCamera`` adds a
method and a property that ``CameraServer`` lacks, to provoke "not found"
errors through an ordinary proxy.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import zmq

from framerpc.client import RPCClient
from framerpc.property import RPCProperty
from framerpc.server import RPCServer
from framerpc.signal import RPCSignal

#: dtypes every numpy round trip is checked with.
DTYPES = ["uint8", "uint16", "int32", "float32", "float64", "complex64", "bool"]
#: A 4K RGB frame (about 25 MB): large enough for many socket buffers.
FRAME_4K = (2160, 3840, 3)
#: How long a blocked handler waits at most for the test to release it (s).
BLOCK_LIMIT_S = 10


_S = TypeVar("_S")


def bind_again(make: Callable[[], _S], timeout: float = 10.0) -> _S:
    """``make()``, a server on the URL of one that just stopped: libzmq
    closes the old listener in its I/O thread, so the port may still be
    taken for a moment (longer on a loaded machine). Retries on
    EADDRINUSE until ``timeout`` seconds, a ceiling that only catches a
    port that is really taken."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return make()
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def make_array(shape: tuple[int, ...] | list[int], dtype: str) -> np.ndarray:
    """Deterministic, non-constant contents of the given shape and dtype."""
    count = int(np.prod(shape, dtype=np.int64))
    values = np.arange(count, dtype=np.int64)
    if dtype == "bool":
        array = values % 3 == 1
    elif dtype.startswith("complex"):
        array = (values % 251 + 1j * (values % 7)).astype(dtype)
    else:
        array = (values % 251).astype(dtype)
    return array.reshape(shape)


def make_bytes(size: int) -> bytes:
    """Deterministic bytes of length ``size`` (a repeating 0..250 ramp)."""
    return (np.arange(size, dtype=np.int64) % 251).astype(np.uint8).tobytes()


class Camera(ABC):
    """A camera, as both sides see it."""

    frame_ready = RPCSignal(int)
    mode_changed = RPCSignal(str)
    pair_ready = RPCSignal(tuple[int, str])

    mode = RPCProperty(
        doc="Acquisition mode; changes emit mode_changed.", notify=mode_changed
    )
    gain = RPCProperty(doc="Analog gain, a non-negative int.")

    @abstractmethod
    def set_exposure(self, us: int) -> bool:
        """Set the exposure time in microseconds."""

    @abstractmethod
    def echo(self, value: Any) -> Any:
        """Return ``value`` unchanged."""

    @abstractmethod
    def add(self, a: int, b: int = 0, *, scale: int = 1) -> int:
        """Return ``(a + b) * scale``."""

    @abstractmethod
    def arg_types(self, *args: Any) -> list[str]:
        """Type names of the arguments, as the server received them."""

    @abstractmethod
    def fail(self, message: str) -> None:
        """Raise ``ValueError(message)`` on the server."""

    @abstractmethod
    def sleep(self, seconds: float) -> float:
        """Sleep on the server, longer than the method's 100 ms timeout."""

    @abstractmethod
    def block(self) -> bool:
        """Wait (no timeout) until the test sets ``server.release``."""

    @abstractmethod
    def emit_pair(self, number: int, text: str) -> None:
        """Emit ``pair_ready((number, text))`` on the server."""

    @abstractmethod
    def make_array(self, shape: list[int], dtype: str) -> np.ndarray:
        """JSON method returning an array."""

    @abstractmethod
    def unsendable(self, kind: str) -> Any:
        """JSON method returning a value that cannot travel."""

    @abstractmethod
    def grab(self, shape: list[int], dtype: str) -> tuple:
        """Buffer method returning an array and its description."""

    @abstractmethod
    def read_buffer(self, size: int, kind: str) -> tuple:
        """Buffer method returning ``size`` bytes as bytes, bytearray or memoryview."""

    @abstractmethod
    def echo_buffer(self, data: Any) -> tuple:
        """Buffer method returning ``(data, {"size": len(data)})``."""

    @abstractmethod
    def bad_buffer(self, kind: str) -> Any:
        """Buffer method returning something that is not ``(buffer, dict)``."""


class CameraServer(Camera, RPCServer):
    """Server implementation of :class:`Camera`; records the methods called."""

    def __init__(self, ctx, url: str, **kwargs: Any) -> None:
        RPCServer.__init__(self, ctx, url, **kwargs)
        self.calls: list[str] = []
        self.exposure = 0
        self.release = threading.Event()
        self._mode = "normal"
        self._gain = 1

    def _get_mode(self) -> str:
        return self._mode

    def _set_mode(self, value: str) -> None:
        self._mode = value

    mode = RPCProperty(
        _get_mode, _set_mode, notify=Camera.mode_changed, auto_notify=True
    )

    @RPCProperty
    def gain(self) -> int:
        return self._gain

    @gain.setter
    def gain(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"gain must be >= 0, got {value}")
        self._gain = value

    @RPCServer.register_method_json
    def set_exposure(self, us: int) -> bool:
        self.calls.append("set_exposure")
        self.exposure = us
        return True

    @RPCServer.register_method_json
    def echo(self, value: Any) -> Any:
        self.calls.append("echo")
        return value

    @RPCServer.register_method_json(timeout=500)
    def add(self, a: int, b: int = 0, *, scale: int = 1) -> int:
        return (a + b) * scale

    @RPCServer.register_method_json(timeout=None)
    def arg_types(self, *args: Any) -> list[str]:
        return [type(arg).__name__ for arg in args]

    @RPCServer.register_method_json
    def fail(self, message: str) -> None:
        raise ValueError(message)

    @RPCServer.register_method_json(timeout=100)
    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @RPCServer.register_method_json(timeout=None)
    def block(self) -> bool:
        self.calls.append("block")
        return self.release.wait(BLOCK_LIMIT_S)

    @RPCServer.register_method_json
    def emit_pair(self, number: int, text: str) -> None:
        self.pair_ready.emit((number, text))

    @RPCServer.register_method_json
    def make_array(self, shape: list[int], dtype: str) -> np.ndarray:
        return make_array(shape, dtype)

    @RPCServer.register_method_json
    def unsendable(self, kind: str) -> Any:
        return {"set": {1, 2}, "object": object()}[kind]

    # a ceiling that only catches a hang: a 4K frame in the pure engine on
    # a loaded 2-core machine took over 5 s
    @RPCServer.register_method_buffer(timeout=30000)
    def grab(self, shape: list[int], dtype: str) -> tuple:
        return make_array(shape, dtype), {"shape": shape, "dtype": dtype}

    @RPCServer.register_method_buffer(timeout=None)
    def read_buffer(self, size: int, kind: str) -> tuple:
        data = make_bytes(size)
        wrapped = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}
        return wrapped[kind](data), {"size": size, "kind": kind}

    @RPCServer.register_method_buffer
    def echo_buffer(self, data: Any) -> tuple:
        return data, {"size": len(data)}

    @RPCServer.register_method_buffer
    def bad_buffer(self, kind: str) -> Any:
        return {
            "str": "not a buffer",
            "triple": (b"abc", {}, {}),
            "no-info": (b"abc", "info"),
            "list": [b"abc", {}],
            "datetime": (np.zeros(1024, dtype="datetime64[s]"), {}),
        }[kind]


@RPCClient.register_interface(Camera)
class CameraProxy(Camera, RPCClient):
    """Client proxy of :class:`Camera`."""


class ExtendedCamera(Camera):
    """A newer interface: one method and one property ``CameraServer`` lacks."""

    zoom = RPCProperty(doc="Zoom factor (not implemented by CameraServer).")

    @abstractmethod
    def focus(self, distance: float) -> bool:
        """Focus at ``distance`` metres (not implemented by CameraServer)."""


@RPCClient.register_interface(ExtendedCamera)
class ExtendedCameraProxy(ExtendedCamera, RPCClient):
    """Client proxy of :class:`ExtendedCamera`."""
