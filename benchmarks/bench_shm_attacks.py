"""Hostile peers against the shared-memory handshake, releases and the
per-subscriber signal fan-out (issue 11 re-measured on issues 14's and
11's new surfaces). Not a test: it prints a table.

Run: ``python benchmarks/bench_shm_attacks.py [--attacks a,b]``
(``FRAMERPC_PURE=1`` for the pure engine).

Each attack gets a fresh server in a child process (echo, a buffer method
``plain(nbytes)`` that copies into shared memory, a signal emitted at
about 100 Hz by a thread). While the attack runs, another client calls
``echo`` one call after the other; reported:

- the server's CPU time (user + system, all threads) during the attack,
- its RSS growth (now, ``VmRSS``) and peak RSS growth (``VmHWM``),
- the slowest echo the other client saw (ms),
- the server's CPU use over 3 s after the attack (its signal still
  ticking at 100 Hz), in percent of a core,
- what the attack left in the server (shared-memory clients and slots,
  fan-out subscriber records, counters), and whether a fresh
  well-behaved same-host client still gets shared memory.

Attacks:

``hello_flood``
    3,000 connections each shake hands with a valid probe of this (live)
    process, then close without a goodbye.
``hold``
    8 clients each fetch 16 arrays of 16 MiB through shared memory and
    keep them (never release).
``release_flood``
    20,000 ``SHM_RELEASE`` messages of 1,024 bogus pairs each.
``rl_huge``
    one call whose ``rl`` holds 1,000,000 pairs (about 8 MiB).
``fanout_churn``
    3,000 subscribers connect, subscribe and leave, 50 at a time.
``fanout_many``
    900 subscribers (``--subscribers``) connect and stay until each got
    an emission, then all leave.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def serve() -> None:
    """The child: a device with shared memory and a ticking signal."""
    import logging
    import resource

    from framerpc import RPCServer
    from framerpc.signal import RPCSignal

    logging.basicConfig(level=logging.ERROR)

    class Server(RPCServer):
        tick = RPCSignal(int)

        @RPCServer.register_method_json
        def echo(self, value: Any) -> Any:
            return value

        @RPCServer.register_method_buffer(timeout=30000)
        def plain(self, nbytes: int) -> tuple:
            return np.ones(nbytes, np.uint8), {}

        @RPCServer.register_method_json
        def probe(self) -> dict:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            shm = self._shm
            fanouts = self._signal_budget.fanouts
            return {
                "cpu": usage.ru_utime + usage.ru_stime,
                "rss": _status_kb("VmRSS:"),
                "hwm": _status_kb("VmHWM:"),
                "shm_clients": len(shm.clients),
                "subscribers": sum(len(f.subscribers) for f in fanouts),
                **self.stats,
            }

    context = zmq.Context()
    server = Server(context, "tcp://127.0.0.1")
    stop = threading.Event()

    def ticking() -> None:
        n = 0
        while not stop.wait(0.01):
            server.tick.emit(n)
            n += 1

    ticker = threading.Thread(target=ticking, daemon=True)
    ticker.start()
    print(json.dumps({"url": server.url, **server._inventory()}), flush=True)
    server.serve_forever()
    stop.set()
    ticker.join()
    context.term()


class Child:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
        )
        info = json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]
        self.url = info["url"]
        self.signal_url = info["signal_url"]
        self.ctx = zmq.Context()
        self.sock = self._dealer()
        self.rid = 0

    def _dealer(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.url)
        return sock

    def _subscriber(self, rcvhwm: int | None = None) -> zmq.Socket:
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        if rcvhwm is not None:
            sub.setsockopt(zmq.RCVHWM, rcvhwm)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.signal_url)
        return sub

    def call(self, sock: zmq.Socket, name: str, args: list) -> Any:
        from framerpc import protocol

        self.rid += 1
        sock.send_multipart([b"", *protocol.encode_call(self.rid, name, args, {})])
        if not sock.poll(60000):
            raise TimeoutError(f"no answer to {name}")
        reply = protocol.decode_reply(sock.recv_multipart()[1:])
        if not reply.ok:
            raise RuntimeError(reply.error)
        return reply.value

    def probe(self) -> dict:
        return self.call(self.sock, "probe", [])

    def close(self) -> None:
        self.sock.close()
        self.ctx.destroy(linger=0)
        self.proc.kill()
        self.proc.wait()


def _probe_segment(nonce: bytes) -> Any:
    from framerpc.transport import shm as segments

    probe = segments.Segment(len(nonce))
    probe.map[: len(nonce)] = nonce
    return probe


def _hello(child: Child, sock: zmq.Socket, probe: Any, nonce: bytes) -> bool:
    from framerpc import protocol
    from framerpc.wire import shm as wire_shm

    sock.send_multipart([b"", *wire_shm.encode_hello(1, probe.name, nonce)])
    if not sock.poll(60000):
        raise TimeoutError("no answer to SHM_HELLO")
    return protocol.decode_reply(sock.recv_multipart()[1:]).value == {"shm": True}


def _shm_dealer(child: Child) -> tuple[zmq.Socket, bool]:
    """A new dealer that shook hands with a fresh probe segment of this
    process (closed after: the server reads it during the handshake), and
    whether the server said yes. The caller closes the socket."""
    nonce = os.urandom(32)
    probe = _probe_segment(nonce)
    sock = child._dealer()
    try:
        return sock, _hello(child, sock, probe, nonce)
    except BaseException:
        sock.close()
        raise
    finally:
        probe.close()


def attack_hello_flood(child: Child) -> dict:
    accepted = 0
    for _ in range(3000):  # a new token each: 3,000 clients to the server
        sock, said_yes = _shm_dealer(child)
        sock.close()
        accepted += said_yes
    return {"accepted": accepted}


def attack_hold(child: Child) -> dict:
    from framerpc import protocol
    from framerpc.wire import shm as wire_shm

    refs = socket_replies = 0
    held: list[zmq.Socket] = []
    for _ in range(8):
        sock, _said_yes = _shm_dealer(child)
        held.append(sock)
        for _ in range(16):
            child.rid += 1
            sock.send_multipart(
                [b"", *protocol.encode_call(child.rid, "plain", [16 * MIB], {})]
            )
            assert sock.poll(60000)
            value = protocol.decode_reply(sock.recv_multipart(copy=False)[1:]).value
            if wire_shm.is_ref(value):
                refs += 1
            else:
                socket_replies += 1
    child._held = held  # type: ignore[attr-defined]
    return {"refs": refs, "socket_replies": socket_replies}


def attack_release_flood(child: Child) -> dict:
    from framerpc.wire import shm as wire_shm

    sock, _said_yes = _shm_dealer(child)
    try:
        pairs = [(slot, 1) for slot in range(wire_shm.MAX_RELEASES)]
        frames = [b"", *wire_shm.encode_release(pairs)]
        for _ in range(20000):
            sock.send_multipart(frames)
        child.call(sock, "echo", ["after"])  # all read
    finally:
        sock.close()
    return {}


def attack_rl_huge(child: Child) -> dict:
    from framerpc import protocol

    sock, _said_yes = _shm_dealer(child)
    try:
        pairs = [[i, 1] for i in range(1_000_000)]
        head = msgpack.packb(
            {
                "v": 1,
                "e": "METHOD_CALL",
                "i": 5,
                "m": "echo",
                "a": [1],
                "k": {},
                "rl": pairs,
            }
        )
        sock.send_multipart([b"", head])
        assert sock.poll(60000)
        reply = protocol.decode_reply(sock.recv_multipart()[1:])
    finally:
        sock.close()
    return {"answer": "ok" if reply.ok else reply.error[:60]}


def attack_fanout_churn(child: Child) -> dict:
    subscribed = 0
    for _ in range(60):
        socks = [child._subscriber() for _ in range(50)]
        for sub in socks:
            subscribed += bool(sub.poll(10000))
            sub.close()
    time.sleep(1.0)  # departures reach the server
    return {"got_emission": subscribed}


def attack_fanout_many(child: Child) -> dict:
    socks = [child._subscriber(rcvhwm=10) for _ in range(SUBSCRIBERS)]
    got = sum(bool(sub.poll(20000)) for sub in socks)
    peak = child.probe()["subscribers"]
    for sub in socks:
        sub.close()
    time.sleep(1.0)
    return {"got_emission": got, "peak_subscribers": peak}


def _fresh_client_gets_shm(child: Child) -> bool:
    sock, said_yes = _shm_dealer(child)
    sock.close()
    return said_yes


def measure(name: str) -> dict:
    child = Child()
    try:
        before = child.probe()
        other = child._dealer()
        done, latencies = threading.Event(), [0.0]

        def calls() -> None:
            while not done.is_set():
                sent = time.perf_counter()
                child.call(other, "echo", ["x"])
                latencies.append(time.perf_counter() - sent)
                done.wait(0.01)

        caller = threading.Thread(target=calls)
        caller.start()
        try:
            started = time.perf_counter()
            extra = globals()[f"attack_{name}"](child)
            wall = time.perf_counter() - started
        finally:
            done.set()
            caller.join()
            other.close()
        time.sleep(2.5)  # one shared-memory sweep and fan-out idle read
        after = child.probe()
        time.sleep(3.0)  # what the server spends afterwards, idle but ticking
        idle = child.probe()["cpu"] - after["cpu"]
        fresh = _fresh_client_gets_shm(child)
        return {
            "attack": name,
            "wall_s": round(wall, 2),
            "cpu_s": round(after["cpu"] - before["cpu"], 2),
            "rss_mb": round((after["rss"] - before["rss"]) / 1024, 1),
            "peak_mb": round((after["hwm"] - before["hwm"]) / 1024, 1),
            "other_ms": round(max(latencies) * 1000, 1),
            "idle_cpu_pct": round(idle / 3.0 * 100, 1),
            "shm_clients": after["shm_clients"],
            "slots": after["shm_slots_held"],
            "bogus": after["shm_bogus_releases"],
            "fallbacks": after["shm_fallbacks"],
            "subscribers": after["subscribers"],
            "fresh_shm": fresh,
            **extra,
        }
    finally:
        child.close()


#: Subscribers of ``fanout_many`` (``--subscribers``; under 1,024 file
#: descriptors a side).
SUBSCRIBERS = 900

ATTACKS = [
    "hello_flood",
    "hold",
    "release_flood",
    "rl_huge",
    "fanout_churn",
    "fanout_many",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--subscribers", type=int, default=SUBSCRIBERS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    globals()["SUBSCRIBERS"] = args.subscribers
    if args.serve:
        serve()
        return
    from framerpc.wire import framing

    print(f"engine: {framing.IMPLEMENTATION}; python {sys.version.split()[0]}")
    for name in args.attacks.split(","):
        print(json.dumps(measure(name)), flush=True)


if __name__ == "__main__":
    main()
