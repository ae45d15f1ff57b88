"""Tests of framerpc.registry: the DeviceRegistry thread, helpers and link.

No test depends on a wall-clock deadline being met: registries and links
run on a :class:`ManualClock` moved by hand, waits poll a condition with
generous bounds, and "nothing arrived" is shown with a sentinel request.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import msgpack
import pytest
import zmq
from conftest import finishes_within, wait_until
from manual_clock import ManualClock

from framerpc import framing, protocol, security, transport
from framerpc.protocol import RegistryEvents, RegistryMessage
from framerpc.registry import (
    AliveCheckState,
    DeviceDirectory,
    DeviceRegistry,
    RegistryLink,
    list_devices,
    register_device,
    send_alive_check,
    unregister_device,
)

#: Ceiling of every wait: only catches a hang, never a speed check (s).
WAIT = 30.0


def inproc_url() -> str:
    return f"inproc://registry-{uuid.uuid4().hex}"


def sentinel_list(ctx: zmq.Context, reg: DeviceRegistry) -> dict:
    """LIST_DEVICES: once answered, the registry has handled every earlier
    message and pruned up to its clock's current time."""
    return list_devices(ctx, reg.url, timeout=WAIT * 1000)


@pytest.fixture
def start_registry(ctx: zmq.Context) -> Iterator[Callable[..., DeviceRegistry]]:
    """Factory of started registries; each is stopped and joined at the end."""
    started: list[DeviceRegistry] = []

    def start(addr: str = "tcp://127.0.0.1", **kwargs) -> DeviceRegistry:
        kwargs.setdefault("poll_interval", 0.02)
        kwargs.setdefault("clock", ManualClock())
        reg = DeviceRegistry(ctx, addr, **kwargs)
        reg.start()
        started.append(reg)
        return reg

    yield start
    for reg in started:
        reg.stop()
        reg.join(timeout=3)
        assert not reg.is_alive(), "registry thread did not end"


@pytest.fixture
def reg(start_registry) -> DeviceRegistry:
    return start_registry()


class Recorder:
    """A callback that records its calls, thread-safely."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, device_type: str, address: str, name: str) -> None:
        with self._lock:
            self.calls.append((device_type, address, name))


def raw_exchange(ctx: zmq.Context, url: str, frames: list, timeout: float = 2.0):
    """Send raw frames on a DEALER; return the decoded reply or None."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(url)
        sock.send_multipart(frames)
        if not sock.poll(int(timeout * 1000)):
            return None
        reply = sock.recv_multipart()
        assert reply[0] == b"", "reply must keep the empty delimiter"
        return protocol.decode_registry(reply[1:])
    finally:
        sock.close()


# -- DeviceRegistry through the helpers ---------------------------------------


def test_register_returns_name_and_uuid(ctx, reg):
    name, dev_uuid = register_device(ctx, reg.url, "camera", "tcp://h:1", "cam")
    assert name == "cam"
    assert len(dev_uuid) == 32 and int(dev_uuid, 16) >= 0
    _, other_uuid = register_device(ctx, reg.url, "camera", "tcp://h:2", "cam2")
    assert other_uuid != dev_uuid
    assert reg.get_devices() == {
        "cam": ("camera", "tcp://h:1"),
        "cam2": ("camera", "tcp://h:2"),
    }


def test_name_collision_picks_free_names(ctx, reg):
    names = [
        register_device(ctx, reg.url, "cam", f"tcp://h:{i}", "dev", overwrite=False)[0]
        for i in range(3)
    ]
    assert names == ["dev", "dev-1", "dev-2"]
    assert len(reg.get_devices()) == 3


def test_overwrite_replaces_holder_and_fires_removed(ctx, reg):
    removed = Recorder()
    reg.add_device_removed_callback(removed)
    register_device(ctx, reg.url, "cam", "tcp://old:1", "dev")
    name, _ = register_device(ctx, reg.url, "cam", "tcp://new:1", "dev", overwrite=True)
    assert name == "dev"
    assert reg.get_devices() == {"dev": ("cam", "tcp://new:1")}
    assert wait_until(lambda: removed.calls == [("cam", "tcp://old:1", "dev")])


