"""Signal subscribers for the fan-out tests (tests/server/test_signal_fanout.py,
test_fanout_churn.py, test_slow_subscribers.py): the ``socks`` fixture
(loaded as a plugin by tests/conftest.py) and ``subscribe``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq


@pytest.fixture
def socks(ctx: zmq.Context) -> Iterator[list[zmq.Socket]]:
    """The sockets a test makes (``subscribe`` appends them); all closed,
    with LINGER 0, at the end."""
    made: list[zmq.Socket] = []
    yield made
    for sock in made:
        sock.close(linger=0)


def subscribe(
    ctx: zmq.Context,
    made: list[zmq.Socket],
    url: str,
    stalled: bool = False,
    kind: int = zmq.SUB,
) -> zmq.Socket:
    """A subscriber (SUB, or XSUB with ``kind``, which subscribes itself)
    connected to ``url`` and appended to ``made``; ``stalled``, it takes
    almost nothing off the server's queue."""
    sock = ctx.socket(kind)
    made.append(sock)
    if stalled:
        sock.setsockopt(zmq.RCVHWM, 1)
        sock.setsockopt(zmq.RCVBUF, 4096)
        # heartbeats keep the server from timing it out (it reads nothing,
        # not even the server's pings), a long timeout keeps it from timing
        # the server out: stalled, not dead, however long the test takes
        sock.setsockopt(zmq.HEARTBEAT_IVL, 500)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 600_000)
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(url)
    return sock
