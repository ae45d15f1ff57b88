"""Helpers shared by tests/test_shm_signals*.py: a camera emitting frames in
signals, and a proxy that collects what its listener receives."""

from __future__ import annotations

import queue
from typing import Any

import numpy as np
import zmq
from shm_helpers import DTYPE, SHAPE

from framerpc import FramePool, RPCClient, RPCServer, RPCSignal


class SignalCameraAPI:
    frame_ready = RPCSignal(np.ndarray, int)

    def ping(self) -> int:
        raise NotImplementedError


class SignalCamera(SignalCameraAPI, RPCServer):
    """Emits ``frame_ready(frame, seq)``: a plain array (refilled in place),
    a pool frame, or a small one."""

    def __init__(self, ctx: zmq.Context, url: str, **kw: Any) -> None:
        self.pool = FramePool(SHAPE, DTYPE, 4)
        self.plain_frame = np.zeros(SHAPE, DTYPE)
        RPCServer.__init__(self, ctx, url, **kw)

    def emit_plain(self, seq: int) -> None:
        self.plain_frame[...] = seq
        self.frame_ready.emit(self.plain_frame, seq)

    def emit_pool(self, seq: int) -> None:
        frame = self.pool.acquire(timeout=5)
        frame[...] = seq
        self.frame_ready.emit(frame, seq)
        del frame  # the server keeps it while a subscriber holds it

    def emit_small(self, seq: int) -> None:
        self.frame_ready.emit(np.full(16, seq, np.uint8), seq)

    @RPCServer.register_method_json
    def ping(self) -> int:
        return 1


@RPCClient.register_interface(SignalCameraAPI)
class SignalCameraProxy(SignalCameraAPI, RPCClient):
    """Puts every ``(frame, seq)`` received in ``received``."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.received: queue.Queue = queue.Queue()
        self.keep = True  # False: the listener drops what it receives
        RPCClient.__init__(self, *args, **kw)
        self.frame_ready.connect(self._keep)

    def _keep(self, frame: np.ndarray, seq: int) -> None:
        if self.keep:
            self.received.put((frame, seq))

    def next(self, timeout: float = 20) -> tuple[np.ndarray, int]:
        return self.received.get(timeout=timeout)


def bound(proxy: RPCClient) -> bool:
    """Whether the proxy's signal receiver decodes references."""
    receiver = proxy._signal_receiver
    return receiver is not None and receiver.shm is not None