def test_same_address_replaces_old_entry(ctx, reg):
    removed = Recorder()
    reg.add_device_removed_callback(removed)
    register_device(ctx, reg.url, "cam", "tcp://h:1", "first")
    name, _ = register_device(ctx, reg.url, "cam", "tcp://h:1", "second")
    assert name == "second"
    assert reg.get_devices() == {"second": ("cam", "tcp://h:1")}
    assert wait_until(lambda: removed.calls == [("cam", "tcp://h:1", "first")])


def test_same_address_keeps_its_name_without_overwrite(ctx, reg):
    register_device(ctx, reg.url, "cam", "tcp://h:1", "dev", overwrite=False)
    name, _ = register_device(ctx, reg.url, "cam", "tcp://h:1", "dev", overwrite=False)
    assert name == "dev"
    assert reg.get_devices() == {"dev": ("cam", "tcp://h:1")}


def test_empty_name_becomes_type_index(ctx, reg):
    first = register_device(ctx, reg.url, "stage", "tcp://h:1")[0]
    second = register_device(ctx, reg.url, "stage", "tcp://h:2")[0]
    assert (first, second) == ("stage-0", "stage-1")


def test_unregister(ctx, reg):
    removed = Recorder()
    reg.add_device_removed_callback(removed)
    _, dev_uuid = register_device(ctx, reg.url, "cam", "tcp://h:1", "dev")
    assert unregister_device(ctx, reg.url, dev_uuid) is True
    assert reg.get_devices() == {}
    assert removed.calls == [("cam", "tcp://h:1", "dev")]
    assert unregister_device(ctx, reg.url, dev_uuid) is False


def test_alive_check_ok_and_unknown(ctx, reg):
    _, dev_uuid = register_device(ctx, reg.url, "cam", "tcp://h:1", "dev")
    assert send_alive_check(ctx, reg.url, dev_uuid) is AliveCheckState.ok
    unknown = send_alive_check(ctx, reg.url, uuid.uuid4().hex)
    assert unknown is AliveCheckState.unknown


def test_alive_check_unreachable_when_nobody_listens(ctx):
    state = finishes_within(
        WAIT, lambda: send_alive_check(ctx, inproc_url(), "x", timeout=150)
    )
    assert state is AliveCheckState.unreachable


def test_helpers_time_out_on_a_silent_peer(ctx):
    silent = ctx.socket(zmq.ROUTER)  # accepts the request, never answers
    silent.setsockopt(zmq.LINGER, 0)
    try:
        port = silent.bind_to_random_port("tcp://127.0.0.1")
        url = f"tcp://127.0.0.1:{port}"
        state = send_alive_check(ctx, url, "x", timeout=150)
        assert state is AliveCheckState.unreachable
        assert silent.poll(int(WAIT * 1000)), "the check should have been delivered"
        with pytest.raises(TimeoutError):
            register_device(ctx, url, "cam", "tcp://h:1", timeout=150)
        with pytest.raises(TimeoutError):
            unregister_device(ctx, url, "x", timeout=150)
        with pytest.raises(TimeoutError):
            list_devices(ctx, url, timeout=150)
    finally:
        silent.close()


def test_alive_check_extends_deadline(ctx, start_registry):
    clock = ManualClock()
    reg = start_registry(clock=clock)
    _, dev_uuid = register_device(ctx, reg.url, "cam", "tcp://h:1", alive_timeout=0.3)
    for _ in range(5):  # 1 s in all, three times the alive timeout
        clock.advance(0.2)
        assert send_alive_check(ctx, reg.url, dev_uuid, alive_timeout=0.3).name == "ok"
    assert reg.get_entry("cam-0").deadline == pytest.approx(clock.now + 0.3)
    assert "cam-0" in sentinel_list(ctx, reg)


def test_deadline_prunes_and_fires_removed(ctx, start_registry):
    clock = ManualClock()
    reg = start_registry(clock=clock)
    removed = Recorder()
    reg.add_device_removed_callback(removed)
    register_device(ctx, reg.url, "cam", "tcp://h:1", "dev", alive_timeout=0.3)
    clock.advance(0.29)
    assert "dev" in sentinel_list(ctx, reg)
    assert removed.calls == []
    clock.advance(0.02)
    assert wait_until(lambda: not reg.get_devices(), WAIT)
    assert wait_until(lambda: removed.calls == [("cam", "tcp://h:1", "dev")], WAIT)


