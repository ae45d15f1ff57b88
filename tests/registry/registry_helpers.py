"""Helpers shared by the registry tests (tests/registry/test_registry*.py).

A module beside them, not a conftest.py: pytest's default import mode puts
this folder on ``sys.path`` when it imports a test file here, and a second
conftest.py would share the module name ``conftest`` with tests/conftest.py.
"""

from __future__ import annotations

import threading
import uuid

import zmq

from framerpc import protocol
from framerpc.registry import DeviceRegistry, list_devices

#: Ceiling of every wait: only catches a hang, never a speed check (s).
WAIT = 30.0


def inproc_url() -> str:
    return f"inproc://registry-{uuid.uuid4().hex}"


def sentinel_list(ctx: zmq.Context, reg: DeviceRegistry) -> dict:
    """LIST_DEVICES: once answered, the registry has handled every earlier
    message and pruned up to its clock's current time."""
    return list_devices(ctx, reg.url, timeout=WAIT * 1000)


class Recorder:
    """A callback that records its calls, thread-safely."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, device_type: str, address: str, name: str) -> None:
        with self._lock:
            self.calls.append((device_type, address, name))


def raw_exchange(ctx: zmq.Context, url: str, frames: list, timeout: float = 2.0):
    """Send raw frames on a DEALER; return the decoded reply or None."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(url)
        sock.send_multipart(frames)
        if not sock.poll(int(timeout * 1000)):
            return None
        reply = sock.recv_multipart()
        assert reply[0] == b"", "reply must keep the empty delimiter"
        return protocol.decode_registry(reply[1:])
    finally:
        sock.close()
