"""Interoperability with the older JSON protocol: framerpc client, older server.

Against the independent peers of ``legacy_peers`` (written from
legacy-protocol.md with plain pyzmq and json); the other directions are in
the other tests/test_legacy_*.py files.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from conftest import finishes_within, wait_until
from devices import CameraServer, make_array
from legacy_peers import LegacyServer

from framerpc.client import NoResult, RPCClient
from framerpc.errors import RemoteError
from framerpc.property import RPCProperty
from framerpc.protocol import PROTOCOL_VERSION
from framerpc.signal import RPCSignal
from framerpc.signal_receiver import RPCSignalReceiver
from framerpc.wire import json_codec as legacy

# == framerpc client -> older server ===========================================


def _json(frame: Any) -> Any:
    return json.loads(bytes(frame))


class LegacyCamera(ABC):
    """The interface of ``legacy_peers.LegacyServer``, plus ``focus``,
    which it lacks."""

    count = RPCSignal(int)
    mode_changed = RPCSignal(str)
    gain = RPCProperty(doc="Gain.")
    mode = RPCProperty(doc="Mode; setting it emits mode_changed.")

    @abstractmethod
    def add(self, a: int, b: int = 0, scale: int = 1) -> int: ...

    @abstractmethod
    def echo(self, value: Any) -> Any: ...

    @abstractmethod
    def fail(self, message: str) -> None: ...

    @abstractmethod
    def sleep(self, seconds: float) -> float: ...

    @abstractmethod
    def emit(self, name: str, *args: Any) -> None: ...

    @abstractmethod
    def grab(self, size: int) -> tuple: ...

    @abstractmethod
    def grab_fail(self) -> tuple: ...

    @abstractmethod
    def focus(self, distance: float) -> bool: ...


@RPCClient.register_interface(LegacyCamera)
class LegacyCameraProxy(LegacyCamera, RPCClient):
    """Proxy of the older server."""


@pytest.fixture
def legacy_server(ctx: zmq.Context) -> Iterator[LegacyServer]:
    server = LegacyServer(ctx)
    server.start()
    yield server
    server.close()
    assert server.errors == []


@pytest.fixture(params=["auto", "legacy"])
def old_proxy(request, legacy_server, connect) -> LegacyCameraProxy:
    """A proxy of the older server, detected or told. Its timeout bounds the
    handshake's requests (a ceiling for a loaded machine); the methods'
    timeouts are the server's."""
    if request.param == "auto":
        return connect(legacy_server.url, LegacyCameraProxy, timeout=10_000)
    return connect(
        legacy_server.url, LegacyCameraProxy, protocol="legacy", timeout=10_000
    )


def test_auto_detects_an_older_server(legacy_server, connect):
    proxy = connect(legacy_server.url, LegacyCameraProxy)
    assert proxy._protocol == "legacy"
    assert proxy.name == "legacy-cam"
    assert proxy._json_methods == {
        "add": 500,
        "echo": None,
        "fail": 10000,
        "sleep": 100,
        "emit": 10000,
    }
    assert proxy._buffer_methods == {"grab": 5000, "grab_fail": 10000}
    assert proxy._properties == ["gain", "mode"]
    assert sorted(proxy._signals) == ["count", "mode_changed"]
    # detection sent JSON only (the peer would have failed on msgpack)
    assert legacy_server.events()[:2] == ["GET_INVENTORY", "INIT_SIGNALS_HANDLING"]


