"""Server cost of one message of very many empty frames, sent over raw ZMTP.

Run: ``python benchmarks/bench_many_frames.py [--frames 8e6] [--repeat 1]``
(``FRAMERPC_PURE=1`` for the pure engine). Not a test: it prints one line
per run.

An empty frame is 2 bytes on the wire, so 16 MiB carries 8 million of
them. pyzmq's ``send_multipart`` would take minutes to build such a
message, so this script speaks ZMTP 3.0 (NULL mechanism) on a plain TCP
socket and writes the whole message in one ``sendall``. The server, in
a child process, is ``bench_hostile.py``'s (``hostile_server.py``)
without heartbeats; the script reports:

- the server's CPU time (user + system, all threads, libzmq's I/O thread
  included) between before and after the message,
- the growth of its peak RSS (``VmHWM``),
- the longest a well-formed ``echo`` call from another client took
  (wall clock), of those it makes one after the other (in a thread)
  while the message is sent and until its refusal arrived,
- when that refusal arrived (from the first byte sent).
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import zmq
from hostile_server import server_process

HERE = Path(__file__).resolve().parent


def zmtp_connect(host: str, port: int) -> socket.socket:
    """A TCP connection that has done the ZMTP 3.0 NULL handshake as a DEALER."""
    conn = socket.create_connection((host, port))
    # signature, version 3.0, mechanism NULL, as-server 0, filler
    greeting = b"\xff" + b"\0" * 8 + b"\x7f" + bytes([3, 0])
    conn.sendall(greeting + b"NULL".ljust(20, b"\0") + b"\0" + b"\0" * 31)
    _read_exactly(conn, 64)  # the server's greeting
    body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    conn.sendall(b"\x04" + bytes([len(body)]) + body)  # short command frame
    # the server's READY: read it, so that the next bytes are its reply
    flags, size = _read_exactly(conn, 2)
    if flags == 0x06:  # long command frame: 8-byte size
        size = struct.unpack(">Q", bytes([size]) + _read_exactly(conn, 7))[0]
    elif flags != 0x04:
        raise ConnectionError(f"expected the server's READY, got flags {flags:#x}")
    _read_exactly(conn, size)
    return conn


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size:
        chunk = conn.recv(size - len(received))
        if not chunk:
            raise ConnectionError("the server closed during the handshake")
        received += chunk
    return received


def zmtp_frame(data: bytes, more: bool) -> bytes:
    """One ZMTP 3.0 message frame (short or long form)."""
    if len(data) < 256:
        return bytes([1 if more else 0, len(data)]) + data
    return bytes([(1 if more else 0) | 2]) + struct.pack(">Q", len(data)) + data


def many_frames_message(header: bytes, count: int) -> bytes:
    """Delimiter, ``header``, then ``count - 1`` empty frames, as ZMTP bytes."""
    return (
        zmtp_frame(b"", True)
        + zmtp_frame(header, True)
        + zmtp_frame(b"", True) * (count - 2)
        + zmtp_frame(b"", False)
    )


def read_message_frame(conn: socket.socket) -> bytes:
    """The first message frame from the server (command frames skipped)."""
    while True:
        flags, size = _read_exactly(conn, 2)
        if flags & 0x02:  # long frame: 8-byte size
            size = struct.unpack(">Q", bytes([size]) + _read_exactly(conn, 7))[0]
        body = _read_exactly(conn, size)
        if not flags & 0x04:
            return body


def measure(count: int, timeout_s: float) -> dict:
    # this raw sender does not answer PINGs: no heartbeats
    with server_process(heartbeats=False) as url:
        return _measure(url, count, timeout_s)


def _measure(url: str, count: int, timeout_s: float) -> dict:
    from framerpc import protocol

    context = zmq.Context()
    other = context.socket(zmq.DEALER)
    other.setsockopt(zmq.LINGER, 0)
    hostile = None
    try:
        other.connect(url)

        def call(name: str, args: list, rid: int):
            other.send_multipart([b"", *protocol.encode_call(rid, name, args, {})])
            if not other.poll(int(timeout_s * 1000)):
                raise TimeoutError(f"no answer to {name} within {timeout_s} s")
            return protocol.decode_reply(other.recv_multipart()[1:]).value

        cpu0, rss0 = call("stats", [], 1)
        hostile = zmtp_connect("127.0.0.1", int(url.rsplit(":", 1)[1]))
        header = protocol.encode_call(9, "echo", [1], {})[0]
        payload = many_frames_message(header, count)
        # the other client calls, one call after the other, in a thread
        # while the message is sent and refused: the slowest call waited
        # for the server the longest
        done, latencies = threading.Event(), [0.0]

        def calls() -> None:
            rid = 10
            while not done.is_set():
                sent = time.perf_counter()
                assert call("echo", ["x"], rid) == "x"
                latencies.append(time.perf_counter() - sent)
                rid += 1
                done.wait(0.01)

        caller = threading.Thread(target=calls)
        caller.start()
        try:
            start = time.perf_counter()
            hostile.sendall(payload)
            hostile.settimeout(timeout_s)
            read_message_frame(hostile)  # the reply's delimiter: refused
            refused_s = time.perf_counter() - start
        finally:
            done.set()
            caller.join()
        other_s = max(latencies)
        cpu1, rss1 = call("stats", [], 3)
        return {
            "frames": count,
            "mib": len(payload) / 2**20,
            "cpu_s": cpu1 - cpu0,
            "rss_mb": (rss1 - rss0) / 1024,
            "other_s": other_s,
            "refused_s": refused_s,
        }
    finally:
        if hostile is not None:
            hostile.close()
        other.close()
        context.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=float, default=8e6, help="frames per message")
    parser.add_argument("--repeat", type=int, default=1, help="runs (fresh servers)")
    parser.add_argument("--timeout", type=float, default=300, help="s per wait")
    options = parser.parse_args()
    from framerpc import transport

    engine = "pure" if os.environ.get("FRAMERPC_PURE") else transport.IO_IMPLEMENTATION
    print(f"engine: {engine}; python {sys.version.split()[0]}; zmq {zmq.zmq_version()}")
    for _ in range(options.repeat):
        r = measure(int(options.frames), options.timeout)
        print(
            f"frames={r['frames']:,} ({r['mib']:.1f} MiB): "
            f"server CPU {r['cpu_s']:.2f} s, "
            f"peak RSS +{r['rss_mb']:.0f} MB, "
            f"other call at most {r['other_s'] * 1000:.0f} ms, "
            f"refused after {r['refused_s']:.2f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
