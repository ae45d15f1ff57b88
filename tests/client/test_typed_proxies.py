"""Typed proxies: connect(), raise_errors and RemoteError, closing(), Self from
__enter__, member clashes refused, and restarts followed without signals."""

from __future__ import annotations

import socket
import threading
import uuid
from abc import ABC, abstractmethod

import pytest
import zmq
from conftest import wait_until
from devices import Camera, CameraProxy, ExtendedCameraProxy, bind_again

import framerpc
from framerpc import NoResult, RemoteError, RPCClient, RPCProperty, RPCServer


def test_connect_returns_a_proxy_of_the_interface(ctx, tcp_camera):
    proxy = framerpc.connect(Camera, ctx, tcp_camera.url)
    with framerpc.closing(proxy) as camera:
        assert camera is proxy
        assert isinstance(camera, Camera) and isinstance(camera, RPCClient)
        assert camera.set_exposure(42) is True
        assert tcp_camera.exposure == 42
        camera.mode = "hdr"
        assert camera.mode == "hdr"
        seen = threading.Event()
        camera.frame_ready.connect(lambda n: seen.set())
        tcp_camera.frame_ready.emit(1)
        assert seen.wait(10)
    assert proxy._closed and proxy.socket.closed


def test_connect_makes_one_proxy_class_per_interface(ctx, tcp_camera):
    first = framerpc.connect(Camera, ctx, tcp_camera.url)
    second = framerpc.connect(Camera, ctx, tcp_camera.url)
    try:
        assert type(first) is type(second)
        assert type(first).__name__ == "CameraProxy"
        assert type(first).__mro__[1] is Camera
    finally:
        first.close()
        second.close()


def test_connect_raises_remote_errors_by_default(ctx, tcp_camera):
    with framerpc.closing(framerpc.connect(Camera, ctx, tcp_camera.url)) as camera:
        with pytest.raises(RemoteError) as caught:
            camera.fail("bad exposure")
        error = caught.value
        assert isinstance(error, Exception)
        assert error.remote_type == "ValueError"
        assert error.message == "bad exposure"
        assert "ValueError: bad exposure" in error.traceback
        assert "in fail" in error.traceback
        # the proxy stays usable
        assert camera.add(1, 2) == 3


def test_connect_can_return_noresult(ctx, tcp_camera):
    camera = framerpc.connect(Camera, ctx, tcp_camera.url, raise_errors=False)
    with framerpc.closing(camera):
        result = camera.fail("quiet")
        assert type(result) is NoResult and not result
        assert result.error == "ValueError: quiet"


def test_classic_proxy_keeps_noresult_and_can_raise(ctx, tcp_camera, connect):
    assert type(connect(tcp_camera.url).fail("x")) is NoResult
    raising = connect(tcp_camera.url, raise_errors=True)
    with pytest.raises(RemoteError, match="ValueError: y"):
        raising.fail("y")


def test_unknown_method_and_property_raise_with_raise_errors(ctx, tcp_camera, connect):
    proxy = connect(tcp_camera.url, ExtendedCameraProxy, raise_errors=True)
    with pytest.raises(RemoteError) as caught:
        proxy.focus(1.5)
    assert caught.value.remote_type == ""
    assert "focus" in caught.value.message
    with pytest.raises(RemoteError, match="zoom"):
        _ = proxy.zoom
    quiet = connect(tcp_camera.url, ExtendedCameraProxy)
    assert type(quiet.zoom) is NoResult


def test_remote_error_parts():
    error = RemoteError("KeyError: 'a'", "Traceback...")
    assert (error.remote_type, error.message, error.traceback) == (
        "KeyError",
        "'a'",
        "Traceback...",
    )
    assert str(error) == "KeyError: 'a'"
    dotted = RemoteError("numpy.linalg.LinAlgError: singular")
    assert dotted.remote_type == "numpy.linalg.LinAlgError"
    plain = RemoteError("Method focus not implemented")
    assert (plain.remote_type, plain.message) == ("", "Method focus not implemented")
    spaced = RemoteError("no such thing: here")
    assert (spaced.remote_type, spaced.message) == ("", "no such thing: here")


