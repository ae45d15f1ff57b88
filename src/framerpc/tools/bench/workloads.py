"""What the benchmark asks for: the workloads, their frames and checks.

Imports neither framerpc nor imagezmq (see ``processes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BY_NAME",
    "ECHO_TEXT",
    "POOL_TARGETS",
    "POOL_WORKLOAD",
    "SHM_TARGETS",
    "SHM_WORKLOADS",
    "TARGETS",
    "WORKLOADS",
    "Workload",
    "check",
    "check_echo",
    "frames",
    "make_frame",
]

#: The string an echo call sends and expects back (10 characters).
ECHO_TEXT = "abcdefghij"

#: Largest acceptable framerpc/raw ratio of the median latency, per workload
#: (compiled layer, samples pooled over several pairs, not pinned).
TARGETS = {"echo": 1.3, "64KiB": 1.2, "1MiB": 1.10, "5.76MB": 1.05, "24.9MB": 1.05}
#: Issue 14's targets for a plain array returned by a method on the same host
#: (one copy, into shared memory): largest framerpc/reference ratio of the
#: median, against raw pyzmq over ipc (``copy=False``) and against iceoryx2
#: request-response with one copy into a loaned slot.
SHM_TARGETS = {"raw ipc": 0.6, "iceoryx2": 1.0}
#: The workloads those targets are for.
SHM_WORKLOADS = ("5.76MB", "24.9MB")
#: Issue 14's targets for a ``FramePool`` frame fetched on the same host
#: (zero copies): at most this ratio to the same server's echo call, and at
#: most this many milliseconds.
POOL_TARGETS = {"vs echo": 2.0, "ms": 0.5}
#: The workload those targets are for.
POOL_WORKLOAD = "24.9MB"


@dataclass(frozen=True)
class Workload:
    """One kind of request.

    Attributes
    ----------
    name : str
        Short label, also the request a raw server answers to.
    shape, dtype : tuple of int and str, or None
        The frame fetched; None for the echo call.
    samples, quick : int
        Calls timed per process pair in a full and in a quick run.
    """

    name: str
    shape: tuple[int, ...] | None
    dtype: str | None
    samples: int
    quick: int

    @property
    def is_echo(self) -> bool:
        """Whether this is the echo call (no frame)."""
        return self.shape is None

    @property
    def nbytes(self) -> int:
        """Payload size in bytes (the echo string's length for echo)."""
        if self.shape is None or self.dtype is None:
            return len(ECHO_TEXT)
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


WORKLOADS: tuple[Workload, ...] = (
    Workload("echo", None, None, 2000, 300),
    Workload("64KiB", (65536,), "uint8", 500, 100),
    Workload("1MiB", (1 << 20,), "uint8", 200, 50),
    Workload("5.76MB", (1200, 800, 3), "uint16", 100, 20),
    Workload("24.9MB", (2160, 3840, 3), "uint8", 50, 12),
)
BY_NAME = {w.name: w for w in WORKLOADS}


def make_frame(workload: Workload) -> np.ndarray:
    """Build the frame a server returns for ``workload`` (not all zeros)."""
    assert workload.shape is not None and workload.dtype is not None
    flat = np.arange(int(np.prod(workload.shape)), dtype=np.uint32) % 251
    return flat.astype(workload.dtype).reshape(workload.shape)


def frames() -> dict[str, np.ndarray]:
    """Every frame a server returns, by workload name."""
    return {w.name: make_frame(w) for w in WORKLOADS if not w.is_echo}


def check(arr: Any, workload: Workload) -> None:
    """Raise AssertionError unless ``arr`` is the array ``workload`` fetches."""
    if (
        type(arr) is not np.ndarray
        or arr.shape != workload.shape
        or arr.dtype != workload.dtype
    ):
        raise AssertionError(
            f"{workload.name}: got {type(arr).__name__} "
            f"{getattr(arr, 'shape', '?')} {getattr(arr, 'dtype', '?')}"
        )


def check_echo(reply: Any) -> None:
    """Raise AssertionError unless ``reply`` is the echo text."""
    if reply != ECHO_TEXT:
        raise AssertionError(f"echo: got {reply!r}")
