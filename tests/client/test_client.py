"""Tests for framerpc.client: proxies, calls, timeouts, per-proxy signals, thread
safety, closing and server restarts. Values on the wire: test_client_values.py.
"""

from __future__ import annotations

import gc
import inspect
import threading
import warnings

import pytest
import zmq
from conftest import finishes_within, wait_until
from devices import (
    BLOCK_LIMIT_S,
    Camera,
    CameraProxy,
    CameraServer,
    ExtendedCameraProxy,
    bind_again,
)

from framerpc.client import NoResult, RPCClient
from framerpc.signal import UntypedSignal
from framerpc.transport import SocketOptions

# -- the interface / server / proxy pattern ------------------------------------


def test_round_trip_on_every_transport(ctx, camera, connect):
    proxy = connect(camera.url)
    assert (proxy.context, proxy.url) == (ctx, camera.url)
    assert proxy.set_exposure(100) is True
    assert camera.exposure == 100
    assert proxy.add(1, 2, scale=3) == 9
    assert proxy.add(a=4) == 4


def test_proxy_methods_keep_name_signature_and_docstring():
    for name in ("set_exposure", "add", "arg_types", "grab"):
        remote, declared = getattr(CameraProxy, name), getattr(Camera, name)
        assert remote is not declared
        assert remote.__name__ == name
        assert remote.__doc__ == declared.__doc__
        assert inspect.signature(remote) == inspect.signature(declared)


def test_abstract_methods_do_not_prevent_instantiation(tcp_camera, connect):
    with pytest.raises(TypeError, match="abstract"):
        Camera()  # the interface itself stays abstract
    assert not inspect.isabstract(CameraProxy)
    proxy = connect(tcp_camera.url)
    assert isinstance(proxy, Camera)
    assert list(inspect.signature(proxy.add).parameters) == ["a", "b", "scale"]


def test_register_interface_requires_the_interface_and_rpcclient():
    with pytest.raises(RuntimeError, match="Camera"):

        @RPCClient.register_interface(Camera)
        class MissesInterface(RPCClient):
            pass

    with pytest.raises(RuntimeError, match="RPCClient"):

        @RPCClient.register_interface(Camera)
        class MissesClient(Camera):
            pass


# -- execute, NoResult ----------------------------------------------------------


