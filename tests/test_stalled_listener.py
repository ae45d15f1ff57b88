"""A signal listener that blocks for longer than the heartbeat bound does not
kill the client process (zeromq/libzmq#3596, #3937).

When a client's SUB queue is full, libzmq stops reading its connection, so
the client's heartbeat timed out a healthy link; on the reconnect libzmq
aborted the process (``Assertion failed: _input_stopped``). The scenario
runs in a child process (tests/stalled_listener_child.py): an abort must
not take pytest down. The child inherits FRAMERPC_PURE, so both engines
are covered.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from framerpc.transport import DEFAULT_OPTIONS, make_socket

CHILD = Path(__file__).with_name("stalled_listener_child.py")
#: Bound (s) that only catches a hang (the child takes a few seconds).
HANG_BOUND_S = 50


def _run_child(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHILD), *args],
        capture_output=True,
        text=True,
        timeout=HANG_BOUND_S,
        cwd=CHILD.parent,
        env=dict(os.environ),
    )


@pytest.mark.parametrize(
    "kind, ivl_ms, timeout_ms",
    [
        ("sync", "200", "1000"),  # fast heartbeats: the bound passes in ~1.2 s
        ("aio", "200", "1000"),  # a blocking callback blocks the whole loop
        ("sync", "0", "0"),  # the default options (4 s bound)
    ],
)
def test_client_survives_a_listener_blocked_past_the_heartbeat_bound(
    kind: str, ivl_ms: str, timeout_ms: str
) -> None:
    """2,000 x 100 KB emitted while the first listener call blocks past the
    heartbeat bound: the child exits normally, and after the listener
    returns a later emission arrives."""
    done = _run_child(kind, ivl_ms, timeout_ms, "2000")
    assert "Assertion failed" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.startswith("ok "), done.stdout
    assert int(done.stdout.split()[1]) >= 1  # the blocked emission itself


def test_sub_sockets_never_time_out_but_request_sockets_do(
    ctx: zmq.Context,
) -> None:
    """The SUB keeps pinging (the publisher keeps it) without a timeout of
    its own; a DEALER keeps its timeout (dead servers are noticed there)."""
    sub = make_socket(ctx, zmq.SUB, DEFAULT_OPTIONS)
    dealer = make_socket(ctx, zmq.DEALER, DEFAULT_OPTIONS)
    try:
        assert sub.getsockopt(zmq.HEARTBEAT_TIMEOUT) == 0
        assert sub.getsockopt(zmq.HEARTBEAT_IVL) == DEFAULT_OPTIONS.heartbeat_ivl_ms
        assert dealer.getsockopt(zmq.HEARTBEAT_TIMEOUT) == (
            DEFAULT_OPTIONS.heartbeat_timeout_ms
        )
    finally:
        sub.close(linger=0)
        dealer.close(linger=0)