def test_auto_detects_a_framerpc_server(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    assert proxy._protocol == "native"
    got: list[int] = []
    proxy.frame_ready.connect(got.append)
    tcp_camera.frame_ready.emit(3)  # native handshake done: no emission lost
    assert wait_until(lambda: got == [3])
    array = proxy.make_array([4, 4], "int32")  # a native-only value
    assert isinstance(array, np.ndarray) and array.dtype == np.int32


def test_a_marker_of_another_version_means_json(tcp_camera, connect, monkeypatch):
    """A framerpc server of another native version is spoken to in JSON,
    which both understand."""
    real = legacy.encode_inventory

    def newer(inventory: dict) -> list:
        message = _json(real(inventory)[0])
        message["framerpc"] = PROTOCOL_VERSION + 1
        return [json.dumps(message).encode()]

    monkeypatch.setattr(legacy, "encode_inventory", newer)
    proxy = connect(tcp_camera.url)
    assert proxy._protocol == "legacy"
    assert proxy.add(1, 2) == 3


def test_native_protocol_can_be_forced(tcp_camera, connect, monkeypatch):
    sent: list = []
    real = legacy.encode_request
    monkeypatch.setattr(legacy, "encode_request", lambda r: sent.append(r) or real(r))
    proxy = connect(tcp_camera.url, protocol="native")
    assert proxy._protocol == "native" and proxy.add(2, 2) == 4
    assert sent == []


def test_an_unknown_protocol_is_refused(ctx, tcp_camera):
    with pytest.raises(ValueError, match="protocol must be one of"):
        RPCClient(ctx, tcp_camera.url, protocol="json")  # type: ignore[arg-type]


def test_json_calls_to_an_older_server(old_proxy):
    assert old_proxy._protocol == "legacy"
    assert old_proxy.add(1, 2, scale=3) == 9
    assert old_proxy.execute("add", {"args": [2]}) == (True, 2)
    assert old_proxy.echo((1, "a")) == [1, "a"]  # JSON turns tuples into lists
    value = {"k": [1.5, None, True, "é"]}
    assert old_proxy.echo(value) == value


def test_errors_of_an_older_server_are_noresult(old_proxy, legacy_server):
    result = old_proxy.fail("boom")
    assert isinstance(result, NoResult) and not result
    assert result.error == "boom" and "ValueError" in result.traceback
    missing = old_proxy.focus(1.5)
    assert isinstance(missing, NoResult)
    assert (missing.error, missing.traceback) == ("Method focus not implemented", "")
    assert old_proxy.execute("nope", {}) == (
        False,
        ("Method nope not implemented", ""),
    )
    assert old_proxy.add(1) == 1


def test_arguments_json_cannot_carry_raise_before_sending(old_proxy, legacy_server):
    before = len(legacy_server.requests)
    with pytest.raises(TypeError, match="bytes"):
        old_proxy.echo(b"raw")
    with pytest.raises(TypeError, match="ndarray"):
        old_proxy.echo(np.zeros(3))
    assert len(legacy_server.requests) == before
    assert old_proxy.echo("still usable") == "still usable"


def test_buffer_calls_to_an_older_server(old_proxy):
    data, info = old_proxy.grab(1000)
    assert isinstance(data, memoryview) and data.readonly
    assert data == (bytes(range(256)) * 4)[:1000]
    assert info == {"size": 1000}
    empty, info = old_proxy.grab(0)
    assert empty.nbytes == 0 and info == {"size": 0}
    failed = old_proxy.grab_fail()
    assert isinstance(failed, NoResult) and failed.error == "no frame"
    assert "RuntimeError" in failed.traceback


def _handled_in_order(server: LegacyServer, first: tuple, then: tuple) -> bool:
    """Whether ``server`` read the call ``first`` (method, args) before
    ``then``: a REP peer sends each reply before it reads the next request."""
    calls = [
        (r.get("method"), r.get("params", {}).get("args"))
        for r in list(server.requests)
    ]
    return first in calls and then in calls and calls.index(first) < calls.index(then)


def test_timeout_then_the_late_reply_is_never_returned(
    old_proxy, legacy_server, monkeypatch
):
    """``sleep`` has a 100 ms timeout; JSON carries no request id, so the
    client must make sure the late reply cannot answer the next call.

    The server's ``sleep`` replies only when the test lets it, after the
    call timed out: late however slow the machine (a real sleep could end
    within the timeout, or still run through the next call's). Proven when
    the server sent that late reply before it read the next call; a request
    that reached it only after the next one (the machine stalled past the
    timeout) proves nothing, and the step is tried again."""
    gates: dict[int, threading.Event] = {}

    def held(token: int) -> int:
        gate = gates.get(token)
        if gate is not None:
            gate.wait(30)  # a ceiling: set by the test once the call timed out
        return token

    monkeypatch.setitem(legacy_server.json_methods, "sleep", (held, 100))
    calls = {
        "method": lambda token: old_proxy.sleep(token),
        "execute": lambda token: old_proxy.execute("sleep", {"args": [token]}),
    }
    tokens = iter(range(1, 1000))
    try:
        for kind, call in calls.items():
            for _ in range(10):
                token = next(tokens)
                gates[token] = threading.Event()
                with pytest.raises(TimeoutError):
                    call(token)
                gates[token].set()  # the late reply goes out now
                follow = f"next after {kind} {token}"
                assert old_proxy.echo(follow) == follow
                if _handled_in_order(
                    legacy_server, ("sleep", [token]), ("echo", [follow])
                ):
                    break
            else:
                raise AssertionError(f"no {kind} call reached the server in time")
    finally:
        for gate in gates.values():
            gate.set()


def test_properties_of_an_older_server(old_proxy, legacy_server):
    assert (old_proxy.gain, old_proxy.mode) == (1, "normal")
    old_proxy.gain = 5
    assert legacy_server.values["gain"] == 5 and old_proxy.gain == 5
    with pytest.raises(RemoteError) as caught:
        old_proxy.gain = -1
    assert "gain must be >= 0" in caught.value.error
    assert "ValueError" in caught.value.traceback
    missing = old_proxy._get_property("zoom")
    assert isinstance(missing, NoResult) and "zoom" in missing.error
    assert old_proxy.gain == 5


def test_signals_of_an_older_server(old_proxy, legacy_server):
    counts: list[int] = []
    modes: list[str] = []
    old_proxy.count.connect(counts.append)
    old_proxy.mode_changed.connect(modes.append)
    assert wait_until(lambda: old_proxy.emit("count", 7) or counts[-1:] == [7])
    old_proxy.mode = "hdr"
    assert wait_until(lambda: modes == ["hdr"])
    assert set(counts) == {7}


def test_stop_an_older_server(old_proxy, legacy_server):
    assert old_proxy.stop_server() is True
    assert legacy_server.stopped.is_set()
    legacy_server.join(timeout=5)
    assert not legacy_server.is_alive()


def test_stop_acknowledgement_survives_the_server_closing_at_once(ctx, connect):
    """The older server closes right after its STOP_SERVER reply; a DEALER
    with IMMEDIATE would often drop that unread reply (about 1 run in 10)."""
    for _ in range(20):
        server = LegacyServer(ctx)
        server.start()
        try:
            assert connect(server.url, LegacyCameraProxy).stop_server() is True
        finally:
            server.close()
        assert server.errors == []


def test_legacy_mode_against_a_framerpc_server(tcp_camera, connect):
    """protocol="legacy" also works with a framerpc server (it speaks JSON)."""
    proxy = connect(tcp_camera.url, protocol="legacy")
    assert proxy._protocol == "legacy"
    assert proxy.add(1, 2, scale=3) == 9
    assert proxy.set_exposure(100) is True and tcp_camera.exposure == 100
    buffer, info = proxy.grab([2, 3], "uint16")
    assert isinstance(buffer, memoryview) and buffer.readonly
    assert buffer == make_array([2, 3], "uint16").tobytes()
    assert info == {"shape": [2, 3], "dtype": "uint16"}
    failed = proxy.fail("boom")
    assert isinstance(failed, NoResult) and failed.error == "ValueError: boom"
    assert "SerializationError" in proxy.make_array([2], "uint8").error
    proxy.gain = 4
    assert proxy.gain == 4
    with pytest.raises(RemoteError):
        proxy.gain = -4
    got: list[int] = []
    proxy.frame_ready.connect(got.append)
    assert wait_until(lambda: tcp_camera.frame_ready.emit(9) or got[-1:] == [9])
    assert proxy.stop_server() is True


def test_legacy_mode_without_tcp_has_no_signals(ctx, serve, tmp_path, connect, caplog):
    server = serve(CameraServer(ctx, f"ipc://{tmp_path}/cam.sock"))
    with caplog.at_level(logging.WARNING, logger="framerpc.client"):
        proxy = connect(server.url, protocol="legacy")
    assert "no signals" in caplog.text and proxy._signal_receiver is None
    assert proxy.echo("calls work") == "calls work"


# -- the receiver's connection wait (used for older servers) --------------------------


def test_wait_connected(ctx):
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    try:
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        receiver = RPCSignalReceiver(
            ctx, f"tcp://127.0.0.1:{port}", {}, confirm_connection=True
        )
        try:
            assert receiver.wait_connected(5000) is True
            with pytest.raises(RuntimeError):
                receiver.wait_connected(10)  # only once
        finally:
            receiver.stop()
        plain = RPCSignalReceiver(ctx, f"tcp://127.0.0.1:{port}", {})
        with pytest.raises(RuntimeError, match="confirm_connection"):
            plain.wait_connected(10)
        plain.stop()
    finally:
        pub.close()


def test_wait_connected_times_out_without_publisher(ctx):
    # A port held by a listener that never speaks ZeroMQ: the handshake
    # cannot complete. (A port closed again could be taken meanwhile by a
    # publisher of another process, and the handshake would succeed.)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        receiver = RPCSignalReceiver(
            ctx, f"tcp://127.0.0.1:{port}", {}, confirm_connection=True
        )
        try:
            # a generous ceiling: it only catches a wait that ignores its timeout
            assert finishes_within(20, lambda: receiver.wait_connected(200)) is False
        finally:
            receiver.start()  # a started receiver closes everything when stopped
            receiver.stop()
            receiver.join(timeout=5)
    assert not receiver.is_alive()
