"""Server CPU time and peak RSS growth per hostile message shape.

Run: ``python benchmarks/bench_hostile.py [--sizes 4,16] [--shapes a,b]``
(``FRAMERPC_PURE=1`` for the pure engine). Not a test: it prints a table.

Each (shape, size) gets a fresh server in a child process
(``hostile_server.py``), so that its peak RSS (``VmHWM``, a high-water
mark) starts from a quiet baseline.
The parent sends the hostile message from a raw DEALER socket, then at
once a well-formed ``echo`` call from another socket, and reports:

- what the server answered (``refused``: an error reply; ``served``),
- the server's CPU time (user + system) between before and after,
- the growth of its peak RSS,
- how long the other client's call, sent 0.2 s after the hostile
  message, took (wall clock, ms).

Uses only what older framerpc builds have too, so the same script
measures a checkout without the limits (run it with that checkout's
interpreter).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import msgpack
import zmq
from hostile_server import server_process

MIB = 1024 * 1024


def _array32(count: int, item: bytes) -> bytes:
    return b"\xdd" + count.to_bytes(4, "big") + item * count


def _call(args_msgpack: bytes, method: str = "echo") -> bytes:
    head = msgpack.packb({"v": 1, "e": "METHOD_CALL", "i": 1, "m": method})
    return b"\x86" + head[1:] + b"\xa1a" + args_msgpack + b"\xa1k\x80"


def _json(args: bytes) -> bytes:
    return (
        b'{"event": "METHOD_CALL", "method": "echo", "params": {"args": ['
        + args
        + b'], "kwargs": {}}}'
    )


def shapes(size: int) -> dict[str, bytes]:
    """name -> frame 0 of at most ``size`` bytes."""
    size -= 64  # room for the rest of the header
    inline = msgpack.packb(msgpack.ExtType(3, msgpack.packb(["u1", [1], b"\0"])))
    return {
        "header: empty arrays": _array32(size - 5, b"\x90"),
        "args: empty arrays": _call(b"\x91" + _array32(size - 40, b"\x90")),
        "args: empty maps": _call(b"\x91" + _array32(size - 40, b"\x80")),
        "args: arrays of 15 []": _call(
            b"\x91" + _array32(size // 18, b"\xdc\x00\x0f" + b"\x90" * 15)
        ),
        "args: small ints": _call(b"\x91" + _array32(size - 40, b"\x01")),
        "args: 1-char strings": _call(b"\x91" + _array32(size // 2 - 20, b"\xa1a")),
        "args: deep nesting": _call(b"\x91" * (size - 40) + b"\xc0"),
        # just within the default max_objects: decoded and served (len())
        "args: 999,000 []": _call(b"\x91" + _array32(999_000, b"\x90"), "length"),
        "args: long string": _call(
            b"\x91\xdb" + (size - 45).to_bytes(4, "big") + b"x" * (size - 45)
        ),
        "args: inline arrays": _call(_array32(size // len(inline), inline)),
        "JSON: []": _json(b"[]," * (size // 3 - 30) + b"[]"),
        "JSON: {}": _json(b"{}," * (size // 3 - 30) + b"{}"),
        "JSON: deep [[[": _json(b"[" * (size // 2 - 50) + b"]" * (size // 2 - 50)),
        "JSON: long string": _json(b'"' + b"x" * (size - 100) + b'"'),
    }


# -- the parent --------------------------------------------------------------------
def _exchange(sock: zmq.Socket, frame: bytes, timeout_s: float) -> list:
    sock.send_multipart([b"", frame], copy=False)
    if not sock.poll(int(timeout_s * 1000)):
        raise TimeoutError
    return sock.recv_multipart()[1:]


def _call_json_method(sock: zmq.Socket, name: str, args: list, rid: int) -> Any:
    from framerpc import protocol

    frames = protocol.encode_call(rid, name, args, {})
    reply = protocol.decode_reply(_exchange(sock, frames[0], 600))
    return reply.value


def measure(frame: bytes, timeout_s: float) -> dict:
    with server_process() as url:
        return _measure(url, frame, timeout_s)


def _measure(url: str, frame: bytes, timeout_s: float) -> dict:
    from framerpc import protocol

    context = zmq.Context()
    hostile, other = context.socket(zmq.DEALER), context.socket(zmq.DEALER)
    try:
        for sock in (hostile, other):
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(url)
        _call_json_method(other, "echo", ["warm"], 1)
        _call_json_method(hostile, "echo", ["warm"], 1)
        cpu0, rss0 = _call_json_method(other, "stats", [], 2)
        hostile.send_multipart([b"", frame], copy=False)
        # a small call sent at once overtakes a large message still on its
        # way: give the hostile one time to arrive (loopback: ms)
        time.sleep(0.2)
        start = time.perf_counter()
        _call_json_method(other, "echo", ["meanwhile"], 3)
        other_ms = (time.perf_counter() - start) * 1000
        if hostile.poll(int(timeout_s * 1000)):
            body = hostile.recv_multipart()[1:]
            if body[0][:1] == b"{":
                outcome = "served" if json.loads(body[0])["success"] else "refused"
            else:
                reply = protocol.decode_reply(body)
                outcome = "served" if reply.ok else "refused"
                if not reply.ok and "ProtocolError" not in reply.error:
                    outcome = "error"  # e.g. the method failed on its args
        else:
            outcome = "no reply"
        cpu1, rss1 = _call_json_method(other, "stats", [], 4)
        return {
            "outcome": outcome,
            "cpu_s": cpu1 - cpu0,
            "rss_mb": (rss1 - rss0) / 1024,
            "other_ms": other_ms,
        }
    finally:
        hostile.close()
        other.close()
        context.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,16", help="MiB, comma-separated")
    parser.add_argument("--shapes", default="", help="substrings of shape names")
    parser.add_argument("--timeout", type=float, default=120, help="s per message")
    options = parser.parse_args()
    from framerpc import framing

    engine = "pure" if os.environ.get("FRAMERPC_PURE") else framing.IMPLEMENTATION
    print(f"engine: {engine}; python {sys.version.split()[0]}")
    print(
        f"{'shape':24} {'MiB':>4} {'answer':>9} {'server CPU s':>13} "
        f"{'peak RSS +MB':>13} {'other call ms':>14}"
    )
    wanted = [s for s in options.shapes.split(",") if s]
    for size in (int(s) for s in options.sizes.split(",")):
        for name, frame in shapes(size * MIB).items():
            if wanted and not any(w in name for w in wanted):
                continue
            result = measure(frame, options.timeout)
            print(
                f"{name:24} {size:>4} {result['outcome']:>9} "
                f"{result['cpu_s']:>13.3f} {result['rss_mb']:>13.0f} "
                f"{result['other_ms']:>14.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
