"""Server memory and emission cost with slow signal subscribers.

Run: ``python benchmarks/bench_slow_subscribers.py [--cases burst,cost]``
(``FRAMERPC_PURE=1`` for the pure engine). Not a test: it prints a table.

``burst``: a server in a child process emits N signals of S bytes as fast
as it can, on tcp, to two subscribers in this process: one that never
reads (receive queue of 1 message, 4 KiB kernel buffer) and one that
reads everything in a thread. Reported: the server's RSS growth (peak,
``VmHWM``, and after the burst), what the reader received, and the
server's ``dropped_signals`` (for all / for some, and per subscriber).
Since the signal socket bounds each subscriber in bytes
(``framerpc.server.fanout``), the stalled subscriber holds at most
``signal_buffer_bytes`` (64 MiB) and at most ``signal_hwm`` (500)
emissions, and its drops are its own. Measured on the loaded 2-core
machine of issue 11, compiled engine (before: one PUB socket and one
byte budget shared by all subscribers, same load):

============== ================= ============= ====================
burst          peak RSS growth   reader got    dropped (stalled /
                                               reader; for all)
============== ================= ============= ====================
10,000 x 100KB 81-92 MB          5,499-10,000  9,502 / 0-4,502; 0
  before       61 MB             9,560         9,061 for some; 440
3,000 x 200KB  86-118 MB         2,632-3,001   2,664 / 0-370; 0
  before       61 MB             328           2,672 for all
20 x 24.9 MB   119-166 MB        13-15         18 / 6-7; 0
  before       71 MB             2             18 for all
============== ================= ============= ====================

What the reader misses now is its own: in a burst as fast as the server
can emit, its queue (500 emissions) fills when this process cannot read
as fast as the server sends (10,000 x 100 KB), or it holds two frames of
24.9 MB not yet read when a third comes (64 MiB bound). RSS growth
includes the interpreter's buffers and the kernel's; the stalled
subscriber's share is ``bytes in flight after``.

``cost``: time per ``emit`` (wall clock of the emit loop, and the
server's CPU time per emit) with 1 and 50 reading subscribers, for 100 B
and 100 KB payloads. Server CPU per emit, before (one PUB send) and now
(one send per subscriber, large frames shared by reference), same
machine and load; the CPU includes libzmq's I/O thread, which now sends
more (the slowest reader got more):

============== ============ =============
case           before (us)  now (us)
============== ============ =============
1 sub, 100 B   20-22        16-28
1 sub, 100 KB  61-69        63-70
50 subs, 100 B 20-27        160-186
50 subs, 100KB 128-154      631-912
============== ============ =============

Without I/O (inproc subscribers that do not read, in one process):
1 subscriber 100 B 8 -> 10 us, 100 KB 66 -> 23-56 us; 50 subscribers
100 B 18 -> 92-117 us, 100 KB 46 -> 143-227 us: about 2 us per
subscriber and emission.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import zmq

SENTINEL = b"end-of-burst"

_CHILD = r"""
import json, os, sys, time
import zmq
from framerpc.server import RPCServer
from framerpc.signal import RPCSignal

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    return 0

class Publisher(RPCServer):
    data = RPCSignal(bytes)

