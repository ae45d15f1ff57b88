"""Server and client peers shared by the pytest-benchmark suite and run.py.

Every system under test (raw pyzmq, framerpc, imageZMQ) has a server that
runs in its own process (``serve``, started with ``start_server``)
and a client with one method, ``call(workload)``, that does one request,
wraps the reply as the application would (a numpy array for a frame, a str
for echo) and checks it. Timing loops (``sample``, ``stream``) and
the client process entry point (``run_client``) are built on that one
method, so the suite and the runner measure exactly the same work.
``ClientProcess`` runs a client in its own process for the runner.

This module imports neither framerpc nor imagezmq at import time: a child
process applies its environment (``FRAMERPC_PURE``) and CPU affinity first,
then imports them.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np
import zmq

__all__ = [
    "ECHO_TEXT",
    "SYSTEMS",
    "TARGETS",
    "WORKLOADS",
    "BenchClient",
    "ClientJob",
    "ClientProcess",
    "ServerHandle",
    "Workload",
    "make_client",
    "make_frame",
    "profiled",
    "run_client",
    "sample",
    "serve",
    "server_url",
    "start_server",
    "stop_server",
    "stream",
    "supports",
    "system_env",
]

#: The string an echo call sends and expects back (10 characters).
ECHO_TEXT = "abcdefghij"

#: Systems under test; "framerpc-pure" is framerpc with ``FRAMERPC_PURE=1``.
SYSTEMS = (
    "raw",
    "framerpc",
    "framerpc-mv",
    "framerpc-pure",
    "framerpc-pure-mv",
    "imagezmq",
)

#: Largest acceptable framerpc/raw ratio of the median latency, per workload
#: (compiled layer, samples pooled over several pairs, not pinned).
TARGETS = {"echo": 1.3, "64KiB": 1.2, "1MiB": 1.10, "5.76MB": 1.05, "24.9MB": 1.05}

#: How long (s) a peer may take to start, and a server to stop.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0
#: How often (ms) a server's receive loop wakes to notice a stop request.
_POLL_MS = 100


@dataclass(frozen=True)
class Workload:
    """One kind of request.

    Attributes
    ----------
    name : str
        Short label, also the request a raw server answers to.
    shape, dtype : tuple of int and str, or None
        The frame fetched; None for the echo call.
    samples, quick : int
        Calls timed per process pair in a full and in a quick run.
    """

    name: str
    shape: tuple[int, ...] | None
    dtype: str | None
    samples: int
    quick: int

    @property
    def is_echo(self) -> bool:
        """Whether this is the echo call (no frame)."""
        return self.shape is None

    @property
    def nbytes(self) -> int:
        """Payload size in bytes (the echo string's length for echo)."""
        if self.shape is None or self.dtype is None:
            return len(ECHO_TEXT)
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


WORKLOADS: tuple[Workload, ...] = (
    Workload("echo", None, None, 2000, 300),
    Workload("64KiB", (65536,), "uint8", 500, 100),
    Workload("1MiB", (1 << 20,), "uint8", 200, 50),
    Workload("5.76MB", (1200, 800, 3), "uint16", 100, 20),
    Workload("24.9MB", (2160, 3840, 3), "uint8", 50, 12),
)
_BY_NAME = {w.name: w for w in WORKLOADS}


def make_frame(workload: Workload) -> np.ndarray:
    """Build the frame a server returns for ``workload`` (not all zeros)."""
    assert workload.shape is not None and workload.dtype is not None
    flat = np.arange(int(np.prod(workload.shape)), dtype=np.uint32) % 251
    return flat.astype(workload.dtype).reshape(workload.shape)


def _check(arr: Any, workload: Workload) -> None:
    if (
        type(arr) is not np.ndarray
        or arr.shape != workload.shape
        or arr.dtype != workload.dtype
    ):
        raise AssertionError(
            f"{workload.name}: got {type(arr).__name__} "
            f"{getattr(arr, 'shape', '?')} {getattr(arr, 'dtype', '?')}"
        )


def _check_echo(reply: Any) -> None:
    if reply != ECHO_TEXT:
        raise AssertionError(f"echo: got {reply!r}")


# -- process set-up -------------------------------------------------------
def _prepare(env: Mapping[str, str | None], cpus: set[int] | None) -> None:
    """Apply ``env`` and CPU affinity before anything imports framerpc."""
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if cpus:
        os.sched_setaffinity(0, cpus)


@contextlib.contextmanager
def _environ(env: Mapping[str, str | None]) -> Iterator[None]:
    """Set ``env`` in this process while a child is spawned (it inherits it)."""
    saved = {key: os.environ.get(key) for key in env}
    _prepare(env, None)
    try:
        yield
    finally:
        _prepare(saved, None)


def _implementation(system: str) -> str:
    if system.startswith("framerpc"):
        from framerpc import framing

        return framing.IMPLEMENTATION
    if system == "imagezmq":
        import imagezmq

        return f"imagezmq {getattr(imagezmq, '__version__', '?')}"
    return f"pyzmq {zmq.__version__}"


def system_env(system: str) -> dict[str, str | None]:
    """Environment a system's processes are started with."""
    return {"FRAMERPC_PURE": "1"} if system.startswith("framerpc-pure") else {}


def server_url(transport: str, workdir: str) -> str:
    """URL to bind: tcp loopback without a port, or an ipc path in ``workdir``."""
    if transport == "tcp":
        return "tcp://127.0.0.1"
    if transport == "ipc":
        return f"ipc://{workdir}/{uuid.uuid4().hex[:12]}.sock"
    raise ValueError(f"unknown transport {transport!r}")


# -- framerpc device ------------------------------------------------------
_FRAMERPC_TYPES: tuple[type, type] | None = None


def _framerpc_types() -> tuple[type, type]:
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

    class BenchServer(BenchDevice, RPCServer):
        def __init__(
            self, context: zmq.Context, url: str, frames: dict[str, np.ndarray]
        ) -> None:
            RPCServer.__init__(self, context, url)
            self._frames = frames

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
            return memoryview(frame), {
                "shape": list(frame.shape),
                "dtype": frame.dtype.str,
            }

    @RPCClient.register_interface(BenchDevice)
    class BenchProxy(BenchDevice, RPCClient):
        pass

    _FRAMERPC_TYPES = (BenchServer, BenchProxy)
    return _FRAMERPC_TYPES


# -- servers --------------------------------------------------------------
@contextlib.contextmanager
def profiled(path: str | None, cpu: bool = False) -> Iterator[None]:
    """Run the block under cProfile and dump the stats to ``path`` (if given).

    With ``cpu`` the timer is this thread's CPU time, so time spent blocked
    in a receive or a poll does not count.
    """
    if path is None:
        yield
        return
    import cProfile

    profiler = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(path)


def _frames() -> dict[str, np.ndarray]:
    return {w.name: make_frame(w) for w in WORKLOADS if not w.is_echo}


def _watch(conn: Connection, on_stop: Callable[[], None]) -> threading.Thread:
    """Call ``on_stop`` when the parent says "stop" or goes away."""

    def run() -> None:
        with contextlib.suppress(EOFError, OSError):
            while conn.recv() != "stop":
                pass
        on_stop()

    thread = threading.Thread(target=run, name="stop-watcher", daemon=True)
    thread.start()
    return thread


def _send_raw(sock: zmq.Socket, request: bytes, frame: np.ndarray) -> None:
    sock.send(frame, copy=False)


def _send_imagezmq(sock: Any, request: bytes, frame: np.ndarray) -> None:
    sock.send_array(frame, request.decode(), copy=False)  # imageZMQ's wire format


def _serve_rep(
    sock: Any, frames: dict[bytes, np.ndarray], stop: Any, send_frame: Any = _send_raw
) -> None:
    """REP loop of the baselines: a frame for its name, else echo."""
    sock.setsockopt(zmq.RCVTIMEO, _POLL_MS)
    while not stop.is_set():
        try:
            request = sock.recv()
        except zmq.Again:
            continue
        frame = frames.get(request)
        if frame is None:
            sock.send(request)
        else:
            send_frame(sock, request, frame)


def serve(
    system: str,
    url: str,
    conn: Connection,
    env: Mapping[str, str | None],
    cpus: set[int] | None = None,
    profile: str | None = None,
    profile_cpu: bool = False,
) -> None:
    """Entry point of a server process.

    Binds at ``url``, sends ``("ready", bound_url, implementation)`` (or
    ``("error", text)``) on ``conn`` and serves until ``conn`` receives
    "stop" or is closed. With ``profile``, the serving loop runs under
    cProfile (timed in CPU time with ``profile_cpu``) and its stats are
    dumped to that path.
    """
    _prepare(env, cpus)
    frames = _frames()
    stop = threading.Event()
    try:
        if system.startswith("framerpc"):
            server_cls, _ = _framerpc_types()
            context = zmq.Context()
            server = server_cls(context, url, frames)
            conn.send(("ready", server.url, _implementation(system)))
            _watch(conn, server.stop_server)
            with profiled(profile, profile_cpu):
                server.serve_forever()
            context.term()
            return
        if system == "imagezmq":
            import imagezmq

            context = imagezmq.SerializingContext()
        elif system == "raw":
            context = zmq.Context()
        else:
            raise ValueError(f"unknown system {system!r}")
        sock = context.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(url + ":*" if url.startswith("tcp://") else url)
        bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        conn.send(("ready", bound, _implementation(system)))
        _watch(conn, stop.set)
        by_name = {name.encode(): frame for name, frame in frames.items()}
        send_frame = _send_imagezmq if system == "imagezmq" else _send_raw
        with profiled(profile, profile_cpu):
            _serve_rep(sock, by_name, stop, send_frame)
        sock.close()
        context.term()
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


@dataclass
class ServerHandle:
    """A running server process: its URL, implementation and control pipe."""

    system: str
    url: str
    implementation: str
    process: Any
    conn: Connection


def _spawn(
    target: Callable[..., None], args: tuple, env: Mapping[str, str | None]
) -> tuple[Any, Connection]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(*args[:2], child, *args[2:]))
    process.daemon = True
    with _environ(env):
        process.start()
    child.close()
    return process, parent