def test_default_alive_timeout_applies(ctx, start_registry):
    clock = ManualClock()
    reg = start_registry(default_alive_timeout=0.2, clock=clock)
    reply = raw_exchange(
        ctx,
        reg.url,
        [
            b"",
            *protocol.encode_registry(
                RegistryMessage(
                    RegistryEvents.REGISTER,
                    {"device_type": "cam", "addr": "tcp://h:1", "name": "dev"},
                )
            ),
        ],
    )
    assert reply.event is RegistryEvents.REGISTER_ACK
    assert reg.get_entry("dev").alive_timeout == 0.2
    clock.advance(0.19)
    assert "dev" in sentinel_list(ctx, reg)
    clock.advance(0.02)
    assert wait_until(lambda: not reg.get_devices(), WAIT)


def test_added_callback_args(ctx, reg):
    added = Recorder()
    reg.add_new_device_callback(added)
    register_device(ctx, reg.url, "camera", "tcp://h:9", "cam")
    assert wait_until(lambda: added.calls == [("camera", "tcp://h:9", "cam")])


def test_callback_errors_do_not_stop_registry(ctx, reg, caplog):
    def broken(*args):
        raise ValueError("boom")

    reg.add_new_device_callback(broken)
    reg.add_device_removed_callback(broken)
    with caplog.at_level(logging.ERROR, logger="framerpc.registry"):
        _, dev_uuid = register_device(ctx, reg.url, "cam", "tcp://h:1", "dev")
        assert unregister_device(ctx, reg.url, dev_uuid) is True
    assert list_devices(ctx, reg.url) == {}
    assert sum("callback" in r.message for r in caplog.records) == 2


def test_get_devices_from_another_thread(ctx, reg):
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                snapshot = reg.get_devices()
                assert all(len(value) == 2 for value in snapshot.values())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            register_device(ctx, reg.url, "cam", f"tcp://h:{i}", f"d{i}")
    finally:
        done.set()
        thread.join(timeout=3)
    assert not errors
    assert len(reg.get_devices()) == 30


def test_get_devices_returns_a_copy(ctx, reg):
    register_device(ctx, reg.url, "cam", "tcp://h:1", "dev")
    reg.get_devices().clear()
    assert reg.get_devices() == {"dev": ("cam", "tcp://h:1")}


def test_list_devices_matches_get_devices(ctx, reg):
    assert list_devices(ctx, reg.url) == {}
    register_device(ctx, reg.url, "cam", "tcp://h:1", "a")
    register_device(ctx, reg.url, "stage", "tcp://h:2", "b")
    listed = list_devices(ctx, reg.url)
    assert listed == reg.get_devices()
    assert listed == {"a": ("cam", "tcp://h:1"), "b": ("stage", "tcp://h:2")}


def test_refused_register_raises_runtime_error(ctx, reg):
    with pytest.raises(RuntimeError, match="device_type"):
        register_device(ctx, reg.url, 5, "tcp://h:1", "dev")  # type: ignore[arg-type]


def test_request_from_a_req_socket(ctx, reg):
    # Older devices use REQ: the reply must come back through its envelope.
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(reg.url)
        message = RegistryMessage(RegistryEvents.LIST_DEVICES, {}, 42)
        sock.send_multipart(protocol.encode_registry(message))
        assert sock.poll(2000)
        reply = protocol.decode_registry(sock.recv_multipart())
    finally:
        sock.close()
    assert (reply.event, reply.request_id) == (RegistryEvents.DEVICES, 42)
    assert reply.payload == {"devices": {}}


# -- malformed input ----------------------------------------------------------


def _header(**fields) -> bytes:
    return framing.encode({"v": protocol.PROTOCOL_VERSION, **fields})[0]


