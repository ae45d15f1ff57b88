"""The systems under test: raw pyzmq, framerpc (array and memoryview
idioms, compiled and pure), imageZMQ and iceoryx2 (``iceoryx``), each a
server and a client.

Every client has one method, ``call(workload)``, that does one request,
wraps the reply as the application would (a numpy array for a frame, a str
for echo) and checks it; the timing loops (``timing``) and the processes
(``processes``) are built on it, so the pytest suite and the runner
measure exactly the same work.

A system named ``<name>@baseline`` is ``<name>`` run against another
checkout of framerpc (the runner's ``--baseline``); the code here is the
same for both. This module imports neither framerpc, imagezmq nor
iceoryx2 at import time: a child process sets its library path, environment
(``FRAMERPC_PURE``) and CPU affinity first.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq

from . import iceoryx
from .timing import BenchClient
from .workloads import ECHO_TEXT, WORKLOADS, Workload, check, check_echo

__all__ = [
    "BASELINE",
    "SYSTEMS",
    "FramerpcClient",
    "ImageZMQClient",
    "RawClient",
    "Server",
    "base_system",
    "implementation",
    "label",
    "make_client",
    "make_server",
    "server_url",
    "supports",
    "system_env",
    "transports",
]

#: Systems under test. "-pure": framerpc with ``FRAMERPC_PURE=1``; "-mv":
#: the documented buffer-method idiom, ``memoryview(frame)`` with shape and
#: dtype in the info dict, where "framerpc" returns the array itself;
#: "-pool": a ``FramePool`` frame (issue 14), filled once, never refilled;
#: "-socket": with ``SocketOptions(shm=False)`` on the client (no shared memory).
SYSTEMS = (
    "raw",
    "framerpc",
    "framerpc-socket",
    "framerpc-mv",
    "framerpc-pure",
    "framerpc-pure-mv",
    "framerpc-pool",
    "imagezmq",
    "iceoryx2",
)
#: Suffix of a framerpc system run against the ``--baseline`` checkout.
BASELINE = "@baseline"
_LABELS = {
    "raw": "raw pyzmq",
    "framerpc": "framerpc",
    "framerpc-socket": "framerpc socket",
    "framerpc-mv": "framerpc mview",
    "framerpc-pure": "framerpc PURE",
    "framerpc-pure-mv": "fr. PURE mview",
    "framerpc-pool": "framerpc pool",
    "imagezmq": "imageZMQ",
    "iceoryx2": "iceoryx2 req-resp",
}
#: Transports of the systems that do not run over ZeroMQ: iceoryx2 moves
#: its data through shared memory ("shm") and ignores ``--transports``.
_OWN_TRANSPORTS = {"iceoryx2": ("shm",)}
#: How often (ms) a baseline server's receive loop wakes to notice a stop.
_POLL_MS = 100


def base_system(system: str) -> str:
    """``system`` without its ``@baseline`` suffix."""
    return system.removesuffix(BASELINE)


def label(system: str) -> str:
    """The name a table shows for ``system``."""
    base = base_system(system)
    return _LABELS[base] + ("@base" if base != system else "")


def system_env(system: str) -> dict[str, str | None]:
    """Environment a system's processes are started with."""
    pure = base_system(system).startswith("framerpc-pure")
    return {"FRAMERPC_PURE": "1"} if pure else {}


def transports(system: str, chosen: Sequence[str]) -> tuple[str, ...]:
    """The transports ``system`` runs on when ``chosen`` are asked for: a
    ZeroMQ system's are ``chosen``, iceoryx2's its own ("shm")."""
    return _OWN_TRANSPORTS.get(base_system(system), tuple(chosen))


def supports(system: str, workload: Workload) -> bool:
    """Whether ``system`` has a meaningful version of ``workload`` (one to
    report: imageZMQ's pairs still run an echo phase, untimed)."""
    return not (system == "imagezmq" and workload.is_echo)


