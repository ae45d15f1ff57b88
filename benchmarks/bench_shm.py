"""Same-host fetches through shared memory against the socket (not a test).

    python benchmarks/bench_shm.py [--transports ipc,tcp] [--pairs 3]
                                   [--rounds 3] [--calls 20] [--json out.json]

For each transport, ``--pairs`` process pairs are started one after the
other (a fresh server process and a fresh client process each: latencies
on a small VM differ per pair) and the samples of all pairs are pooled;
each cell is the median ms per call. Systems, taking turns in each round:

* ``echo``: framerpc's own echo call (a small int there and back), the
  target's yardstick;
* ``raw pyzmq``: REQ/REP, the frame sent with ``copy=False`` and received
  with ``copy=False`` into a numpy array (no copy in the client);
* ``pool shm``: a buffer method returning a ``FramePool`` frame (acquired
  per call, depth 4) to a same-host client: a reference, zero copies; the
  client drops it before its next call, whose request carries the release;
* ``plain shm``: a plain array, copied once into the server's segment;
* ``pool socket`` / ``plain socket``: the same with ``shm=False`` on the
  client (today's path).

Frames: 5.76 MB (1200x800x3 uint16) and 24.9 MB (2160x3840x3 uint8).
``--sweep`` instead measures plain arrays of 16 KiB to 1 MiB over ipc://
through shared memory (a server with ``shm_threshold=0``) and through the
socket, to place ``SocketOptions.shm_threshold``.
``FRAMERPC_PURE=1`` measures the pure engine (the processes inherit it).
Targets (issue 14): pool frame <= 2x echo and < 0.5 ms; plain array
<= 0.6x raw pyzmq over ipc://. The servers are ``_frame_servers``'
(shared with ``bench_pool.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import zmq
from _frame_servers import SIZES, BenchProxy, servers

from framerpc import RPCClient, RPCServer
from framerpc.transport import DEFAULT_OPTIONS

SYSTEMS = ("echo", "raw pyzmq", "pool shm", "plain shm", "pool socket", "plain socket")


def _time(call: Any, calls: int, check: Any = None) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
        if check is not None:
            check(result)
        del result
    return times


def _client(raw_url: str, url: str, rounds: int, calls: int, out: Any) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.connect(raw_url)
    shm = BenchProxy(ctx, url, timeout=30000)
    off = dataclasses.replace(DEFAULT_OPTIONS, shm=False)
    plain = BenchProxy(ctx, url, timeout=30000, options=off)
    samples: dict[str, list[float]] = {}

    def raw(kind: str) -> Any:
        shape, dtype = SIZES[kind]
        sock.send(kind.encode())
        _header, frame = sock.recv_multipart(copy=False)
        return np.frombuffer(frame.buffer, dtype).reshape(shape)

    def fetch(proxy: Any, method: str, kind: str, shared: bool) -> Any:
        frame, _ = getattr(proxy, method)(kind)
        if frame.shape != SIZES[kind][0]:
            raise RuntimeError(f"{method}: unexpected frame {frame.shape}")
        in_segment = type(frame.base).__name__ == "_Lease" and not frame.flags.writeable
        if shared != in_segment:
            raise RuntimeError(f"{method}: shared memory is {not shared}")
        return frame

    cases = {
        "raw pyzmq": lambda kind: raw(kind),
        "pool shm": lambda kind: fetch(shm, "pooled", kind, True),
        "plain shm": lambda kind: fetch(shm, "plain", kind, True),
        "pool socket": lambda kind: fetch(plain, "pooled", kind, False),
        "plain socket": lambda kind: fetch(plain, "plain", kind, False),
    }
    try:
        assert shm._shm is not None, "no shared memory with the server"
        for kind in SIZES:  # warm up: pages, connections, caches
            for case in cases.values():
                _time(lambda case=case, kind=kind: case(kind), 3)
        _time(lambda: shm.echo(1), 50)
        for _ in range(rounds):
            samples.setdefault("echo", []).extend(_time(lambda: shm.echo(1), calls * 3))
            for kind in SIZES:
                n = calls if kind == "5.76 MB" else max(3, calls // 2)
                for name, case in cases.items():
                    got = _time(lambda case=case, kind=kind: case(kind), n)
                    samples.setdefault(f"{name}|{kind}", []).extend(got)
    finally:
        sock.send(b"stop")
        sock.recv()
        sock.close(linger=0)
        plain.close()
        shm.stop_server()
        shm.close()
        ctx.term()
    out.put(samples)


def run_pair(transport: str, rounds: int, calls: int) -> dict[str, list[float]]:
    """Samples (s) of one process pair on ``transport``."""
    spawn = mp.get_context("spawn")
    with servers(transport, "bench-shm-") as (raw_url, url):
        out = spawn.Queue()
        client = spawn.Process(target=_client, args=(raw_url, url, rounds, calls, out))
        client.start()
        samples = out.get(timeout=600)
        client.join(30)
    return samples


SWEEP = [16 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20]


def _sweep_server(url: str, urls: Any) -> None:
    class Sized(RPCServer):
        def __init__(self, ctx: zmq.Context, url: str, **kw: Any) -> None:
            self.arrays = {n: np.ones(n, np.uint8) for n in SWEEP}
            RPCServer.__init__(self, ctx, url, **kw)

        @RPCServer.register_method_buffer
        def sized(self, n: int) -> tuple:
            return self.arrays[n], {}

    ctx = zmq.Context()
    options = dataclasses.replace(DEFAULT_OPTIONS, shm_threshold=0)
    server = Sized(ctx, url, options=options)
    urls.put(server.url)
    server.serve_forever()
    ctx.term()


def sweep(calls: int) -> None:
    """Print the median us per fetch of plain arrays, shm against socket."""
    spawn = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-shm-") as folder:
        urls = spawn.Queue()
        server = spawn.Process(target=_sweep_server, args=(f"ipc://{folder}/s", urls))
        server.start()
        url = urls.get(timeout=60)
        ctx = zmq.Context()
        off = dataclasses.replace(DEFAULT_OPTIONS, shm=False)
        shm, plain = RPCClient(ctx, url), RPCClient(ctx, url, options=off)
        try:
            for n in SWEEP:
                cells = []
                for client in (shm, plain):
                    fetch = lambda c=client, n=n: c.execute("sized", {"args": [n]})  # noqa: E731
                    _time(fetch, 50)
                    cells.append(1e6 * statistics.median(_time(fetch, calls)))
                shm_us, socket_us = cells
                print(
                    f"{n >> 10:6d} KiB  shm {shm_us:8.1f} us  socket {socket_us:8.1f}"
                )
        finally:
            shm.stop_server()
            shm.close()
            plain.close()
            ctx.term()
            server.join(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transports", default="ipc,tcp")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20, help="5.76 MB calls per round")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--sweep", action="store_true", help="place the threshold")
    args = parser.parse_args()
    import framerpc.transport as transport_module

    if args.sweep:
        sweep(max(100, args.calls * 20))
        return

    engine = transport_module.IO_IMPLEMENTATION
    results: dict[str, Any] = {"engine": engine}
    print(f"framerpc engine: {engine}; median ms per call, {args.pairs} process pairs")
    for transport in args.transports.split(","):
        pooled: dict[str, list[float]] = {}
        for _ in range(args.pairs):
            for key, values in run_pair(transport, args.rounds, args.calls).items():
                pooled.setdefault(key, []).extend(values)
        table = {key: 1000 * statistics.median(v) for key, v in pooled.items()}
        results[transport] = table
        echo = table["echo"]
        print(f"\n{transport}: echo {echo:.3f} ms")
        print(f"  {'':<14}" + "".join(f"{kind:>26}" for kind in SIZES))
        for system in SYSTEMS[1:]:
            cells = ""
            for kind in SIZES:
                ms, raw = table[f"{system}|{kind}"], table[f"raw pyzmq|{kind}"]
                cells += f"{ms:9.3f} ms {ms / raw:5.2f}xraw {ms / echo:5.1f}xecho"
            print(f"  {system:<14}{cells}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
