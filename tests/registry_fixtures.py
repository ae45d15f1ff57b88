"""Fixtures of the registry tests (tests/registry/), and ``registry`` (a
running one) for the tests of its users, loaded as a plugin by
tests/conftest.py: a helper module there would not be importable when the
plugins load, before pytest puts that folder on sys.path."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import zmq
from manual_clock import ManualClock

from framerpc.registry import DeviceRegistry


@pytest.fixture
def start_registry(ctx: zmq.Context) -> Iterator[Callable[..., DeviceRegistry]]:
    """Factory of started registries; each is stopped and joined at the end."""
    started: list[DeviceRegistry] = []

    def start(addr: str = "tcp://127.0.0.1", **kwargs) -> DeviceRegistry:
        kwargs.setdefault("poll_interval", 0.02)
        kwargs.setdefault("clock", ManualClock())
        reg = DeviceRegistry(ctx, addr, **kwargs)
        reg.start()
        started.append(reg)
        return reg

    yield start
    for reg in started:
        reg.stop()
        reg.join(timeout=3)
        assert not reg.is_alive(), "registry thread did not end"


@pytest.fixture
def reg(start_registry) -> DeviceRegistry:
    return start_registry()


@pytest.fixture
def registry(ctx: zmq.Context) -> Iterator[DeviceRegistry]:
    """A running registry on loopback TCP, port picked by the OS, on the real
    clock (for tests of its users: the command line, the viewer, bad input)."""
    running = DeviceRegistry(ctx, "127.0.0.1", port=None, poll_interval=0.02)
    running.start()
    yield running
    running.stop()
    running.join(timeout=5)
    assert not running.is_alive()