def implementation(system: str) -> str:
    """What runs ``system`` in this process: framerpc's framing engine
    ("compiled" or "pure"), else the library and its version."""
    if system.startswith("framerpc"):
        try:
            from framerpc import framing
        except ImportError:  # the package layout of issue 13
            from framerpc.wire import framing  # type: ignore[no-redef]
        return str(framing.IMPLEMENTATION)
    if system == "imagezmq":
        import imagezmq

        return f"imagezmq {getattr(imagezmq, '__version__', '?')}"
    if system == "iceoryx2":
        return f"iceoryx2 {iceoryx.version()}"
    return f"pyzmq {zmq.__version__}"


def server_url(transport: str, workdir: str) -> str:
    """URL to bind: tcp loopback without a port, an ipc path in ``workdir``,
    or a fresh iceoryx2 service name ("shm")."""
    if transport == "shm":
        return iceoryx.new_url()
    if transport == "tcp":
        return "tcp://127.0.0.1"
    if transport == "ipc":
        return f"ipc://{workdir}/{uuid.uuid4().hex[:12]}.sock"
    raise ValueError(f"unknown transport {transport!r}")


# -- framerpc device ------------------------------------------------------
_FRAMERPC_TYPES: tuple[type, type] | None = None


def framerpc_types() -> tuple[type, type]:
    """The benchmark device's server and proxy classes (imports framerpc)."""
    global _FRAMERPC_TYPES
    if _FRAMERPC_TYPES is not None:
        return _FRAMERPC_TYPES
    from abc import ABC, abstractmethod

    from framerpc.client import RPCClient
    from framerpc.server import RPCServer

    class BenchDevice(ABC):
        @abstractmethod
        def echo(self, text: str) -> str:
            """Return ``text``."""

        @abstractmethod
        def grab(self, kind: str) -> tuple:
            """Return the pre-built frame ``kind`` and its info dict."""

        @abstractmethod
        def grab_view(self, kind: str) -> tuple:
            """The documented idiom: ``memoryview(frame)``, shape and dtype."""

        @abstractmethod
        def grab_pooled(self, kind: str) -> tuple:
            """A ``FramePool`` slot holding frame ``kind``, and its info dict."""

    class BenchServer(BenchDevice, RPCServer):
        def __init__(
            self,
            context: zmq.Context,
            url: str,
            frames: dict[str, np.ndarray],
            pooled: bool = False,
        ) -> None:
            RPCServer.__init__(self, context, url)
            self._frames = frames
            self._pools = _pools(frames) if pooled else {}

        @RPCServer.register_method_json
        def echo(self, text: str) -> str:
            return text

        @RPCServer.register_method_buffer
        def grab(self, kind: str) -> tuple:
            frame = self._frames[kind]
            return frame, {"shape": list(frame.shape), "dtype": frame.dtype.str}

        @RPCServer.register_method_buffer
        def grab_view(self, kind: str) -> tuple:
            frame = self._frames[kind]
            # dtype.str as grab's: str(dtype) and dtype.name are Python code
            # in numpy (4.5 us per call against 0.3 us, numpy 2.4)
            return frame.data, {  # memoryview(frame), typed before Python 3.12
                "shape": list(frame.shape),
                "dtype": frame.dtype.str,
            }

        @RPCServer.register_method_buffer
        def grab_pooled(self, kind: str) -> tuple:
            frame = self._pools[kind].acquire(timeout=5)
            return frame, {"shape": list(frame.shape), "dtype": frame.dtype.str}

    @RPCClient.register_interface(BenchDevice)
    class BenchProxy(BenchDevice, RPCClient):
        pass

    _FRAMERPC_TYPES = (BenchServer, BenchProxy)
    return _FRAMERPC_TYPES


#: Slots per pool of the "-pool" system.
POOL_DEPTH = 4


