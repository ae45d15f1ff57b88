"""Shutdown orders, run in a child process by test_shutdown.py.

``python shutdown_child.py ORDER URL_KIND REPETITIONS``: repeats ORDER with
a fresh context each time. Success is exit status 0 with nothing on
stderr; a hang is reported by faulthandler (stack dump, non-zero exit).
"""

from __future__ import annotations

import faulthandler
import random
import sys
import tempfile
import threading
import time
import uuid

import zmq
from devices import CameraProxy, CameraServer

import framerpc

#: A hang fails the child after this many seconds, with every thread's stack.
HANG_S = 90
#: A temporary folder of the run (ipc sockets, key files).
FOLDER = ""


def server_url(kind: str, folder: str) -> str:
    if kind == "tcp":
        return "tcp://127.0.0.1"
    if kind == "ipc":
        return f"ipc://{folder}/{uuid.uuid4().hex[:8]}.sock"
    return f"inproc://{uuid.uuid4().hex}"


def close_then_term(url: str) -> None:
    ctx = zmq.Context()
    server = CameraServer(ctx, url)
    server.start()
    proxy = CameraProxy(ctx, server.url)  # with signals: a receiver thread
    seen = threading.Event()
    proxy.frame_ready.connect(lambda n: seen.set())
    assert proxy.set_exposure(5) is True
    assert proxy.emit_pair(1, "a") is None
    server.frame_ready.emit(1)
    assert seen.wait(10)
    proxy.close()
    server.close()
    assert not server._thread.is_alive()
    ctx.term()


def context_managers(url: str) -> None:
    with zmq.Context() as ctx:  # leaving it: destroy(), after our closes
        with CameraServer(ctx, url) as server:
            server.start()
            with CameraProxy(ctx, server.url) as proxy:
                assert proxy.add(1, 2) == 3
            # a proxy without signals has a restart watcher thread instead
            echo = framerpc.connect(echo_interface(), ctx, server.url)
            with framerpc.closing(echo) as p:
                assert p.echo(7) == 7


def echo_interface() -> type:
    class Echo:
        def echo(self, value: int) -> int:
            raise NotImplementedError

    return Echo


def emitter(server: CameraServer, stop: threading.Event, errors: list) -> None:
    """Emit frame_ready until ``stop``, with a breath now and then so that a
    loaded machine still runs the other threads."""
    try:
        n = 0
        while not stop.is_set():
            server.frame_ready.emit(n)
            n += 1
            if n % 64 == 0:
                time.sleep(0.001)
    except BaseException as exc:
        errors.append(exc)


def destroy_in_flight(url: str) -> None:
    ctx = zmq.Context()
    server = CameraServer(ctx, url)
    server.start()
    proxy = CameraProxy(ctx, server.url)
    other = CameraProxy(ctx, server.url)  # idle: destroy closes it at once
    received = threading.Event()
    proxy.frame_ready.connect(lambda n: received.set())
    stop = threading.Event()
    calls_done = threading.Event()
    errors: list[BaseException] = []

    def caller() -> None:
        # a call in flight at any moment: frames both ways
        payload = bytes(100_000)
        try:
            while not stop.is_set():
                try:
                    proxy.echo_buffer(payload)
                    proxy.grab([64, 64], "uint8")
                except TimeoutError:
                    continue  # a loaded machine; destroy() ends a call at once
                calls_done.set()
        except (RuntimeError, zmq.ContextTerminated):
            pass  # the documented outcomes of a call cut by destroy()
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=caller, daemon=True),
        threading.Thread(target=emitter, args=(server, stop, errors), daemon=True),
    ]
    for thread in threads:
        thread.start()
    assert calls_done.wait(20) and received.wait(20)
    threading.Event().wait(random.random() * 0.05)  # any moment
    ctx.destroy(linger=0)
    stop.set()
    for thread in threads:
        thread.join(20)
        assert not thread.is_alive()
    assert not errors, errors
    # after destroy: closed, not crashed
    for client in (proxy, other):
        try:
            client.set_exposure(1)
        except RuntimeError:
            pass
        else:
            raise AssertionError("a call on a destroyed context succeeded")
    proxy.close()
    other.close()
    server.close()


_SECURITY: dict[str, object] = {}


def _security(folder: str) -> tuple[object, object]:
    """Server and client CURVE settings (client authentication on)."""
    if not _SECURITY:
        import shutil
        from pathlib import Path

        from framerpc.security import Security, generate_keys
        from framerpc.transport import SocketOptions

        root = Path(folder) / "keys"
        _, server_secret = generate_keys(root / "server", "srv")
        alice_public, alice_secret = generate_keys(root / "alice", "alice")
        (root / "allowed").mkdir()
        shutil.copy(alice_public, root / "allowed")
        _SECURITY["server"] = SocketOptions(
            security=Security.from_files(
                server_secret, allowed_clients_dir=root / "allowed"
            )
        )
        _SECURITY["client"] = SocketOptions(
            security=Security.from_files(
                alice_secret, server_public_file=root / "server" / "srv.key"
            )
        )
    return _SECURITY["server"], _SECURITY["client"]


def destroy_secured(url: str) -> None:
    # pyzmq's ZAP handler thread does not stop at ETERM: destroy stops it
    server_options, client_options = _security(FOLDER)
    ctx = zmq.Context()
    server = CameraServer(ctx, url, options=server_options)
    server.start()
    proxy = CameraProxy(ctx, server.url, options=client_options)
    errors: list[BaseException] = []
    started = threading.Event()

    def caller() -> None:
        try:
            while True:
                try:
                    proxy.echo(1)
                except TimeoutError:
                    continue  # a loaded machine; destroy() ends a call at once
                started.set()
        except (RuntimeError, zmq.ContextTerminated):
            pass
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    assert started.wait(20)
    ctx.destroy(linger=0)
    thread.join(20)
    assert not thread.is_alive() and not errors, errors
    proxy.close()
    server.close()


