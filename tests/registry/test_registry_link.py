"""Tests of framerpc.registry: RegistryLink, a server's registration kept alive.

No test depends on a wall-clock deadline being met: registries and links
run on a :class:`ManualClock` moved by hand, waits poll a condition with
generous bounds, and "nothing arrived" is shown with a sentinel request.
Helpers shared by tests/registry/test_registry*.py are in registry_helpers.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest
import zmq
from conftest import finishes_within, sees_the_term, wait_until
from devices import bind_again
from manual_clock import ManualClock
from registry_helpers import WAIT, inproc_url, sentinel_list

from framerpc import _lifecycle, transport
from framerpc.protocol import RegistryEvents
from framerpc.registry import (
    AliveCheckState,
    DeviceRegistry,
    RegistryLink,
    list_devices,
    register_device,
    send_alive_check,
    unregister_device,
)

# -- RegistryLink -------------------------------------------------------------


def checked_in_since(reg: DeviceRegistry, name: str, now: float) -> bool:
    """Whether ``name`` checked in (or registered) at registry time >= ``now``."""
    entry = reg.get_entry(name)
    return entry is not None and entry.deadline >= now + entry.alive_timeout


def ticking(link: RegistryLink, condition: Callable[[], object]) -> Callable:
    """A condition for wait_until that ticks ``link`` before each check."""
    return lambda: link.tick() or condition()


def test_link_register_tick_and_unregister(ctx, start_registry):
    clock, link_clock = ManualClock(), ManualClock()
    reg = start_registry(clock=clock)
    link = RegistryLink(
        ctx, reg.url, "cam", "dev", "tcp://h:1", alive_timeout=0.3, clock=link_clock
    )
    try:
        assert link.register() == ("dev", link.uuid)
        assert link.registry_url == reg.url
        # Check-ins keep the device listed well past its 0.3 s deadline.
        for _ in range(5):
            clock.advance(0.2)
            link_clock.advance(0.2)  # > the 0.1 s interval: a check-in is due
            assert wait_until(
                ticking(link, lambda: checked_in_since(reg, "dev", clock.now)), WAIT
            )
        assert "dev" in sentinel_list(ctx, reg)
        assert link.unregister() is True
        assert link.uuid is None
        assert reg.get_devices() == {}
        assert link.unregister() is False
    finally:
        link.close()
        link.close()


def test_link_tick_sends_without_waiting_for_the_answer(ctx):
    silent = ctx.socket(zmq.ROUTER)  # takes the check-in, never answers
    silent.setsockopt(zmq.LINGER, 0)
    link_clock = ManualClock()
    try:
        port = silent.bind_to_random_port("tcp://127.0.0.1")
        url = f"tcp://127.0.0.1:{port}"
        link = RegistryLink(ctx, url, "cam", "dev", "tcp://h:1", 0.3, clock=link_clock)
        link.uuid = "registered-before"
        try:
            link_clock.advance(1.0)
            # Once connected, the check-in leaves and tick returns with the
            # answer still pending: it never waited for it.
            assert wait_until(ticking(link, lambda: silent.poll(0)), WAIT)
            assert link._pending is RegistryEvents.CHECK_ALIVE
            finishes_within(WAIT, link.tick)
            assert link._pending is RegistryEvents.CHECK_ALIVE
        finally:
            link.close()
    finally:
        silent.close()


def test_link_without_ticks_is_pruned(ctx, start_registry):
    clock = ManualClock()
    reg = start_registry(clock=clock)
    link = RegistryLink(ctx, reg.url, "cam", "dev", "tcp://h:1", alive_timeout=0.3)
    try:
        link.register()
        clock.advance(0.31)
        assert wait_until(lambda: not reg.get_devices(), WAIT)
    finally:
        link.close()


def test_link_reregisters_when_forgotten(ctx, reg):
    link_clock = ManualClock()
    link = RegistryLink(
        ctx, reg.url, "cam", "dev", "tcp://h:1", alive_timeout=0.3, clock=link_clock
    )
    try:
        _, old_uuid = link.register()
        # Simulate a registry that lost the device (pruned, or restarted).
        assert unregister_device(ctx, reg.url, old_uuid)
        link_clock.advance(0.2)
        # The registry lists the device before the link reads the ACK.
        assert wait_until(ticking(link, lambda: link.uuid != old_uuid), WAIT)
        assert link.name == "dev"
        assert "dev" in reg.get_devices()
        assert send_alive_check(ctx, reg.url, link.uuid) is AliveCheckState.ok
    finally:
        link.close()


def test_link_reports_registry_gone(ctx, start_registry, caplog):
    reg = start_registry(inproc_url())
    link_clock = ManualClock()
    link = RegistryLink(
        ctx, reg.url, "cam", "dev", "tcp://h:1", alive_timeout=0.15, clock=link_clock
    )
    try:
        link.register()
        reg.stop()
        reg.join(timeout=WAIT)

        def later_tick() -> bool:
            link_clock.advance(link.interval)
            link.tick()
            return "seems gone" in caplog.text

        with caplog.at_level(logging.WARNING, logger="framerpc.registry"):
            assert wait_until(later_tick, WAIT)
    finally:
        link.close()
    link.tick()  # a closed link does nothing


def test_link_unregister_never_raises_on_silence(ctx):
    link = RegistryLink(ctx, inproc_url(), "cam", "dev", "tcp://h:1", 1.0)
    link.uuid = "known-before"
    try:
        assert finishes_within(WAIT, lambda: link.unregister(timeout=100)) is False
    finally:
        link.close()


def start_again(start_registry, url: str, **kwargs) -> DeviceRegistry:
    """Start a registry at ``url``, which a stopped one held a moment ago."""
    return bind_again(lambda: start_registry(url, **kwargs), WAIT)


@pytest.mark.parametrize("kind", ["tcp", "inproc"])
def test_link_reregisters_after_registry_restart(ctx, start_registry, kind):
    first = start_registry("tcp://127.0.0.1" if kind == "tcp" else inproc_url())
    link_clock = ManualClock()
    link = RegistryLink(
        ctx, first.url, "cam", "dev", "tcp://h:1", alive_timeout=0.3, clock=link_clock
    )

    def later_tick(condition: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            link_clock.advance(link.interval)
            link.tick()
            return condition()

        return check

    try:
        _, old_uuid = link.register()
        link_clock.advance(0.2)
        assert wait_until(
            ticking(link, lambda: link._pending is None and link._sock is not None),
            WAIT,
        )
        first.stop()
        first.join(timeout=WAIT)
        assert not first.is_alive()
        bind = f"tcp://127.0.0.1:{first.port}" if kind == "tcp" else first.url
        second = start_again(start_registry, bind)
        assert second.get_devices() == {}
        assert wait_until(
            later_tick(lambda: second.get_devices() == {"dev": ("cam", "tcp://h:1")}),
            WAIT,
        )
        assert wait_until(ticking(link, lambda: link.uuid != old_uuid), WAIT)
        assert link.name == "dev"
    finally:
        link.close()


def test_helpers_close_their_sockets(ctx, reg, monkeypatch):
    made: list[zmq.Socket] = []
    real_make_socket = transport.make_socket

    def recording(*args, **kwargs):
        sock = real_make_socket(*args, **kwargs)
        made.append(sock)
        return sock

    monkeypatch.setattr(transport, "make_socket", recording)
    _, dev_uuid = register_device(ctx, reg.url, "cam", "tcp://h:1", "dev")
    send_alive_check(ctx, reg.url, dev_uuid)
    send_alive_check(ctx, inproc_url(), dev_uuid, timeout=50)
    list_devices(ctx, reg.url)
    unregister_device(ctx, reg.url, dev_uuid)
    assert len(made) == 5
    assert all(sock.closed for sock in made)


def test_link_tick_on_a_terminating_context_stops_quietly(caplog):
    # the serve loop stops on ETERM; a logged "registry link error: Context
    # was terminated" was seen at shutdown (test_shutdown_order)
    context = zmq.Context()
    shadow = _lifecycle.private_context(context)
    shadow.shut()  # as destroy() does: zmq_socket() fails with ETERM
    link = RegistryLink(context, "inproc://reg", "cam", "dev", "x", 0.3)
    link.uuid = "registered-before"
    try:
        with caplog.at_level(logging.WARNING, logger="framerpc"):
            with pytest.raises(zmq.ZMQError) as info:
                link.tick(now=1e9)
        assert info.value.errno == zmq.ETERM
        assert not caplog.records
    finally:
        link.close()
        context.term()


def test_helpers_sockets_stay_out_of_the_context_list(monkeypatch):
    # A helper's socket belongs to its calling thread. In the context's list,
    # another thread's destroy() closed it under the helper's poll: libzmq
    # aborted, or term() waited for ever (test_shutdown[destroy_registry_serving]).
    context = zmq.Context()
    silent = context.socket(zmq.ROUTER)  # a registry that never answers
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    listed: list[bool] = []
    real_make_socket = transport.make_socket

    def recording(*args, **kwargs):
        sock = real_make_socket(*args, **kwargs)
        listed.append(sock in context._sockets)
        return sock

    monkeypatch.setattr(transport, "make_socket", recording)
    errors: list[BaseException] = []

    def lister() -> None:
        try:
            list_devices(context, f"tcp://127.0.0.1:{port}", timeout=WAIT * 1000)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=lister)
    thread.start()
    try:
        assert wait_until(lambda: listed, WAIT)
        assert listed == [False]
        context.destroy(linger=0)  # the helper is polling for its reply
        thread.join(WAIT)
        assert not thread.is_alive()
        assert [getattr(e, "errno", e) for e in errors] == [zmq.ETERM]
    finally:
        thread.join()  # the helper's own timeout, when the check failed
        context.destroy(linger=0)


def test_link_close_on_a_terminating_context_closes_its_socket():
    # Once a socket has seen term() begin, setsockopt(LINGER) fails with
    # ETERM; close() raised it before closing, the socket stayed open and
    # term() waited for it forever (test_shutdown_order[destroy_registered]).
    context = zmq.Context()
    link = RegistryLink(context, "inproc://nobody", "cam", "dev", "x", 0.3)
    link.uuid = "registered-before"
    link.tick(now=1e9)  # a check-in: the link's socket exists
    sock = link._sock
    assert sock is not None
    terminating = threading.Thread(target=context.term)
    terminating.start()
    try:
        # as the serve loop's sockets do before it closes the link
        assert wait_until(lambda: sees_the_term(sock), WAIT)
        link.close()
        terminating.join(WAIT)
        assert sock.closed and not terminating.is_alive()
    finally:
        sock.close(linger=0)  # lets term() return if close() did not
        terminating.join(WAIT)