def _pools(frames: dict[str, np.ndarray]) -> dict[str, Any]:
    """A ``FramePool`` per frame, every slot holding that frame (imported
    here: a ``--baseline`` checkout may predate it)."""
    from framerpc import FramePool

    pools = {}
    for name, frame in frames.items():
        pool = pools[name] = FramePool(frame.shape, frame.dtype, POOL_DEPTH)
        slots = [pool.acquire(0) for _ in range(POOL_DEPTH)]
        for slot in slots:
            slot[...] = frame
        del slots, slot  # back to the pool
    return pools


# -- servers --------------------------------------------------------------
class Server:
    """A bound server of one system: ``url``, ``serve()`` until ``stop()``
    (from another thread), then ``close()``."""

    def __init__(self, system: str, url: str, frames: dict[str, np.ndarray]) -> None:
        self._stop = threading.Event()
        self._framerpc: Any = None
        self._send = _send_imagezmq if system == "imagezmq" else _send_raw
        if system.startswith("framerpc"):
            server_cls, _ = framerpc_types()
            self._context = zmq.Context()
            pooled = system.endswith("-pool")
            self._framerpc = server_cls(self._context, url, frames, pooled)
            self.url: str = self._framerpc.url
            return
        if system == "imagezmq":
            import imagezmq

            self._context = imagezmq.SerializingContext()
        elif system == "raw":
            self._context = zmq.Context()
        else:
            raise ValueError(f"unknown system {system!r}")
        self._sock = self._context.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(url + ":*" if url.startswith("tcp://") else url)
        self.url = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._frames = {name.encode(): frame for name, frame in frames.items()}

    def serve(self) -> None:
        """Answer requests until ``stop``."""
        if self._framerpc is not None:
            self._framerpc.serve_forever()
            return
        sock, frames, send = self._sock, self._frames, self._send
        sock.setsockopt(zmq.RCVTIMEO, _POLL_MS)
        while not self._stop.is_set():  # REP: a frame for its name, else echo
            try:
                request = sock.recv()
            except zmq.Again:
                continue
            frame = frames.get(request)
            if frame is None:
                sock.send(request)
            else:
                send(sock, request, frame)

    def stop(self) -> None:
        """Make ``serve`` return (any thread)."""
        if self._framerpc is not None:
            self._framerpc.stop_server()
        self._stop.set()

    def counters(self) -> dict[str, int]:
        """The framerpc server's ``stats`` (any thread), else empty."""
        stats = getattr(self._framerpc, "stats", None)
        return dict(stats) if isinstance(stats, dict) else {}

    def close(self) -> None:
        """Close the sockets and the context (after ``serve`` returned)."""
        if self._framerpc is None:
            self._sock.close()
        self._context.term()


def make_server(system: str, url: str) -> Server | iceoryx.IceoryxServer:
    """Bind a server of ``system`` at ``url`` (a tcp URL without port: any)."""
    from .workloads import frames

    if base_system(system) == "iceoryx2":
        return iceoryx.IceoryxServer(url, frames())
    return Server(base_system(system), url, frames())


def _send_raw(sock: zmq.Socket, request: bytes, frame: np.ndarray) -> None:
    sock.send(frame.data, copy=False)  # memoryview(frame): see grab_view


def _send_imagezmq(sock: Any, request: bytes, frame: np.ndarray) -> None:
    sock.send_array(frame, request.decode(), copy=False)  # imageZMQ's wire format


# -- clients --------------------------------------------------------------
class RawClient:
    """Raw pyzmq REQ client: ``recv(copy=False)`` + ``np.frombuffer`` + reshape.

    Echo uses a copying receive: for 10 bytes it is the faster path, so
    the baseline is the stricter one.
    """

    system = "raw"

    def __init__(self, url: str) -> None:
        self._context = zmq.Context()
        self._sock = self._context.socket(zmq.REQ)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(url)
        self._names = {w.name: w.name.encode() for w in WORKLOADS}

    def call(self, workload: Workload) -> None:
        sock = self._sock
        if workload.shape is None:
            sock.send(ECHO_TEXT.encode())
            check_echo(sock.recv().decode())
            return
        sock.send(self._names[workload.name])
        frame = sock.recv(copy=False)
        arr = np.frombuffer(frame.buffer, dtype=workload.dtype).reshape(workload.shape)
        check(arr, workload)

    def close(self) -> None:
        self._context.destroy(linger=0)


