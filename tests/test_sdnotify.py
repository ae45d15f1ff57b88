"""Tests of framerpc.sdnotify against a real AF_UNIX datagram socket standing
in for systemd's notification socket."""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from framerpc import sdnotify
from framerpc.sdnotify import Watchdog

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "AF_UNIX"), reason="sd_notify needs AF_UNIX sockets"
)

#: Longest AF_UNIX path the kernel accepts is 107 bytes (plus the NUL).
_MAX_UNIX_PATH = 100


class Listener:
    """A bound datagram socket: what systemd's end of NOTIFY_SOCKET sees."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address

    def recv(self, timeout: float = 2.0) -> str:
        """The next datagram (fails the test after ``timeout`` s)."""
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def pending(self) -> list[str]:
        """Every datagram already queued, without waiting."""
        self.sock.setblocking(False)
        received = []
        while True:
            try:
                received.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return received


@pytest.fixture
def socket_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, or a shorter temporary folder when its path is too long."""
    if len(str(tmp_path / "notify.sock")) <= _MAX_UNIX_PATH:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="sdn-") as short:
        yield Path(short)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No systemd variables inherited from the environment running the tests."""
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def listener(socket_dir: Path, clean_env: pytest.MonkeyPatch) -> Iterator[Listener]:
    """A datagram socket at a path, named by NOTIFY_SOCKET."""
    path = str(socket_dir / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        clean_env.setenv("NOTIFY_SOCKET", path)
        yield Listener(sock, path)
    finally:
        sock.close()


# -- without systemd ---------------------------------------------------------------


def test_every_call_is_a_no_op_without_notify_socket(clean_env):
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False
    assert sdnotify.stopping() is False
    assert sdnotify.status("serving") is False
    dog = Watchdog(5.0)
    assert not dog.enabled
    assert dog.tick() is False
    assert "disabled" in repr(dog)


def test_unsupported_address_kind_is_a_no_op(clean_env):
    clean_env.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.ready() is False
    assert not Watchdog(5.0).enabled


# -- notifications -----------------------------------------------------------------


def test_state_strings_reach_the_socket(listener):
    assert sdnotify.ready() is True
    assert listener.recv() == "READY=1"
    assert sdnotify.watchdog() is True
    assert listener.recv() == "WATCHDOG=1"
    assert sdnotify.stopping() is True
    assert listener.recv() == "STOPPING=1"
    assert sdnotify.status("serving\ntcp://127.0.0.1:5000") is True
    assert listener.recv() == "STATUS=serving tcp://127.0.0.1:5000"
    assert sdnotify.notify("READY=1\nSTATUS=up") is True
    assert listener.recv() == "READY=1\nSTATUS=up"


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only"
)
def test_abstract_socket_name(clean_env):
    name = f"framerpc-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
        clean_env.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready() is True
        sock.settimeout(2.0)
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_send_failure_returns_false_and_logs_at_debug(socket_dir, clean_env, caplog):
    missing = str(socket_dir / "nobody-listens.sock")
    clean_env.setenv("NOTIFY_SOCKET", missing)
    with caplog.at_level(logging.DEBUG, logger="framerpc.sdnotify"):
        assert sdnotify.watchdog() is False
    records = [r for r in caplog.records if r.name == "framerpc.sdnotify"]
    assert records and all(r.levelno == logging.DEBUG for r in records)
    assert missing in records[0].getMessage()


# -- watchdog interval -------------------------------------------------------------


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("5000000", None, 5.0),
        ("250000", "self", 0.25),
        ("5000000", "other", None),
        ("5000000", "not-a-pid", None),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        ("", None, None),
    ],
)
def test_watchdog_interval_follows_sd_watchdog_enabled(clean_env, usec, pid, expected):
    if usec is not None:
        clean_env.setenv("WATCHDOG_USEC", usec)
    if pid == "self":
        clean_env.setenv("WATCHDOG_PID", str(os.getpid()))
    elif pid == "other":
        clean_env.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    elif pid is not None:
        clean_env.setenv("WATCHDOG_PID", pid)
    assert sdnotify.watchdog_interval() == expected


# -- Watchdog ----------------------------------------------------------------------


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_ticks_at_most_every_half_interval(listener):
    clock = FakeClock()
    dog = Watchdog(4.0, clock=clock)
    assert dog.enabled and dog.period == 2.0
    sent = []
    for step in range(41):  # 0 .. 4 s in 0.1 s steps
        clock.now = 1000.0 + step / 10
        sent.append(dog.tick())
    # at 0 s (the first tick), then every 2 s
    assert [i for i, s in enumerate(sent) if s] == [0, 20, 40]
    assert listener.pending() == ["WATCHDOG=1"] * 3


def test_watchdog_interval_comes_from_the_environment(listener, clean_env):
    clean_env.setenv("WATCHDOG_USEC", "3000000")
    clean_env.setenv("WATCHDOG_PID", str(os.getpid()))
    clock = FakeClock()
    dog = Watchdog(clock=clock)
    assert dog.enabled and dog.period == 1.5
    assert "1.5" in repr(dog)
    assert dog.tick() is True
    clock.now += 1.0
    assert dog.tick() is False
    clock.now += 0.5
    assert dog.tick() is True
    assert listener.pending() == ["WATCHDOG=1", "WATCHDOG=1"]


def test_watchdog_without_interval_is_disabled(listener):
    """NOTIFY_SOCKET alone (Type=notify without WatchdogSec=) sends nothing."""
    dog = Watchdog()
    assert not dog.enabled
    assert dog.tick() is False
    assert listener.pending() == []


def test_watchdog_of_another_process_is_disabled(listener, clean_env):
    clean_env.setenv("WATCHDOG_USEC", "3000000")
    clean_env.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert not Watchdog().enabled


def test_watchdog_survives_a_vanished_socket(listener, caplog):
    clock = FakeClock()
    dog = Watchdog(1.0, clock=clock)
    listener.sock.close()
    os.unlink(listener.address)
    with caplog.at_level(logging.DEBUG, logger="framerpc.sdnotify"):
        assert dog.tick() is False  # no exception
        clock.now += 1.0
        assert dog.tick() is False
    assert any("WATCHDOG=1" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("interval", [0, -1.0, float("nan")])
def test_watchdog_rejects_a_non_positive_interval(interval):
    with pytest.raises(ValueError, match="interval"):
        Watchdog(interval)
