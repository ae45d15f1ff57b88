"""Benchmark framerpc against raw pyzmq (and imageZMQ when installed).

    python benchmarks/run.py [--quick] [--transports tcp,ipc] [--pairs 3]
                             [--json out.json] [--plot out.png]
                             [--stream-seconds 10] [--pin]
                             [--systems raw,framerpc,framerpc-pure,imagezmq]

Systems: raw pyzmq REQ/REP with ``copy=False`` (the baseline), framerpc
with its live framing layer, framerpc with ``FRAMERPC_PURE=1`` (client and
server), and imageZMQ's ``send_array``/``recv_array`` when ``imagezmq`` is
importable. Workloads: an echo call of a 10-character string and fetches of
64 KiB, 1 MiB, a 5.76 MB uint16 frame and a 24.9 MB uint8 frame, each
received as a numpy array and checked.

Every system runs in ``--pairs`` independent server/client process pairs
whose samples are pooled (latencies on a small VM are bimodal per pair);
the order of the systems rotates from pair to pair. Every pair runs the
workloads in the same order; imageZMQ, which has no echo call, makes the
same number of plain round trips on its socket instead, untimed. The last pair of each
system also streams 24.9 MB frames back to back for ``--stream-seconds``.

Progress goes to stderr, the tables to stdout. ``main`` is the entry
point (``framerpc bench`` loads this file by path).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import zmq

from . import _peers

__all__ = ["main"]

#: Longest silence (s) from a client process before it is declared hung.
CLIENT_TIMEOUT_S = 300.0
STREAM_WORKLOAD = "24.9MB"
LABELS = {
    "raw": "raw pyzmq",
    "framerpc": "framerpc",
    "framerpc-mv": "framerpc mview",
    "framerpc-pure": "framerpc PURE",
    "framerpc-pure-mv": "frpc PURE mview",
    "imagezmq": "imageZMQ",
}


class Results:
    """Everything measured in one run.

    A plain class, not a dataclass: this file may be loaded by path under
    any module name (``framerpc bench``), which dataclasses cannot resolve.
    """

    def __init__(self) -> None:
        self.samples: dict[tuple[str, str, str], list[int]] = {}
        self.pair_medians: dict[tuple[str, str, str], list[float]] = {}
        self.streams: dict[tuple[str, str], dict] = {}
        self.implementations: dict[str, set[str]] = {}
        self.errors: list[str] = []


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
        "--transports", default="tcp,ipc", help="comma-separated (default tcp,ipc)"
    )
    parser.add_argument(
        "--systems",
        default="raw,framerpc,framerpc-pure,imagezmq",
        help="comma-separated subset of raw,framerpc,framerpc-pure,imagezmq",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(w.name for w in _peers.WORKLOADS),
        help="comma-separated subset of the workloads (run in the usual order)",
    )
    parser.add_argument(
        "--pairs", type=int, default=3, help="server/client process pairs per system"
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
    chosen = _split(args.systems, _peers.SYSTEMS, parser)
    args.systems = [name for name in _peers.SYSTEMS if name in chosen]
    names = [w.name for w in _peers.WORKLOADS]
    chosen = _split(args.workloads, names, parser)
    args.workloads = [name for name in names if name in chosen]
    return args


def _split(text: str, allowed: Sequence[str], parser: argparse.ArgumentParser) -> list:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        parser.error(f"choose among {', '.join(allowed)} (got {text!r})")
    return names


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
    for workload in _peers.WORKLOADS:
        if workloads is not None and workload.name not in workloads:
            continue
        n = workload.quick if quick else workload.samples
        warmup = max(3, n // 10)
        if _peers.supports(system, workload):
            plan.append((workload.name, n, warmup))
        else:
            plan.append((workload.name, 0, n + warmup))
    return tuple(plan)


def _run_pair(
    system: str,
    transport: str,
    job: _peers.ClientJob,
    workdir: str,
    cpus: set[int] | None,
    results: Results,
    progress: Progress,
    label: str,
) -> None:
    """Measure ``job`` with one fresh server process and one client process."""
    client = _peers.ClientProcess(system, job, cpus)
    server = None
    try:
        server = _peers.start_server(system, transport, workdir, cpus)
        client.go(server.url)
        impls = results.implementations.setdefault(system, set())
        impls.update((server.implementation, client.implementation))
        if system.startswith("framerpc-pure") and impls != {"pure"}:
            raise RuntimeError(f"FRAMERPC_PURE=1 did not force pure framing: {impls}")
        for message in client.messages(CLIENT_TIMEOUT_S):
            kind, name = message[0], message[1]
            if kind == "start":
                progress.step(f"{LABELS[system]} {transport} {name} {label}")
            elif kind == "samples" and message[2]:  # none: an untimed phase
                key = (system, transport, name)
                results.samples.setdefault(key, []).extend(message[2])
                median = float(np.median(message[2]))
                results.pair_medians.setdefault(key, []).append(median)
            elif kind == "stream":
                results.streams[(system, transport)] = message[2]
    finally:
        client.close()
        if server is not None and not _peers.stop_server(server):
            progress.note(f"note: {system} {transport} server needed terminate()")


def _machine(results: Results) -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "numpy": np.__version__,
        "msgpack": version("msgpack"),
        "framerpc": version("framerpc"),
        "imagezmq": version("imagezmq"),
        "implementations": {k: sorted(v) for k, v in results.implementations.items()},
    }


def _latency_rows(results: Results) -> list[dict[str, Any]]:
    rows = []
    for (system, transport, name), samples in results.samples.items():
        data = np.asarray(samples, dtype=np.float64)
        raw = results.samples.get(("raw", transport, name))
        raw_median = float(np.median(raw)) if raw else None
        median = float(np.median(data))
        rows.append(
            {
                "system": system,
                "implementation": ", ".join(
                    sorted(results.implementations.get(system, ()))
                ),
                "transport": transport,
                "workload": name,
                "nbytes": _BY_NAME[name].nbytes,
                "n": len(samples),
                "pairs": len(results.pair_medians[(system, transport, name)]),
                "median_ns": median,
                "p99_ns": float(np.percentile(data, 99)),
                "mean_ns": float(data.mean()),
                "min_ns": float(data.min()),
                "percentiles_ns": {
                    str(q): float(v)
                    for q, v in zip(
                        _QUANTILES, np.percentile(data, _QUANTILES), strict=True
                    )
                },
                "pair_medians_ns": results.pair_medians[(system, transport, name)],
                "ratio_to_raw": median / raw_median if raw_median else None,
            }
        )
    order = {w.name: i for i, w in enumerate(_peers.WORKLOADS)}
    systems = list(_peers.SYSTEMS)
    rows.sort(
        key=lambda r: (
            order[r["workload"]],
            r["transport"] != "tcp",
            systems.index(r["system"]),
        )
    )
    return rows


_BY_NAME = {w.name: w for w in _peers.WORKLOADS}
_QUANTILES = (1, 5, 25, 50, 75, 95, 99)


def _ns(value: float) -> str:
    if value < 1e6:
        return f"{value / 1e3:.1f} us"
    return f"{value / 1e6:.2f} ms"


def _print_tables(rows: list[dict], results: Results, args: argparse.Namespace) -> None:
    print()
    print(
        f"median and p99 round-trip latency, {args.pairs} process pair(s) per system "
        f"(samples pooled){', pinned to one CPU' if args.pin else ''}"
    )
    header = (
        f"{'workload':<8} {'transp':<6} {'system':<14} {'framing':<8} {'n':>6} "
        f"{'median':>10} {'p99':>10} {'vs raw':>7}  {'pair medians':<26} note"
    )
    print(header)
    print("-" * len(header))
    previous = None
    for row in rows:
        group = (row["workload"], row["transport"])
        if previous is not None and group[0] != previous[0]:
            print()
        previous = group
        ratio = row["ratio_to_raw"]
        note = ""
        target = _peers.TARGETS.get(row["workload"])
        if row["system"] == "framerpc" and target is not None and ratio is not None:
            note = f"target <= {target:.2f}x: " + (
                "ok" if ratio <= target else "MISSED"
            )
        unit = _ns(row["median_ns"]).split()[1]
        scale = 1e3 if unit == "us" else 1e6
        pairs = "/".join(f"{m / scale:.1f}" for m in row["pair_medians_ns"])
        impl = row["implementation"] if row["system"].startswith("framerpc") else "-"
        print(
            f"{row['workload']:<8} {row['transport']:<6} "
            f"{LABELS[row['system']]:<14} {impl:<8} {row['n']:>6} "
            f"{_ns(row['median_ns']):>10} {_ns(row['p99_ns']):>10} "
            f"{_ratio(ratio)}  {pairs + ' ' + unit:<26} {note}"
        )
    live_pure = [
        (row, _find(rows, "framerpc-pure", row["transport"], row["workload"]))
        for row in rows
        if row["system"] == "framerpc"
    ]
    live_pure = [(live, pure) for live, pure in live_pure if pure is not None]
    if live_pure:
        print()
        print("framerpc live framing vs FRAMERPC_PURE=1 (median live / median pure):")
        for live, pure in live_pure:
            print(
                f"  {live['workload']:<8} {live['transport']:<4} "
                f"{live['implementation']}/{pure['implementation']}: "
                f"{live['median_ns'] / pure['median_ns']:.2f}x"
            )
    if results.streams:
        print()
        seconds = args.stream_seconds
        print(f"sustained stream of {STREAM_WORKLOAD} frames for {seconds:g} s")
        header = (
            f"{'transp':<6} {'system':<14} {'frames':>7} {'frames/s':>9} "
            f"{'MB/s':>8} {'vs raw':>7}"
        )
        print(header)
        print("-" * len(header))
        for transport in args.transports:
            raw = results.streams.get(("raw", transport))
            for system in args.systems:
                result = results.streams.get((system, transport))
                if result is None:
                    continue
                ratio = result["fps"] / raw["fps"] if raw else None
                print(
                    f"{transport:<6} {LABELS[system]:<14} {result['frames']:>7} "
                    f"{result['fps']:>9.1f} {result['mb_per_s']:>8.0f} {_ratio(ratio)}"
                )


def _ratio(value: float | None) -> str:
    return "    n/a" if value is None else f"{value:>6.2f}x"


def _find(rows: list[dict], system: str, transport: str, name: str) -> dict | None:
    for row in rows:
        if (row["system"], row["transport"], row["workload"]) == (
            system,
            transport,
            name,
        ):
            return row
    return None


def _plot(path: str, rows: list[dict], transports: list[str]) -> str | None:
    """Median latency vs frame size per system; returns a note when skipped."""
    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not importable: --plot skipped"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(transports), figsize=(6 * len(transports), 4.5), squeeze=False
    )
    for ax, transport in zip(axes[0], transports, strict=True):
        for system in _peers.SYSTEMS:
            points = sorted(
                (row["nbytes"], row["median_ns"] / 1e6)
                for row in rows
                if row["system"] == system
                and row["transport"] == transport
                and row["workload"] != "echo"
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=LABELS[system])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("frame size (bytes)")
        ax.set_ylabel("median latency (ms)")
        ax.set_title(f"{transport}: fetch latency")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


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
    systems = list(args.systems)
    if "imagezmq" in systems and importlib.util.find_spec("imagezmq") is None:
        systems.remove("imagezmq")
        notes.append("imageZMQ is not importable (pip install imagezmq): skipped")
    args.systems = systems
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
        plan = _plan(system, args.quick, args.workloads)
        streamed = (
            STREAM_WORKLOAD
            if args.stream_seconds > 0
            and any(name == STREAM_WORKLOAD for name, *_ in plan)
            else None
        )
        jobs[system] = (
            _peers.ClientJob(plan),
            _peers.ClientJob(plan, streamed, args.stream_seconds),
        )
    total = (
        args.pairs * len(args.transports) * sum(len(j[0].plan) for j in jobs.values())
    )
    total += len(args.transports) * sum(
        1 for j in jobs.values() if j[1].stream_workload
    )
    progress = Progress(total)
    for note in notes:
        progress.note(f"note: {note}")
    results = Results()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="framerpc-bench-") as workdir:
        for pair in range(args.pairs):
            shift = pair % len(systems)
            order = systems[shift:] + systems[:shift]
            last = pair == args.pairs - 1
            for transport in args.transports:
                for system in order:
                    job = jobs[system][1 if last else 0]
                    label = f"(pair {pair + 1}/{args.pairs})"
                    try:
                        _run_pair(
                            system,
                            transport,
                            job,
                            workdir,
                            cpus,
                            results,
                            progress,
                            label,
                        )
                    except Exception as exc:
                        message = f"{system} {transport} pair {pair + 1}: {exc}"
                        results.errors.append(message)
                        progress.note(f"error: {message}")
    progress.close()
    elapsed = time.monotonic() - started
    rows = _latency_rows(results)
    _print_tables(rows, results, args)
    for note in notes:
        print(f"note: {note}")
    print(f"total time {elapsed:.1f} s")
    if args.json:
        document = {
            "machine": _machine(results),
            "config": {
                "quick": args.quick,
                "pairs": args.pairs,
                "transports": args.transports,
                "systems": systems,
                "pin": sorted(cpus) if cpus else None,
                "stream_seconds": args.stream_seconds,
                "targets": _peers.TARGETS,
            },
            "latency": rows,
            "stream": [
                {"system": system, "transport": transport, "workload": STREAM_WORKLOAD}
                | result
                for (system, transport), result in results.streams.items()
            ],
            "notes": notes,
            "errors": results.errors,
            "elapsed_s": elapsed,
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    if args.plot:
        skipped = _plot(args.plot, rows, args.transports)
        if skipped:
            print(f"note: {skipped}", file=sys.stderr)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