@pytest.mark.parametrize(
    ("body", "req_event", "request_id", "error_part"),
    [
        ([b"\xc1\xc1garbage"], None, 0, "msgpack"),
        ([msgpack.packb([1, 2, 3])], None, 0, "map"),
        ([_header(e="FOO", i=7, pl={})], "FOO", 7, "FOO"),
        ([_header(e="ACK", i=8, pl={})], "ACK", 8, "ACK"),
        ([_header(e="REGISTER", i=9, pl=[])], "REGISTER", 9, "payload"),
        (
            [
                _header(
                    e="REGISTER", i=10, pl={"device_type": "c", "addr": "a", "name": 3}
                )
            ],
            "REGISTER",
            10,
            "name",
        ),
        (
            [_header(e="REGISTER", i=11, pl={"addr": "a"})],
            "REGISTER",
            11,
            "device_type",
        ),
        (
            [
                _header(
                    e="REGISTER",
                    i=12,
                    pl={"device_type": "c", "addr": "a", "alive_timeout": "x"},
                )
            ],
            "REGISTER",
            12,
            "alive_timeout",
        ),
        ([_header(e="UNREGISTER", i=13, pl={"uuid": 5})], "UNREGISTER", 13, "uuid"),
        (
            [_header(e="CHECK_ALIVE", i=14, pl={"uuid": "u", "alive_timeout": -1})],
            "CHECK_ALIVE",
            14,
            "alive_timeout",
        ),
        ([], None, 0, "empty"),
    ],
)
def test_malformed_message_gets_unsupported(
    ctx, reg, body, req_event, request_id, error_part
):
    reply = raw_exchange(ctx, reg.url, [b"", *body])
    assert reply is not None, "no reply to a malformed message"
    assert reply.event is RegistryEvents.UNSUPPORTED
    assert reply.request_id == request_id
    assert reply.payload["req_event"] == req_event
    assert error_part in reply.payload["error"]
    # The registry still serves well-formed requests, and changed nothing.
    assert list_devices(ctx, reg.url) == {}
    assert reg.is_alive()


def test_message_without_envelope_is_dropped(ctx, reg):
    # The sentinel, sent after on the same socket, is answered first: the
    # message without envelope got no reply.
    dropped = RegistryMessage(RegistryEvents.LIST_DEVICES, {}, 1)
    sentinel = RegistryMessage(RegistryEvents.LIST_DEVICES, {}, 2)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(reg.url)
        sock.send_multipart(protocol.encode_registry(dropped))
        sock.send_multipart([b"", *protocol.encode_registry(sentinel)])
        assert sock.poll(int(WAIT * 1000))
        reply = protocol.decode_registry(sock.recv_multipart()[1:])
    finally:
        sock.close()
    assert reply.request_id == 2
    assert list_devices(ctx, reg.url) == {}


def test_reply_echoes_request_id(ctx, reg):
    message = RegistryMessage(RegistryEvents.CHECK_ALIVE, {"uuid": "nope"}, 123456)
    reply = raw_exchange(ctx, reg.url, [b"", *protocol.encode_registry(message)])
    assert reply.request_id == 123456
    assert reply.payload == {"req_event": "CHECK_ALIVE", "success": False}


def test_handle_request_without_sockets(ctx):
    # The request logic is reusable by another front-end (e.g. JSON).
    reg = DeviceRegistry(ctx, inproc_url())
    try:
        event, payload = reg._handle_request(
            "REGISTER", {"device_type": "cam", "addr": "a", "name": ""}
        )
        assert event is RegistryEvents.REGISTER_ACK
        assert payload["name"] == "cam-0"
        event, payload = reg._handle_request("UNREGISTER", {"uuid": payload["uuid"]})
        assert (event, payload["success"]) == (RegistryEvents.ACK, True)
        event, payload = reg._handle_request("NOPE", {})
        assert (event, payload["req_event"]) == (RegistryEvents.UNSUPPORTED, "NOPE")
    finally:
        reg.stop()


# -- binding and lifetime -----------------------------------------------------


def test_os_picks_the_port(ctx):
    for port in ("*", "0", 0, None):
        reg = DeviceRegistry(ctx, "127.0.0.1", port)
        try:
            assert isinstance(reg.port, int) and reg.port > 0
            assert reg.url == f"tcp://127.0.0.1:{reg.port}"
        finally:
            reg.stop()


def test_wildcard_host_gives_loopback_url(ctx, start_registry):
    reg = start_registry("tcp://*")
    assert reg.url == f"tcp://127.0.0.1:{reg.port}"
    assert list_devices(ctx, reg.url) == {}


