"""Soak test: one server process, 8 client threads and 2 client processes.

Each client makes a bounded number of mixed calls (echo of nested values,
1 MiB buffers both ways, property sets, signal emissions) on loopback TCP.
Then the test checks that every reply matched its request, that the server
saw each client's calls exactly once and in order, that every subscriber
received every emitted signal in emission order, and that the server's
memory (RSS) did not keep growing after a warm-up phase. It prints the
throughput (``-s`` shows it; the JUnit report gets ``calls_per_s``).

Bounded: 10 x ``FRAMERPC_SOAK_CALLS`` calls (300 by default), well under
60 s on 2 cores. Set the variable higher for a longer soak by hand.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import soak_device
import zmq
from soak_device import SoakProxy, kind_of, ticks_per_client

#: Calls per client (the default keeps the test bounded for CI).
CALLS = int(os.environ.get("FRAMERPC_SOAK_CALLS", "300"))
#: Calls per client before the first memory sample.
WARMUP = max(1, CALLS // 5)
THREAD_CLIENTS = 8
PROCESS_CLIENTS = 2
CLIENTS = THREAD_CLIENTS + PROCESS_CLIENTS
#: Generous bound (s) for a process to start, a barrier or a join: hangs only.
WAIT_S = 60.0
#: Largest RSS growth of the server between warm-up and the end (bytes). A
#: leak of one 1 MiB buffer per buffer call would be about 10 x that.
RSS_GROWTH_LIMIT = 50 * 1024 * 1024

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads RSS from /proc (Linux)"
)


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class ClientThread(threading.Thread):
    """Runs :func:`soak_device.run_client`; keeps its report."""

    def __init__(self, *args: object) -> None:
        super().__init__(name=f"soak client {args[1]}", daemon=True)
        self.args = args
        self.report: dict | None = None

    def run(self) -> None:
        self.report = soak_device.run_client(*self.args)


@pytest.mark.timeout(240)
def test_soak(record_property):
    spawn = multiprocessing.get_context("spawn")
    expected_signals = CLIENTS * ticks_per_client(CALLS)
    barrier = spawn.Barrier(CLIENTS + 1)  # the clients and this test
    results = spawn.Queue()
    to_server, from_server = spawn.Pipe()
    server = spawn.Process(target=soak_device.serve, args=(from_server,), daemon=True)
    server.start()
    processes: list = []
    threads: list[ClientThread] = []
    try:
        deadline = time.monotonic() + WAIT_S
        while not to_server.poll(0.1):
            assert server.is_alive(), f"the server process died ({server.exitcode})"
            assert time.monotonic() < deadline, "the server process did not start"
        url = to_server.recv()
        common = (CALLS, WARMUP, barrier, expected_signals)
        for client in range(THREAD_CLIENTS, CLIENTS):
            process = spawn.Process(
                target=soak_device.client_process,
                args=(url, client, *common, results),
                daemon=True,
            )
            process.start()
            processes.append(process)
        for client in range(THREAD_CLIENTS):
            threads.append(ClientThread(url, client, *common))
            threads[-1].start()

        barrier.wait(WAIT_S)  # every client connected and subscribed
        start = time.perf_counter()
        barrier.wait(WAIT_S)  # every client made its warm-up calls
        rss_warm = rss_bytes(server.pid)
        barrier.wait(WAIT_S)  # every client made all its calls
        elapsed = time.perf_counter() - start
        rss_end = rss_bytes(server.pid)

        reports = [results.get(timeout=WAIT_S) for _ in processes]
        for thread in threads:
            thread.join(WAIT_S)
            assert not thread.is_alive(), f"{thread.name} did not finish"
            reports.append(thread.report)
        for process in processes:
            process.join(WAIT_S)
            assert process.exitcode == 0, f"client process exit {process.exitcode}"

        context = zmq.Context()
        try:
            with SoakProxy(context, url, timeout=10_000) as control:
                server_calls = {c: control.calls(c) for c in range(CLIENTS)}
                emitted = control.emitted()
                assert control.stop_server()
        finally:
            context.term()
        server.join(WAIT_S)
        assert server.exitcode == 0, f"server process exit {server.exitcode}"
    finally:
        for process in [server, *processes]:
            if process.is_alive():
                process.terminate()
                process.join(WAIT_S)
        for thread in threads:
            thread.join(WAIT_S)
        to_server.close()
        results.close()
        results.join_thread()

    total = CLIENTS * CALLS
    rate = total / elapsed
    growth = rss_end - rss_warm
    print(
        f"\nsoak: {total} calls from {CLIENTS} clients in {elapsed:.2f} s: "
        f"{rate:.0f} calls/s; server RSS {rss_warm / 2**20:.1f} -> "
        f"{rss_end / 2**20:.1f} MiB; {len(emitted)} signals x {CLIENTS} subscribers"
    )
    record_property("calls_per_s", round(rate, 1))
    record_property("server_rss_growth_mib", round(growth / 2**20, 2))

    # every reply matched its request (checked call by call in the clients)
    assert sorted(r["client"] for r in reports) == list(range(CLIENTS))
    errors = [e for r in reports for e in r["errors"]]
    assert errors == [], "\n".join(errors[:10])
    # the server saw each call exactly once, in each client's order
    for client, seqs in server_calls.items():
        assert seqs == list(range(CALLS)), f"client {client}: lost or duplicated"
    # every signal emitted reached every subscriber, in emission order
    ticks = [seq for seq in range(CALLS) if kind_of(seq) == "tick"]
    assert len(emitted) == expected_signals
    for client in range(CLIENTS):
        assert [s for c, s in emitted if c == client] == ticks
    for report in reports:
        assert report["signals"] == emitted, (
            f"client {report['client']} received {len(report['signals'])} of "
            f"{len(emitted)} signals, or out of order"
        )
    # the server's memory did not keep growing
    assert growth < RSS_GROWTH_LIMIT, (
        f"server RSS grew by {growth / 2**20:.1f} MiB after the warm-up"
    )


def test_rss_reading_sees_an_allocation():
    """The RSS probe the soak test relies on does move with memory use.

    Fresh anonymous pages, not a bytearray: malloc may serve 64 MiB from
    pages an earlier test left resident, and RSS would not move.
    """
    before = rss_bytes(os.getpid())
    block = mmap.mmap(-1, 64 * 1024 * 1024)
    try:
        for offset in range(0, len(block), mmap.PAGESIZE):  # touch every page
            block[offset] = 1
        assert rss_bytes(os.getpid()) - before > 32 * 1024 * 1024
    finally:
        block.close()


if __name__ == "__main__":  # pragma: no cover - a longer soak by hand
    sys.exit(pytest.main([__file__, "-s", *sys.argv[1:]]))
