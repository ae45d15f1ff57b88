"""The compiled ``copy_into`` alone against split with its worker thread
(``ext/_parcopy.h``), for the sizes, chunks and thresholds given: the
numbers behind the header's defaults (issue 14).

Each copy follows a pause (``--gap-us``, like the time between two replies)
so that the worker is asleep on its futex when the copy starts, as in a
server. Modes interleave copy by copy, so load on the machine hits both.

    python benchmarks/bench_parcopy.py --sizes 1MB,2MB,5.76MB,24.9MB \
        --chunks 128K,256K,512K,1M --copies 300
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

_UNITS = {"K": 1 << 10, "M": 1 << 20, "KB": 1000, "MB": 1_000_000}


def parse_size(text: str) -> int:
    """``"5.76MB"`` -> 5760000, ``"256K"`` -> 262144, ``"4096"`` -> 4096."""
    for unit in sorted(_UNITS, key=len, reverse=True):
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * _UNITS[unit])
    return int(text)


def report(compiled, segment, value: np.ndarray, chunk: int, args) -> None:
    """Copy ``value`` alone, split, and split with the worker kept off the
    caller's CPU, interleaved; print the medians."""
    every = {"alone": (2, 0), "split": (0, 0), "split, off caller's CPU": (0, 1)}
    variants = {name: every[name] for name in ("alone", *args.split)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    counts: dict[str, dict[str, int]] = {name: {} for name in variants}
    keys = ("jobs", "joined", "chunks", "worker_chunks", "slept", "same_cpu", "moved")
    for _ in range(args.copies):
        for name, (mode, avoid) in variants.items():
            compiled._copier_configure(
                threshold=1, chunk=chunk, spin=args.spin, mode=mode, avoid=avoid
            )
            time.sleep(args.gap_us / 1e6)
            before = compiled.copier_stats()
            start = time.perf_counter()
            compiled.copy_into(segment, value)
            times[name].append(time.perf_counter() - start)
            after = compiled.copier_stats()
            for key in keys:
                counts[name][key] = counts[name].get(key, 0) + after[key] - before[key]
    alone = statistics.median(times["alone"]) * 1e6
    line = f"{value.nbytes / 1e6:6.2f} MB chunk {chunk >> 10:4d} KiB: "
    line += f"alone {alone:7.1f} us"
    for name in list(variants)[1:]:
        took = statistics.median(times[name]) * 1e6
        c = counts[name]
        line += (
            f" | {name} {took:7.1f} us ({took / alone:.2f}x, worker joined "
            f"{c['joined'] / max(1, c['jobs']):.0%}, copied "
            f"{c['worker_chunks'] / max(1, c['chunks']):.0%}, on caller's CPU "
            f"{c['same_cpu']}, slept {c['slept']}, moved {c['moved']})"
        )
    print(line)


def main() -> None:
    """Print one line per size and chunk: median copy alone and split."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1MB,2MB,5.76MB,24.9MB")
    parser.add_argument("--chunks", default="256K")
    parser.add_argument("--copies", type=int, default=300)
    parser.add_argument("--gap-us", type=float, default=300.0)
    parser.add_argument("--spin", type=int, default=-1, help="caller's spin loops")
    parser.add_argument(
        "--only-off",
        dest="split",
        action="store_const",
        const=("split, off caller's CPU",),
        default=("split", "split, off caller's CPU"),
        help="no plain split: the worker stays off the caller's CPU throughout",
    )
    args = parser.parse_args()

    from framerpc.transport import shm as segments
    from framerpc.wire import _shmpath as compiled

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    chunks = [parse_size(s) for s in args.chunks.split(",")]
    segment = segments.Segment(segments.round_pages(max(sizes)))
    compiled.hold_copier()
    print(f"cpus allowed: {len(os.sched_getaffinity(0))}, load {os.getloadavg()}")
    try:
        for size in sizes:
            value = np.random.default_rng(1).integers(0, 255, size, np.uint8)
            for chunk in chunks:
                report(compiled, segment, value, chunk, args)
    finally:
        compiled._copier_configure(
            threshold=7 << 19, chunk=256 << 10, spin=1000, mode=0, avoid=1
        )
        compiled.release_copier()
        segment.close()


if __name__ == "__main__":
    main()