def test_ipc_url(ctx, start_registry, tmp_path):
    reg = start_registry(f"ipc://{tmp_path}/registry.sock")
    assert reg.port is None
    register_device(ctx, reg.url, "cam", "tcp://h:1", "dev")
    assert list_devices(ctx, reg.url) == {"dev": ("cam", "tcp://h:1")}


def test_busy_port_raises_in_constructor(ctx, reg):
    with pytest.raises(zmq.ZMQError):
        DeviceRegistry(ctx, "127.0.0.1", reg.port)


def test_stop_is_prompt_and_idempotent(ctx):
    reg = DeviceRegistry(ctx, inproc_url(), poll_interval=0.1)
    reg.start()
    assert wait_until(reg.is_alive, WAIT)
    reg.stop()
    reg.stop()
    reg.join(timeout=WAIT)
    assert not reg.is_alive()
    assert reg._sock.closed


def test_inproc_name_is_free_after_join(ctx, start_registry):
    url = inproc_url()
    first = start_registry(url)
    first.stop()
    first.join(timeout=2)
    second = start_registry(url)  # no retry: the name is released at once
    assert list_devices(ctx, second.url) == {}


def test_stop_before_start_closes_socket(ctx):
    reg = DeviceRegistry(ctx, inproc_url())
    reg.stop()
    assert reg._sock.closed
    reg.stop()


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
    """Start a registry at ``url``, which a stopped one held a moment ago.

    ZeroMQ releases a TCP port in its I/O thread after close(), so the
    port may stay busy for a few milliseconds after join().
    """
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return start_registry(url, **kwargs)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


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


# -- DeviceDirectory: rules, caps and cost, without sockets --------------------


def directory(**kwargs) -> tuple[DeviceDirectory, ManualClock]:
    clock = ManualClock()
    return DeviceDirectory(clock=clock, **kwargs), clock


def test_directory_naming_reuses_the_smallest_free_index():
    table, _ = directory()
    uuids = [table.register("cam", f"tcp://h:{i}")[1] for i in range(4)]
    assert list(table.devices()) == ["cam-0", "cam-1", "cam-2", "cam-3"]
    assert table.unregister(uuids[2]) and table.unregister(uuids[1])
    assert table.register("cam", "tcp://h:8")[0] == "cam-1"
    assert table.register("cam", "tcp://h:9")[0] == "cam-2"
    assert table.register("cam", "tcp://h:10")[0] == "cam-4"
    # a name taken by hand is skipped, and reused once free
    _, manual = table.register("cam", "tcp://h:11", "cam-5")
    assert table.register("cam", "tcp://h:12")[0] == "cam-6"
    assert table.unregister(manual)
    assert table.register("cam", "tcp://h:13")[0] == "cam-5"
    # collisions count from 1 and share the names with the type's sequence
    assert table.register("x", "tcp://h:20", "cam")[0] == "cam"
    assert table.register("x", "tcp://h:21", "cam")[0] == "cam-7"


def test_directory_expiry_and_check_ins():
    removed: list[str] = []
    table, clock = directory(on_removed=lambda entry: removed.append(entry.name))
    _, keep = table.register("cam", "tcp://h:1", "keep", alive_timeout=1.0)
    _, lose = table.register("cam", "tcp://h:2", "lose", alive_timeout=1.0)
    clock.advance(0.9)
    assert table.check_in(keep) and table.prune() == 0
    clock.advance(0.2)  # past lose's deadline, not keep's
    assert table.prune() == 1 and removed == ["lose"]
    assert not table.check_in(lose)
    # a shorter timeout in a check-in brings the deadline forward
    assert table.check_in(keep, alive_timeout=0.1)
    clock.advance(0.11)
    assert table.prune() == 1 and removed == ["lose", "keep"]
    assert table.devices() == {}
    # an expired name is free again
    assert table.register("cam", "tcp://h:3", "keep")[0] == "keep"


