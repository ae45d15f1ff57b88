"""Helpers shared by tests/test_shm_*.py: a camera serving pool frames and
plain arrays to same-host clients through shared memory."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from framerpc import FramePool, RPCClient, RPCServer
from framerpc.client import shm as client_shm
from framerpc.transport import DEFAULT_OPTIONS, SocketOptions
from framerpc.transport import shm as segments

# 1 MiB frames: over the default 256 KiB threshold
SHAPE = (512, 1024)
DTYPE = np.uint16
DEPTH = 4

needs_shm = pytest.mark.skipif(not segments.AVAILABLE, reason="needs Linux /dev/shm")


def options(**changes: Any) -> SocketOptions:
    return dataclasses.replace(DEFAULT_OPTIONS, **changes)


class ShmCameraAPI:
    def grab_pool(self, seq: int) -> tuple:
        raise NotImplementedError

    def plain(self, seq: int) -> tuple:
        raise NotImplementedError

    def small(self) -> tuple:
        raise NotImplementedError

    def latest(self) -> tuple:
        raise NotImplementedError

    def ping(self) -> int:
        raise NotImplementedError


class ShmCamera(ShmCameraAPI, RPCServer):
    """``grab_pool``: a pool frame filled with ``seq`` (its info says where
    it lies in the pool's segment); ``plain``: one array refilled in place;
    ``latest``: the frame a writer published last."""

    def __init__(self, ctx: zmq.Context, url: str, **kw: Any) -> None:
        self.pool = FramePool(SHAPE, DTYPE, DEPTH)
        self.plain_frame = np.zeros(SHAPE, DTYPE)
        self._latest: tuple[np.ndarray, int] | None = None
        self._lock = threading.Lock()
        RPCServer.__init__(self, ctx, url, **kw)

    def publish(self, frame: np.ndarray, seq: int) -> None:
        with self._lock:
            self._latest = (frame, seq)

    @RPCServer.register_method_buffer(timeout=20000)
    def grab_pool(self, seq: int) -> tuple:
        frame = self.pool.acquire(timeout=5)
        frame[...] = seq
        segment = self.pool._segment
        offset = int(frame.ctypes.data) - segment.address
        return frame, {"seq": seq, "segment": segment.name, "offset": offset}

    @RPCServer.register_method_buffer(timeout=20000)
    def plain(self, seq: int) -> tuple:
        self.plain_frame[...] = seq
        return self.plain_frame, {"seq": seq}

    @RPCServer.register_method_buffer(timeout=20000)
    def small(self) -> tuple:
        return np.arange(16, dtype=np.uint8), {}

    @RPCServer.register_method_buffer(timeout=20000)
    def latest(self) -> tuple:
        with self._lock:
            assert self._latest is not None
            frame, seq = self._latest
        return frame, {"seq": seq}

    @RPCServer.register_method_json
    def ping(self) -> int:
        return 1


@RPCClient.register_interface(ShmCameraAPI)
class ShmCameraProxy(ShmCameraAPI, RPCClient):
    pass


def in_shared_memory(array: np.ndarray) -> bool:
    """Whether a client's array lies in a server's segment (its base is the
    client's lease over a read-only mapping)."""
    return type(array.base) is client_shm._Lease


def inside_its_mapping(array: np.ndarray) -> bool:
    """Whether the memory of a client's shared-memory ``array`` lies inside
    the segment its lease mapped (no copy on the client)."""
    mapping = array.base._map
    address = array.__array_interface__["data"][0]
    end = address + array.nbytes
    return mapping.address <= address and end <= mapping.address + mapping.size


@pytest.fixture(params=["tcp", "ipc"])
def shm_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A same-host server URL: tcp 127.0.0.1 or ipc:// in tmp_path."""
    if request.param == "tcp":
        return "tcp://127.0.0.1"
    return f"ipc://{tmp_path}/shm.sock"


@contextlib.contextmanager
def child_process(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``python -c script *args`` with its stdout a text pipe; at exit it is
    killed (SIGKILL, which also ends a stopped one) unless it ended, reaped,
    and its pipe closed."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(20)
        assert child.stdout is not None
        child.stdout.close()