def test_enter_returns_the_proxy_itself(ctx, tcp_camera):
    proxy = CameraProxy(ctx, tcp_camera.url)
    with proxy as entered:
        assert entered is proxy
    assert proxy.socket.closed


def test_connect_and_closing_refuse_wrong_arguments(ctx):
    with pytest.raises(TypeError, match="interface class"):
        framerpc.connect(lambda: None, ctx, "inproc://nothing")
    with pytest.raises(TypeError, match="framerpc proxy"):
        with framerpc.closing(object()):
            pass


# -- members that would replace the client's ----------------------------------
def test_register_interface_refuses_a_close_method():
    class Door(ABC):
        @abstractmethod
        def close(self) -> None: ...

    with pytest.raises(TypeError, match=r"Door\.close would replace RPCClient\.close"):

        @RPCClient.register_interface(Door)
        class DoorProxy(Door, RPCClient):
            pass


def test_register_interface_refuses_a_name_property_and_lists_all():
    class Sensor:
        name = RPCProperty(doc="sensor name")
        url = RPCProperty(doc="its own URL")

        def stop_server(self) -> None:
            raise NotImplementedError

    with pytest.raises(TypeError) as caught:

        @RPCClient.register_interface(Sensor)
        class SensorProxy(Sensor, RPCClient):
            pass

    message = str(caught.value)
    assert "Sensor.name would replace RPCClient.name" in message
    assert "stop_server" in message and "url" in message


def test_connect_refuses_a_clashing_interface(ctx):
    class Valve:
        def execute(self) -> None:
            raise NotImplementedError

    with pytest.raises(TypeError, match="execute"):
        framerpc.connect(Valve, ctx, "inproc://never-reached")
    assert list(ctx._sockets) == []  # nothing was opened


# -- every proxy follows a restart -------------------------------------------------
class Plain:
    """An interface without signals."""

    def version(self) -> int:
        raise NotImplementedError


class PlainV1(Plain, RPCServer):
    @RPCServer.register_method_json
    def version(self) -> int:
        return 1


class PlainV2(Plain, RPCServer):
    @RPCServer.register_method_json(timeout=4321)
    def version(self) -> int:
        return 2

    @RPCServer.register_method_json
    def extra(self) -> str:
        return "new"


def _free_tcp_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_proxy_without_signals_reloads_the_inventory_after_a_restart(
    ctx, kind, tmp_path
):
    url = _free_tcp_url() if kind == "tcp" else f"ipc://{tmp_path}/plain.sock"
    with PlainV1(ctx, url) as first:
        first.start()
        proxy = framerpc.connect(Plain, ctx, first.url, timeout=5000)
    try:
        assert proxy._signal_receiver is None  # no signals: no receiver
        assert proxy._restart_watcher is not None
        assert "extra" not in proxy._json_methods
        # ZeroMQ frees a closed socket's address in its I/O thread, later
        second = bind_again(lambda: PlainV2(ctx, url), 20.0)
        with second:
            second.start()
            # the watcher reads the new inventory once the connection is back
            assert wait_until(lambda: "extra" in proxy._json_methods, 30)
            assert proxy._json_methods["version"] == 4321
            assert proxy.version() == 2
            assert proxy.execute("extra", {}) == (True, "new")
    finally:
        proxy.close()
    assert proxy._restart_watcher is None


def test_inproc_proxy_without_signals_starts_no_watcher(ctx):
    with PlainV1(ctx, f"inproc://{uuid.uuid4().hex}") as server:
        server.start()
        with framerpc.closing(framerpc.connect(Plain, ctx, server.url)) as proxy:
            assert proxy.version() == 1
            assert proxy._restart_watcher is None


def test_restart_watcher_closes_its_socket_on_termination():
    context = zmq.Context()
    server = PlainV1(context, "tcp://127.0.0.1")
    server.start()
    proxy = framerpc.connect(Plain, context, server.url)
    watcher = proxy._restart_watcher
    server.close()
    context.destroy()  # the proxy is still open: its threads stop on their own
    watcher.join(10)
    assert not watcher.is_alive()
    proxy.close()
