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
pure-Python engine (the server processes inherit it). The servers are
``_frame_servers``' (shared with ``bench_shm.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np
import zmq
from _frame_servers import SIZES, BenchProxy, servers

SYSTEMS = ("raw pyzmq", "framerpc plain", "framerpc pool")


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
    with servers(transport, "bench-pool-") as (raw_url, framerpc_url):
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