def test_directory_caps():
    table, _ = directory(max_devices=2, max_alive_timeout=5.0, default_alive_timeout=5)
    table.register("cam", "tcp://h:1", "a")
    table.register("cam", "tcp://h:2", "b")
    with pytest.raises(ValueError, match="full"):
        table.register("cam", "tcp://h:3", "c")
    # replacing an entry (same address, or overwrite) is allowed when full
    assert table.register("cam", "tcp://h:1", "a2")[0] == "a2"
    assert table.register("cam", "tcp://h:9", "b", overwrite=True)[0] == "b"
    assert table.devices() == {"a2": ("cam", "tcp://h:1"), "b": ("cam", "tcp://h:9")}
    with pytest.raises(ValueError, match="max_alive_timeout"):
        table.register("cam", "tcp://h:1", alive_timeout=5.5)
    _, dev_uuid = table.register("cam", "tcp://h:1", alive_timeout=5.0)
    with pytest.raises(ValueError, match="at most 5 s"):
        table.check_in(dev_uuid, alive_timeout=6.0)
    with pytest.raises(ValueError, match="default_alive_timeout"):
        DeviceDirectory(default_alive_timeout=30, max_alive_timeout=10)
    with pytest.raises(ValueError, match="max_devices"):
        DeviceDirectory(max_devices=0)


def test_directory_owners():
    table, clock = directory()
    alice, mallory = "alice-key", "mallory-key"
    name, token = table.register("cam", "tcp://alice:1", "cam", owner=alice)
    assert name == "cam" and table.entry("cam").owner == alice
    # another owner: no takeover, no eviction, no check-in, no unregister
    assert table.register("x", "tcp://m:1", "cam", True, owner=mallory)[0] == "cam-1"
    assert table.register("x", "tcp://alice:1", "evil", owner=mallory)[0] == "evil"
    assert not table.unregister(token, owner=mallory)
    assert not table.check_in(token, owner=mallory)
    assert not table.unregister(token)  # no owner is not alice either
    assert table.devices()["cam"] == ("cam", "tcp://alice:1")
    # the same owner, restarted: same address takes the entry back at once
    _, token2 = table.register("cam", "tcp://alice:1", "cam", False, owner=alice)
    assert table.entry("cam").address == "tcp://alice:1" and token2 != token
    assert not table.check_in(token, owner=alice)  # the old token is gone
    assert table.entry("evil").address == "tcp://alice:1"  # mallory's own entry
    # ... or another address with overwrite
    assert table.register("cam", "tcp://alice:2", "cam", True, owner=alice)[0] == "cam"
    assert table.devices()["cam"] == ("cam", "tcp://alice:2")
    # once alice's entry expired, anyone may take the name
    clock.advance(DeviceDirectory().default_alive_timeout + 1)
    assert table.register("x", "tcp://m:2", "cam", owner=mallory)[0] == "cam"
    assert table.entry("cam").owner == mallory


def test_directory_many_owners_at_one_address():
    # Under CURVE anyone may make keys: each gets its own entry at a shared
    # address, and replacing one touches only that owner's entry.
    table, _ = directory()
    tokens = {
        f"key-{i}": table.register("cam", "tcp://shared:1", "cam", owner=f"key-{i}")[1]
        for i in range(500)
    }
    assert len(table) == 500 and table.entry("cam").owner == "key-0"
    _, new_token = table.register("cam", "tcp://shared:1", "x", owner="key-7")
    assert len(table) == 500 and table.entry("x").owner == "key-7"
    assert not table.check_in(tokens["key-7"], owner="key-7")
    assert table.check_in(new_token, owner="key-7")
    assert all(table.check_in(tokens[f"key-{i}"], owner=f"key-{i}") for i in (0, 499))


class CountingDict(dict):
    """A dict that counts whole-table walks and membership tests."""

    walks = 0
    lookups = 0

    def __iter__(self):
        CountingDict.walks += 1
        return super().__iter__()

    def values(self):
        CountingDict.walks += 1
        return super().values()

    def items(self):
        CountingDict.walks += 1
        return super().items()

    def keys(self):
        CountingDict.walks += 1
        return super().keys()

    def __contains__(self, key):
        CountingDict.lookups += 1
        return super().__contains__(key)


