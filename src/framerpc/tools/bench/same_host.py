"""Issue 14's same-host figures, from the latency rows of one run.

- a plain array returned by a method (one copy, into shared memory once
  framerpc has its same-host path): framerpc's median for 5.76 MB and
  24.9 MB over raw pyzmq ipc's (``copy=False``) and over iceoryx2's
  request-response with one copy into a loaned slot (``SHM_TARGETS``);
- a 24.9 MB ``FramePool`` frame (zero copies): the "framerpc-pool"
  median over that system's own echo call, and its absolute value
  (``POOL_TARGETS``).

Each ratio comes with the ratio of the CPU time per call of both
processes, the steadier figure on a loaded machine. The runner prints
them after its tables and writes them to its JSON document.
"""

from __future__ import annotations

from typing import Any

from .report import _cpu_per_call, _find, _ns
from .workloads import POOL_TARGETS, POOL_WORKLOAD, SHM_TARGETS, SHM_WORKLOADS

__all__ = ["pool_ratios", "print_same_host", "shm_ratios"]

#: Reference of each ``SHM_TARGETS`` entry: (system, transport).
_REFERENCES = {"raw ipc": ("raw", "ipc"), "iceoryx2": ("iceoryx2", "shm")}


def _cpu_ratio(row: dict, other: dict | None) -> float | None:
    cpu = _cpu_per_call(row)
    other_cpu = _cpu_per_call(other) if other else None
    return cpu / other_cpu if cpu and other_cpu else None


def shm_ratios(rows: list[dict]) -> list[dict[str, Any]]:
    """framerpc's median over raw pyzmq ipc's and over iceoryx2's, per
    transport framerpc ran on, for ``SHM_WORKLOADS``.

    Returns
    -------
    list of dict
        ``workload``, ``transport``, ``framerpc_ns``, then per reference
        (``raw ipc``, ``iceoryx2``): its median (``<ref>_ns``), the ratio
        (``ratio_to_<ref>``), whether it meets ``SHM_TARGETS``
        (``meets_<ref>``) and the ratio of CPU time per call
        (``cpu_ratio_to_<ref>``); ``socket_ns`` and ``ratio_to_socket``:
        "framerpc-socket"'s median and framerpc's over it; None where the
        reference was not measured.
    """
    found = []
    for row in rows:
        if row["system"] != "framerpc" or row["workload"] not in SHM_WORKLOADS:
            continue
        name, median = row["workload"], row["median_ns"]
        entry: dict[str, Any] = {
            "workload": name,
            "transport": row["transport"],
            "framerpc_ns": median,
        }
        for ref, (system, transport) in _REFERENCES.items():
            other = _find(rows, system, transport, name)
            ratio = median / other["median_ns"] if other else None
            entry[f"{ref}_ns"] = other["median_ns"] if other else None
            entry[f"ratio_to_{ref}"] = ratio
            entry[f"meets_{ref}"] = None if ratio is None else ratio <= SHM_TARGETS[ref]
            entry[f"cpu_ratio_to_{ref}"] = _cpu_ratio(row, other)
        # the same fetch with shared memory off ("framerpc-socket")
        socket = _find(rows, "framerpc-socket", row["transport"], name)
        entry["socket_ns"] = socket["median_ns"] if socket else None
        entry["ratio_to_socket"] = median / socket["median_ns"] if socket else None
        found.append(entry)
    return found


def pool_ratios(rows: list[dict]) -> list[dict[str, Any]]:
    """The "framerpc-pool" fetch of ``POOL_WORKLOAD`` against the same
    system's echo, per transport.

    Returns
    -------
    list of dict
        ``transport``, ``pool_ns``, ``echo_ns``, ``ratio_to_echo``,
        ``meets_echo`` (``POOL_TARGETS["vs echo"]``), ``meets_ms``
        (``POOL_TARGETS["ms"]``), ``cpu_ratio_to_echo``, and the plain
        array's median and ratio (``plain_ns``, ``ratio_to_plain``) where
        "framerpc" ran; None where not measured.
    """
    found = []
    for row in rows:
        if row["system"] != "framerpc-pool" or row["workload"] != POOL_WORKLOAD:
            continue
        median, transport = row["median_ns"], row["transport"]
        echo = _find(rows, "framerpc-pool", transport, "echo")
        plain = _find(rows, "framerpc", transport, POOL_WORKLOAD)
        ratio = median / echo["median_ns"] if echo else None
        found.append(
            {
                "transport": transport,
                "pool_ns": median,
                "echo_ns": echo["median_ns"] if echo else None,
                "ratio_to_echo": ratio,
                "meets_echo": None
                if ratio is None
                else ratio <= POOL_TARGETS["vs echo"],
                "meets_ms": median <= POOL_TARGETS["ms"] * 1e6,
                "cpu_ratio_to_echo": _cpu_ratio(row, echo),
                "plain_ns": plain["median_ns"] if plain else None,
                "ratio_to_plain": median / plain["median_ns"] if plain else None,
            }
        )
    return found


def _verdict(ok: bool | None) -> str:
    return "ok" if ok else "MISSED"


def _cpu_text(ratio: float | None) -> str:
    return "" if ratio is None else f" (cpu {ratio:.2f}x)"


def print_same_host(rows: list[dict]) -> None:
    """Print the figures of ``shm_ratios`` and ``pool_ratios`` (if any)."""
    found = shm_ratios(rows)
    if found:
        print()
        targets = ", ".join(f"/ {ref} <= {t:.2f}x" for ref, t in SHM_TARGETS.items())
        print(f"issue 14, a plain array fetched on one host (framerpc {targets}):")
    for entry in found:
        parts = []
        for ref in SHM_TARGETS:
            ratio = entry[f"ratio_to_{ref}"]
            if ratio is None:
                parts.append(f"{ref} not measured")
                continue
            parts.append(
                f"{ref} {_ns(entry[f'{ref}_ns'])}: {ratio:.2f}x "
                f"{_verdict(entry[f'meets_{ref}'])}"
                + _cpu_text(entry[f"cpu_ratio_to_{ref}"])
            )
        if entry["ratio_to_socket"] is not None:
            parts.append(
                f"its socket path {_ns(entry['socket_ns'])}: "
                f"{entry['ratio_to_socket']:.2f}x"
            )
        print(
            f"  {entry['workload']:<8} framerpc {entry['transport']:<4} "
            f"{_ns(entry['framerpc_ns']):>9}   " + "   ".join(parts)
        )
    pools = pool_ratios(rows)
    if pools:
        print()
        print(
            f"issue 14, a {POOL_WORKLOAD} FramePool frame (framerpc pool <= "
            f"{POOL_TARGETS['vs echo']:.2f}x its own echo, <= "
            f"{POOL_TARGETS['ms']:.2f} ms):"
        )
    for entry in pools:
        text = f"  {entry['transport']:<4} {_ns(entry['pool_ns']):>9}: "
        if entry["ratio_to_echo"] is None:
            text += "echo not measured"
        else:
            text += (
                f"{entry['ratio_to_echo']:.1f}x its echo {_ns(entry['echo_ns'])} "
                f"{_verdict(entry['meets_echo'])}"
                + _cpu_text(entry["cpu_ratio_to_echo"])
            )
        text += f", {_verdict(entry['meets_ms'])} in time"
        if entry["ratio_to_plain"] is not None:
            text += (
                f"; plain array {_ns(entry['plain_ns'])}, "
                f"pool / plain {entry['ratio_to_plain']:.2f}x"
            )
        print(text)