def _expect(conn: Connection, process: Any, what: str, timeout: float) -> tuple:
    if not conn.poll(timeout):
        raise RuntimeError(f"{what}: no answer within {timeout:.0f} s")
    try:
        message = conn.recv()
    except EOFError:
        process.join(1)
        raise RuntimeError(f"{what}: process exited ({process.exitcode})") from None
    if message[0] == "error":
        raise RuntimeError(f"{what}: {message[1]}")
    return message


def start_server(
    system: str,
    transport: str,
    workdir: str,
    cpus: set[int] | None = None,
    profile: str | None = None,
    profile_cpu: bool = False,
) -> ServerHandle:
    """Start a server process for ``system`` and wait until it is bound.

    ``profile`` and ``profile_cpu``: cProfile the server (see ``serve``).

    Raises
    ------
    RuntimeError
        The server failed or did not report within ``START_TIMEOUT_S``.
    """
    env = system_env(system)
    url = server_url(transport, workdir)
    process, conn = _spawn(serve, (system, url, env, cpus, profile, profile_cpu), env)
    try:
        _, bound, impl = _expect(conn, process, f"{system} server", START_TIMEOUT_S)
    except BaseException:
        _kill(process)
        raise
    return ServerHandle(system, bound, impl, process, conn)


def _kill(process: Any) -> None:
    if process.is_alive():
        process.terminate()
        process.join(2)
    if process.is_alive():
        process.kill()
        process.join(2)


