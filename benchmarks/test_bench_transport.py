"""Round-trip latency of framerpc against raw pyzmq REQ/REP, same transport.

Workloads (see ``framerpc.tools.bench.workloads``): an echo call of a 10-character
string, and fetches of 64 KiB, 1 MiB, a 1200x800x3 uint16 frame (5.76 MB)
and a 2160x3840x3 uint8 frame (24.9 MB), each received as a numpy array and
checked for shape and dtype. Raw and framerpc cases of one workload run
next to each other, in alternating order. Each benchmark spreads its rounds
over the system's server processes, a chunk of rounds at a time; choosing
the server happens in pedantic's untimed ``setup``.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from framerpc.tools.bench.workloads import WORKLOADS, Workload

#: framerpc-mv: the documented buffer idiom, memoryview(frame) + shape/dtype
SYSTEMS = ("raw", "framerpc", "framerpc-mv")


def _cases(transports: list[str]) -> list[tuple[str, Workload, str]]:
    cases = []
    for t_index, transport in enumerate(transports):
        for w_index, workload in enumerate(WORKLOADS):
            order = SYSTEMS if (t_index + w_index) % 2 == 0 else SYSTEMS[::-1]
            cases.extend((transport, workload, system) for system in order)
    return cases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        option = metafunc.config.getoption("--bench-transports")
        transports = [name.strip() for name in option.split(",") if name.strip()]
        cases = _cases(transports)
        ids = [f"{t}-{w.name}-{s}" for t, w, s in cases]
        metafunc.parametrize("case", cases, ids=ids)


def test_roundtrip(
    benchmark: BenchmarkFixture,
    peers: Any,
    results: dict,
    case: tuple[str, Workload, str],
) -> None:
    """Time one request/reply of ``case`` = (transport, workload, system)."""
    transport, workload, system = case
    clients = peers.get(system, transport)
    benchmark.group = f"{transport} {workload.name}"
    benchmark.extra_info.update(
        system=system, nbytes=workload.nbytes, servers=len(clients)
    )
    rounds = workload.samples
    for client in clients:
        for _ in range(3):
            client.call(workload)
    chunk = max(1, rounds // (4 * len(clients)))
    order = itertools.cycle([c for c in clients for _ in range(chunk)])

    def setup() -> tuple[tuple, dict]:
        return (next(order), workload), {}

    benchmark.pedantic(
        type(clients[0]).call,  # the unbound method: no wrapper in the timing
        setup=setup,
        rounds=rounds,
        warmup_rounds=max(5, rounds // 10),
    )
    if benchmark.stats:  # None with --benchmark-disable
        results[(workload.name, transport, system)] = benchmark.stats.stats.median
