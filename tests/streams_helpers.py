"""Helpers shared by tests/test_streams*.py and tests/test_attack_streams.py: a
camera with a stream, its hub, a hostile stream server."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytest
import zmq
from conftest import wait_until

import framerpc
from framerpc.server.streams import StreamHub
from framerpc.wire import framing
from framerpc.wire import streams as _streamproto
from framerpc.wire._framing_common import OutOfBand

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


#: What a stream server answers a "sub" with (epoch 7, window 1).
STREAM_OK = [_streamproto.encode_control("ok", s="frames", ep=7, n=1, pi=0)]
#: A well-formed frame: seq 5 of epoch 7, the bytes b"good".
GOOD_FRAME = [
    _streamproto.encode_meta(5, 0, 7),
    *framing.encode({"t": 1.0, "in": {}, "x": OutOfBand(b"good")}),
]


@contextlib.contextmanager
def hostile_stream_server(
    ctx: zmq.Context, messages: Sequence[list[bytes]]
) -> Iterator[str]:
    """A fake stream server on tcp loopback (its URL): it answers the first
    subscriber's "sub" with ``messages`` (each a list of frames), in order,
    then keeps its socket open until the block ends."""
    fake = ctx.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    port = fake.bind_to_random_port("tcp://127.0.0.1")
    done = threading.Event()

    def serve_badly() -> None:
        assert fake.poll(WAIT_S * 1000)
        identity, _ = fake.recv_multipart()  # "sub"
        for message in messages:
            fake.send_multipart([identity, *message])
        done.wait(WAIT_S)

    thread = threading.Thread(target=serve_badly)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        done.set()
        thread.join(WAIT_S)
        fake.close()


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
