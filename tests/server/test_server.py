"""Tests for framerpc.server: binding, decorators, lifecycle, properties, signals,
registration.

The server is driven through ``devices.CameraProxy``. Error replies and
malformed input (a raw DEALER socket speaking the wire format directly):
test_server_errors.py.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import zmq
from conftest import finishes_within, wait_until
from devices import CameraServer, ExtendedCameraProxy
from manual_clock import ManualClock

from framerpc import transport
from framerpc.client import NoResult, RPCClient
from framerpc.errors import RemoteError
from framerpc.protocol import Request, RPCEvents
from framerpc.server import RPCServer, serve_loop
from framerpc.wire import messages as protocol

# -- binding and attributes --------------------------------------------------


@pytest.mark.parametrize("address", ["tcp://127.0.0.1", "tcp://127.0.0.1:*"])
def test_binds_a_free_port_when_the_url_has_none(ctx, address):
    first, second = CameraServer(ctx, address), CameraServer(ctx, address)
    try:
        for server in (first, second):
            assert isinstance(server.port, int) and server.port > 0
            assert server.url == f"tcp://127.0.0.1:{server.port}"
        assert first.port != second.port
    finally:
        first.stop_server()
        second.stop_server()


def test_attributes(ctx, url):
    server = CameraServer(ctx, url, alive_timeout=5)
    try:
        assert server.context is ctx
        assert server.alive_timeout == 5
        assert (server.uuid, server.name, server.registry_addr) == (None, "", "")
        if url.startswith("tcp"):
            assert server.url == f"{url}:{server.port}"
        else:
            assert (server.url, server.port) == (url, None)
    finally:
        server.stop_server()


def test_alive_timeout_defaults_to_60_s(ctx):
    server = CameraServer(ctx, "inproc://default-alive-timeout")
    server.stop_server()
    assert server.alive_timeout == 60


# -- decorators -------------------------------------------------------------


def test_decorators_return_the_function_itself():
    def method(self):
        return 1

    assert RPCServer.register_method_json(method) is method
    assert RPCServer.register_method_json(timeout=5)(method) is method
    assert RPCServer.register_method_buffer(method) is method
    assert RPCServer.register_method_buffer(timeout=None)(method) is method


def test_decorators_bare_and_called_publish_their_timeouts(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    assert proxy._json_methods == {
        "set_exposure": 10000,  # bare: the default
        "echo": 10000,
        "add": 500,
        "arg_types": None,  # timeout=None: wait without limit
        "fail": 10000,
        "sleep": 100,
        "block": None,
        "emit_pair": 10000,
        "make_array": 10000,
        "unsendable": 10000,
    }
    assert proxy._buffer_methods == {
        "grab": 30000,
        "read_buffer": None,
        "echo_buffer": 10000,
        "bad_buffer": 10000,
    }
    assert sorted(proxy._properties) == ["gain", "mode"]
    assert sorted(proxy._signals) == ["frame_ready", "mode_changed", "pair_ready"]


# -- lifecycle --------------------------------------------------------------


def test_stop_server_from_another_thread_ends_serve_forever(ctx):
    server = CameraServer(ctx, "tcp://127.0.0.1")
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        RPCClient(ctx, server.url).close()  # answered: the loop is running
    finally:
        server.stop_server()
        thread.join(timeout=5)
    assert not thread.is_alive(), "serve_forever did not return"


def test_stop_server_before_serve_forever_closes_the_sockets(ctx, url):
    """The ``ctx`` fixture fails if the ROUTER or PUB socket stayed open."""
    server = CameraServer(ctx, url)
    server.stop_server()
    server.stop_server()  # idempotent


@pytest.mark.parametrize("client_delay", [0, 0.1], ids=["prompt", "busy-client"])
def test_client_stop_server_stops_the_server(ctx, connect, client_delay, monkeypatch):
    """Regression (busy-client): the server closed its socket right after
    acknowledging STOP_SERVER; a client that had not read the reply yet lost
    it (its IMMEDIATE DEALER drops unread messages of a closed connection)
    and stop_server() returned False. The server now serves 0.2 s longer,
    counted here on a clock the test moves once it has the reply: a loaded
    machine may keep a client from reading for longer than that."""
    clock = ManualClock()
    monkeypatch.setattr(serve_loop, "time", SimpleNamespace(monotonic=clock))
    server = CameraServer(ctx, "tcp://127.0.0.1")
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        if client_delay == 0:
            assert connect(server.url).stop_server() is True
        else:
            # a client's socket (IMMEDIATE DEALER), busy (GIL, load) a
            # moment between sending STOP_SERVER and reading the reply
            sock = transport.make_socket(ctx, zmq.DEALER)
            try:
                sock.connect(server.url)
                request = Request(RPCEvents.STOP_SERVER, 1)
                transport.send_frames(sock, [b"", *protocol.encode_request(request)])
                time.sleep(client_delay)
                # poll() makes libzmq process the socket's pending commands
                # (a closed connection) before the read, as it would later
                assert sock.poll(10_000), "the acknowledgement was lost"
                reply = protocol.decode_reply(transport.recv_frames(sock)[1:])
            finally:
                sock.close(linger=0)
            assert reply.ok and reply.request_id == 1
        # past the grace, however late the server starts counting it
        stopped = wait_until(lambda: clock.advance(1.0) or not thread.is_alive())
        assert stopped, "serve_forever did not return"
    finally:
        server.stop_server()
        thread.join(timeout=5)


def test_wildcard_host_serves_loopback_clients_with_signals(ctx, serve, connect):
    server = serve(CameraServer(ctx, "tcp://*"))
    assert server.url == f"tcp://0.0.0.0:{server.port}"
    proxy = connect(f"tcp://127.0.0.1:{server.port}")
    received = []
    proxy.frame_ready.connect(received.append)
    assert proxy.echo("hi") == "hi"
    server.frame_ready.emit(4)
    assert wait_until(lambda: received == [4])


# -- properties ---------------------------------------------------------------


def test_property_get_and_set_on_every_transport(camera, connect):
    proxy = connect(camera.url)
    assert (proxy.gain, proxy.mode) == (1, "normal")
    proxy.gain = 5
    proxy.mode = "hdr"
    assert (camera.gain, camera.mode) == (5, "hdr")
    assert (proxy.gain, proxy.mode) == (5, "hdr")


def test_property_setter_error_raises_remote_error(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    with pytest.raises(RemoteError) as caught:
        proxy.gain = -1
    assert isinstance(caught.value, RuntimeError)
    assert caught.value.error == "ValueError: gain must be >= 0, got -1"
    assert "in gain" in caught.value.traceback
    assert proxy.gain == 1


def test_unknown_property_get_and_set_fail(tcp_camera, connect):
    proxy = connect(tcp_camera.url, ExtendedCameraProxy)
    with pytest.raises(RemoteError, match="Property zoom not found"):
        proxy.zoom = 2
    result = proxy.zoom
    assert isinstance(result, NoResult) and "zoom" in result.error
    assert proxy.gain == 1


def test_auto_notify_property_set_reaches_every_client(tcp_camera, connect):
    proxies = [connect(tcp_camera.url) for _ in range(3)]
    received: list[list[str]] = [[] for _ in proxies]
    for proxy, values in zip(proxies, received, strict=True):
        proxy.mode_changed.connect(values.append)
    proxies[0].mode = "hdr"
    assert wait_until(lambda: received == [["hdr"]] * 3)
    proxies[1].mode = "hdr"  # same value: no emission
    proxies[2].mode = "fast"
    # One publisher, in-order delivery: a second "hdr" would come before "fast".
    assert wait_until(lambda: received == [["hdr", "fast"]] * 3)


# -- signals ------------------------------------------------------------------


def test_emissions_reach_every_client_in_order(camera, connect):
    """A burst of emissions, far beyond the sockets' RPC high-water mark
    (up to the signal sockets' own, which bounds a stalled subscriber)."""
    count = transport.DEFAULT_OPTIONS.signal_hwm - 10
    proxies = [connect(camera.url) for _ in range(3)]
    received: list[list[int]] = [[] for _ in proxies]
    for proxy, values in zip(proxies, received, strict=True):
        proxy.frame_ready.connect(values.append)
    for index in range(count):
        camera.frame_ready.emit(index)
    expected = list(range(count))
    assert wait_until(lambda: all(len(v) >= count for v in received), timeout=10)
    assert received == [expected] * 3


def test_emission_from_a_handler_reaches_the_client(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    received = []
    proxy.pair_ready.connect(received.append)
    assert proxy.emit_pair(3, "x") is None
    assert wait_until(lambda: received == [(3, "x")])


def test_emission_after_stop_is_ignored(ctx):
    server = CameraServer(ctx, "inproc://emit-after-stop")
    server.stop_server()
    finishes_within(5, lambda: server.frame_ready.emit(1))


def test_closing_one_client_leaves_the_others_working(tcp_camera, connect):
    first, second = connect(tcp_camera.url), connect(tcp_camera.url)
    first.close()
    assert second.echo(1) == 1


def test_serve_forever_after_stop_returns_at_once(ctx):
    server = CameraServer(ctx, "inproc://served-after-stop")
    server.stop_server()
    finishes_within(5, server.serve_forever)


# -- registry ---------------------------------------------------------------


def _registry(ctx, name):
    from framerpc.registry import DeviceRegistry

    # on a clock that never moves: no device is pruned because a check-in
    # came late on a loaded machine
    registry = DeviceRegistry(ctx, f"inproc://{name}", clock=ManualClock())
    registry.start()
    return registry


def test_registered_server_checks_in_and_unregisters_on_stop(ctx, serve):
    from framerpc.registry import DeviceRegistry

    clock = ManualClock()  # the registry's time, moved by hand: no deadline is real
    registry = DeviceRegistry(ctx, "inproc://server-checks-in", clock=clock)
    registry.start()
    try:
        server = CameraServer(ctx, "tcp://127.0.0.1", alive_timeout=0.3)
        assert server.register_to_registry("camera", "cam", registry.url) == "cam"
        assert server.registry_addr == registry.url and server.uuid
        serve(server)
        for _ in range(5):  # 1 s of registry time: only check-ins keep it
            clock.advance(0.2)

            def checked_in() -> bool:
                entry = registry.get_entry("cam")
                assert entry is not None, "pruned: a check-in was missed"
                return entry.deadline >= clock.now + 0.3

            assert wait_until(checked_in, 30)
        assert registry.get_devices() == {"cam": ("camera", server.url)}
        server.stop_server()
        assert wait_until(lambda: registry.get_devices() == {}, 30)
        # stop_server() returns at once: the serve thread resets these after
        # the registry's answer to its UNREGISTER, a moment after the
        # registry forgot the device (asserting at once was the flake).
        assert wait_until(
            lambda: (server.name, server.uuid, server.registry_addr) == ("", None, ""),
            30,
        )
    finally:
        registry.stop()
        registry.join(timeout=5)


def test_server_name_follows_a_re_registration(ctx, serve):
    from framerpc.registry import register_device

    first = _registry(ctx, "server-re-registers")
    server = CameraServer(ctx, "tcp://127.0.0.1", alive_timeout=0.3)
    server.register_to_registry("camera", "cam", first.url)
    first.stop()
    first.join(timeout=5)
    second = _registry(ctx, "server-re-registers")
    try:
        # someone else took the name while the registry was away
        register_device(ctx, second.url, "camera", "tcp://10.0.0.9:1", "cam")
        serve(server)
        assert wait_until(lambda: server.name == "cam-1")
        assert second.get_devices()["cam-1"] == ("camera", server.url)
    finally:
        server.stop_server()
        second.stop()
        second.join(timeout=5)


def test_server_notifies_systemd_when_run_under_it(ctx, serve, tmp_path, monkeypatch):
    import os
    import socket

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    listener.bind(path)
    listener.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s: a ping every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    try:
        server = serve(CameraServer(ctx, "inproc://under-systemd"))
        seen = [listener.recv(64) for _ in range(3)]
        assert seen[0] == b"READY=1" and seen[1:] == [b"WATCHDOG=1"] * 2
        server.stop_server()
        while listener.recv(64) != b"STOPPING=1":
            pass
    finally:
        listener.close()


def test_server_keeps_serving_after_a_client_vanishes_mid_call(
    ctx, tcp_camera, connect
):
    """The reply to a client that closed during the call goes to a routing
    id that no longer exists: ROUTER drops it and the loop goes on."""
    raw = ctx.socket(zmq.DEALER)
    raw.connect(tcp_camera.url)
    request = protocol.Request(protocol.RPCEvents.METHOD_CALL, 1, "block", [], {})
    raw.send_multipart([b"", *protocol.encode_request(request)])
    assert wait_until(lambda: tcp_camera.calls.count("block") == 1)
    raw.close(linger=0)  # gone while its handler runs
    tcp_camera.release.set()
    proxy = connect(tcp_camera.url)
    assert proxy.echo("still here") == "still here"


class _SlowRelay:
    """A registry 1.3 s away: each request waits that long before it is
    passed on to the real registry at ``target`` (answers pass at once)."""

    DELAY_S = 1.3

    def __init__(self, ctx: zmq.Context, target: str) -> None:
        self.front = ctx.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        self.url = f"inproc://slow-relay-{id(self)}"
        self.front.bind(self.url)
        self.back = ctx.socket(zmq.DEALER)
        self.back.setsockopt(zmq.LINGER, 0)
        self.back.connect(target)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._relay, daemon=True)
        self.thread.start()

    def _relay(self) -> None:
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        while not self.stopped.is_set():
            ready = dict(poller.poll(50))
            if self.front in ready:
                message = self.front.recv_multipart()
                self.stopped.wait(self.DELAY_S)
                self.back.send_multipart(message)
            if self.back in ready:
                self.front.send_multipart(self.back.recv_multipart())

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(10)
        self.front.close()
        self.back.close()


def test_register_to_registry_waits_as_long_as_told(ctx):
    # its wait was a fixed 1 s: a registry over a slow link (or on a
    # loaded host) could not be registered with at all
    registry = _registry(ctx, "slow-registry")
    relay = _SlowRelay(ctx, registry.url)
    server = CameraServer(ctx, "tcp://127.0.0.1")
    try:
        with pytest.raises(TimeoutError):
            server.register_to_registry("camera", "cam", relay.url, timeout=200)
        name = server.register_to_registry("camera", "cam", relay.url, timeout=20000)
        assert name == "cam" and registry.get_devices()["cam"][1] == server.url
    finally:
        server.close()
        relay.close()
        registry.stop()
        registry.join(timeout=5)
