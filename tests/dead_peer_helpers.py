"""Helpers shared by tests/test_dead_peers*.py (``rebind`` by
tests/test_signal_seq.py too)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import zmq
from dead_peer_device import heartbeat_options

#: Fast heartbeats of most tests: a frozen peer is noticed within ~1.2 s.
FAST_IVL_MS, FAST_TIMEOUT_MS = 200, 1000
FAST = heartbeat_options(FAST_IVL_MS, FAST_TIMEOUT_MS)
#: Bound (s) that only catches a hang: far above every expected time.
HANG_BOUND_S = 10.0


T = TypeVar("T")


def rebind(make: Callable[[], T], bound_s: float = HANG_BOUND_S) -> T:
    """``make()`` a server on the URL of one just stopped, again while the
    OS has not released the port yet (``ZMQError``), up to ``bound_s``."""
    deadline = time.monotonic() + bound_s
    while True:
        try:
            return make()
        except zmq.ZMQError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def _call_in_thread(func: Callable[[], object]) -> tuple[threading.Thread, dict]:
    """Run ``func`` in a thread; the dict gets its outcome and end time."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = func()
        except BaseException as exc:
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


# -- fixtures shared by the test files of this subject (tests/conftest.py
# loads this module as a plugin) ---------------------------------------


@pytest.fixture(params=["tcp", "ipc"])
def address(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "tcp":
        return "tcp://127.0.0.1"
    return f"ipc://{tmp_path}/probe.sock"
