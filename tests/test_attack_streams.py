"""Hostile and careless stream peers (raw zmq sockets against the hub).

Run under both engines (``FRAMERPC_PURE=1`` for the pure one). Waits poll
conditions with ceilings that only catch a hang; a wait that runs out
under load can only weaken an assertion, never fail it.
"""

from __future__ import annotations

import gc
import itertools
import weakref
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import zmq
from conftest import wait_until

import framerpc
from framerpc.stream import PREFETCH
from framerpc.wire import streams as _streamproto

WAIT_S = 20
_names = itertools.count()


class Cam:
    frames = framerpc.RPCStream(doc="sensor images")

    def ping(self) -> str:
        """Answer "pong"."""
        raise NotImplementedError


class CamServer(Cam, framerpc.RPCServer):
    @framerpc.RPCServer.register_method_json
    def ping(self) -> str:
        return "pong"


@pytest.fixture
def served(ctx: zmq.Context) -> Iterator[Callable[..., CamServer]]:
    servers: list[CamServer] = []

    def make(url: str = "tcp://127.0.0.1", **kwargs) -> CamServer:
        server = CamServer(ctx, url, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.close()


def test_credit_without_reading_pins_only_the_credit_window(ctx, served):
    """A peer that grants credit again and again but never reads must not
    make the hub push frames into its socket beyond what an honest
    subscriber can hold: each such frame pins a whole published buffer
    (24.9 MB for a camera), per subscriber. Over inproc:// nothing but
    the two sockets' queues holds them, so the count is exact."""
    server = served(f"inproc://attack-credit-{next(_names)}")
    hub = server._stream_hub
    assert hub is not None
    hog = ctx.socket(zmq.DEALER)
    hog.setsockopt(zmq.LINGER, 0)
    hog.setsockopt(zmq.RCVHWM, 1)
    hog.connect(hub.url)
    refs = []
    try:
        hog.send(_streamproto.encode_control("sub", s="frames", p="latest", n=1))
        assert wait_until(lambda: len(hub._subs) == 1, WAIT_S)
        (record,) = hub._subs.values()
        for i in range(40):
            frame = np.full(4096, i % 251, dtype=np.uint8)
            refs.append(weakref.ref(frame))
            server.frames.publish(frame, copy=False)
            del frame
            hog.send(_streamproto.encode_control("credit", c=1))
            # sent, or the hub holds it back (short ceiling: see module doc)
            if not wait_until(lambda: record.credit == 0 and not record.pending, 2):
                break
        gc.collect()
        pinned = sum(ref() is not None for ref in refs)
        # the reply "ok" and the credit window in the socket, one pending
        bound = PREFETCH + 2 + 1
        assert record.sent <= bound, record.sent
        assert pinned <= bound + 1, pinned
    finally:
        hog.close()
