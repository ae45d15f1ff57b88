"""Tests of framerpc.registry: the DeviceRegistry thread, helpers and link."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import msgpack
import pytest
import zmq
from conftest import wait_until

from framerpc import framing, protocol, registry
from framerpc.protocol import RegistryEvents, RegistryMessage
from framerpc.registry import (
    AliveCheckState,
    DeviceRegistry,
    RegistryLink,
    list_devices,
    register_device,
    send_alive_check,
    unregister_device,
)


def inproc_url() -> str:
    return f"inproc://registry-{uuid.uuid4().hex}"


@pytest.fixture
def start_registry(ctx: zmq.Context) -> Iterator[Callable[..., DeviceRegistry]]:
    """Factory of started registries; each is stopped and joined at the end."""
    started: list[DeviceRegistry] = []

    def start(addr: str = "tcp://127.0.0.1", **kwargs) -> DeviceRegistry:
        kwargs.setdefault("poll_interval", 0.02)
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
    start = time.monotonic()
    state = send_alive_check(ctx, inproc_url(), "x", timeout=150)
    assert state is AliveCheckState.unreachable
    assert time.monotonic() - start < 1.0


def test_helpers_time_out_on_a_silent_peer(ctx):
    silent = ctx.socket(zmq.ROUTER)  # accepts the request, never answers
    silent.setsockopt(zmq.LINGER, 0)
    try:
        port = silent.bind_to_random_port("tcp://127.0.0.1")
        url = f"tcp://127.0.0.1:{port}"
        start = time.monotonic()
        state = send_alive_check(ctx, url, "x", timeout=150)
        assert state is AliveCheckState.unreachable
        assert silent.poll(1000), "the check should have been delivered"
        with pytest.raises(TimeoutError):
            register_device(ctx, url, "cam", "tcp://h:1", timeout=150)
        with pytest.raises(TimeoutError):
            unregister_device(ctx, url, "x", timeout=150)
        with pytest.raises(TimeoutError):
            list_devices(ctx, url, timeout=150)
        assert time.monotonic() - start < 2.0
    finally:
        silent.close()


def test_alive_check_extends_deadline(ctx, reg):
    _, dev_uuid = register_device(ctx, reg.url, "cam", "tcp://h:1", alive_timeout=0.3)
    end = time.monotonic() + 0.8
    while time.monotonic() < end:
        assert send_alive_check(ctx, reg.url, dev_uuid, alive_timeout=0.3).name == "ok"
        time.sleep(0.05)
    assert "cam-0" in reg.get_devices()


def test_deadline_prunes_and_fires_removed(ctx, reg):
    removed = Recorder()
    reg.add_device_removed_callback(removed)
    start = time.monotonic()
    register_device(ctx, reg.url, "cam", "tcp://h:1", "dev", alive_timeout=0.3)
    assert "dev" in reg.get_devices()
    assert wait_until(lambda: not reg.get_devices())
    assert time.monotonic() - start >= 0.25
    assert wait_until(lambda: removed.calls == [("cam", "tcp://h:1", "dev")])


def test_default_alive_timeout_applies(ctx, start_registry):
    reg = start_registry(default_alive_timeout=0.2)
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
    assert wait_until(lambda: not reg.get_devices(), timeout=2)


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
    message = RegistryMessage(RegistryEvents.LIST_DEVICES, {}, 1)
    assert raw_exchange(ctx, reg.url, protocol.encode_registry(message), 0.2) is None
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
    assert wait_until(reg.is_alive)
    start = time.monotonic()
    reg.stop()
    reg.stop()
    reg.join(timeout=2)
    assert not reg.is_alive()
    assert time.monotonic() - start < 1.0  # issue: stop within a second
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


def tick_for(link: RegistryLink, seconds: float, step: float = 0.02) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        link.tick()
        time.sleep(step)


def test_link_register_tick_and_unregister(ctx, reg):
    link = RegistryLink(ctx, reg.url, "cam", "dev", "tcp://h:1", alive_timeout=0.3)
    try:
        assert link.register() == ("dev", link.uuid)
        assert link.registry_url == reg.url
        # Check-ins keep the device listed well past its 0.3 s deadline.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            started = time.monotonic()
            link.tick()
            # a blocking tick would wait for a reply (>= 1 s); 0.5 s leaves
            # room for a loaded 2-core CI machine
            assert time.monotonic() - started < 0.5, "tick must not block"
            assert "dev" in reg.get_devices()
            time.sleep(0.02)
        assert link.unregister() is True
        assert link.uuid is None
        assert reg.get_devices() == {}
        assert link.unregister() is False
    finally:
        link.close()
        link.close()


def test_link_without_ticks_is_pruned(ctx, reg):
    link = RegistryLink(ctx, reg.url, "cam", "dev", "tcp://h:1", alive_timeout=0.3)
    try:
        link.register()
        tick_for(link, 0.2)
        assert wait_until(lambda: not reg.get_devices(), timeout=2)
    finally:
        link.close()


def test_link_reregisters_when_forgotten(ctx, reg):
    link = RegistryLink(ctx, reg.url, "cam", "dev", "tcp://h:1", alive_timeout=0.3)
    try:
        _, old_uuid = link.register()
        # Simulate a registry that lost the device (pruned, or restarted).
        assert unregister_device(ctx, reg.url, old_uuid)
        # The registry lists the device before the link reads the ACK.
        assert wait_until(lambda: link.tick() or link.uuid != old_uuid)
        assert link.name == "dev"
        assert "dev" in reg.get_devices()
        assert wait_until(
            lambda: (
                link.tick()
                or send_alive_check(ctx, reg.url, link.uuid, 0.3, timeout=200)
                is AliveCheckState.ok
            )
        )
    finally:
        link.close()


def test_link_reports_registry_gone(ctx, start_registry, caplog):
    reg = start_registry(inproc_url())
    link = RegistryLink(ctx, reg.url, "cam", "dev", "tcp://h:1", alive_timeout=0.15)
    try:
        link.register()
        reg.stop()
        reg.join(timeout=2)
        with caplog.at_level(logging.WARNING, logger="framerpc.registry"):
            assert wait_until(
                lambda: link.tick() or "seems gone" in caplog.text, timeout=2
            )
    finally:
        link.close()
    link.tick()  # a closed link does nothing


def test_link_unregister_never_raises_on_silence(ctx):
    link = RegistryLink(ctx, inproc_url(), "cam", "dev", "tcp://h:1", 1.0)
    link.uuid = "known-before"
    try:
        start = time.monotonic()
        assert link.unregister(timeout=100) is False
        assert time.monotonic() - start < 1.0
    finally:
        link.close()


def start_again(start_registry, url: str) -> DeviceRegistry:
    """Start a registry at ``url``, which a stopped one held a moment ago.

    ZeroMQ releases a TCP port in its I/O thread after close(), so the
    port may stay busy for a few milliseconds after join().
    """
    deadline = time.monotonic() + 2
    while True:
        try:
            return start_registry(url)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@pytest.mark.parametrize("kind", ["tcp", "inproc"])
def test_link_reregisters_after_registry_restart(ctx, start_registry, kind):
    first = start_registry("tcp://127.0.0.1" if kind == "tcp" else inproc_url())
    link = RegistryLink(ctx, first.url, "cam", "dev", "tcp://h:1", alive_timeout=0.3)
    try:
        _, old_uuid = link.register()
        tick_for(link, 0.15)
        first.stop()
        first.join(timeout=2)
        assert not first.is_alive()
        bind = f"tcp://127.0.0.1:{first.port}" if kind == "tcp" else first.url
        second = start_again(start_registry, bind)
        assert second.get_devices() == {}
        assert wait_until(
            lambda: (
                link.tick() or second.get_devices() == {"dev": ("cam", "tcp://h:1")}
            ),
            timeout=4,
        )
        assert link.name == "dev"
        assert wait_until(lambda: link.tick() or link.uuid != old_uuid)
    finally:
        link.close()


def test_helpers_close_their_sockets(ctx, reg, monkeypatch):
    made: list[zmq.Socket] = []
    real_make_socket = registry.transport.make_socket

    def recording(*args, **kwargs):
        sock = real_make_socket(*args, **kwargs)
        made.append(sock)
        return sock

    monkeypatch.setattr(registry.transport, "make_socket", recording)
    _, dev_uuid = register_device(ctx, reg.url, "cam", "tcp://h:1", "dev")
    send_alive_check(ctx, reg.url, dev_uuid)
    send_alive_check(ctx, inproc_url(), dev_uuid, timeout=50)
    list_devices(ctx, reg.url)
    unregister_device(ctx, reg.url, dev_uuid)
    assert len(made) == 5
    assert all(sock.closed for sock in made)
