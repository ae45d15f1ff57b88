"""The demo camera: an interface, a server producing frames, a proxy, and
``run_demo``, which wires a registry, a camera and a client on loopback.

The examples/ scripts and ``framerpc demo`` both use this module.

The client and the camera of ``run_demo`` share a host, so frames of
``SocketOptions.shm_threshold`` bytes or more come through shared memory;
``trace_frames`` tells the path each fetched frame took, from what the
client sees (``in_shared_segment``) and the server's ``stats``.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from .._proxies import closing, connect
from ..client.rpc_client import NoResult, RPCClient
from ..pool import FramePool
from ..property import RPCProperty
from ..registry import DeviceRegistry, list_devices
from ..server.rpc_server import RPCServer
from ..signal import RPCSignal
from ..transport import DEFAULT_OPTIONS
from .demo_streams import run_stream_demo

__all__ = [
    "FRAME_SHAPES",
    "PATH_SHM_COPY",
    "PATH_SHM_ZERO_COPY",
    "PATH_SOCKET",
    "Camera",
    "CameraProxy",
    "DemoCamera",
    "PooledCamera",
    "fetch_frames",
    "frame_path",
    "in_shared_segment",
    "run_demo",
    "trace_frames",
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


class PooledCamera(Camera):
    """A ``Camera`` that also serves frames of a ``FramePool``: the demo
    camera's interface.

    Its own interface, not an abstract method of ``Camera``, so that a
    camera written against ``Camera`` (``grab``, ``frame_count``,
    ``exposure``) keeps instantiating and serving as it did.
    """

    @abstractmethod
    def grab_pooled(self) -> tuple:
        """Return a 24.9 MB uint8 frame of the camera's ``FramePool`` and
        its metadata dict (sent without a copy)."""


class DemoCamera(PooledCamera, RPCServer):
    """A camera that serves synthetic frames (a gradient that shifts)."""

    def __init__(self, context: zmq.Context, url: str, **kwargs) -> None:
        self._exposure = 1000
        self._count = 0
        self._frames: dict[str, np.ndarray] = {
            kind: np.ascontiguousarray(
                np.broadcast_to(np.arange(shape[1], dtype=dtype)[None, :, None], shape)
            )
            for kind, (shape, dtype) in FRAME_SHAPES.items()
        }
        # what a camera writes into: slots in shared memory on Linux
        self._pool = FramePool(*FRAME_SHAPES["uint8"], depth=4)
        slots = [self._pool.acquire(0) for _ in range(self._pool.depth)]
        for slot in slots:  # (filled once: the demo's frames do not change)
            slot[...] = self._frames["uint8"]
        del slots, slot  # back to the pool
        RPCServer.__init__(self, context, url, **kwargs)

    @RPCServer.register_method_buffer(timeout=5000)
    def grab(self, kind: str = "uint16") -> tuple:
        frame = self._frames[kind]
        self._count += 1
        self.frame_ready.emit(self._count)
        return frame, {"index": self._count, "exposure_us": self._exposure}

    @RPCServer.register_method_buffer(timeout=5000)
    def grab_pooled(self) -> tuple:
        frame = self._pool.acquire(timeout=5)
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


@RPCClient.register_interface(PooledCamera)
class CameraProxy(PooledCamera, RPCClient):
    """Client-side camera: calls travel to a ``DemoCamera`` (or any
    ``Camera`` server: ``grab_pooled`` then returns a ``NoResult``)."""


def fetch_frames(camera: Camera, kind: str, count: int) -> tuple[float, float]:
    """Fetch ``count`` frames of ``kind``, check them; return (frames/s, MB/s)."""
    shape, dtype = FRAME_SHAPES[kind]
    nbytes = 0
    start = time.perf_counter()
    for _ in range(count):
        # a proxy with raise_errors=False answers a remote failure with NoResult
        result: tuple | NoResult = camera.grab(kind)
        if isinstance(result, NoResult):
            raise RuntimeError(f"grab failed: {result.error}")
        frame, _info = result
        if frame.shape != shape or frame.dtype != dtype:
            raise RuntimeError(f"unexpected frame {frame.dtype} {frame.shape}")
        nbytes += frame.nbytes
    elapsed = time.perf_counter() - start
    return count / elapsed, nbytes / elapsed / 1e6


#: The paths ``frame_path`` tells apart.
PATH_SHM_ZERO_COPY = "shared memory, zero copy"
PATH_SHM_COPY = "shared memory, one copy"
PATH_SOCKET = "socket"
_SEGMENTS = "/dev/shm/framerpc-"


def in_shared_segment(array: np.ndarray) -> bool:
    """Whether ``array``'s memory lies in a framerpc shared-memory segment
    that this process maps read-only (how a client maps a server's
    segment), according to ``/proc/self/maps`` (False where there is none)."""
    address = int(array.__array_interface__["data"][0])
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if _SEGMENTS not in line:
                    continue
                span, perms = line.split(None, 2)[:2]
                start, end = (int(part, 16) for part in span.split("-"))
                if start <= address < end and perms[1] == "-":
                    return True
    except OSError:  # not Linux: no segments either
        pass
    return False


def frame_path(shared: bool, before: dict, after: dict) -> str:
    """The path of one fetched frame: ``shared`` (``in_shared_segment``)
    and the server's ``stats`` before and after the call (no other call in
    between). "unexplained" when they disagree."""
    replies = after.get("shm_replies", 0) - before.get("shm_replies", 0)
    copies = after.get("shm_copies", 0) - before.get("shm_copies", 0)
    if not shared and replies == copies == 0:
        return PATH_SOCKET
    if shared and replies == 1 and copies in (0, 1):
        return PATH_SHM_COPY if copies else PATH_SHM_ZERO_COPY
    return "unexplained"


def trace_frames(
    fetch: Callable[[], np.ndarray],
    stats: Callable[[], dict],
    count: int,
) -> tuple[float, float, collections.Counter[str]]:
    """Fetch ``count`` frames one at a time and tell each one's path.

    Parameters
    ----------
    fetch : callable
        Returns one frame (checked by the caller).
    stats : callable
        The server's ``RPCServer.stats``, read before and after each fetch.
    count : int
        Frames to fetch.

    Returns
    -------
    tuple
        Frames/s and MB/s of the fetches alone, and how many frames took
        each path (``frame_path``).
    """
    paths: collections.Counter[str] = collections.Counter()
    nbytes, elapsed = 0, 0.0
    for _ in range(count):
        before = stats()
        start = time.perf_counter()
        frame = fetch()
        elapsed += time.perf_counter() - start
        paths[frame_path(in_shared_segment(frame), before, stats())] += 1
        nbytes += frame.nbytes
        del frame  # its slot goes back with the next call
    return count / elapsed, nbytes / elapsed / 1e6, paths


def _checked(grab: Callable[[], Any], shape: tuple, dtype: type) -> np.ndarray:
    """One frame from ``grab``, checked."""
    result = grab()
    if not result:
        raise RuntimeError(f"grab failed: {getattr(result, 'error', result)}")
    frame = result[0]
    if frame.shape != shape or frame.dtype != dtype:
        raise RuntimeError(f"unexpected frame {frame.dtype} {frame.shape}")
    return frame


def _fetch_report(
    camera: DemoCamera, proxy: PooledCamera, socket: PooledCamera, frames: int
) -> list[str]:
    """A line per kind of fetch: rate and the path each frame took."""
    fetches: list[tuple[str, str, Callable[[], Any]]] = [
        (kind, kind, functools.partial(proxy.grab, kind)) for kind in FRAME_SHAPES
    ]
    fetches.append(("pool", "uint8", proxy.grab_pooled))
    fetches.append(("socket", "uint8", functools.partial(socket.grab, "uint8")))
    lines = [
        f"fetching {frames} frames of each (pool: a FramePool frame; socket: a "
        "client with shm=False); the path each took:"
    ]
    for name, kind, grab in fetches:
        shape, dtype = FRAME_SHAPES[kind]
        checked = functools.partial(_checked, grab, shape, dtype)
        rate, mbps, paths = trace_frames(checked, lambda: camera.stats, frames)
        size = np.prod(shape) * np.dtype(dtype).itemsize / 1e6
        took = ", ".join(f"{n} {path}" for path, n in sorted(paths.items()))
        head = f"{name:>6} {'x'.join(map(str, shape))} ({size:.2f} MB):"
        lines.append(f"{head:<30} {rate:7.1f} frames/s {mbps:6.0f} MB/s  {took}")
    return lines


def run_demo(
    frames: int = 50, out: Callable[[str], None] = print, stream_seconds: float = 2.0
) -> None:
    """Start a registry, a camera and a client on loopback and fetch frames.

    The client fetches each kind of frame, a ``FramePool`` frame ("pool")
    and, with ``SocketOptions(shm=False)``, the 24.9 MB frame ("socket"),
    and tells the path each frame took (``trace_frames``). Then stream
    frames to two subscribers, one slow (see ``demo_streams``).

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
        off = dataclasses.replace(DEFAULT_OPTIONS, shm=False)
        # connect(): a CameraProxy that a type checker sees as the (abstract)
        # interface; raise_errors=False as CameraProxy's default, so that a
        # failed grab is reported, not raised
        with (
            closing(
                connect(PooledCamera, context, address, raise_errors=False)
            ) as proxy,
            closing(
                connect(PooledCamera, context, address, raise_errors=False, options=off)
            ) as socket,
        ):
            seen: list[int] = []
            proxy.frame_ready.connect(seen.append)
            proxy.exposure = 2500
            out(f"exposure set to {proxy.exposure} us")
            for line in _fetch_report(camera, proxy, socket, frames):
                out(line)
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
