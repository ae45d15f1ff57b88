"""Fixtures of the transport benchmarks: server processes, clients, summary.

Run with ``python -m pytest benchmarks/ -p no:cacheprovider`` (the test
suite in tests/ does not include these). Servers run in spawned processes,
``--bench-pairs`` of them per (system, transport), started on first use and
stopped at the end of the session; clients run in the pytest process and
each benchmark spreads its rounds over its servers in chunks (latencies on
a small VM are bimodal per process pair, so one pair is a lottery). The medians of each
benchmark are collected in a session dict and printed as a raw-vs-framerpc
table at the end (with the memoryview idiom's ratio, framerpc-mv).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from framerpc.tools.bench import processes, systems, timing, workloads

RESULTS = pytest.StashKey[dict]()
IMPLEMENTATIONS = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-transports",
        default="tcp,ipc",
        help="comma-separated transports to benchmark (default: tcp,ipc)",
    )
    parser.addoption(
        "--bench-pin",
        action="store_true",
        help="run the pytest process and the servers on one CPU (taskset -c 0)",
    )
    parser.addoption(
        "--bench-pairs",
        type=int,
        default=3,
        help="server processes per system and transport (default: 3)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RESULTS] = {}
    config.stash[IMPLEMENTATIONS] = {}


@dataclass
class PeerPool:
    """Server processes and in-process clients, ``pairs`` per (system, transport)."""

    workdir: str
    implementations: dict
    pairs: int = 3
    cpus: set[int] | None = None
    servers: dict = field(default_factory=dict)
    clients: dict = field(default_factory=dict)

    def get(self, system: str, transport: str) -> list[timing.BenchClient]:
        """Clients of ``system`` on ``transport``, one per server process.

        The servers are started on first use.
        """
        key = (system, transport)
        if key not in self.clients:
            servers = self.servers.setdefault(key, [])
            for _ in range(self.pairs):
                servers.append(
                    processes.start_server(system, transport, self.workdir, self.cpus)
                )
            self.clients[key] = [systems.make_client(system, s.url) for s in servers]
            self.implementations[f"{system} server"] = servers[0].implementation
            if system == "framerpc":
                from framerpc import framing

                self.implementations["framerpc client"] = framing.IMPLEMENTATION
        return self.clients[key]

    def close(self) -> list[str]:
        """Close the clients and stop the servers; returns the unclean ones."""
        for clients in self.clients.values():
            for client in clients:
                client.close()
        unclean = [
            f"{system} {transport}"
            for (system, transport), servers in self.servers.items()
            for server in servers
            if not processes.stop_server(server)
        ]
        shutil.rmtree(self.workdir, ignore_errors=True)
        return unclean


@pytest.fixture(scope="session")
def peers(pytestconfig: pytest.Config) -> Iterator[PeerPool]:
    """The session's servers and clients, stopped at the end."""
    cpus = None
    saved = os.sched_getaffinity(0)
    if pytestconfig.getoption("--bench-pin"):
        cpus = {min(saved)}
        os.sched_setaffinity(0, cpus)
    pool = PeerPool(
        tempfile.mkdtemp(prefix="framerpc-bench-"),
        pytestconfig.stash[IMPLEMENTATIONS],
        max(1, pytestconfig.getoption("--bench-pairs")),
        cpus,
    )
    yield pool
    unclean = pool.close()
    os.sched_setaffinity(0, saved)
    assert not unclean, f"servers terminated after the stop timeout: {unclean}"


@pytest.fixture(scope="session")
def results(pytestconfig: pytest.Config) -> dict:
    """``{(workload, transport, system): median seconds}`` of the session."""
    return pytestconfig.stash[RESULTS]


def _fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    return f"{seconds * 1e3:8.2f} ms"


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables
def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    results: dict = config.stash.get(RESULTS, {})
    if not results:
        return
    write = terminalreporter.write_line
    terminalreporter.section("framerpc vs raw pyzmq (median latency)")
    impls = config.stash.get(IMPLEMENTATIONS, {})
    write("framing: " + ", ".join(f"{k}={v}" for k, v in sorted(impls.items())))
    pairs = config.getoption("--bench-pairs")
    pinned = ", pinned to one CPU" if config.getoption("--bench-pin") else ""
    write(f"{pairs} server process(es) per system and transport{pinned}")
    header = (
        f"{'workload':<8} {'transport':<9} {'raw':>11} {'framerpc':>11} "
        f"{'ratio':>7} {'mview':>7}  target"
    )
    write(header)
    write("-" * len(header))
    transports = sorted({key[1] for key in results}, key=["tcp", "ipc"].index)
    for workload in workloads.WORKLOADS:
        for transport in transports:
            raw = results.get((workload.name, transport, "raw"))
            ours = results.get((workload.name, transport, "framerpc"))
            if raw is None or ours is None:
                continue
            ratio = ours / raw
            # the memoryview idiom's ratio to raw (framerpc-mv)
            view = results.get((workload.name, transport, "framerpc-mv"))
            view_ratio = f"{view / raw:6.2f}x" if view is not None else "    n/a"
            target = workloads.TARGETS.get(workload.name)
            verdict = ""
            if target is not None:
                verdict = f"<= {target:.2f}x " + ("ok" if ratio <= target else "MISSED")
            write(
                f"{workload.name:<8} {transport:<9} {_fmt_time(raw)} "
                f"{_fmt_time(ours)} {ratio:6.2f}x {view_ratio}  {verdict}"
            )