def test_requests_do_not_walk_the_table(monkeypatch):
    """REGISTER, CHECK_ALIVE, UNREGISTER and pruning touch a few entries,
    never all of them: O(1) or O(log n) each, whatever the table's size."""
    table, clock = directory(max_devices=5000)
    table._by_uuid = CountingDict()
    table._by_name = CountingDict()
    table._by_address = CountingDict()
    monkeypatch.setattr(CountingDict, "walks", 0)
    monkeypatch.setattr(CountingDict, "lookups", 0)
    n = 3000
    # unnamed devices of one type: the old code tried type-0, type-1... each time
    tokens = [table.register("cam", f"tcp://h:{i}")[1] for i in range(n)]
    named = [table.register("cam", f"tcp://n:{i}", "dev")[1] for i in range(n // 3)]
    for i, token in enumerate(tokens):
        clock.advance(0.001)
        assert table.check_in(token, alive_timeout=10.0 if i % 2 else 5.0)
    for token in tokens[::2] + named[::2]:
        assert table.unregister(token)
    clock.advance(7.0)  # the 5 s entries left expire
    assert table.prune() == 0
    requests = n + n // 3 + n + (n + n // 3 + 1) // 2 + 1
    # the only walks are the heap's rare rebuilds: O(n) once per n removals
    assert CountingDict.walks * n <= 2 * requests
    assert CountingDict.lookups <= 3 * requests  # a few per request, not n
    # stale heap items are dropped, so the heap stays proportional to the table
    assert len(table._expiry) <= 2 * len(table) + 64
    assert len(table) == n // 2 + n // 3 - (n // 3 + 1) // 2


def test_expiry_costs_only_what_is_due(monkeypatch):
    table, clock = directory(max_devices=50_000)
    for i in range(20_000):
        table.register("cam", f"tcp://h:{i}", alive_timeout=1.0 + i % 7)
    pops = 0
    real_pop = heapq.heappop

    def counting_pop(heap):
        nonlocal pops
        pops += 1
        return real_pop(heap)

    monkeypatch.setattr(heapq, "heappop", counting_pop)
    for _ in range(100):
        clock.advance(0.001)
        assert table.prune() == 0
    assert pops == 0  # nothing due: nothing looked at
    clock.advance(1.0)  # the 1 s group is due
    assert table.prune() == len(range(0, 20_000, 7))
    assert pops == len(range(0, 20_000, 7))


def test_registry_caps_are_error_replies(ctx, start_registry):
    reg = start_registry(max_devices=2, max_alive_timeout=5.0, default_alive_timeout=5)
    _, first = register_device(ctx, reg.url, "cam", "tcp://h:1", "a", alive_timeout=5)
    register_device(ctx, reg.url, "cam", "tcp://h:2", "b", alive_timeout=5)
    with pytest.raises(RuntimeError, match="full"):
        register_device(ctx, reg.url, "cam", "tcp://h:3", "c", alive_timeout=5)
    with pytest.raises(RuntimeError, match="max_alive_timeout"):
        register_device(ctx, reg.url, "cam", "tcp://h:1", "a", alive_timeout=60)
    with pytest.raises(RuntimeError, match="max_alive_timeout"):
        send_alive_check(ctx, reg.url, first, alive_timeout=60)
    assert send_alive_check(ctx, reg.url, first, alive_timeout=5) is AliveCheckState.ok
    assert list_devices(ctx, reg.url) == {
        "a": ("cam", "tcp://h:1"),
        "b": ("cam", "tcp://h:2"),
    }
    with pytest.raises(ValueError, match="default_alive_timeout"):
        DeviceRegistry(ctx, inproc_url(), default_alive_timeout=700)


# -- owners under CURVE ---------------------------------------------------------

curve = pytest.mark.skipif(
    not security.curve_available(), reason="libzmq was built without CURVE"
)


class Keys:
    """Key pairs of a test: the registry, alice (the victim), mallory."""

    def __init__(self, root) -> None:
        self.allowed = root / "allowed"
        self.allowed.mkdir()
        _, self.server_secret = security.generate_keys(root / "server", "srv")
        self.server_public = root / "server" / "srv.key"
        self.alice = self._client(root, "alice")
        self.mallory = self._client(root, "mallory")

    def _client(self, root, name: str) -> security.Security:
        public, secret = security.generate_keys(root / name, name)
        (self.allowed / public.name).write_bytes(public.read_bytes())
        return security.Security.from_files(
            secret, server_public_file=self.server_public
        )

    def server(self, folder: bool) -> security.Security:
        return security.Security.from_files(
            self.server_secret, allowed_clients_dir=self.allowed if folder else None
        )


@curve
@pytest.mark.parametrize("folder", [False, True], ids=["any-key", "allowed-keys"])
def test_another_key_can_neither_overwrite_nor_evict(
    ctx, start_registry, tmp_path, folder
):
    keys = Keys(tmp_path)
    clock = ManualClock()
    reg = start_registry(security=keys.server(folder), clock=clock)
    removed = Recorder()
    reg.add_device_removed_callback(removed)
    alice, mallory = keys.alice, keys.mallory

    def register(who, address, name, overwrite=False, **kwargs):
        return register_device(
            ctx, reg.url, "camera", address, name, overwrite, security=who, **kwargs
        )

    name, token = register(alice, "tcp://alice:1", "cam", alive_timeout=10)
    assert name == "cam"
    assert reg.get_entry("cam").owner == alice.public_key.decode()
    # hijack attempts from mallory
    assert register(mallory, "tcp://mallory:1", "cam", overwrite=True)[0] == "cam-1"
    assert register(mallory, "tcp://alice:1", "x", overwrite=True)[0] == "x"
    assert not unregister_device(ctx, reg.url, token, security=mallory)
    assert (
        send_alive_check(ctx, reg.url, token, security=mallory)
        is AliveCheckState.unknown
    )
    devices = list_devices(ctx, reg.url, security=mallory)
    assert devices["cam"] == ("camera", "tcp://alice:1")
    assert removed.calls == []
    # alice, restarted with the same key, takes her entry back at once
    name, token2 = register(alice, "tcp://alice:1", "cam")
    assert (name, reg.get_devices()["cam"]) == ("cam", ("camera", "tcp://alice:1"))
    assert removed.calls == [("camera", "tcp://alice:1", "cam")]
    assert send_alive_check(ctx, reg.url, token2, security=alice).name == "ok"
    assert not unregister_device(ctx, reg.url, token, security=alice)  # old token
    # once her entry expired, its name is free for anyone
    clock.advance(21.0)
    assert wait_until(lambda: "cam" not in reg.get_devices(), WAIT)
    assert register(mallory, "tcp://mallory:2", "cam")[0] == "cam"
    assert reg.get_entry("cam").owner == mallory.public_key.decode()


@curve
def test_a_secured_link_takes_its_entry_back_after_a_restart(
    ctx, start_registry, tmp_path
):
    keys = Keys(tmp_path)
    reg = start_registry(security=keys.server(False))
    first = RegistryLink(
        ctx, reg.url, "cam", "cam", "tcp://h:1", 5.0, security=keys.alice
    )
    second = RegistryLink(
        ctx, reg.url, "cam", "cam", "tcp://h:1", 5.0, security=keys.alice
    )
    try:
        _, old_uuid = first.register()
        first.close()  # killed: never unregisters
        assert second.register()[0] == "cam"
        assert second.uuid != old_uuid
        assert list(reg.get_devices()) == ["cam"]
        assert second.unregister() is True
        assert reg.get_devices() == {}
    finally:
        first.close()
        second.close()


@curve
def test_a_secured_registry_refuses_requests_of_an_unknown_key(ctx, tmp_path):
    # Fail closed: should libzmq not report the sender's key, nobody owns
    # the entry, so nothing is changed (LIST_DEVICES still answers).
    keys = Keys(tmp_path)
    reg = DeviceRegistry(ctx, inproc_url(), security=keys.server(False))
    try:
        payload = {"device_type": "cam", "addr": "tcp://h:1", "name": "cam"}
        event, reply = reg._handle_request("REGISTER", payload)
        assert event is RegistryEvents.UNSUPPORTED and "CURVE key" in reply["error"]
        event, _ = reg._handle_request("REGISTER", payload, "some-key")
        assert event is RegistryEvents.REGISTER_ACK
        event, reply = reg._handle_request("LIST_DEVICES", {})
        assert reply == {"devices": {"cam": ["cam", "tcp://h:1"]}}
    finally:
        reg.stop()
