"""A 24.9 MB signal to same-host subscribers: shared memory against the
socket (not a test).

    python benchmarks/bench_shm_signals.py [--subscribers 1,3] [--transport ipc]
                                           [--latency 20] [--seconds 2]
                                           [--json out.json]

The server runs in this process; each subscriber is a process of its own
(an ``RPCClient`` whose listener reads the frame's first and last byte
and reports). For each number of subscribers, each path and each source:

* paths: ``shm`` (the subscribers claim their subscription: references
  into shared memory) and ``socket`` (the subscribers with ``shm=False``:
  today's frames);
* sources: ``plain`` (one array refilled in place: copied once per
  emission into the signal arena) and ``pool`` (a ``FramePool`` frame,
  depth 4, acquired per emission: no copy);
* ``latency``: one emission at a time, the median and p90 ms from the
  ``emit`` call to the last subscriber's listener (``time.monotonic`` is
  one clock for all processes of a host);
* ``stream``: emissions back to back for ``--seconds``; emissions/s
  emitted, emissions/s delivered to each subscriber (median over
  subscribers), emissions dropped for them (``dropped_signals_for_some``:
  the per-subscriber byte bound of the socket path) and sent over the
  socket for want of shared memory (``shm_signal_fallbacks``).

``FRAMERPC_PURE=1`` measures the pure engine (the processes inherit it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np
import zmq

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from framerpc import FramePool, RPCClient, RPCServer, RPCSignal
from framerpc.transport import DEFAULT_OPTIONS

SHAPE = (2160, 3840, 3)  # 24.9 MB uint8
POOL_DEPTH = 4


class Api:
    frame_ready = RPCSignal(np.ndarray, float)


class Camera(Api, RPCServer):
    def __init__(self, ctx: zmq.Context, url: str) -> None:
        self.plain = np.zeros(SHAPE, np.uint8)
        self.pool = FramePool(SHAPE, np.uint8, POOL_DEPTH)
        RPCServer.__init__(self, ctx, url)

    def emit(self, source: str, seq: int) -> None:
        if source == "plain":
            frame = self.plain
            frame[0, 0, 0] = frame[-1, -1, -1] = seq & 0xFF
        else:
            frame = self.pool.acquire(timeout=10)
            frame[0, 0, 0] = frame[-1, -1, -1] = seq & 0xFF
        self.frame_ready.emit(frame, time.monotonic())


@RPCClient.register_interface(Api)
class Proxy(Api, RPCClient):
    pass


def _subscriber(url: str, shm: bool, ready: Any, out: Any, stop: Any) -> None:
    ctx = zmq.Context()
    options = dataclasses.replace(DEFAULT_OPTIONS, shm=shm)
    proxy = Proxy(ctx, url, options=options, timeout=20000)
    receiver = proxy._signal_receiver
    bound = receiver is not None and receiver.shm is not None

    def on_frame(frame: np.ndarray, sent: float) -> None:
        int(frame[0, 0, 0]) + int(frame[-1, -1, -1])  # touch both ends
        out.put((os.getpid(), time.monotonic() - sent, time.monotonic()))

    proxy.frame_ready.connect(on_frame)
    ready.put(bound)
    stop.wait()
    proxy.close()
    ctx.term()


def _run(
    camera: Camera, subs: int, shm: bool, source: str, latency: int, seconds: float
) -> dict:
    mpctx = mp.get_context("spawn")
    ready, out, stop = mpctx.Queue(), mpctx.Queue(), mpctx.Event()
    procs = [
        mpctx.Process(
            target=_subscriber, args=(camera.url, shm, ready, out, stop), daemon=True
        )
        for _ in range(subs)
    ]
    for proc in procs:
        proc.start()
    try:
        return _measure(camera, subs, shm, source, latency, seconds, procs, ready, out)
    finally:
        stop.set()
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


def _measure(
    camera: Camera,
    subs: int,
    shm: bool,
    source: str,
    latency: int,
    seconds: float,
    procs: list,
    ready: Any,
    out: Any,
) -> dict:
    bound = [ready.get(timeout=60) for _ in procs]
    time.sleep(0.5)
    lat: list[float] = []
    for seq in range(latency):
        camera.emit(source, seq)
        worst = max(out.get(timeout=30)[1] for _ in procs)
        lat.append(worst * 1000)
    before = camera.stats
    start = time.monotonic()
    emitted = 0
    while time.monotonic() - start < seconds:
        camera.emit(source, emitted)
        emitted += 1
    emit_s = time.monotonic() - start
    times: dict[int, list[float]] = {}
    while True:
        try:
            pid, _, at = out.get(timeout=2.0)
        except Exception:  # queue.Empty: all delivered or dropped
            break
        times.setdefault(pid, []).append(at)
    rates = [len(t) / (max(t) - start) for t in times.values() if t]
    lat.sort()
    return {
        "subscribers": subs,
        "path": "shm" if shm else "socket",
        "source": source,
        "bound": sum(bound),
        "latency_ms_median": statistics.median(lat),
        "latency_ms_p90": lat[int(0.9 * (len(lat) - 1))],
        "emitted_per_s": emitted / emit_s,
        "delivered_per_s": statistics.median(rates) if rates else 0.0,
        "delivered": sum(len(t) for t in times.values()),
        "emitted": emitted * subs,
        "dropped": camera.stats["dropped_signals_for_some"]
        - before["dropped_signals_for_some"],
        "fallbacks": camera.stats.get("shm_signal_fallbacks", 0)
        - before.get("shm_signal_fallbacks", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", default="1,3")
    parser.add_argument("--transport", default="ipc", choices=["ipc", "tcp"])
    parser.add_argument("--latency", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    url = f"ipc://{tmp}/cam" if args.transport == "ipc" else "tcp://127.0.0.1"
    ctx = zmq.Context()
    camera = Camera(ctx, url)
    thread = threading.Thread(target=camera.serve_forever, daemon=True)
    thread.start()
    rows = []
    try:
        for subs in (int(n) for n in args.subscribers.split(",")):
            for source in ("plain", "pool"):
                for shm in (True, False):
                    row = _run(camera, subs, shm, source, args.latency, args.seconds)
                    rows.append(row)
                    print(
                        f"{subs} sub  {row['path']:6s} {source:5s} bound={row['bound']}"
                        f"  latency median {row['latency_ms_median']:7.2f} ms"
                        f"  p90 {row['latency_ms_p90']:7.2f} ms"
                        f"  emitted {row['emitted_per_s']:6.1f}/s"
                        f"  delivered {row['delivered_per_s']:6.1f}/s per sub"
                        f"  dropped {row['dropped']} fallbacks {row['fallbacks']}",
                        flush=True,
                    )
    finally:
        camera.close()
        thread.join(10)
        ctx.term()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
