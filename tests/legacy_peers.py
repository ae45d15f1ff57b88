"""Peers speaking the older JSON protocol, for the interoperability tests.

Written from ``legacy-protocol.md`` alone, with plain pyzmq REQ / REP / PUB /
SUB sockets and :mod:`json`; nothing here imports framerpc, so a shared
misreading of the spec cannot hide on both sides of a test.

* :class:`LegacyServer`: an RPC server (REP) with JSON and buffer methods,
  properties and signals published as JSON on a PUB socket.
* :class:`LegacyClient`: an RPC / registry client (REQ), plus a SUB socket
  for signals; used synchronously from the test thread.
* :class:`LegacyRegistry`: a device registry (REP).

Servers run in their own thread; ``close()`` stops them and closes every
socket. A peer never dies on a bad request: what it could not handle is
recorded in ``errors`` for the test to check.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

#: How often (ms) a peer loop wakes to notice close().
_POLL_MS = 20
#: Default alive timeout (s) of the older registry.
DEFAULT_ALIVE_TIMEOUT = 20.0


def _dumps(message: Any) -> bytes:
    return json.dumps(message).encode()


class _RepPeer(threading.Thread):
    """A REP socket on a random loopback port, served from a thread."""

    def __init__(self, ctx: zmq.Context, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.ctx = ctx
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.requests: list[dict] = []  # every request received, in order
        self.errors: list[str] = []  # what the peer could not handle
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def run(self) -> None:
        try:
            while not self._closing.is_set():
                if self.sock.poll(_POLL_MS):
                    frames = self.sock.recv_multipart()
                    self.sock.send_multipart(self._answer(frames))
                self.turn()
        finally:
            self.close_sockets()

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        try:
            message = json.loads(frames[0])
            with self._lock:
                self.requests.append(message)
            return self.handle(message)
        except Exception:
            self.errors.append(traceback.format_exc())
            return [_dumps({"success": False, "error": "peer could not handle it"})]

    def handle(self, message: dict) -> list[bytes]:
        raise NotImplementedError

    def turn(self) -> None:
        """Called every loop turn."""

    def events(self) -> list[str]:
        """The events received so far."""
        with self._lock:
            return [request.get("event") for request in self.requests]

    def close_sockets(self) -> None:
        self.sock.close()

    def close(self) -> None:
        self._closing.set()
        if self.ident is None:
            self.close_sockets()
        else:
            self.join(timeout=5)
            assert not self.is_alive(), f"{self.name} did not stop"


class LegacyServer(_RepPeer):
    """An older RPC server: a camera with JSON and buffer methods.

    Methods (timeouts in ms): ``add(a, b=0, scale=1)`` 500, ``echo(value)``
    none, ``fail(message)`` raises ValueError, ``sleep(seconds)`` 100,
    ``emit(name, *args)`` publishes a signal; buffer methods ``grab(size)``
    returns ``size`` bytes, ``grab_fail()`` raises. Properties ``gain``
    (negative values refused) and ``mode`` (setting it emits
    ``mode_changed``). Signals ``count`` and ``mode_changed``.
    """

    name_ = "legacy-cam"

    def __init__(self, ctx: zmq.Context) -> None:
        super().__init__(ctx, "LegacyServer")
        self.pub: zmq.Socket | None = None
        self.signal_port: int | None = None
        self.stopped = threading.Event()
        self.values = {"gain": 1, "mode": "normal"}
        self.json_methods: dict[str, tuple[Callable, int | None]] = {
            "add": (lambda a, b=0, scale=1: (a + b) * scale, 500),
            "echo": (lambda value: value, None),
            "fail": (self._fail, 10000),
            "sleep": (self._sleep, 100),
            "emit": (self.emit, 10000),
        }
        self.buffer_methods: dict[str, tuple[Callable, int | None]] = {
            "grab": (lambda size: (bytes(range(256)) * (size // 256 + 1))[:size], 5000),
            "grab_fail": (self._fail_buffer, 10000),
        }

    @staticmethod
    def _fail(message: str) -> None:
        raise ValueError(message)

    @staticmethod
    def _fail_buffer() -> bytes:
        raise RuntimeError("no frame")

    @staticmethod
    def _sleep(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def emit(self, name: str, *args: Any) -> None:
        """Publish one emission (from any thread) if signals were asked for."""
        with self._lock:
            if self.pub is not None:
                message = {
                    "event": "EMIT_SIGNAL",
                    "signal": name,
                    "args": list(args),
                    "blocking": False,
                }
                self.pub.send(_dumps(message))

    def handle(self, message: dict) -> list[bytes]:
        event = message.get("event")
        if event == "GET_INVENTORY":
            return [
                _dumps(
                    {
                        "json_methods": {
                            k: t for k, (_, t) in self.json_methods.items()
                        },
                        "buffer_methods": {
                            k: t for k, (_, t) in self.buffer_methods.items()
                        },
                        "signals": ["count", "mode_changed"],
                        "properties": ["gain", "mode"],
                        "name": self.name_,
                    }
                )
            ]
        if event == "INIT_SIGNALS_HANDLING":
            with self._lock:
                if self.pub is None:  # bound once, reused
                    self.pub = self.ctx.socket(zmq.PUB)
                    self.pub.setsockopt(zmq.LINGER, 0)
                    self.signal_port = self.pub.bind_to_random_port("tcp://127.0.0.1")
            return [_dumps({"success": True, "signal_port": self.signal_port})]
        if event == "METHOD_CALL":
            return self._call(message["method"], message.get("params", {}))
        if event == "PROPERTY_GET":
            try:
                value = self.values[message["property"]]
            except Exception as exc:
                return [self._error(exc)]
            return [_dumps({"success": True, "value": value})]
        if event == "PROPERTY_SET":
            try:
                self._set(message["property"], message["value"])
            except Exception as exc:
                return [self._error(exc)]
            return [_dumps({"success": True})]
        if event == "STOP_SERVER":
            self._closing.set()  # the loop ends after this reply is sent
            self.stopped.set()
            return [_dumps({"success": True})]
        self.errors.append(f"unexpected event {event!r}")
        return [_dumps({"success": False, "error": f"unknown event {event}"})]

    def _call(self, method: str, params: dict) -> list[bytes]:
        args, kwargs = params.get("args", []), params.get("kwargs", {})
        if method in self.json_methods:
            try:
                result = self.json_methods[method][0](*args, **kwargs)
            except Exception as exc:
                return [self._error(exc)]
            return [_dumps({"success": True, "result": result})]
        if method in self.buffer_methods:
            try:
                data = self.buffer_methods[method][0](*args, **kwargs)
            except Exception as exc:
                return [self._error(exc)]
            return [_dumps({"size": len(data)}), data]
        return [_dumps({"success": False, "error": f"Method {method} not implemented"})]

    def _set(self, name: str, value: Any) -> None:
        if name not in self.values:
            raise AttributeError(f"no property {name}")
        if name == "gain" and value < 0:
            raise ValueError(f"gain must be >= 0, got {value}")
        old, self.values[name] = self.values[name], value
        if name == "mode" and value != old:
            self.emit("mode_changed", value)

    @staticmethod
    def _error(exc: Exception) -> bytes:
        return _dumps(
            {"success": False, "error": str(exc), "traceback": traceback.format_exc()}
        )

    def close_sockets(self) -> None:
        with self._lock:
            if self.pub is not None:
                self.pub.close()
        # After STOP_SERVER the acknowledgement may still be queued: flush it.
        self.sock.close(linger=500 if self.stopped.is_set() else 0)


class LegacyRegistry(_RepPeer):
    """An older device registry, as the spec's table describes it.

    Parameters
    ----------
    default_alive_timeout : float
        Seconds a device stays listed after registering or checking in
        without ``alive_timeout`` (20 in the spec; shorter in tests).
    clock : callable
        Monotonic time in seconds of the deadlines; tests pass one they
        move by hand, so that no deadline passes because the machine is slow.
    """

    def __init__(
        self,
        ctx: zmq.Context,
        default_alive_timeout: float = DEFAULT_ALIVE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(ctx, "LegacyRegistry")
        self.default_alive_timeout = default_alive_timeout
        self.clock = clock
        self._devices: dict[str, dict] = {}  # uuid -> device

    def devices(self) -> dict[str, tuple[str, str]]:
        """``{name: (device_type, addr)}``, from any thread."""
        with self._lock:
            return {
                d["name"]: (d["device_type"], d["addr"]) for d in self._devices.values()
            }

    def forget(self) -> None:
        """Drop every device, as a restarted registry would."""
        with self._lock:
            self._devices.clear()

    def turn(self) -> None:
        with self._lock:
            self._prune()

    def _prune(self) -> None:
        now = self.clock()
        for key in [k for k, d in self._devices.items() if d["deadline"] < now]:
            del self._devices[key]

    def handle(self, message: dict) -> list[bytes]:
        event, payload = message.get("event"), message.get("payload", {})
        with self._lock:
            # pruned first: a reply shows the state at the clock's time of the
            # request (a sentinel for "still listed")
            self._prune()
            if event == "REGISTER":
                reply = "REGISTER_ACK", self._register(payload)
            elif event == "UNREGISTER":
                success = self._devices.pop(payload["uuid"], None) is not None
                reply = "ACK", {"req_event": "UNREGISTER", "success": success}
            elif event == "CHECK_ALIVE":
                device = self._devices.get(payload["uuid"])
                if device is not None:
                    timeout = payload.get("alive_timeout", self.default_alive_timeout)
                    device["deadline"] = self.clock() + timeout
                reply = (
                    "ACK",
                    {"req_event": "CHECK_ALIVE", "success": device is not None},
                )
            else:
                reply = "UNSUPPORTED", {"req_event": event}
        return [_dumps({"event": reply[0], "payload": reply[1]})]

    def _register(self, payload: dict) -> dict:
        device_type, addr = payload["device_type"], payload["addr"]
        name, overwrite = payload.get("name", ""), payload.get("overwrite", False)
        for key in [k for k, d in self._devices.items() if d["addr"] == addr]:
            del self._devices[key]  # the same address registers again
        taken = {d["name"]: k for k, d in self._devices.items()}
        if not name:
            index = 0
            while f"{device_type}-{index}" in taken:
                index += 1
            name = f"{device_type}-{index}"
        elif name in taken:
            if overwrite:
                del self._devices[taken[name]]
            else:
                index = 1
                while f"{name}-{index}" in taken:
                    index += 1
                name = f"{name}-{index}"
        key = str(uuid.uuid4())
        self._devices[key] = {
            "device_type": device_type,
            "addr": addr,
            "name": name,
            "deadline": self.clock() + self.default_alive_timeout,
        }
        return {"name": name, "uuid": key}


class LegacyClient:
    """An older client: REQ for requests, SUB for signals; test-thread only.

    Parameters
    ----------
    ctx : zmq.Context
        Context of the sockets.
    url : str
        The server's (or registry's) URL.
    """

    def __init__(self, ctx: zmq.Context, url: str) -> None:
        self.ctx = ctx
        self.url = url
        self.sock = ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(url)
        self.sub: zmq.Socket | None = None

    def frames(self, message: dict | bytes, timeout_ms: int = 5000) -> list[bytes]:
        """Send one request (a dict, or raw bytes) and return the reply frames.

        Raises
        ------
        AssertionError
            No reply within ``timeout_ms`` (the REQ socket is then unusable).
        """
        data = message if isinstance(message, bytes) else _dumps(message)
        self.sock.send(data)
        assert self.sock.poll(timeout_ms), f"no reply to {data[:80]!r}"
        return self.sock.recv_multipart()

    def request(self, message: dict | bytes, timeout_ms: int = 5000) -> dict:
        """Send one request and return its one-frame JSON reply."""
        frames = self.frames(message, timeout_ms)
        assert len(frames) == 1, f"expected one frame, got {len(frames)}"
        return json.loads(frames[0])

    def subscribe(self, port: int) -> None:
        """Subscribe to everything on the server host's ``port``."""
        host = self.url.rsplit(":", 1)[0]
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(f"{host}:{port}")

    def emissions(self, timeout_ms: int = 100) -> list[list[bytes]]:
        """Messages received on the signal socket until ``timeout_ms`` pass
        without one."""
        assert self.sub is not None
        received = []
        while self.sub.poll(timeout_ms):
            received.append(self.sub.recv_multipart())
        return received

    def emissions_until(
        self, last: Callable[[list[bytes]], bool], timeout_ms: int = 20_000
    ) -> list[list[bytes]]:
        """Messages received on the signal socket up to the first for which
        ``last`` is true (a sentinel emitted after the ones a test checks).

        Raises
        ------
        AssertionError
            No such message within ``timeout_ms`` (a ceiling for a hang).
        """
        assert self.sub is not None
        received: list[list[bytes]] = []
        deadline = time.monotonic() + timeout_ms / 1000
        while not received or not last(received[-1]):
            left = max(0, int((deadline - time.monotonic()) * 1000))
            assert self.sub.poll(left), f"no sentinel after {len(received)} messages"
            received.append(self.sub.recv_multipart())
        return received

    def close(self) -> None:
        self.sock.close()
        if self.sub is not None:
            self.sub.close()


# -- fixtures shared by the test files of this subject (tests/conftest.py
# loads this module as a plugin) ---------------------------------------


@pytest.fixture
def legacy_client(ctx: zmq.Context) -> Iterator[Callable[[str], LegacyClient]]:
    """Make :class:`LegacyClient` peers; all closed at the end."""
    clients: list[LegacyClient] = []

    def make(url: str) -> LegacyClient:
        clients.append(LegacyClient(ctx, url))
        return clients[-1]

    yield make
    for client in clients:
        client.close()
