"""The asyncio client next to the sync client and raw pyzmq, in one run.

    python benchmarks/bench_aio.py [--quick] [--pairs N] [--transport tcp|ipc]
                                   [--pin]

1. Sequential round trips (one call in flight): echo, 1 MiB and 24.9 MB
   fetches through raw pyzmq REQ/REP, the sync ``RPCClient`` and the
   asyncio proxy (``framerpc.aio``), each against a server in its own
   process (the servers of ``framerpc.bench``). The three clients take
   turns in chunks of calls (a load that changes during the run hits all
   three alike), against ``--pairs`` fresh server processes in turn.
   Medians in us pooled over the pairs, the ratio asyncio / sync
   (targets: echo <= 1.5, frames <= 1.1) and in how many pairs the
   pair's own ratio met the target.
2. Concurrency: 100 echo calls in flight on one asyncio proxy against 100
   threads sharing one sync proxy (calls/s; median over the pairs).
3. The same device served by ``await server.serve()`` (its sync methods
   run inline on the loop) instead of ``serve_forever``: echo and 1 MiB
   through both clients.

Not a test: nothing here asserts; it prints a table. The engine is the
one ``FRAMERPC_PURE`` selects, in the client and the server process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

try:
    import framerpc
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import zmq

import framerpc.aio
from framerpc import framing
from framerpc.tools.bench import processes, systems, timing, workloads

WORKLOADS = ("echo", "1MiB", "24.9MB")
TARGETS = {"echo": 1.5, "1MiB": 1.1, "24.9MB": 1.1}
CONCURRENCY = 100
#: Chunks each client's calls are split into, taking turns.
CHUNKS = 5


def _interface() -> type:
    _, proxy_cls = systems.framerpc_types()
    return proxy_cls.__bases__[0]  # BenchDevice


async def _aio_samples(url: str, workload: workloads.Workload, n: int) -> list[int]:
    clock = time.perf_counter_ns
    async with framerpc.aio.connect(_interface(), url, timeout=10000) as proxy:
        text = workloads.ECHO_TEXT

        async def call() -> None:
            if workload.is_echo:
                workloads.check_echo(await proxy.echo(text))
            else:
                frame, _ = await proxy.grab(workload.name)
                workloads.check(frame, workload)

        for _ in range(max(3, n // 10)):
            await call()
        samples = [0] * n
        for i in range(n):
            start = clock()
            await call()
            samples[i] = clock() - start
        return samples


async def _aio_chunk(proxy: Any, workload: workloads.Workload, n: int) -> list[int]:
    """``n`` timed calls of ``workload`` on an open asyncio proxy."""
    clock = time.perf_counter_ns
    text = workloads.ECHO_TEXT

    async def call() -> None:
        # the frame is dropped before the next call, as the sync clients'
        # call() does (kept, it makes libzmq's next buffer fresh memory)
        if workload.is_echo:
            workloads.check_echo(await proxy.echo(text))
        else:
            frame, _ = await proxy.grab(workload.name)
            workloads.check(frame, workload)

    samples = [0] * n
    for i in range(n):
        start = clock()
        await call()
        samples[i] = clock() - start
    return samples


def _sync_samples(
    system: str, url: str, workload: workloads.Workload, n: int
) -> list[int]:
    client = systems.make_client(system, url)
    try:
        return timing.sample(client, workload, n, max(3, n // 10))
    finally:
        client.close()


async def _aio_concurrent(url: str, total: int) -> float:
    async with framerpc.aio.connect(_interface(), url, timeout=30000) as proxy:
        text = workloads.ECHO_TEXT
        left = total

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                workloads.check_echo(await proxy.echo(text))

        await asyncio.gather(*(proxy.echo(text) for _ in range(CONCURRENCY)))
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return total / (time.perf_counter() - start)


def _threads_concurrent(url: str, total: int) -> float:
    _, proxy_cls = systems.framerpc_types()
    context = zmq.Context()
    proxy = proxy_cls(context, url, timeout=30000)
    lock = threading.Lock()
    left = total
    go = threading.Barrier(CONCURRENCY + 1)

    def worker() -> None:
        nonlocal left
        go.wait()
        while True:
            with lock:
                if left <= 0:
                    return
                left -= 1
            workloads.check_echo(proxy.echo(workloads.ECHO_TEXT))

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    go.wait()
    for thread in threads:
        thread.join()
    rate = total / (time.perf_counter() - start)
    proxy.close()
    context.term()
    return rate


def _serve_in_loop(url: str) -> None:
    """Server process (``--serve-loop URL``): the benchmark device served
    by ``await serve()``; prints its URL, stops when stdin closes."""
    server_cls, _ = systems.framerpc_types()
    context = zmq.Context()
    server = server_cls(context, url, workloads.frames())
    print(server.url, flush=True)

    def watch() -> None:
        sys.stdin.read()  # EOF: the parent is done
        server.stop_server()

    threading.Thread(target=watch, daemon=True).start()
    asyncio.run(server.serve())
    context.term()


class _LoopServer:
    """A ``--serve-loop`` process of this script (same engine, same CPUs)."""

    def __init__(self, transport: str, workdir: str) -> None:
        url = systems.server_url(transport, workdir)
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-loop", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url:
            self.stop()
            raise RuntimeError("the loop server did not start")

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _median_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1000


def _one_pair(
    system: str, transport: str, workdir: str, cpus: set[int] | None, quick: bool
) -> tuple[dict[str, dict[str, list[int]]], tuple[float, float]]:
    """One pair of server processes (raw and framerpc): the samples of
    each workload by client, and the concurrency rates (asyncio, threads)."""
    raw = processes.start_server("raw", transport, workdir, cpus)
    rpc = processes.start_server(system, transport, workdir, cpus)
    loop = asyncio.new_event_loop()
    clients = {
        "raw": systems.make_client("raw", raw.url),
        "sync": systems.make_client(system, rpc.url),
    }
    samples: dict[str, dict[str, list[int]]] = {}
    try:
        proxy = loop.run_until_complete(
            framerpc.aio.connect(_interface(), rpc.url, timeout=10000)
        )
        try:
            for name in WORKLOADS:
                workload = workloads.BY_NAME[name]
                n = workload.quick if quick else workload.samples
                chunk = max(1, n // CHUNKS)
                got: dict[str, list[int]] = {"raw": [], "sync": [], "aio": []}
                order = ["raw", "sync", "aio"]
                for key in ("raw", "sync"):  # warm-up, untimed
                    timing.sample(clients[key], workload, 0, max(3, n // 10))
                loop.run_until_complete(_aio_chunk(proxy, workload, max(3, n // 10)))
                for turn in range(CHUNKS):
                    for key in order[turn % 3 :] + order[: turn % 3]:
                        if key == "aio":
                            got[key] += loop.run_until_complete(
                                _aio_chunk(proxy, workload, chunk)
                            )
                        else:
                            got[key] += timing.sample(clients[key], workload, chunk, 0)
                samples[name] = got
        finally:
            loop.run_until_complete(proxy.aclose())
        total = 3000 if quick else 20000
        aio_rate = loop.run_until_complete(_aio_concurrent(rpc.url, total))
        thread_rate = _threads_concurrent(rpc.url, total)
    finally:
        for client in clients.values():
            client.close()
        loop.close()
        processes.stop_server(raw)
        processes.stop_server(rpc)
    return samples, (aio_rate, thread_rate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument(
        "--pairs", type=int, default=4, help="server process pairs (default 4)"
    )
    parser.add_argument("--transport", default="tcp", choices=("tcp", "ipc"))
    parser.add_argument("--pin", action="store_true", help="all on CPU 0")
    parser.add_argument("--serve-loop", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_loop:
        _serve_in_loop(args.serve_loop)
        return 0
    cpus = {0} if args.pin else None
    if cpus:
        os.sched_setaffinity(0, cpus)
    system = "framerpc-pure" if framing.IMPLEMENTATION == "pure" else "framerpc"
    load = os.getloadavg()
    print(
        f"engine: {framing.IMPLEMENTATION}, transport: {args.transport}, "
        f"{args.pairs} process pairs, load average {load[0]:.2f} {load[1]:.2f}"
    )
    with tempfile.TemporaryDirectory() as workdir:
        pooled = {name: {"raw": [], "sync": [], "aio": []} for name in WORKLOADS}
        met = dict.fromkeys(WORKLOADS, 0)
        rates = []
        for _ in range(max(1, args.pairs)):
            samples, rate = _one_pair(system, args.transport, workdir, cpus, args.quick)
            rates.append(rate)
            for name, got in samples.items():
                for key, values in got.items():
                    pooled[name][key] += values
                ratio = statistics.median(got["aio"]) / statistics.median(got["sync"])
                met[name] += ratio <= TARGETS[name]
        print(
            f"{'workload':>8} {'raw us':>9} {'sync us':>9} {'aio us':>9}"
            f" {'aio/sync':>9} {'target':>7} {'pairs met':>10}"
        )
        for name in WORKLOADS:
            raw_us, sync_us, aio_us = (
                _median_us(pooled[name][key]) for key in ("raw", "sync", "aio")
            )
            print(
                f"{name:>8} {raw_us:9.1f} {sync_us:9.1f} {aio_us:9.1f}"
                f" {aio_us / sync_us:9.2f} {TARGETS[name]:7.2f}"
                f" {met[name]:>6} of {len(rates)}"
            )
        aio_rate = statistics.median(rate[0] for rate in rates)
        thread_rate = statistics.median(rate[1] for rate in rates)
        print(
            f"{CONCURRENCY} echo calls in flight: asyncio proxy "
            f"{aio_rate:,.0f} calls/s; sync proxy shared by {CONCURRENCY} "
            f"threads {thread_rate:,.0f} calls/s "
            f"({aio_rate / thread_rate:.2f}x)"
        )
        loop_server = _LoopServer(args.transport, workdir)
        try:
            print("served by await server.serve():")
            print(f"{'workload':>8} {'sync us':>9} {'aio us':>9}")
            for name in WORKLOADS[:2]:
                workload = workloads.BY_NAME[name]
                n = workload.quick if args.quick else workload.samples
                url = loop_server.url
                sync_us = _median_us(_sync_samples(system, url, workload, n))
                aio_us = _median_us(asyncio.run(_aio_samples(url, workload, n)))
                print(f"{name:>8} {sync_us:9.1f} {aio_us:9.1f}")
        finally:
            loop_server.stop()
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
