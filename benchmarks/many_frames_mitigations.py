"""Mitigations tried against one message of 8 million empty frames (issue
11's last bound). Not a test: it prints one line per variant and run.

Run: ``python benchmarks/many_frames_mitigations.py [--variants a,b]
[--frames 8e6] [--repeat 1]`` (``FRAMERPC_PURE=1`` for the pure engine).

The sender and the measures are ``bench_many_frames.py``'s (a raw ZMTP
3.0 DEALER writes the whole message in one ``sendall``; server CPU of
all threads, peak RSS growth, the slowest echo another client made one
after the other meanwhile, when the refusal arrived). Variants of the
server (its zmq context and SocketOptions) and of the sender:

``base``
    heartbeats off, one I/O thread (``bench_many_frames``'s set-up);
``io2``
    heartbeats off, a second libzmq I/O thread on the server's context:
    the other client's connection lands on the idle one;
``hb``
    default heartbeats, and a sender that answers the server's PINGs
    (as a real pyzmq peer would): libzmq's timeout timer is cancelled by
    every frame decoded, so heartbeats cannot drop such a sender;
``hb_silent``
    default heartbeats, a sender that never answers PINGs;
``rcvbuf``
    heartbeats off, ``ZMQ_RCVBUF`` of 64 KiB on the server's socket.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_many_frames import (  # noqa: E402
    _read_exactly,
    many_frames_message,
    zmtp_connect,
    zmtp_frame,
)

VARIANTS = {
    "base": {"io_threads": 1, "heartbeats": False, "rcvbuf": -1, "pong": False},
    "io2": {"io_threads": 2, "heartbeats": False, "rcvbuf": -1, "pong": False},
    "hb": {"io_threads": 1, "heartbeats": True, "rcvbuf": -1, "pong": True},
    "hb_silent": {"io_threads": 1, "heartbeats": True, "rcvbuf": -1, "pong": False},
    "rcvbuf": {"io_threads": 1, "heartbeats": False, "rcvbuf": 65536, "pong": False},
}


def _threads() -> dict:
    """CPU seconds of each thread of this process, by name (libzmq's I/O
    threads are ``ZMQbg/IO/n``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as handle:
                name = handle.read().strip()
            with open(f"/proc/self/task/{task}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        found[name] = found.get(name, 0) + cpu
    return found


def serve(variant: dict) -> None:
    import dataclasses
    import logging
    import resource

    from bench_hostile import _peak_rss_kb

    from framerpc import RPCServer, transport

    logging.basicConfig(level=logging.ERROR)

    class Server(RPCServer):
        @RPCServer.register_method_json
        def echo(self, value: object) -> object:
            return value

        @RPCServer.register_method_json
        def stats(self) -> list:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return [usage.ru_utime + usage.ru_stime, _peak_rss_kb(), _threads()]

    options = transport.DEFAULT_OPTIONS
    if not variant["heartbeats"]:
        options = dataclasses.replace(options, heartbeat_ivl_ms=0)
    context = zmq.Context(io_threads=variant["io_threads"])
    server = Server(context, "tcp://127.0.0.1", options=options)
    if variant["rcvbuf"] > 0:  # for connections accepted from now on
        server._socket.setsockopt(zmq.RCVBUF, variant["rcvbuf"])
    print(server.url, flush=True)
    server.serve_forever()
    context.term()


def _reader(conn: socket.socket, pong: bool, out: dict) -> None:
    """Read the server's frames: queue PONGs for PINGs (``pong``; the
    sender writes them between frames), note the first message frame
    (the refusal) or the connection's end."""
    try:
        while True:
            flags, size = _read_exactly(conn, 2)
            if flags & 0x02:
                size = struct.unpack(">Q", bytes([size]) + _read_exactly(conn, 7))[0]
            body = _read_exactly(conn, size)
            if not flags & 0x04:
                out["refused"] = time.perf_counter()
                return
            if pong and body[:5] == b"\x04PING":
                context = body[7:]
                reply = b"\x04PONG" + context
                out.setdefault("queued", []).append(
                    b"\x04" + bytes([len(reply)]) + reply
                )
    except (ConnectionError, OSError):
        out["dropped"] = time.perf_counter()


def _send(conn: socket.socket, payload: bytes, header: bytes, out: dict) -> None:
    """Write ``payload`` in chunks that end on frame boundaries, and the
    queued PONGs between them (as libzmq's encoder would: a command frame
    may come between two frames of a message)."""
    first = len(zmtp_frame(b"", True) + zmtp_frame(header, True))
    view = memoryview(payload)
    conn.sendall(view[:first])
    chunk = 1 << 16
    for at in range(first, len(payload), chunk):
        conn.sendall(view[at : at + chunk])
        queued = out.get("queued")
        while queued:
            conn.sendall(queued.pop(0))
            out["pongs"] = out.get("pongs", 0) + 1


def measure(variant: dict, count: int, timeout_s: float) -> dict:
    from framerpc import protocol

    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", json.dumps(variant)],
        stdout=subprocess.PIPE,
        text=True,
    )
    context = zmq.Context()
    other = context.socket(zmq.DEALER)
    other.setsockopt(zmq.LINGER, 0)
    hostile = None
    try:
        url = child.stdout.readline().strip()  # type: ignore[union-attr]
        rid = [0]

        def call(name: str, args: list) -> object:
            rid[0] += 1
            other.send_multipart([b"", *protocol.encode_call(rid[0], name, args, {})])
            if not other.poll(int(timeout_s * 1000)):
                raise TimeoutError(f"no answer to {name} within {timeout_s} s")
            return protocol.decode_reply(other.recv_multipart()[1:]).value

        hostile = zmtp_connect("127.0.0.1", int(url.rsplit(":", 1)[1]))
        other.connect(url)  # after the hostile one: with 2 I/O threads, the other
        cpu0, rss0, threads0 = call("stats", [])
        header = protocol.encode_call(9, "echo", [1], {})[0]
        payload = many_frames_message(header, count)
        done, latencies = threading.Event(), [0.0]

        def calls() -> None:
            while not done.is_set():
                sent = time.perf_counter()
                assert call("echo", ["x"]) == "x"
                latencies.append(time.perf_counter() - sent)
                done.wait(0.01)

        out: dict = {}
        reader = threading.Thread(target=_reader, args=(hostile, variant["pong"], out))
        reader.start()
        caller = threading.Thread(target=calls)
        caller.start()
        start = time.perf_counter()
        try:
            _send(hostile, payload, header, out)
        except OSError:
            out.setdefault("dropped", time.perf_counter())
        reader.join(timeout_s)
        done.set()
        caller.join()
        time.sleep(0.5)
        cpu1, rss1, threads1 = call("stats", [])
        by_thread = {
            name: round(threads1[name] - threads0.get(name, 0), 2)
            for name in threads1
            if threads1[name] - threads0.get(name, 0) >= 0.05
        }
        end = out.get("refused", out.get("dropped", time.perf_counter()))
        return {
            "cpu_s": round(cpu1 - cpu0, 2),
            "rss_mb": round((rss1 - rss0) / 1024),
            "other_ms": round(max(latencies) * 1000),
            "outcome": "refused" if "refused" in out else "dropped",
            "after_s": round(end - start, 2),
            "pongs": out.get("pongs", 0),
            "threads": by_thread,
        }
    finally:
        if hostile is not None:
            hostile.close()
        other.close()
        context.term()
        child.kill()
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--frames", type=float, default=8e6)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        serve(json.loads(options.serve))
        return
    from framerpc import transport

    engine = "pure" if os.environ.get("FRAMERPC_PURE") else transport.IO_IMPLEMENTATION
    print(f"engine: {engine}; zmq {zmq.zmq_version()}; frames {int(options.frames):,}")
    for _ in range(options.repeat):
        for name in options.variants.split(","):
            result = measure(VARIANTS[name], int(options.frames), options.timeout)
            print(json.dumps({"variant": name, **result}), flush=True)


if __name__ == "__main__":
    main()
