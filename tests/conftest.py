"""Shared fixtures: zmq contexts, servers on ephemeral endpoints, cleanup.

Every socket test uses loopback, ipc:// in a temporary folder or inproc://,
and lets the OS pick TCP ports.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import zmq
from hypothesis import HealthCheck, settings
from short_repr import install_hypothesis_printers

# Fixtures shared by several test files live beside them in plain modules,
# loaded here as plugins (importing a fixture into a test file shadows it).
pytest_plugins = [
    "aio_helpers",
    "bad_input_helpers",
    "curve_keys",
    "dead_peer_helpers",
    "fanout_helpers",
    "frame_pool_helpers",
    "legacy_peers",
    "router_dealer",
    "registry_fixtures",
    "shm_helpers",
    "streams_helpers",
]

# Property tests on a loaded 2-core machine: no per-example deadline (a
# slow example is not a bug), nothing written into the checkout, one short
# report per failure (no reproduction blob, long values summarised). Each
# test sets its own max_examples, sized to run in a few seconds there.
# Built on the profile hypothesis loaded (its "ci" one when CI is set, which
# also derandomizes).
settings.register_profile(
    "framerpc",
    parent=settings.default,
    deadline=None,
    database=None,
    print_blob=False,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("framerpc")
install_hypothesis_printers()


def pytest_report_header() -> str:
    """Name the live engine at the top of a run (FRAMERPC_PURE selects it)."""
    import framerpc.framing as framing
    import framerpc.transport as transport

    return (
        f"framerpc engine: framing {framing.IMPLEMENTATION}, "
        f"I/O {transport.IO_IMPLEMENTATION}"
    )


def wait_until(condition: Callable[[], object], timeout: float = 20.0) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass.

    The default is a ceiling that only catches a hang: on a loaded machine
    a few seconds can pass before a thread runs.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def sees_the_term(sock: zmq.Socket) -> bool:
    """Whether ``sock`` has seen its context terminating (ETERM on use)."""
    try:
        sock.poll(0)
    except zmq.ContextTerminated:
        return True
    return False


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    """A fresh context, terminated at the end (fails loudly if a socket leaks)."""
    context = zmq.Context()
    yield context
    closer = threading.Thread(target=context.term, daemon=True)
    closer.start()
    closer.join(timeout=5)
    assert not closer.is_alive(), "zmq context did not terminate: a socket leaked"


@pytest.fixture(params=["tcp", "ipc", "inproc"])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A server URL on each transport (tcp without port: the OS picks)."""
    if request.param == "tcp":
        return "tcp://127.0.0.1"
    if request.param == "ipc":
        return f"ipc://{tmp_path}/server.sock"
    return f"inproc://server-{uuid.uuid4().hex}"


@pytest.fixture
def serve() -> Iterator[Callable]:
    """Start a server's serve_forever in a thread; stop and join it at the end."""
    running: list[tuple[object, threading.Thread]] = []

    def start(server):
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.stop_server()
        thread.join(timeout=5)
        assert not thread.is_alive(), "serve_forever did not return"


def _is_pyzmq_gc(thread: threading.Thread) -> bool:
    # pyzmq starts one process-wide daemon thread to free zero-copy buffers.
    return type(thread).__name__ == "GarbageCollectorThread"


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Each test must end every thread it started."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        extra = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not _is_pyzmq_gc(t)
        ]
        if not extra:
            return
        time.sleep(0.02)
    pytest.fail(f"threads left running: {extra}")


def finishes_within(seconds: float, func: Callable[[], object]) -> object:
    """Run ``func`` in a thread; fail if it has not returned after ``seconds``.

    A generous bound that only catches a hang, not a speed check. Returns
    what ``func`` returned and re-raises what it raised.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = func()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{func} still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")


@pytest.fixture
def camera(ctx: zmq.Context, url: str, serve: Callable):
    """A serving ``devices.CameraServer`` on each transport of ``url``."""
    from devices import CameraServer

    return serve(CameraServer(ctx, url))


@pytest.fixture
def tcp_camera(ctx: zmq.Context, serve: Callable):
    """A serving ``devices.CameraServer`` on loopback TCP (random port)."""
    from devices import CameraServer

    return serve(CameraServer(ctx, "tcp://127.0.0.1"))


@pytest.fixture
def connect(ctx: zmq.Context) -> Iterator[Callable]:
    """Make proxies (``devices.CameraProxy`` unless told); all closed at the end.

    ``connect(url, proxy_class=None, **kwargs)`` returns a connected proxy.
    """
    from devices import CameraProxy

    proxies = []

    def make(server_url: str, proxy_class: type | None = None, **kwargs):
        proxy = (proxy_class or CameraProxy)(ctx, server_url, **kwargs)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()
