"""What a run measured: the results, the latency rows, the printed tables,
the JSON document's machine part and the plot."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from .systems import BASELINE, SYSTEMS, base_system, label
from .workloads import BY_NAME, TARGETS, WORKLOADS

__all__ = [
    "Results",
    "latency_rows",
    "machine",
    "path_counts",
    "path_text",
    "plot",
    "print_tables",
]

#: Largest new/baseline ratio of a cell's median that counts as no loss.
BASELINE_TOLERANCE = 1.03
_QUANTILES = (1, 5, 25, 50, 75, 95, 99)
#: The ``RPCServer.stats`` counters whose change tells a frame's path.
_PATH_STATS = ("shm_replies", "shm_copies", "shm_fallbacks")
#: What the "copies" column counts (printed under the table).
COPIES_NOTE = (
    "path and copies: from the framerpc server's stats over each phase (warm-up "
    "calls included). shm: frames sent as references into shared memory "
    "(shm_replies); copies/frame: shm_copies per frame fetched, the copies of a "
    "frame's bytes the server makes (1: a plain array copied into its segment; "
    "0: a FramePool frame referred to where it lies, or a frame sent over the "
    "socket, which the server hands to libzmq without a copy and which the "
    "kernel then copies into the socket and out to the client, not counted)"
)


class Results:
    """Everything measured in one run."""

    def __init__(self) -> None:
        self.samples: dict[tuple[str, str, str], list[int]] = {}
        self.pair_medians: dict[tuple[str, str, str], list[float]] = {}
        self.streams: dict[tuple[str, str], dict] = {}
        #: (system, transport, workload): [server ns, client ns, calls]
        self.cpu: dict[tuple[str, str, str], list[int]] = {}
        #: (system, transport, workload): [frames fetched, shm_replies,
        #: shm_copies, shm_fallbacks] over its phases (framerpc systems)
        self.paths: dict[tuple[str, str, str], list[int]] = {}
        self.implementations: dict[str, set[str]] = {}
        self.libraries: dict[str, set[str]] = {}
        self.errors: list[str] = []


def path_counts(before: dict, after: dict) -> tuple[int, ...]:
    """How much ``shm_replies``, ``shm_copies`` and ``shm_fallbacks`` grew
    from ``before`` to ``after`` (two ``RPCServer.stats``; 0 for a counter
    a server has not, one without shared memory)."""
    return tuple(after.get(key, 0) - before.get(key, 0) for key in _PATH_STATS)


def _paths(counts: list[int] | None) -> dict[str, Any] | None:
    if not counts or not counts[0]:
        return None
    frames, shm, copies, fallbacks = counts
    return {
        "frames": frames,
        "shm_replies": shm,
        "shm_copies": copies,
        "shm_fallbacks": fallbacks,
        "socket": frames - shm,
        "copies_per_frame": copies / frames,
    }


def path_text(paths: dict[str, Any] | None) -> tuple[str, str]:
    """The "path" and "copies" cells of a row's ``paths`` ("-": not known)."""
    if paths is None:
        return "-", "-"
    frames, shm = paths["frames"], paths["shm_replies"]
    if shm == frames:
        path = "shm"
    elif shm == 0:
        path = "socket"
    else:
        path = f"shm {100 * shm / frames:.0f}%"
    return path, f"{paths['copies_per_frame']:.2f}"


def _order(system: str) -> tuple[int, bool]:
    return SYSTEMS.index(base_system(system)), system != base_system(system)