def destroy_registered(url: str) -> None:
    from framerpc import DeviceRegistry

    # the registry has a context of its own: its thread is not under test
    registry_ctx = zmq.Context()
    registry = DeviceRegistry(registry_ctx, "127.0.0.1", port=None)
    registry.start()
    try:
        ctx = zmq.Context()
        server = CameraServer(ctx, url, alive_timeout=1)  # frequent check-ins
        server.register_to_registry("camera", "cam", registry.url)
        server.start()
        with CameraProxy(ctx, server.url) as proxy:
            assert proxy.set_exposure(2) is True
        threading.Event().wait(random.random() * 0.5)  # check-ins going on
        ctx.destroy()
        server.close()
    finally:
        registry.stop()
        registry.join(20)
        registry_ctx.term()


def destroy_registry_serving(url: str) -> None:
    """A registry in the destroyed context, with a device checking in and a
    client listing devices: its thread closes its own socket."""
    from framerpc import DeviceRegistry, list_devices

    ctx = zmq.Context()
    registry = DeviceRegistry(ctx, "127.0.0.1", port=None)
    registry.start()
    server = CameraServer(ctx, url, alive_timeout=1)  # frequent check-ins
    server.register_to_registry("camera", "cam", registry.url)
    server.start()
    stop = threading.Event()

    def lister() -> None:
        while not stop.is_set():
            try:
                list_devices(ctx, registry.url, timeout=200)
            except (TimeoutError, zmq.ZMQError):
                return  # the context went away under the call

    thread = threading.Thread(target=lister)
    thread.start()
    threading.Event().wait(random.random() * 0.3)  # requests in flight
    ctx.destroy()
    stop.set()
    thread.join(20)
    registry.join(20)
    assert not thread.is_alive() and not registry.is_alive()
    server.close()


def destroy_while_connecting(url: str) -> None:
    ctx = zmq.Context()
    server = CameraServer(ctx, url)
    server.start()
    stop = threading.Event()
    connected = threading.Event()
    errors: list[BaseException] = []

    def connector() -> None:
        # proxies made and closed in a loop: destroy() lands mid-__init__ too
        try:
            while not stop.is_set():
                try:
                    with CameraProxy(ctx, server.url, timeout=5000) as proxy:
                        connected.set()
                        proxy.echo(1)
                except TimeoutError:
                    continue  # a loaded machine
        except (RuntimeError, zmq.ZMQError):
            pass  # closed, terminated (ETERM) or refused (ENOTSUP) by destroy
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=connector, daemon=True)
    thread.start()
    assert connected.wait(20)
    threading.Event().wait(random.random() * 0.05)
    ctx.destroy(linger=0)
    stop.set()
    thread.join(20)
    assert not thread.is_alive() and not errors, errors
    server.close()


def destroy_idle(url: str) -> None:
    ctx = zmq.Context()
    server = CameraServer(ctx, url)  # never started
    server2 = CameraServer(ctx, server_url("inproc", ""))
    server2.start()
    proxy = CameraProxy(ctx, server2.url)
    ctx.destroy()
    server.close()
    server2.close()
    proxy.close()


def stop_server_then_term(url: str) -> None:
    ctx = zmq.Context()
    server = CameraServer(ctx, url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with CameraProxy(ctx, server.url) as proxy:
        assert proxy.set_exposure(3) is True
    server.stop_server()
    ctx.term()  # no join first: the serving thread stops quietly
    thread.join(20)
    assert not thread.is_alive()


def term_with_signals_flowing(url: str) -> None:
    ctx = zmq.Context()
    server = CameraServer(ctx, url)
    server.start()
    with CameraProxy(ctx, server.url) as proxy:
        received = threading.Event()
        proxy.frame_ready.connect(lambda n: received.set())
        stop = threading.Event()
        errors: list[BaseException] = []
        # emissions after term() are dropped, not raised in this thread
        thread = threading.Thread(
            target=emitter, args=(server, stop, errors), daemon=True
        )
        thread.start()
        assert received.wait(20)
    server.stop_server()
    ctx.term()
    stop.set()
    thread.join(20)
    assert not thread.is_alive() and not errors, errors
    server.close()


def term_while_serving(url: str) -> None:
    ctx = zmq.Context()
    server = CameraServer(ctx, url)
    server.start()
    with CameraProxy(ctx, server.url) as proxy:
        assert proxy.set_exposure(3) is True
    ctx.term()  # not even stop_server(): ETERM stops the serving thread
    server.close()


ORDERS = {
    "close_then_term": close_then_term,
    "context_managers": context_managers,
    "destroy_in_flight": destroy_in_flight,
    "destroy_idle": destroy_idle,
    "destroy_while_connecting": destroy_while_connecting,
    "destroy_registered": destroy_registered,
    "destroy_registry_serving": destroy_registry_serving,
    "destroy_secured": destroy_secured,
    "stop_server_then_term": stop_server_then_term,
    "term_while_serving": term_while_serving,
    "term_with_signals_flowing": term_with_signals_flowing,
}


def main() -> None:
    order, kind, repetitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    global FOLDER
    with tempfile.TemporaryDirectory() as folder:
        FOLDER = folder
        for _ in range(repetitions):
            ORDERS[order](server_url(kind, folder))
    print(f"{order} {kind} x{repetitions}: ok")


if __name__ == "__main__":
    main()