ctx = zmq.Context()
server = Publisher(ctx, "tcp://127.0.0.1")
server.start()
print(json.dumps({"url": server._inventory()["signal_url"]}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "sync":
        server.data.emit(b"sync")
        print(json.dumps({}), flush=True)
        continue
    if cmd["op"] == "quit":
        break
    payload = os.urandom(16) * (cmd["size"] // 16)
    stats0 = server.stats
    rss0, hwm0 = status("VmRSS"), status("VmHWM")
    cpu0, t0 = time.process_time(), time.perf_counter()
    fresh = cmd.get("fresh", False)  # a new buffer per emission, as a camera's
    for _ in range(cmd["count"]):
        server.data.emit(bytearray(payload) if fresh else payload)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    server.data.emit(b"end-of-burst")
    time.sleep(cmd.get("settle", 0.5))
    stats = server.stats
    print(json.dumps({
        "wall_us": wall / cmd["count"] * 1e6,
        "cpu_us": cpu / cmd["count"] * 1e6,
        "rss0": rss0, "rss": status("VmRSS"), "peak_growth": status("VmHWM") - hwm0,
        "dropped": stats["dropped_signals"] - stats0["dropped_signals"],
        # older builds have no split: then every drop was for everyone
        "for_all": stats.get("dropped_signals_for_all", stats["dropped_signals"])
        - stats0.get("dropped_signals_for_all", stats0["dropped_signals"]),
        "in_flight": stats["signal_bytes_in_flight"],
        # per subscriber, most first (older builds: one shared budget)
        "per_sub": sorted(
            (r.dropped for r in getattr(server, "_signal_fanout", ())),
            reverse=True,
        ),
    }), flush=True)
server.close()
ctx.term()
"""


class Child:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self.ask(None)["url"]

    def ask(self, command: dict | None) -> dict:
        assert self.proc.stdin and self.proc.stdout
        if command is not None:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.ask_nowait({"op": "quit"})
        self.proc.wait(30)

    def ask_nowait(self, command: dict) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()


class Readers:
    """SUB sockets read by one thread, counting emissions until SENTINEL."""

    def __init__(self, ctx: zmq.Context, url: str, count: int) -> None:
        self.socks = []
        for _ in range(count):
            sock = ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.connect(url)
            self.socks.append(sock)
        self.counts = [0] * count
        self.ended = [False] * count
        self.stop = threading.Event()

    def run(self) -> None:
        poller = zmq.Poller()
        for sock in self.socks:
            poller.register(sock, zmq.POLLIN)
        index = {sock: i for i, sock in enumerate(self.socks)}
        while not all(self.ended) and not self.stop.is_set():
            for sock, _ in poller.poll(100):
                i = index[sock]
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    last = frames[-1]
                    if len(last) < 64 and SENTINEL in last.bytes:
                        self.ended[i] = True
                    elif len(last) >= 64:
                        self.counts[i] += 1


def _finish(readers: Readers, thread: threading.Thread) -> None:
    # a reader whose queue was full may have missed the sentinel too
    deadline = time.monotonic() + 10
    while not all(readers.ended) and time.monotonic() < deadline:
        time.sleep(0.05)
    readers.stop.set()
    thread.join()


def _sync(child: Child, socks: list[zmq.Socket]) -> None:
    pending = set(socks)
    while pending:
        child.ask({"op": "sync"})
        for sock in list(pending):
            if sock.poll(50):
                pending.discard(sock)
    time.sleep(0.3)
    for sock in socks:
        while sock.poll(50):
            sock.recv_multipart()


def burst(count: int, size: int, stalled_subscribers: int = 1) -> dict:
    ctx = zmq.Context()
    child = Child()
    stalled = []
    for _ in range(stalled_subscribers):
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, 1)
        sock.setsockopt(zmq.RCVBUF, 4096)
        # it sends heartbeats but never times the server out (it does not
        # read them): the server's heartbeat timeout would disconnect a
        # silent one, its own timeout a plain one. A hostile peer can do this.
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3_600_000)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(child.url)
        stalled.append(sock)
    readers = Readers(ctx, child.url, 1)
    _sync(child, stalled + readers.socks)
    thread = threading.Thread(target=readers.run)
    thread.start()
    result = child.ask(
        {"op": "burst", "count": count, "size": size, "settle": 1.0, "fresh": True}
    )
    _finish(readers, thread)
    result["received"] = readers.counts[0]
    child.close()
    for sock in stalled + readers.socks:
        sock.close(linger=0)
    ctx.term()
    return result


def cost(subscribers: int, size: int, count: int) -> dict:
    ctx = zmq.Context()
    child = Child()
    readers = Readers(ctx, child.url, subscribers)
    _sync(child, readers.socks)
    thread = threading.Thread(target=readers.run)
    thread.start()
    result = child.ask({"op": "burst", "count": count, "size": size, "settle": 0.2})
    _finish(readers, thread)
    result["received"] = min(readers.counts)
    child.close()
    for sock in readers.socks:
        sock.close(linger=0)
    ctx.term()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="burst,cost")
    args = parser.parse_args()
    cases = args.cases.split(",")
    if "burst" in cases:
        print("burst to 1 stalled + 1 reading subscriber (tcp)")
        print(
            "count x size | peak RSS growth MB | RSS after MB | reader got | "
            "dropped for all / for some (per subscriber) | bytes in flight after"
        )
        for count, size in ((10_000, 100_000), (3_000, 200_000), (20, 24_900_000)):
            r = burst(count, size)
            print(
                f"{count} x {size / 1e6:g} MB | {r['peak_growth']} | "
                f"{r['rss'] - r['rss0']:+d} | {r['received']} | "
                f"{r['for_all']} / {r['dropped'] - r['for_all']} "
                f"{r.get('per_sub', [])} | {r['in_flight'] / 1e6:.1f} MB"
            )
    if "cost" in cases:
        print(
            "emission cost (us per emit, wall / server CPU), reading subscribers, tcp"
        )
        for subscribers in (1, 50):
            for size, count in ((100, 20_000), (100_000, 2_000), (1_000_000, 300)):
                r = cost(subscribers, size, count)
                print(
                    f"{subscribers} subscribers, {size} B: {r['wall_us']:.1f} / "
                    f"{r['cpu_us']:.1f} us (slowest reader got {r['received']}/{count})"
                )


if __name__ == "__main__":
    main()