def test_execute_returns_success_and_result(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    assert proxy.execute("add", {"args": [1, 2], "kwargs": {"scale": 3}}) == (True, 9)
    assert proxy.execute("set_exposure", {"args": [7]}) == (True, True)
    assert proxy.execute("add", {"kwargs": {"a": 2, "b": 2}}) == (True, 4)


def test_remote_exception_gives_noresult_and_the_server_keeps_serving(
    tcp_camera, connect
):
    proxy = connect(tcp_camera.url)
    ok, (error, traceback) = proxy.execute("fail", {"args": ["boom"]})
    assert ok is False
    assert "ValueError" in error and "boom" in error
    assert "fail" in traceback
    result = proxy.fail("bang")
    assert isinstance(result, NoResult)
    assert not result
    assert "ValueError" in result.error and "bang" in result.error
    assert "fail" in result.traceback
    assert proxy.add(1, 1) == 2


def test_unknown_method_gives_an_error_naming_it(tcp_camera, connect):
    proxy = connect(tcp_camera.url, ExtendedCameraProxy)
    result = proxy.focus(1.5)
    assert isinstance(result, NoResult) and "focus" in result.error
    ok, (error, _) = proxy.execute("no_such_method", {"args": []})
    assert ok is False and "no_such_method" in error
    assert proxy.add(1, 1) == 2


# -- timeouts -----------------------------------------------------------------


def test_silent_server_raises_timeout_error(ctx):
    """A ROUTER that never answers; the ``ctx`` fixture then proves the
    client closed its socket on the way out."""
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        with pytest.raises(TimeoutError):
            RPCClient(ctx, f"tcp://127.0.0.1:{port}", timeout=200)
        assert router.poll(1000), "the request never reached the silent server"
    finally:
        router.close()


def test_unreachable_server_raises_timeout_error(ctx, tmp_path):
    with pytest.raises(TimeoutError):
        RPCClient(ctx, f"ipc://{tmp_path}/nobody.sock", timeout=200)


def test_invalid_url_raises_and_closes_the_socket(ctx):
    """Closed by the client, not by the garbage collector (ResourceWarning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(ValueError, match="bogus://nowhere"):
            RPCClient(ctx, "bogus://nowhere")
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "zmq"])
def test_method_timeout_then_late_reply_is_discarded(
    tcp_camera, connect, monkeypatch, lane
):
    """``sleep`` has a 100 ms timeout; its late reply must never be returned
    to the next call. The server's ``sleep`` replies only once the call
    timed out, so it is late however slow the machine (a real sleep could
    end within the timeout, or run on through the next call's timeout), and
    it goes out before the next call's reply, on the same connection (the
    same-host lane takes the calls when it is on)."""
    gates: dict[float, threading.Event] = {}

    def held(seconds: float) -> float:
        tcp_camera.calls.append(f"sleep {seconds}")
        gates[seconds].wait(BLOCK_LIMIT_S)  # a ceiling: the test sets it
        return seconds

    monkeypatch.setattr(tcp_camera, "sleep", held)
    proxy = connect(tcp_camera.url, options=SocketOptions(lane=lane))
    calls = {
        0.4: proxy.sleep,
        0.3: lambda seconds: proxy.execute("sleep", {"args": [seconds]}),
    }
    try:
        for seconds, call in calls.items():
            gates[seconds] = threading.Event()
            with pytest.raises(TimeoutError):
                call(seconds)
            gates[seconds].set()  # the late reply goes out now
            assert proxy.echo(f"after {seconds}") == f"after {seconds}"
            # served in that order: the late reply came first
            assert tcp_camera.calls[-2:] == [f"sleep {seconds}", "echo"]
    finally:
        for gate in gates.values():
            gate.set()


# -- signals ------------------------------------------------------------------


def test_each_proxy_has_its_own_signals(tcp_camera, connect):
    first, second = connect(tcp_camera.url), connect(tcp_camera.url)
    assert first.frame_ready is not second.frame_ready
    assert first._signals["frame_ready"] is first.frame_ready
    got_first, got_second = [], []
    first.frame_ready.connect(got_first.append)
    assert second.frame_ready.connections == []
    assert CameraProxy.frame_ready.connections == []
    second.frame_ready.connect(got_second.append)
    assert first.frame_ready.connections == [got_first.append]
    tcp_camera.frame_ready.emit(1)
    tcp_camera.frame_ready.emit(2)
    assert wait_until(lambda: got_first[-1:] == got_second[-1:] == [2])
    # A shared signal would call both listeners from both receivers: [1, 1, 2, 2].
    assert got_first == got_second == [1, 2]


def test_tuple_signal_argument_arrives_as_a_tuple(camera, connect):
    proxy = connect(camera.url)
    received = []
    proxy.pair_ready.connect(received.append)
    camera.pair_ready.emit((7, "seven"))
    assert wait_until(lambda: len(received) == 1)
    assert received == [(7, "seven")] and type(received[0]) is tuple


def test_listener_that_raises_does_not_stop_the_signals(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    received = []

    def listener(value: int) -> None:
        received.append(value)
        raise RuntimeError("listener failure")

    proxy.frame_ready.connect(listener)
    for value in range(3):
        tcp_camera.frame_ready.emit(value)
    assert wait_until(lambda: received == [0, 1, 2])
    assert proxy.echo("alive") == "alive"


# -- threads, closing ---------------------------------------------------------


def test_one_proxy_used_from_eight_threads(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    results: dict[int, list] = {}

    def worker(index: int) -> None:
        results[index] = [proxy.echo([index, call]) for call in range(50)]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert results == {i: [[i, call] for call in range(50)] for i in range(8)}


def test_close_then_calls_raise_runtime_error(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    proxy.close()
    proxy.close()  # idempotent
    with pytest.raises(RuntimeError):
        proxy.echo(1)
    with pytest.raises(RuntimeError):
        proxy.execute("echo", {"args": [1]})
    with pytest.raises(RuntimeError):
        proxy.gain  # noqa: B018
    assert proxy.stop_server() is False


def test_context_manager_closes_the_proxy(ctx, tcp_camera):
    with CameraProxy(ctx, tcp_camera.url) as proxy:
        assert proxy.echo("inside") == "inside"
    with pytest.raises(RuntimeError):
        proxy.echo("outside")


def test_close_interrupts_a_call_without_timeout(tcp_camera, connect):
    proxy = connect(tcp_camera.url)
    errors = []

    def call() -> None:
        try:
            proxy.block()
        except RuntimeError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        assert wait_until(lambda: "block" in tcp_camera.calls)
        proxy.close()
        caller.join(timeout=5)
        assert not caller.is_alive(), "close() did not interrupt the call"
        assert len(errors) == 1 and "closed" in str(errors[0])
    finally:
        tcp_camera.release.set()
        caller.join(timeout=5)


def test_close_from_a_signal_listener(tcp_camera, connect):
    """Regression: close() joined the receiver thread from inside it
    (RuntimeError), so the socket stayed open and the context hung."""
    proxy = connect(tcp_camera.url)
    proxy.frame_ready.connect(lambda value: proxy.close())
    tcp_camera.frame_ready.emit(1)
    assert wait_until(lambda: proxy.socket.closed)
    with pytest.raises(RuntimeError):
        proxy.echo(1)


def test_stop_server_with_the_server_gone_returns_false(ctx, connect):
    server = CameraServer(ctx, "tcp://127.0.0.1")
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        proxy = connect(server.url)
    finally:
        server.stop_server()
        thread.join(timeout=5)
    # Generous bound, only to catch a hang: the documented wait is ~1 s.
    assert finishes_within(5, proxy.stop_server) is False


# -- server restarts ------------------------------------------------------------


def _bind_again(ctx, url: str) -> CameraServer:
    """A new server on the URL of one that just stopped."""
    return bind_again(lambda: CameraServer(ctx, url))


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_proxy_follows_a_server_restarted_on_the_same_url(ctx, connect, tmp_path, kind):
    """Calls reach the new server, and signals too: it bound a new signal
    socket, which the proxy's receiver finds through a fresh inventory."""
    address = "tcp://127.0.0.1" if kind == "tcp" else f"ipc://{tmp_path}/cam.sock"
    first = CameraServer(ctx, address)
    thread = threading.Thread(target=first.serve_forever, daemon=True)
    thread.start()
    proxy = connect(first.url)
    got: list = []
    proxy.frame_ready.connect(got.append)
    first.stop_server()
    thread.join(timeout=5)

    second = _bind_again(ctx, first.url)
    thread = threading.Thread(target=second.serve_forever, daemon=True)
    thread.start()
    try:

        def answers() -> bool:
            try:
                return proxy.echo("back") == "back"
            except TimeoutError:
                return False

        assert wait_until(answers, timeout=10)

        def delivered() -> bool:
            second.frame_ready.emit(42)
            return 42 in got

        assert wait_until(delivered, timeout=10)
    finally:
        second.stop_server()
        thread.join(timeout=5)


def test_plain_client_passes_undeclared_signal_arguments_without_warning(ctx, caplog):
    """A client without an interface class makes its signals from the
    inventory: their emissions arrive as sent, with no mismatch warning."""
    server = CameraServer(ctx, "tcp://127.0.0.1")
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    client = RPCClient(ctx, server.url)
    try:
        signal = client._signals["frame_ready"]
        assert isinstance(signal, UntypedSignal)
        got: list = []
        arrived = threading.Event()
        signal.connect(lambda *args: (got.append(args), arrived.set()))
        with caplog.at_level("WARNING", logger="framerpc"):
            for _ in range(200):  # until the subscription is live
                server.frame_ready.emit(7)
                if arrived.wait(0.05):
                    break
        assert got and got[0] == (7,)
        assert not [r for r in caplog.records if "signal" in r.getMessage()]
    finally:
        client.close()
        server.stop_server()
        thread.join(10)
