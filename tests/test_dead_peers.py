"""Dead peers are noticed (issue 11): heartbeats, PeerLostError for a call in
flight whose server was killed or froze, even without timeout, and a call's
timeout that includes its wait for the proxy's lock.

Servers run in child processes (tests/dead_peer_device.py) so that they can
be killed (SIGKILL) or frozen (SIGSTOP); the child uses the engine of this
run (FRAMERPC_PURE is inherited). Time bounds here only catch hangs.
Options and the Channel's PeerWatch in process: test_dead_peers_options.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from dead_peer_device import ProbeProxy
from dead_peer_helpers import (
    FAST,
    FAST_IVL_MS,
    FAST_TIMEOUT_MS,
    HANG_BOUND_S,
    _call_in_thread,
    rebind,
)

from framerpc import PeerLostError
from framerpc.transport import DEFAULT_OPTIONS, SocketOptions

DEVICE = Path(__file__).with_name("dead_peer_device.py")


class Child:
    """A ProbeServer in a child process."""

    def __init__(self, url: str, ivl_ms: int, timeout_ms: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(DEVICE), url, str(ivl_ms), str(timeout_ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url:
            self.kill()
            raise AssertionError("the child server did not start")

    def wait_for_line(self, expected: str) -> None:
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == expected

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=HANG_BOUND_S)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def child() -> Iterator[Callable[..., Child]]:
    """Start child servers: ``child(url, ivl_ms=..., timeout_ms=...)``;
    all killed at the end."""
    started: list[Child] = []

    def start(url: str, ivl_ms: int = FAST_IVL_MS, timeout_ms: int = FAST_TIMEOUT_MS):
        server = Child(url, ivl_ms, timeout_ms)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def _restart(child: Callable[..., Child], url: str, **kwargs: int) -> Child:
    """A new child server on the URL of one just killed (the OS may need a
    moment to release the port)."""
    deadline = time.monotonic() + HANG_BOUND_S
    while True:
        try:
            return child(url, **kwargs)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _answers(proxy: ProbeProxy) -> bool:
    try:
        return proxy.echo("back") == "back"
    except TimeoutError:  # PeerLostError is one too
        return False


# -- a server in a child process --------------------------------------------------


def test_killed_server_fails_an_in_flight_call_without_timeout(ctx, child, address):
    server = child(address)
    with ProbeProxy(ctx, server.url, options=FAST) as proxy:
        thread, outcome = _call_in_thread(proxy.hang)
        server.wait_for_line("hanging")
        # A server busy in a long method answers heartbeats (libzmq's I/O
        # thread does): the call outlives twice the dead-peer bound.
        time.sleep(2 * FAST.dead_peer_ms / 1000)
        assert thread.is_alive(), f"a busy server was declared dead: {outcome}"
        killed = time.monotonic()
        server.kill()
        thread.join(HANG_BOUND_S)
        assert not thread.is_alive(), "the call outlived its server"
        error = outcome.get("error")
        assert isinstance(error, PeerLostError), outcome
        assert isinstance(error, ConnectionError) and isinstance(error, TimeoutError)
        assert "'hang'" in str(error) and server.url in str(error)
        assert outcome["ended"] - killed < HANG_BOUND_S


def _frozen_server_is_noticed(ctx, server: Child, options: SocketOptions) -> float:
    with ProbeProxy(ctx, server.url, options=options) as proxy:
        thread, outcome = _call_in_thread(proxy.hang)
        server.wait_for_line("hanging")
        frozen = time.monotonic()
        server.process.send_signal(signal.SIGSTOP)  # the kernel keeps TCP up
        try:
            thread.join(options.dead_peer_ms / 1000 + HANG_BOUND_S)
            assert not thread.is_alive(), "a frozen server went unnoticed"
        finally:
            server.kill()  # SIGKILL ends a stopped process too
        assert isinstance(outcome.get("error"), PeerLostError), outcome
        return outcome["ended"] - frozen


def test_frozen_server_is_noticed_by_heartbeats(ctx, child, address):
    server = child(address)
    noticed = _frozen_server_is_noticed(ctx, server, FAST)
    assert noticed < FAST.dead_peer_ms / 1000 + HANG_BOUND_S


def test_frozen_server_is_noticed_with_the_default_heartbeats(ctx, child):
    server = child("tcp://127.0.0.1", 0, 0)  # server with default options too
    noticed = _frozen_server_is_noticed(ctx, server, DEFAULT_OPTIONS)
    assert noticed < DEFAULT_OPTIONS.dead_peer_ms / 1000 + HANG_BOUND_S


def test_call_to_a_server_down_too_long_fails_instead_of_waiting(ctx, child, address):
    """With the server gone, even a call without timeout gives up after the
    dead-peer bound; the proxy works again once the server is back."""
    server = child(address)
    with ProbeProxy(ctx, server.url, options=FAST) as proxy:
        assert proxy.echo(1) == 1
        # The call must start after the proxy saw the loss: on a loaded
        # machine its request could otherwise go out before the disconnect
        # is noticed ("lost the connection while waiting", not "unreachable").
        watch = proxy._watch
        assert watch is not None
        watch.drain()
        losses = watch.losses
        server.kill()
        assert wait_until(lambda: (watch.drain(), watch.losses > losses)[1])
        thread, outcome = _call_in_thread(proxy.hang)
        thread.join(FAST.dead_peer_ms / 1000 + HANG_BOUND_S)
        assert not thread.is_alive(), "a call to a dead server waits for ever"
        assert isinstance(outcome.get("error"), PeerLostError), outcome
        assert "unreachable" in str(outcome["error"])
        _restart(child, server.url)
        assert wait_until(lambda: _answers(proxy), HANG_BOUND_S)


def test_call_with_a_timeout_waits_for_the_server_to_come_back(ctx, child):
    """Only a call without timeout gives up on a server that is down: one
    with a timeout waits for the restart, as documented."""
    server = child("tcp://127.0.0.1")
    with ProbeProxy(ctx, server.url, options=FAST) as proxy:
        assert proxy.echo(1) == 1
        server.kill()
        with pytest.raises(PeerLostError):  # down for longer than the bound
            proxy.hang()
        thread, outcome = _call_in_thread(lambda: proxy.echo_patiently("back"))
        _restart(child, server.url)
        thread.join(HANG_BOUND_S + 10)
        assert not thread.is_alive()
        assert outcome.get("value") == "back", outcome


def test_sixteen_threads_on_a_dead_server_fail_within_their_own_timeout(
    ctx, child, address
):
    """Each call's 1 s timeout includes its wait for the proxy's lock (it was
    16 s for the 16th thread); the proxy works again after a restart."""
    server = child(address)
    with ProbeProxy(ctx, server.url, options=FAST) as proxy:
        assert proxy.echo(1) == 1
        server.kill()
        barrier = threading.Barrier(16)
        results: list[tuple[float, BaseException | None]] = []
        results_lock = threading.Lock()

        def caller() -> None:
            barrier.wait()
            started = time.monotonic()
            error: BaseException | None = None
            try:
                proxy.echo("x")
            except BaseException as exc:
                error = exc
            with results_lock:
                results.append((time.monotonic() - started, error))

        threads = [threading.Thread(target=caller) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
        assert len(results) == 16
        for elapsed, error in results:
            assert isinstance(error, TimeoutError), error
            assert "'echo'" in str(error) and server.url in str(error)
            # 1 s each when right; when the lock wait came on top, the k-th
            # took k s: half the 16th's 16 s leaves 7 s for a loaded machine
            assert elapsed < 8.0, f"a call failed after {elapsed:.1f} s"
        _restart(child, server.url)
        assert wait_until(lambda: _answers(proxy), HANG_BOUND_S)
        assert proxy.echo("again") == "again"


def test_timeout_names_the_method_the_url_and_the_wait(ctx, child):
    server = child("tcp://127.0.0.1")
    with ProbeProxy(ctx, server.url) as proxy:  # default options: bound 4 s
        server.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(TimeoutError) as caught:
                proxy.echo(1)  # 1 s timeout, shorter than the dead-peer bound
        finally:
            server.kill()
    message = str(caught.value)
    assert f"no reply to 'echo' from {server.url} within 1 s" in message


def test_a_call_waiting_for_the_lock_says_so(ctx, child):
    server = child("tcp://127.0.0.1")
    with ProbeProxy(ctx, server.url) as proxy:
        thread, outcome = _call_in_thread(proxy.hang)
        server.wait_for_line("hanging")
        try:
            with pytest.raises(TimeoutError, match="waited for other calls"):
                proxy.echo(1)
        finally:
            server.kill()
            thread.join(HANG_BOUND_S)
        assert isinstance(outcome.get("error"), PeerLostError)


def test_legacy_mode_call_fails_when_its_server_is_killed(ctx, child):
    """The JSON protocol's exchange is watched too (and its socket replaced,
    as after a timeout)."""
    server = child("tcp://127.0.0.1")
    with ProbeProxy(ctx, server.url, protocol="legacy", options=FAST) as proxy:
        assert proxy._protocol == "legacy"
        thread, outcome = _call_in_thread(proxy.hang)
        server.wait_for_line("hanging")
        server.kill()
        thread.join(HANG_BOUND_S)
        assert not thread.is_alive(), "the call outlived its server"
        assert isinstance(outcome.get("error"), PeerLostError), outcome
        _restart(child, server.url)
        assert wait_until(lambda: _answers(proxy), HANG_BOUND_S)


def test_signals_follow_a_restart_while_a_long_call_holds_the_proxy(ctx):
    """The receiver's inventory request after a restart waits for the
    proxy's lock as long as it takes (a user's call may hold it longer
    than the proxy's timeout) instead of giving up on the signals."""
    from devices import CameraProxy, CameraServer

    first = CameraServer(ctx, "tcp://127.0.0.1")
    thread = threading.Thread(target=first.serve_forever, daemon=True)
    thread.start()
    proxy = CameraProxy(ctx, first.url, timeout=500)
    got: list = []
    proxy.frame_ready.connect(got.append)
    first.stop_server()
    thread.join(timeout=HANG_BOUND_S)
    second = rebind(lambda: CameraServer(ctx, first.url))
    thread = threading.Thread(target=second.serve_forever, daemon=True)
    thread.start()
    caller, outcome = _call_in_thread(proxy.block)  # holds the lock
    try:
        assert wait_until(lambda: "block" in second.calls, HANG_BOUND_S)
        time.sleep(3 * 0.5)  # the receiver waits past the proxy's timeout
        second.release.set()
        caller.join(HANG_BOUND_S)
        assert outcome.get("value") is True, outcome

        def delivered() -> bool:
            second.frame_ready.emit(42)
            return 42 in got

        assert wait_until(delivered, HANG_BOUND_S)
    finally:
        second.release.set()
        proxy.close()
        second.stop_server()
        thread.join(timeout=HANG_BOUND_S)