def latency_rows(results: Results) -> list[dict[str, Any]]:
    """One dict per (system, transport, workload), in table order."""
    rows: list[dict[str, Any]] = []
    for (system, transport, name), samples in results.samples.items():
        data = np.asarray(samples, dtype=np.float64)
        # iceoryx2 ("shm") is compared with raw pyzmq's same-host transport
        raw = results.samples.get(
            ("raw", "ipc" if transport == "shm" else transport, name)
        )
        raw_median = float(np.median(raw)) if raw else None
        raw_ipc = results.samples.get(("raw", "ipc", name))
        raw_ipc_median = float(np.median(raw_ipc)) if raw_ipc else None
        median = float(np.median(data))
        medians = results.pair_medians[(system, transport, name)]
        server_ns, client_ns, calls = results.cpu.get(
            (system, transport, name), (0, 0, 0)
        )
        rows.append(
            {
                "system": system,
                "implementation": ", ".join(
                    sorted(results.implementations.get(system, ()))
                ),
                "library": ", ".join(sorted(results.libraries.get(system, ()))),
                "transport": transport,
                "workload": name,
                "nbytes": BY_NAME[name].nbytes,
                "n": len(samples),
                "pairs": len(medians),
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
                "pair_medians_ns": medians,
                "ratio_to_raw": median / raw_median if raw_median else None,
                "ratio_to_raw_ipc": median / raw_ipc_median if raw_ipc_median else None,
                "server_cpu_ns": server_ns / calls if calls else None,
                "client_cpu_ns": client_ns / calls if calls else None,
                "paths": _paths(results.paths.get((system, transport, name))),
            }
        )
    order = {w.name: i for i, w in enumerate(WORKLOADS)}
    rows.sort(
        key=lambda r: (
            order[r["workload"]],
            ("tcp", "ipc", "shm").index(r["transport"]),
            _order(r["system"]),
        )
    )
    return rows


def _ns(value: float) -> str:
    if value < 1e6:
        return f"{value / 1e3:.1f} us"
    return f"{value / 1e6:.2f} ms"


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


def _cpu_per_call(row: dict) -> float | None:
    """CPU ns per call of both processes, or None when not measured."""
    if row["server_cpu_ns"] is None or row["client_cpu_ns"] is None:
        return None
    return float(row["server_cpu_ns"] + row["client_cpu_ns"])


def _cpu_text(row: dict) -> str:
    value = _cpu_per_call(row)
    return "n/a" if value is None else _ns(value)


def _print_latency(rows: list[dict], pairs: int, pinned: bool) -> None:
    print()
    print(
        f"median and p99 round-trip latency, {pairs} process pair(s) per system "
        f"(samples pooled){', pinned to one CPU' if pinned else ''}"
    )
    header = (
        f"{'workload':<8} {'transp':<6} {'system':<19} {'framing':<8} {'n':>6} "
        f"{'median':>10} {'p99':>10} {'vs raw':>7} {'cpu/call':>9} "
        f"{'path':>7} {'copies':>6}  {'pair medians':<26} note"
    )
    print(header)
    print("-" * len(header))
    previous = None
    for row in rows:
        if previous is not None and row["workload"] != previous:
            print()
        previous = row["workload"]
        ratio = row["ratio_to_raw"]
        note = ""
        target = TARGETS.get(row["workload"])
        if row["system"] == "framerpc" and target is not None and ratio is not None:
            note = f"target <= {target:.2f}x: " + (
                "ok" if ratio <= target else "MISSED"
            )
        elif row["transport"] == "shm":
            note = "shared memory; vs raw over ipc"
        unit = _ns(row["median_ns"]).split()[1]
        scale = 1e3 if unit == "us" else 1e6
        pairs_text = "/".join(f"{m / scale:.1f}" for m in row["pair_medians_ns"])
        impl = row["implementation"] if row["system"].startswith("framerpc") else "-"
        path, copies = path_text(row["paths"])
        print(
            f"{row['workload']:<8} {row['transport']:<6} "
            f"{label(row['system']):<19} {impl:<8} {row['n']:>6} "
            f"{_ns(row['median_ns']):>10} {_ns(row['p99_ns']):>10} "
            f"{_ratio(ratio)} {_cpu_text(row):>9} {path:>7} {copies:>6}  "
            f"{pairs_text + ' ' + unit:<26} {note}"
        )
    if any(row["paths"] for row in rows):
        print(textwrap.fill(COPIES_NOTE, 100))


