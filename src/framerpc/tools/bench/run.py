"""Benchmark framerpc against raw pyzmq (and imageZMQ, iceoryx2 when installed).

    framerpc bench [--quick] [--transports tcp,ipc] [--pairs 3]
                   [--systems raw,framerpc,framerpc-mv,...] [--workloads ...]
                   [--baseline PATH] [--json out.json] [--plot out.png]
                   [--stream-seconds 10] [--pin]

Systems: raw pyzmq REQ/REP with ``copy=False`` (the reference), framerpc
with its live framing layer returning the array ("framerpc") or the
documented idiom, ``memoryview(array)`` with shape and dtype in the info
dict ("framerpc-mv"), the same two with ``FRAMERPC_PURE=1`` (client and
server), imageZMQ's ``send_array``/``recv_array`` when ``imagezmq`` is
importable, and iceoryx2's request-response over shared memory (one copy
into a loaned slot; ``iceoryx``) when ``iceoryx2`` is importable: it runs
on its own transport, "shm", whatever ``--transports`` says, and its
"vs raw" ratio is to raw pyzmq over ipc. Workloads: an echo call of a
10-character string and fetches of 64 KiB, 1 MiB, a 5.76 MB uint16 frame
and a 24.9 MB uint8 frame, each received as a numpy array and checked.
"framerpc-pool" (not run by default) returns a ``FramePool`` frame. The
tables end with issue 14's ratios (``same_host``): framerpc's 5.76 MB and
24.9 MB fetches over raw pyzmq ipc's and iceoryx2's, and the pool's 24.9 MB
fetch over its echo.

Every system runs in ``--pairs`` independent server/client process pairs
whose samples are pooled (latencies on a small VM are bimodal per pair);
the order of the systems rotates from pair to pair. Every pair runs the
workloads in the same order; imageZMQ, which has no echo call, makes the
same number of plain round trips on its socket instead, untimed. The last
pair of each system also streams 24.9 MB frames back to back for
``--stream-seconds``.

``--baseline PATH`` runs every chosen framerpc system a second time
against the framerpc checkout at PATH (its ``src`` folder, built), as
``<system>@baseline``, each right after its twin in every pair, and
prints the ratio new / baseline of each cell.

Progress goes to stderr, the tables to stdout. ``main`` is the entry
point (``framerpc bench``, ``python -m framerpc.bench.run`` and
``benchmarks/run.py`` call it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from . import processes, report, same_host
from .systems import BASELINE, SYSTEMS, base_system, label, supports, transports
from .workloads import BY_NAME, POOL_TARGETS, SHM_TARGETS, TARGETS, WORKLOADS

__all__ = ["main"]

#: Longest silence (s) from a client process before it is declared hung.
CLIENT_TIMEOUT_S = 300.0
STREAM_WORKLOAD = "24.9MB"


class Progress:
    """A plain-text progress line on a stream: ``[ 12/40] framerpc tcp 24.9MB``."""

    def __init__(self, total: int, out: TextIO = sys.stderr) -> None:
        self.total, self.done, self.out = total, 0, out
        self._tty = out.isatty()
        self._width = len(str(total))

    def step(self, text: str) -> None:
        """Count one step and show ``text``."""
        self.done += 1
        line = f"[{self.done:>{self._width}}/{self.total}] {text}"
        if self._tty:
            self.out.write("\r\x1b[2K" + line)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """Print a message on its own line."""
        if self._tty and self.done:
            self.out.write("\n")
        self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        """End the progress line."""
        if self._tty and self.done:
            self.out.write("\n")
            self.out.flush()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="framerpc bench",
        description="Latency and throughput of framerpc vs raw pyzmq.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples (<1 min)")
    parser.add_argument(
        "--transports",
        default="tcp,ipc",
        help="comma-separated (default tcp,ipc; iceoryx2 runs on shared memory)",
    )
    parser.add_argument(
        "--systems",
        default="raw,framerpc,framerpc-mv,framerpc-pure,imagezmq,iceoryx2",
        help=f"comma-separated subset of {','.join(SYSTEMS)}",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(w.name for w in WORKLOADS),
        help="comma-separated subset of the workloads (run in the usual order)",
    )
    parser.add_argument(
        "--pairs", type=int, default=3, help="server/client process pairs per system"
    )
    parser.add_argument(
        "--baseline",
        metavar="PATH",
        help="also run the framerpc systems against the framerpc checkout at "
        "PATH (its built src folder), side by side",
    )
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG (matplotlib)")
    parser.add_argument(
        "--stream-seconds",
        type=float,
        default=None,
        help="seconds of back-to-back 24.9 MB fetches (default 10, 2 with --quick)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run client and server on one CPU (like taskset -c 0)",
    )
    args = parser.parse_args(argv)
    if args.stream_seconds is None:
        args.stream_seconds = 2.0 if args.quick else 10.0
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    args.transports = _split(args.transports, ("tcp", "ipc"), parser)
    chosen = _split(args.systems, SYSTEMS, parser)
    args.systems = [name for name in SYSTEMS if name in chosen]
    names = [w.name for w in WORKLOADS]
    chosen = _split(args.workloads, names, parser)
    args.workloads = [name for name in names if name in chosen]
    if args.baseline is not None:
        args.baseline = _library(args.baseline, parser)
    args.stream_workload = STREAM_WORKLOAD
    return args


def _split(text: str, allowed: Sequence[str], parser: argparse.ArgumentParser) -> list:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        parser.error(f"choose among {', '.join(allowed)} (got {text!r})")
    return names


def _library(path: str, parser: argparse.ArgumentParser) -> str:
    """The folder holding the framerpc package of the checkout at ``path``."""
    root = Path(path).resolve()
    for folder in (root / "src", root):
        if (folder / "framerpc" / "__init__.py").is_file():
            return str(folder)
    parser.error(f"--baseline: no framerpc package in {root} or {root / 'src'}")


def _plan(
    system: str, quick: bool, workloads: Sequence[str] | None = None
) -> tuple[tuple[str, int, int], ...]:
    """(workload, timed calls, warm-up calls) for each workload in order.

    A workload ``system`` has no version of to report still runs, all of
    it untimed, so that every pair reaches the frames after the same
    history: on a small VM a pair's scheduling settles during its first
    phase. imageZMQ's pairs, which used to start straight on 64 KiB
    frames, measured 0.74-0.79x of raw on 1 MiB over ipc in four runs
    where raw's pairs began with echo, and 1.28x with every pair of every
    system running 1 MiB alone.
    """
    plan = []
    for workload in WORKLOADS:
        if workloads is not None and workload.name not in workloads:
            continue
        n = workload.quick if quick else workload.samples
        warmup = max(3, n // 10)
        if supports(system, workload):
            plan.append((workload.name, n, warmup))
        else:
            plan.append((workload.name, 0, n + warmup))
    return tuple(plan)


def _run_pair(
    system: str,
    transport: str,
    job: processes.ClientJob,
    workdir: str,
    cpus: set[int] | None,
    library: str | None,
    results: report.Results,
    progress: Progress,
    tag: str,
) -> None:
    """Measure ``job`` with one fresh server process and one client process."""
    client = processes.ClientProcess(system, job, cpus, library)
    server = None
    try:
        server = processes.start_server(
            system, transport, workdir, cpus, library=library
        )
        client.go(server.url)
        impls = results.implementations.setdefault(system, set())
        impls.update((server.implementation, client.implementation))
        libraries = {server.library, client.library} - {""}
        results.libraries.setdefault(system, set()).update(libraries)
        pure = base_system(system).startswith("framerpc-pure")
        if pure and impls != {"pure"}:
            raise RuntimeError(f"FRAMERPC_PURE=1 did not force pure framing: {impls}")
        expected = library or processes.own_library()
        if libraries - {expected}:
            raise RuntimeError(f"ran framerpc from {libraries}, not from {expected}")
        calls = {name: n + warmup for name, n, warmup in job.plan}
        started: tuple = (None, None)
        counted: dict = {}  # the server's stats when the phase started
        counts = system.startswith("framerpc")  # the others have no stats
        for message in client.messages(CLIENT_TIMEOUT_S):
            kind, name = message[0], message[1]
            if kind == "start":
                progress.step(f"{label(system)} {transport} {name} {tag}")
                counted = {}  # read first: its CPU is not the phase's
                if counts and name in calls and not BY_NAME[name].is_echo:
                    counted = processes.server_stats(server)
                started = _cpu(server, client)
            elif kind == "samples" and message[2]:  # none: an untimed phase
                key = (system, transport, name)
                results.samples.setdefault(key, []).extend(message[2])
                median = float(np.median(message[2]))
                results.pair_medians.setdefault(key, []).append(median)
                used = [
                    None if a is None or b is None else b - a
                    for a, b in zip(started, _cpu(server, client), strict=True)
                ]
                server_ns, client_ns = used  # the whole phase: warm-up calls too
                if server_ns is not None and client_ns is not None:
                    total = results.cpu.setdefault(key, [0, 0, 0])
                    total[0] += server_ns
                    total[1] += client_ns
                    total[2] += calls[name]
                if counted:  # which path the phase's frames took
                    paths = results.paths.setdefault(key, [0, 0, 0, 0])
                    after = processes.server_stats(server)
                    deltas = report.path_counts(counted, after)
                    for i, n in enumerate((calls[name], *deltas)):
                        paths[i] += n
            elif kind == "stream":
                results.streams[(system, transport)] = message[2]
            if kind in ("start", "samples"):
                client.go_on()  # the client waits for it (CPU counters read)
    finally:
        client.close()
        if server is not None and not processes.stop_server(server):
            progress.note(f"note: {system} {transport} server needed terminate()")


def _cpu(server: processes.ServerHandle, client: processes.ClientProcess) -> tuple:
    return processes.cpu_ns(server.process), processes.cpu_ns(client.process)


def _systems(args: argparse.Namespace, notes: list[str]) -> list[str]:
    """The systems to run, each baseline twin right after its system."""
    systems = list(args.systems)
    if "imagezmq" in systems and importlib.util.find_spec("imagezmq") is None:
        systems.remove("imagezmq")
        notes.append("imageZMQ is not importable (pip install imagezmq): skipped")
    if "iceoryx2" in systems and importlib.util.find_spec("iceoryx2") is None:
        systems.remove("iceoryx2")
        notes.append("iceoryx2 is not importable (pip install iceoryx2): skipped")
    if args.baseline is None:
        return systems
    twinned = []
    for system in systems:
        twinned.append(system)
        if system.startswith("framerpc"):
            twinned.append(system + BASELINE)
    return twinned


def _cells(order: Sequence[str], chosen: Sequence[str]) -> list[tuple[str, str]]:
    """(transport, system) in the order a pair runs them: the ``chosen``
    transports, then a system's own ("shm" for iceoryx2), each once."""
    every: list[str] = list(chosen)
    for system in order:
        every += [t for t in transports(system, chosen) if t not in every]
    return [(t, s) for t in every for s in order if t in transports(s, chosen)]


