"""Servers of the frame benchmarks ``bench_pool.py`` and ``bench_shm.py``.

Both fetch the demo's frames (5.76 MB 1200x800x3 uint16, 24.9 MB
2160x3840x3 uint8) from a raw pyzmq REP server and a framerpc server,
each in a process of its own (``spawn``), started by ``servers``:

* the raw server answers a frame's name with ``send_multipart([header,
  frame], copy=False)`` and ``b"stop"`` with an empty frame, then ends;
* the framerpc server has ``echo``, ``plain`` (the same plain array every
  call) and ``pooled`` (``pool.acquire()``, a ``FramePool`` of depth
  ``POOL_DEPTH``, every page touched once, never refilled); it ends on a
  ``STOP_SERVER`` request (``proxy.stop_server()``).

A bench script finds this module next to itself (its folder is
``sys.path[0]``; the spawned processes get the same ``sys.path``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing as mp
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SRC = Path(__file__).resolve().parent.parent / "src"
if importlib.util.find_spec("framerpc") is None and (_SRC / "framerpc").is_dir():
    sys.path.insert(0, str(_SRC))  # a source checkout without install

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from framerpc import FramePool, RPCClient, RPCServer  # noqa: E402

__all__ = ["POOL_DEPTH", "SIZES", "BenchAPI", "BenchProxy", "servers"]

SIZES: dict[str, tuple[tuple[int, ...], Any]] = {
    "5.76 MB": ((1200, 800, 3), np.uint16),
    "24.9 MB": ((2160, 3840, 3), np.uint8),
}
POOL_DEPTH = 4


class BenchAPI:
    def echo(self, value: int) -> int:
        raise NotImplementedError

    def plain(self, kind: str) -> tuple:
        raise NotImplementedError

    def pooled(self, kind: str) -> tuple:
        raise NotImplementedError


@RPCClient.register_interface(BenchAPI)
class BenchProxy(BenchAPI, RPCClient):
    pass


def _bind_url(transport: str, folder: str, name: str) -> str:
    if transport == "tcp":
        return "tcp://127.0.0.1"
    return f"ipc://{folder}/{name}.sock"


def _raw_server(transport: str, folder: str, urls: Any) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    url = _bind_url(transport, folder, "raw")
    sock.bind(url + ":0" if transport == "tcp" else url)
    frames = {kind: np.ones(shape, dtype) for kind, (shape, dtype) in SIZES.items()}
    urls.put(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    while True:
        request = sock.recv()
        if request == b"stop":
            sock.send(b"")
            break
        sock.send_multipart([b"header", frames[request.decode()]], copy=False)
    sock.close()
    ctx.term()


def _framerpc_server(transport: str, folder: str, urls: Any) -> None:
    class BenchCamera(BenchAPI, RPCServer):
        def __init__(self, ctx: zmq.Context, url: str) -> None:
            self._plain = {k: np.ones(s, d) for k, (s, d) in SIZES.items()}
            self._pools = {
                k: FramePool(s, d, POOL_DEPTH) for k, (s, d) in SIZES.items()
            }
            for pool in self._pools.values():  # touch every page once
                frames = [pool.acquire(0) for _ in range(pool.depth)]
                for frame in frames:
                    frame[...] = 1
                del frames
            RPCServer.__init__(self, ctx, url)

        @RPCServer.register_method_json
        def echo(self, value: int) -> int:
            return value

        @RPCServer.register_method_buffer(timeout=30000)
        def plain(self, kind: str) -> tuple:
            return self._plain[kind], {}

        @RPCServer.register_method_buffer(timeout=30000)
        def pooled(self, kind: str) -> tuple:
            return self._pools[kind].acquire(timeout=5), {}

    ctx = zmq.Context()
    camera = BenchCamera(ctx, _bind_url(transport, folder, "framerpc"))
    urls.put(camera.url)
    camera.serve_forever()  # until a STOP_SERVER request
    ctx.term()


@contextlib.contextmanager
def servers(transport: str, prefix: str = "bench-") -> Iterator[tuple[str, str]]:
    """Start the raw and the framerpc server on ``transport`` ("tcp" or
    "ipc"); yields their URLs. The caller stops both (see the module)
    before leaving the block, which then waits for their processes."""
    spawn = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        urls = spawn.Queue()
        raw = spawn.Process(target=_raw_server, args=(transport, folder, urls))
        raw.start()
        processes = [raw]
        try:
            raw_url = urls.get(timeout=60)
            server = spawn.Process(
                target=_framerpc_server, args=(transport, folder, urls)
            )
            server.start()
            processes.append(server)
            yield raw_url, urls.get(timeout=60)
        finally:
            for process in processes:
                process.join(30)
                if process.is_alive():  # not stopped: the caller failed
                    process.terminate()
                    process.join(10)