def _print_pairs(rows: list[dict], title: str, twin: Any, check: bool) -> None:
    """A line per row that has a ``twin(row)`` row: median ratio (pooled
    samples) and the median of the per-pair ratios (pair i of both)."""
    matched = [(row, twin(row)) for row in rows]
    matched = [(a, b) for a, b in matched if b is not None]
    if not matched:
        return
    print()
    print(title)
    for row, other in matched:
        ratio = row["median_ns"] / other["median_ns"]
        per_pair = [
            a / b
            for a, b in zip(
                row["pair_medians_ns"], other["pair_medians_ns"], strict=False
            )
            if b
        ]
        cpu, other_cpu = _cpu_per_call(row), _cpu_per_call(other)
        cpu_text = f", cpu {cpu / other_cpu:.3f}x" if cpu and other_cpu else ""
        verdict = ""
        if check:
            verdict = "ok" if ratio <= BASELINE_TOLERANCE else "SLOWER"
            verdict = f"  <= {BASELINE_TOLERANCE:.2f}x: {verdict}"
        print(
            f"  {row['workload']:<8} {row['transport']:<4} "
            f"{label(row['system']):<19} {ratio:.3f}x "
            f"(median of per-pair ratios {float(np.median(per_pair)):.3f}x"
            f"{cpu_text}){verdict}"
        )


def print_tables(rows: list[dict], results: Results, args: Any) -> None:
    """Print the latency table, the comparisons and the stream table."""
    _print_latency(rows, args.pairs, args.pin)

    def pure_twin(row: dict) -> dict | None:
        if row["system"] not in ("framerpc", "framerpc-mv"):
            return None
        pure = row["system"].replace("framerpc", "framerpc-pure")
        return _find(rows, pure, row["transport"], row["workload"])

    def idiom_twin(row: dict) -> dict | None:
        if not base_system(row["system"]).endswith("-mv"):
            return None
        array = row["system"].replace("-mv", "")
        return _find(rows, array, row["transport"], row["workload"])

    def baseline_twin(row: dict) -> dict | None:
        if row["system"].endswith(BASELINE) or row["system"] == "raw":
            return None
        return _find(rows, row["system"] + BASELINE, row["transport"], row["workload"])

    title = "framerpc live framing vs FRAMERPC_PURE=1 (live / pure):"
    _print_pairs(rows, title, pure_twin, False)
    title = "memoryview idiom vs array (memoryview / array):"
    _print_pairs(rows, title, idiom_twin, False)
    title = f"this checkout vs the baseline {args.baseline} (new / baseline):"
    _print_pairs(rows, title, baseline_twin, True)
    if results.streams:
        print()
        seconds = args.stream_seconds
        print(f"sustained stream of {args.stream_workload} frames for {seconds:g} s")
        header = (
            f"{'transp':<6} {'system':<19} {'frames':>7} {'frames/s':>9} "
            f"{'MB/s':>8} {'vs raw':>7}"
        )
        print(header)
        print("-" * len(header))
        for transport in getattr(args, "run_transports", args.transports):
            raw = results.streams.get(
                ("raw", "ipc" if transport == "shm" else transport)
            )
            for system in args.systems:
                result = results.streams.get((system, transport))
                if result is None:
                    continue
                ratio = result["fps"] / raw["fps"] if raw else None
                print(
                    f"{transport:<6} {label(system):<19} {result['frames']:>7} "
                    f"{result['fps']:>9.1f} {result['mb_per_s']:>8.0f} {_ratio(ratio)}"
                )


def machine(results: Results) -> dict[str, Any]:
    """The machine, the libraries' versions and what ran each system."""

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
        "iceoryx2": version("iceoryx2"),
        "implementations": {k: sorted(v) for k, v in results.implementations.items()},
        "libraries": {k: sorted(v) for k, v in results.libraries.items()},
    }


def plot(path: str, rows: list[dict], transports: list[str]) -> str | None:
    """Median latency vs frame size per system; returns a note when skipped."""
    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not importable: --plot skipped"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(transports), figsize=(6 * len(transports), 4.5), squeeze=False
    )
    systems = sorted({row["system"] for row in rows}, key=_order)
    for ax, transport in zip(axes[0], transports, strict=True):
        for system in systems:
            points = sorted(
                (row["nbytes"], row["median_ns"] / 1e6)
                for row in rows
                if row["system"] == system
                # iceoryx2 has no ZeroMQ transport: a reference on every panel
                and row["transport"] in (transport, "shm")
                and row["workload"] != "echo"
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=label(system))
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