class ImageZMQClient:
    """REQ client reading imageZMQ's ``send_array`` format (``recv_array``)."""

    system = "imagezmq"

    def __init__(self, url: str) -> None:
        import imagezmq

        self._context = imagezmq.SerializingContext()
        self._sock = self._context.socket(zmq.REQ)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(url)

    def call(self, workload: Workload) -> None:
        sock = self._sock
        if workload.shape is None:
            # imageZMQ moves arrays only: no echo of its own. This plain round
            # trip on its socket only stands in for the echo phase, so that
            # its pairs reach the frames after the same history as the
            # others' (see run.py); it is never reported.
            sock.send(ECHO_TEXT.encode())
            check_echo(sock.recv().decode())
            return
        sock.send(workload.name.encode())
        _, arr = sock.recv_array(copy=False)
        check(arr, workload)

    def close(self) -> None:
        self._context.destroy(linger=0)


class FramerpcClient:
    """framerpc proxy: ``echo(text)`` and ``grab(kind) -> (array, info)``.

    The "-mv" systems call ``grab_view`` instead, the documented idiom: the
    server returns ``memoryview(array)`` with shape and dtype in the info
    dict, and the client rebuilds the array from them, as a user would.
    The "-pool" systems call ``grab_pooled``, a ``FramePool`` slot; the
    "-socket" ones turn shared memory off (``SocketOptions(shm=False)``).
    """

    def __init__(self, url: str, system: str = "framerpc") -> None:
        _, proxy_cls = framerpc_types()
        self.system = system
        self._view = base_system(system).endswith("-mv")
        self._pooled = base_system(system).endswith("-pool")
        self._context = zmq.Context()
        off = _socket_only() if base_system(system).endswith("-socket") else None
        extra = {} if off is None else {"options": off}  # a baseline: no shm
        self._proxy = proxy_cls(self._context, url, timeout=10000, **extra)

    def call(self, workload: Workload) -> None:
        proxy = self._proxy
        if workload.shape is None:
            check_echo(proxy.echo(ECHO_TEXT))
            return
        if self._view:
            result = proxy.grab_view(workload.name)
        elif self._pooled:
            result = proxy.grab_pooled(workload.name)
        else:
            result = proxy.grab(workload.name)
        if not result:  # a NoResult: the remote side failed
            raise RuntimeError(f"grab({workload.name!r}) failed: {result!r}")
        if self._view:
            buf, info = result
            arr = np.frombuffer(buf, dtype=info["dtype"]).reshape(info["shape"])
            check(arr, workload)
        else:
            check(result[0], workload)

    def close(self) -> None:
        self._proxy.close()
        self._context.destroy(linger=0)


def _socket_only() -> Any:
    """Default ``SocketOptions`` with shared memory off (None: it has none)."""
    from framerpc.transport import DEFAULT_OPTIONS

    shm = hasattr(DEFAULT_OPTIONS, "shm")
    return dataclasses.replace(DEFAULT_OPTIONS, shm=False) if shm else None


def make_client(system: str, url: str) -> BenchClient:
    """Connect a client of ``system`` to the server at ``url``."""
    base = base_system(system)
    if base.startswith("framerpc"):
        return FramerpcClient(url, system)
    if base == "imagezmq":
        return ImageZMQClient(url)
    if base == "raw":
        return RawClient(url)
    if base == "iceoryx2":
        return iceoryx.IceoryxClient(url)
    raise ValueError(f"unknown system {system!r}")