def _document(args, systems, cpus, rows, results, notes, elapsed) -> dict:
    return {
        "machine": report.machine(results),
        "config": {
            "quick": args.quick,
            "pairs": args.pairs,
            "transports": args.transports,
            "systems": systems,
            "workloads": args.workloads,
            "baseline": args.baseline,
            "pin": sorted(cpus) if cpus else None,
            "stream_seconds": args.stream_seconds,
            "targets": TARGETS,
            "shm_targets": SHM_TARGETS,
            "pool_targets": POOL_TARGETS,
        },
        "latency": rows,
        "shm_ratios": same_host.shm_ratios(rows),
        "pool_ratios": same_host.pool_ratios(rows),
        "stream": [
            {"system": system, "transport": transport, "workload": STREAM_WORKLOAD}
            | result
            for (system, transport), result in results.streams.items()
        ],
        "notes": notes,
        "errors": results.errors,
        "elapsed_s": elapsed,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (0, or 1 if a pair failed).

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments without the program name (default:
        ``sys.argv[1:]``).
    """
    args = _parse(argv)
    notes: list[str] = []
    systems = args.systems = _systems(args, notes)
    if not systems:
        print("nothing to measure: " + "; ".join(notes), file=sys.stderr)
        return 2
    cpus = {min(os.sched_getaffinity(0))} if args.pin else None
    if cpus is None and len(os.sched_getaffinity(0)) <= 4:
        notes.append(
            "not pinned: on few CPUs, cross-CPU wake-ups dominate small calls and "
            "vary from pair to pair (see pair medians); --pin compares CPU cost"
        )
    jobs = {}
    for system in systems:
        plan = _plan(base_system(system), args.quick, args.workloads)
        streamed = (
            STREAM_WORKLOAD
            if args.stream_seconds > 0
            and any(name == STREAM_WORKLOAD for name, *_ in plan)
            else None
        )
        jobs[system] = (
            processes.ClientJob(plan),
            processes.ClientJob(plan, streamed, args.stream_seconds),
        )
    cells = _cells(systems, args.transports)
    args.run_transports = list(dict.fromkeys(t for t, _ in cells))
    total = args.pairs * sum(len(jobs[s][0].plan) for _, s in cells)
    total += sum(1 for _, s in cells if jobs[s][1].stream_workload)
    progress = Progress(total)
    for note in notes:
        progress.note(f"note: {note}")
    results = report.Results()
    # a baseline twin stays next to its system when the order rotates
    groups: list[list[str]] = []
    for system in systems:
        if system.endswith(BASELINE):
            groups[-1].append(system)
        else:
            groups.append([system])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="framerpc-bench-") as workdir:
        for pair in range(args.pairs):
            shift = pair % len(groups)
            rotated = groups[shift:] + groups[:shift]
            # and goes first in every other pair
            order = [s for g in rotated for s in (g[::-1] if pair % 2 else g)]
            last = pair == args.pairs - 1
            for transport, system in _cells(order, args.transports):
                library = args.baseline if system.endswith(BASELINE) else None
                try:
                    _run_pair(
                        system,
                        transport,
                        jobs[system][1 if last else 0],
                        workdir,
                        cpus,
                        library,
                        results,
                        progress,
                        f"(pair {pair + 1}/{args.pairs})",
                    )
                except Exception as exc:
                    message = f"{system} {transport} pair {pair + 1}: {exc}"
                    results.errors.append(message)
                    progress.note(f"error: {message}")
    progress.close()
    elapsed = time.monotonic() - started
    rows = report.latency_rows(results)
    report.print_tables(rows, results, args)
    same_host.print_same_host(rows)
    for note in notes:
        print(f"note: {note}")
    print(f"total time {elapsed:.1f} s")
    if args.json:
        document = _document(args, systems, cpus, rows, results, notes, elapsed)
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    if args.plot:
        skipped = report.plot(args.plot, rows, args.transports)
        if skipped:
            print(f"note: {skipped}", file=sys.stderr)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
