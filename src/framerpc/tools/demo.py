"""The demo camera: an interface, a server producing frames, a proxy, and
``run_demo``, which wires a registry, a camera and a client on loopback.

The examples/ scripts and ``framerpc demo`` both use this module.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import zmq

from ..client.rpc_client import RPCClient
from ..property import RPCProperty
from ..registry import DeviceRegistry, list_devices
from ..server.rpc_server import RPCServer
from ..signal import RPCSignal
from .demo_streams import run_stream_demo

__all__ = [
    "FRAME_SHAPES",
    "Camera",
    "CameraProxy",
    "DemoCamera",
    "fetch_frames",
    "run_demo",
]

#: Frame kinds the demo camera serves: name -> (shape, dtype).
FRAME_SHAPES: dict[str, tuple[tuple[int, ...], type]] = {
    "uint16": ((1200, 800, 3), np.uint16),  # 5.76 MB
    "uint8": ((2160, 3840, 3), np.uint8),  # 24.9 MB
}
DEVICE_TYPE = "camera"


class Camera(ABC):
    """What a camera offers remotely; shared by server and client."""

    frame_ready = RPCSignal(int)
    exposure_changed = RPCSignal(int)

    @abstractmethod
    def grab(self, kind: str = "uint16") -> tuple:
        """Return the latest frame of ``kind`` and its metadata dict."""

    @abstractmethod
    def frame_count(self) -> int:
        """Return how many frames were grabbed since start."""

    exposure = RPCProperty(
        doc="Exposure time in microseconds.", notify=exposure_changed
    )


class DemoCamera(Camera, RPCServer):
    """A camera that serves synthetic frames (a gradient that shifts)."""

    def __init__(self, context: zmq.Context, url: str, **kwargs) -> None:
        self._exposure = 1000
        self._count = 0
        self._frames = {
            kind: np.ascontiguousarray(
                np.broadcast_to(np.arange(shape[1], dtype=dtype)[None, :, None], shape)
            )
            for kind, (shape, dtype) in FRAME_SHAPES.items()
        }
        RPCServer.__init__(self, context, url, **kwargs)

    @RPCServer.register_method_buffer(timeout=5000)
    def grab(self, kind: str = "uint16") -> tuple:
        frame = self._frames[kind]
        self._count += 1
        self.frame_ready.emit(self._count)
        return frame, {"index": self._count, "exposure_us": self._exposure}

    @RPCServer.register_method_json
    def frame_count(self) -> int:
        return self._count

    def _get_exposure(self) -> int:
        return self._exposure

    def _set_exposure(self, value: int) -> None:
        self._exposure = int(value)

    exposure = RPCProperty(
        _get_exposure,
        _set_exposure,
        doc="Exposure (us).",
        notify=Camera.exposure_changed,
        auto_notify=True,
    )


@RPCClient.register_interface(Camera)
class CameraProxy(Camera, RPCClient):
    """Client-side camera: calls travel to a ``DemoCamera``."""


def fetch_frames(camera: Camera, kind: str, count: int) -> tuple[float, float]:
    """Fetch ``count`` frames of ``kind``, check them; return (frames/s, MB/s)."""
    shape, dtype = FRAME_SHAPES[kind]
    nbytes = 0
    start = time.perf_counter()
    for _ in range(count):
        result = camera.grab(kind)
        if not result:
            raise RuntimeError(f"grab failed: {result.error}")
        frame, _info = result
        if frame.shape != shape or frame.dtype != dtype:
            raise RuntimeError(f"unexpected frame {frame.dtype} {frame.shape}")
        nbytes += frame.nbytes
    elapsed = time.perf_counter() - start
    return count / elapsed, nbytes / elapsed / 1e6


def run_demo(
    frames: int = 50, out: Callable[[str], None] = print, stream_seconds: float = 2.0
) -> None:
    """Start a registry, a camera and a client on loopback and fetch frames.

    Then stream frames to two subscribers, one slow (see ``demo_streams``).

    Parameters
    ----------
    frames : int
        Frames to fetch of each kind.
    out : callable
        Where the report lines go.
    stream_seconds : float
        How long the stream part runs (0: not at all).
    """
    context = zmq.Context()
    registry = DeviceRegistry(context, "127.0.0.1", port=None)
    registry.start()
    camera = DemoCamera(context, "tcp://127.0.0.1")
    server = threading.Thread(target=camera.serve_forever, name="demo camera")
    try:
        name = camera.register_to_registry(DEVICE_TYPE, "demo-camera", registry.url)
        server.start()
        out(f"registry at {registry.url}; camera {name!r} serving at {camera.url}")
        devices = list_devices(context, registry.url)
        device_type, address = devices[name]
        out(f"found {name!r} ({device_type}) at {address} through the registry")
        with CameraProxy(context, address) as proxy:
            seen: list[int] = []
            proxy.frame_ready.connect(seen.append)
            proxy.exposure = 2500
            out(f"exposure set to {proxy.exposure} us")
            for kind, (shape, dtype) in FRAME_SHAPES.items():
                rate, mbps = fetch_frames(proxy, kind, frames)
                size = np.prod(shape) * np.dtype(dtype).itemsize / 1e6
                out(
                    f"{kind:>6} {'x'.join(map(str, shape))} ({size:.2f} MB): "
                    f"{rate:8.1f} frames/s {mbps:9.1f} MB/s"
                )
            out(
                f"frame_ready signals received: {len(seen)}; "
                f"frames grabbed on the server: {proxy.frame_count()}"
            )
        if stream_seconds > 0:  # RPCStream to two subscribers, one slow
            run_stream_demo(context, stream_seconds, out=out)
    finally:
        camera.stop_server()
        if server.ident is not None:
            server.join(timeout=5)
        registry.stop()
        registry.join(timeout=5)
        context.term()
