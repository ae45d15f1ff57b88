"""Timing loops built on a client's one method, ``call(workload)``, and
cProfile around a block. Imports neither framerpc nor imagezmq."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Protocol

from .workloads import Workload

__all__ = ["BenchClient", "profiled", "sample", "stream"]


class BenchClient(Protocol):
    """What the timing loops need from a client."""

    system: str

    def call(self, workload: Workload) -> None:
        """Do one request of ``workload``, wrap and check the reply."""

    def close(self) -> None:
        """Close the sockets."""


def sample(client: BenchClient, workload: Workload, n: int, warmup: int) -> list[int]:
    """Time ``n`` calls of ``workload`` after ``warmup`` untimed ones.

    Returns
    -------
    list of int
        Latency of each call in nanoseconds.
    """
    call, clock = client.call, time.perf_counter_ns
    for _ in range(warmup):
        call(workload)
    samples = [0] * n
    for i in range(n):
        start = clock()
        call(workload)
        samples[i] = clock() - start
    return samples


def stream(client: BenchClient, workload: Workload, seconds: float) -> dict:
    """Call ``workload`` back to back for ``seconds``.

    Returns
    -------
    dict
        ``frames``, ``seconds`` (measured), ``fps`` and ``mb_per_s`` (1e6 B).
    """
    call, clock = client.call, time.perf_counter
    for _ in range(3):
        call(workload)
    frames, start = 0, clock()
    deadline = start + seconds
    while True:
        call(workload)
        frames += 1
        now = clock()
        if now >= deadline:
            break
    elapsed = now - start
    return {
        "frames": frames,
        "seconds": elapsed,
        "fps": frames / elapsed,
        "mb_per_s": frames * workload.nbytes / elapsed / 1e6,
    }


@contextlib.contextmanager
def profiled(path: str | None, cpu: bool = False) -> Iterator[None]:
    """Run the block under cProfile and dump the stats to ``path`` (if given).

    With ``cpu`` the timer is this thread's CPU time, so time spent blocked
    in a receive or a poll does not count.
    """
    if path is None:
        yield
        return
    import cProfile

    profiler = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(path)
