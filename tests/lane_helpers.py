"""Helpers shared by the same-host lane's tests (tests/test_lane*.py): a
device with calls of every size, and raw lane connections."""

from __future__ import annotations

import socket
import threading
from typing import Any

import numpy as np
import pytest
import zmq

from framerpc import RPCClient, RPCServer
from framerpc.transport import lane as packets
from framerpc.transport import shm as segments

needs_lane = pytest.mark.skipif(
    not (segments.AVAILABLE and packets.AVAILABLE),
    reason="needs Linux /dev/shm and SOCK_SEQPACKET",
)


class LaneDeviceAPI:
    def echo(self, value: Any) -> Any:
        raise NotImplementedError

    def blob(self, size: int) -> tuple:
        raise NotImplementedError

    def frame(self, seq: int) -> tuple:
        raise NotImplementedError

    def wait(self, seconds: float) -> bool:
        raise NotImplementedError


class LaneDevice(LaneDeviceAPI, RPCServer):
    """``echo``: its argument; ``blob``: bytes of ``size`` (under the
    shared-memory threshold: a frame); ``frame``: a 1 MiB array filled with
    ``seq`` (a shared-memory reference); ``wait``: returns once ``release``
    is set or ``seconds`` passed (a call in flight)."""

    def __init__(self, ctx: zmq.Context, url: str, **kw: Any) -> None:
        self.plain = np.zeros(1 << 19, np.uint16)
        self.entered = threading.Event()
        self.release = threading.Event()
        RPCServer.__init__(self, ctx, url, **kw)

    @RPCServer.register_method_json
    def echo(self, value: Any) -> Any:
        return value

    @RPCServer.register_method_buffer(timeout=20000)
    def blob(self, size: int) -> tuple:
        return bytes(range(256)) * (size // 256), {"size": size}

    @RPCServer.register_method_buffer(timeout=20000)
    def frame(self, seq: int) -> tuple:
        self.plain[...] = seq
        return self.plain, {"seq": seq}

    @RPCServer.register_method_json  # the proxy's timeout
    def wait(self, seconds: float) -> bool:
        self.entered.set()
        return self.release.wait(seconds)


@RPCClient.register_interface(LaneDeviceAPI)
class LaneProxy(LaneDeviceAPI, RPCClient):
    pass


def lane_stats(server: RPCServer) -> dict[str, int]:
    return {k: v for k, v in server.stats.items() if k.startswith("lane_")}


def raw_lane(server: Any) -> socket.socket:
    """A bare connection to ``server``'s lane (the caller closes it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    packets.size_buffers(sock)  # it may send a packet over the bound
    sock.settimeout(20)
    sock.connect(server._lane.path)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (EOF within 20 s)."""
    try:
        return sock.recv(16) == b""
    except ConnectionResetError:
        return True
