"""Helpers shared by tests/test_streams*.py: a camera with a stream, its hub."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import zmq
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


# -- fixtures of the stream tests (tests/conftest.py loads this module as a
# plugin: one definition for the three test files) ------------------------


@pytest.fixture
def served(ctx: zmq.Context) -> Iterator[Callable[..., CamServer]]:
    """Make and start CamServers; all closed at the end."""
    servers: list[CamServer] = []

    def make(url: str = "tcp://127.0.0.1", **kwargs) -> CamServer:
        server = CamServer(ctx, url, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def proxies(ctx: zmq.Context) -> Iterator[Callable[..., Cam]]:
    made: list = []

    def make(url: str, **kwargs) -> Cam:
        proxy = framerpc.connect(Cam, ctx, url, **kwargs)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
