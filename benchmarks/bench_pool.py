"""Fetch of FramePool frames against plain arrays and raw pyzmq (not a test).

    python benchmarks/bench_pool.py [--transports tcp,ipc] [--rounds 5]
                                    [--calls 30] [--json out.json]

One run, three systems, each server in its own process, one client
process (this one) fetching one frame per call:

* ``raw pyzmq``: a REP socket sending a header and the frame with
  ``send_multipart(copy=False)``; the client (REQ, ``copy=False``) builds
  a numpy array over the received frame, as framerpc's client does;
* ``framerpc plain``: a buffer method returning the same plain array every
  call (what a camera that never refills it may do);
* ``framerpc pool``: a buffer method returning ``pool.acquire()`` (a
  FramePool of depth 4, not refilled: the cost measured is the pool's
  own, acquire and the slot's return, on top of the plain fetch).

Frames: 5.76 MB (1200x800x3 uint16) and 24.9 MB (2160x3840x3 uint8), the
demo's. The systems take turns within each round (round-robin, so that
load changes hit all of them alike); each cell is the median over all
rounds of the milliseconds per fetch. ``FRAMERPC_PURE=1`` measures the
pure-Python engine (the server processes inherit it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_SRC = Path(__file__).resolve().parent.parent / "src"
if importlib.util.find_spec("framerpc") is None and (_SRC / "framerpc").is_dir():
    sys.path.insert(0, str(_SRC))  # a source checkout without install

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from framerpc import FramePool, RPCClient, RPCServer  # noqa: E402

SIZES: dict[str, tuple[tuple[int, ...], Any]] = {
    "5.76 MB": ((1200, 800, 3), np.uint16),
    "24.9 MB": ((2160, 3840, 3), np.uint8),
}
SYSTEMS = ("raw pyzmq", "framerpc plain", "framerpc pool")
POOL_DEPTH = 4


class BenchAPI:
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
    if transport == "tcp":
        sock.bind(url + ":0")
    else:
        sock.bind(url)
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


def _time_raw(sock: zmq.Socket, kind: str, calls: int) -> list[float]:
    shape, dtype = SIZES[kind]
    request = kind.encode()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        sock.send(request)
        _header, frame = sock.recv_multipart(copy=False)
        array = np.frombuffer(frame.buffer, dtype).reshape(shape)
        times.append(time.perf_counter() - start)
        del array, frame
    return times


def _time_framerpc(proxy: Any, method: str, kind: str, calls: int) -> list[float]:
    shape, _ = SIZES[kind]
    call = getattr(proxy, method)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        frame, _info = call(kind)
        times.append(time.perf_counter() - start)
        if frame.shape != shape:
            raise RuntimeError(f"{method}: unexpected shape {frame.shape}")
        del frame
    return times


def run(transport: str, rounds: int, calls: int) -> dict[str, dict[str, float]]:
    """Median ms per fetch, by system and frame size, on ``transport``."""
    spawn = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-pool-") as folder:
        urls = spawn.Queue()
        raw = spawn.Process(target=_raw_server, args=(transport, folder, urls))
        raw.start()
        raw_url = urls.get(timeout=60)
        server = spawn.Process(target=_framerpc_server, args=(transport, folder, urls))
        server.start()
        framerpc_url = urls.get(timeout=60)
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REQ)
        sock.connect(raw_url)
        proxy = BenchProxy(ctx, framerpc_url, timeout=30000)
        samples: dict[tuple[str, str], list[float]] = {}
        try:
            for kind in SIZES:  # warm up: pages, connections, caches
                _time_raw(sock, kind, 3)
                _time_framerpc(proxy, "plain", kind, 3)
                _time_framerpc(proxy, "pooled", kind, 3)
            for _ in range(rounds):
                for kind in SIZES:
                    n = calls if kind == "5.76 MB" else max(3, calls // 3)
                    for system in SYSTEMS:
                        if system == "raw pyzmq":
                            got = _time_raw(sock, kind, n)
                        else:
                            method = "plain" if system.endswith("plain") else "pooled"
                            got = _time_framerpc(proxy, method, kind, n)
                        samples.setdefault((system, kind), []).extend(got)
        finally:
            sock.send(b"stop")
            sock.recv()
            sock.close(linger=0)
            proxy.stop_server()
            proxy.close()
            ctx.term()
            raw.join(30)
            server.join(30)
    return {
        system: {
            kind: 1000 * statistics.median(samples[(system, kind)]) for kind in SIZES
        }
        for system in SYSTEMS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transports", default="tcp,ipc")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=30, help="5.76 MB calls per round")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    import framerpc.transport as transport_module

    engine = transport_module.IO_IMPLEMENTATION
    results: dict[str, Any] = {"engine": engine}
    print(f"framerpc engine: {engine}; median ms per fetch")
    for transport in args.transports.split(","):
        table = run(transport, args.rounds, args.calls)
        results[transport] = table
        print(f"\n{transport} ({'  '.join(SIZES)}; x raw pyzmq):")
        raw = table["raw pyzmq"]
        for system in SYSTEMS:
            cells = "".join(
                f"{table[system][kind]:9.2f} ms {table[system][kind] / raw[kind]:5.2f}x"
                for kind in SIZES
            )
            print(f"  {system:<15}{cells}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