def stop_server(handle: ServerHandle, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Ask a server to stop; terminate it after ``timeout`` s.

    Returns
    -------
    bool
        Whether it stopped cleanly (exit code 0 within ``timeout``).
    """
    with contextlib.suppress(OSError):
        handle.conn.send("stop")
    handle.process.join(timeout)
    clean = handle.process.exitcode == 0
    _kill(handle.process)
    handle.conn.close()
    return clean


# -- clients --------------------------------------------------------------
class BenchClient(Protocol):
    """What the timing loops need from a client."""

    system: str

    def call(self, workload: Workload) -> None:
        """Do one request of ``workload``, wrap and check the reply."""

    def close(self) -> None:
        """Close the sockets."""


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
            _check_echo(sock.recv().decode())
            return
        sock.send(self._names[workload.name])
        frame = sock.recv(copy=False)
        arr = np.frombuffer(frame, dtype=workload.dtype).reshape(workload.shape)
        _check(arr, workload)

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
            _check_echo(sock.recv().decode())
            return
        sock.send(workload.name.encode())
        _, arr = sock.recv_array(copy=False)
        _check(arr, workload)

    def close(self) -> None:
        self._context.destroy(linger=0)


class FramerpcClient:
    """framerpc proxy: ``echo(text)`` and ``grab(kind) -> (array, info)``.

    The "-mv" systems call ``grab_view`` instead, the documented idiom: the
    server returns ``memoryview(array)`` with shape and dtype in the info
    dict, and the client rebuilds the array from them, as a user would.
    """

    def __init__(self, url: str, system: str = "framerpc") -> None:
        _, proxy_cls = _framerpc_types()
        self.system = system
        self._view = system.endswith("-mv")
        self._context = zmq.Context()
        self._proxy = proxy_cls(self._context, url, timeout=10000)

    def call(self, workload: Workload) -> None:
        proxy = self._proxy
        if workload.shape is None:
            _check_echo(proxy.echo(ECHO_TEXT))
            return
        if self._view:
            result = proxy.grab_view(workload.name)
        else:
            result = proxy.grab(workload.name)
        if not result:  # a NoResult: the remote side failed
            raise RuntimeError(f"grab({workload.name!r}) failed: {result!r}")
        if self._view:
            buf, info = result
            arr = np.frombuffer(buf, dtype=info["dtype"]).reshape(info["shape"])
            _check(arr, workload)
        else:
            _check(result[0], workload)

    def close(self) -> None:
        self._proxy.close()
        self._context.destroy(linger=0)


def supports(system: str, workload: Workload) -> bool:
    """Whether ``system`` has a meaningful version of ``workload`` (one to
    report: imageZMQ's pairs still run an echo phase, untimed)."""
    return not (system == "imagezmq" and workload.is_echo)


def make_client(system: str, url: str) -> BenchClient:
    """Connect a client of ``system`` to the server at ``url``."""
    if system.startswith("framerpc"):
        return FramerpcClient(url, system)
    if system == "imagezmq":
        return ImageZMQClient(url)
    if system == "raw":
        return RawClient(url)
    raise ValueError(f"unknown system {system!r}")


# -- timing loops ---------------------------------------------------------
def sample(client: BenchClient, workload: Workload, n: int, warmup: int) -> list[int]:
    """Time ``n`` calls of ``workload`` after ``warmup`` untimed ones.

    Returns
    -------
    list of int
        Latency of each call in nanoseconds.
    """
    call, clock = client.call, time.perf_counter_ns
    for _ in range(warmup):
        call(workload)
    samples = [0] * n
    for i in range(n):
        start = clock()
        call(workload)
        samples[i] = clock() - start
    return samples


def stream(client: BenchClient, workload: Workload, seconds: float) -> dict:
    """Call ``workload`` back to back for ``seconds``.

    Returns
    -------
    dict
        ``frames``, ``seconds`` (measured), ``fps`` and ``mb_per_s`` (1e6 B).
    """
    call, clock = client.call, time.perf_counter
    for _ in range(3):
        call(workload)
    frames, start = 0, clock()
    deadline = start + seconds
    while True:
        call(workload)
        frames += 1
        now = clock()
        if now >= deadline:
            break
    elapsed = now - start
    return {
        "frames": frames,
        "seconds": elapsed,
        "fps": frames / elapsed,
        "mb_per_s": frames * workload.nbytes / elapsed / 1e6,
    }


@dataclass(frozen=True)
class ClientJob:
    """What a client process does: timed workloads, then an optional stream.

    Attributes
    ----------
    plan : tuple of (workload name, calls, warm-up calls)
    stream_workload : str or None
        Workload streamed after the plan for ``stream_seconds``.
    """

    plan: tuple[tuple[str, int, int], ...]
    stream_workload: str | None = None
    stream_seconds: float = 0.0


def run_client(
    system: str,
    job: ClientJob,
    conn: Connection,
    env: Mapping[str, str | None],
    cpus: set[int] | None = None,
) -> None:
    """Entry point of a client process.

    Imports its libraries, sends ``("hello", implementation)``, waits for
    the server URL on ``conn``, then reports ``("start", name)`` and
    ``("samples", name, list_ns)`` per workload, ``("stream", name,
    result)`` and finally ``("done",)``; ``("error", text)`` on failure.
    """
    _prepare(env, cpus)
    client = None
    try:
        if system.startswith("framerpc"):
            _framerpc_types()
        conn.send(("hello", _implementation(system)))
        url = conn.recv()
        client = make_client(system, url)
        for name, n, warmup in job.plan:
            conn.send(("start", name))
            conn.send(("samples", name, sample(client, _BY_NAME[name], n, warmup)))
        if job.stream_workload is not None:
            name = job.stream_workload
            conn.send(("start", f"stream {name}"))
            result = stream(client, _BY_NAME[name], job.stream_seconds)
            conn.send(("stream", name, result))
        conn.send(("done",))
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        if client is not None:
            client.close()


class ClientProcess:
    """A client process: spawned at once, measuring once given a server URL.

    Spawning before the server is ready lets both processes import their
    libraries in parallel.
    """

    def __init__(self, system: str, job: ClientJob, cpus: set[int] | None = None):
        env = system_env(system)
        self.system = system
        self.implementation = ""
        self.process, self.conn = _spawn(run_client, (system, job, env, cpus), env)

    def go(self, url: str) -> None:
        """Wait until the client is up, then send it the server URL."""
        what = f"{self.system} client"
        _, self.implementation = _expect(self.conn, self.process, what, START_TIMEOUT_S)
        self.conn.send(url)

    def messages(self, timeout: float) -> Iterator[tuple]:
        """Yield the client's reports until "done".

        Raises
        ------
        RuntimeError
            The client failed or said nothing for ``timeout`` s.
        """
        while True:
            message = _expect(self.conn, self.process, f"{self.system} client", timeout)
            if message[0] == "done":
                return
            yield message

    def close(self) -> None:
        """Close the pipe and join the process (terminate it if it hangs)."""
        self.conn.close()  # a client still waiting for its URL exits on EOF
        self.process.join(STOP_TIMEOUT_S)
        _kill(self.process)
