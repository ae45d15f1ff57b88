"""Registry CPU per request against the number of entries (not a test).

    python benchmarks/bench_registry.py [--sizes 100,1000,10000,50000]
                                        [--budget 0.3] [--json]

For each table size, the registry is filled, then REGISTER (a new device),
CHECK_ALIVE, UNREGISTER and LIST_DEVICES are measured two ways:

* ``direct``: the request logic called in this thread, without sockets
  (with the per-message deadline check the serve loop does), CPU from
  :func:`time.thread_time`;
* ``socket``: a running registry thread answering native requests from a
  DEALER over inproc://, one at a time; the CPU is that of the registry
  thread only (its POSIX thread CPU clock), so the client's share is left
  out.

Each cell is CPU microseconds per request: requests are repeated until
``--budget`` seconds of CPU or 500 requests, whichever comes first. LIST
answers with the whole table, so its cost grows with it by design; the
others should stay flat.

The script runs against whichever framerpc is importable, so the same
command under another virtual environment measures another version (the
table is filled through private attributes, which differ between
versions: filling an O(n)-per-REGISTER registry through requests would
take hours at 50,000).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
import threading
import time
import uuid
from pathlib import Path

_SRC = Path(__file__).resolve().parent.parent / "src"
if importlib.util.find_spec("framerpc") is None and (_SRC / "framerpc").is_dir():
    sys.path.insert(0, str(_SRC))  # a source checkout without install

import zmq  # noqa: E402

from framerpc import protocol, registry  # noqa: E402
from framerpc.protocol import RegistryEvents, RegistryMessage  # noqa: E402

KINDS = ("REGISTER", "CHECK_ALIVE", "UNREGISTER", "LIST_DEVICES")
_MAX_REQUESTS = 500
_NEW = hasattr(registry, "DeviceDirectory")  # this branch's registry


def make_registry(ctx: zmq.Context, size: int) -> registry.DeviceRegistry:
    """A registry (not started) holding ``size`` entries."""
    kwargs = {"max_devices": size + 10 * _MAX_REQUESTS} if _NEW else {}
    reg = registry.DeviceRegistry(
        ctx, f"inproc://bench-{uuid.uuid4().hex}", default_alive_timeout=600, **kwargs
    )
    if _NEW:
        for i in range(size):
            reg._directory.register("fill", f"tcp://fill:{i}", alive_timeout=600)
    else:  # the older table: uuid -> _Device, filled directly
        deadline = time.monotonic() + 600
        for i in range(size):
            reg._devices[uuid.uuid4().hex] = registry._Device(
                "fill", f"tcp://fill:{i}", f"fill-{i}", 600.0, deadline
            )
    return reg


class Requests:
    """Payloads of each kind; REGISTERs add devices the later kinds use."""

    def __init__(self) -> None:
        self.counter = itertools.count()
        self.uuids: list[str] = []

    def payload(self, kind: str) -> dict:
        if kind == "REGISTER":
            i = next(self.counter)
            return {
                "device_type": "cam",
                "addr": f"tcp://bench:{i}",
                "name": "",
                "alive_timeout": 600,
            }
        if kind == "CHECK_ALIVE":
            return {"uuid": self.uuids[next(self.counter) % len(self.uuids)]}
        if kind == "UNREGISTER":
            return {"uuid": self.uuids.pop()}
        return {}

    def answered(self, kind: str, reply_payload: dict) -> None:
        if kind == "REGISTER":
            self.uuids.append(reply_payload["uuid"])


def _prune(reg: registry.DeviceRegistry) -> None:
    if _NEW:
        reg._prune()
    else:
        reg._prune(time.monotonic())


def _count(kind: str, budget: float) -> int:
    return 50 if kind == "LIST_DEVICES" else _MAX_REQUESTS


def bench_direct(ctx: zmq.Context, size: int, budget: float) -> dict[str, float]:
    reg = make_registry(ctx, size)
    requests, result = Requests(), {}
    try:
        for kind in KINDS:
            done, start = 0, time.thread_time()
            limit = _count(kind, budget)
            if kind == "UNREGISTER":
                limit = min(limit, len(requests.uuids))
            while done < limit and time.thread_time() - start < budget:
                payload = requests.payload(kind)
                _prune(reg)  # the serve loop checks deadlines per message
                event, reply = reg._handle_request(RegistryEvents(kind), payload)
                assert event is not RegistryEvents.UNSUPPORTED, reply
                requests.answered(kind, reply)
                done += 1
            result[kind] = (time.thread_time() - start) / done * 1e6
    finally:
        reg.stop()
    return result


def bench_socket(ctx: zmq.Context, size: int, budget: float) -> dict[str, float]:
    reg = make_registry(ctx, size)
    reg.start()
    while reg.ident is None:
        time.sleep(0.001)
    clock_id = time.pthread_getcpuclockid(reg.ident)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(reg.url)
    requests, result, request_id = Requests(), {}, itertools.count(1)

    def exchange(kind: str, payload: dict) -> dict:
        message = RegistryMessage(RegistryEvents(kind), payload, next(request_id))
        sock.send_multipart([b"", *protocol.encode_registry(message)])
        if not sock.poll(600_000):
            raise TimeoutError(f"no answer to {kind}")
        reply = protocol.decode_registry(sock.recv_multipart()[1:])
        assert reply.event is not RegistryEvents.UNSUPPORTED, reply.payload
        return reply.payload

    try:
        exchange("LIST_DEVICES", {})  # connected, and the thread is warm
        for kind in KINDS:
            done, start = 0, time.clock_gettime(clock_id)
            limit = _count(kind, budget)
            if kind == "UNREGISTER":
                limit = min(limit, len(requests.uuids))
            while done < limit and time.clock_gettime(clock_id) - start < budget:
                requests.answered(kind, exchange(kind, requests.payload(kind)))
                done += 1
            result[kind] = (time.clock_gettime(clock_id) - start) / done * 1e6
    finally:
        sock.close()
        reg.stop()
        reg.join(timeout=10)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000,50000")
    parser.add_argument(
        "--budget", type=float, default=0.3, help="CPU seconds per cell at most"
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    ctx = zmq.Context()
    rows = []
    try:
        for size in sizes:
            for mode, bench in (("direct", bench_direct), ("socket", bench_socket)):
                cells = bench(ctx, size, args.budget)
                rows.append({"entries": size, "mode": mode, "us_per_request": cells})
                if not args.json:
                    line = "  ".join(f"{kind} {cells[kind]:9.1f}" for kind in KINDS)
                    print(f"{size:>7} {mode:<6} {line}", flush=True)
    finally:
        ctx.term()
    version = "owned/indexed registry" if _NEW else "older registry"
    if args.json:
        print(json.dumps({"registry": version, "rows": rows}, indent=1))
    else:
        print(f"({version}, {registry.__file__}; CPU µs per request)")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
