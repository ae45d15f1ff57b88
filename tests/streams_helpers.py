"""Helpers shared by tests/test_streams*.py: a camera with a stream, its hub."""

from __future__ import annotations

import numpy as np
from conftest import wait_until

import framerpc
from framerpc.server.streams import StreamHub

#: Ceiling (s) of every wait: catches a hang, never a speed check.
WAIT_S = 20


class Cam:
    """An interface with a stream and a method."""

    frames = framerpc.RPCStream(doc="sensor images")

    def ping(self) -> str:
        """Answer "pong"."""
        raise NotImplementedError


class CamServer(Cam, framerpc.RPCServer):
    @framerpc.RPCServer.register_method_json
    def ping(self) -> str:
        return "pong"


def _hub(server: CamServer) -> StreamHub:
    hub = server._stream_hub
    assert hub is not None
    return hub


def _hub_sub(server: CamServer, count: int = 1):
    """The hub's subscriber record once there are ``count`` of them."""
    hub = _hub(server)
    assert wait_until(lambda: len(hub._subs) >= count, WAIT_S)
    return list(hub._subs.values())


def _frame(seq_value: int, size: int = 64) -> np.ndarray:
    return np.full(size, seq_value % 251, dtype=np.uint8)
