"""Tests of framerpc.registry: the DeviceRegistry thread, binding and lifetime.

No test depends on a wall-clock deadline being met: registries and links
run on a :class:`ManualClock` moved by hand, waits poll a condition with
generous bounds, and "nothing arrived" is shown with a sentinel request.
Helpers shared by tests/registry/test_registry*.py are in registry_helpers.py.
"""

from __future__ import annotations

import logging
import threading
import uuid

import pytest
import zmq
from conftest import finishes_within, wait_until
from manual_clock import ManualClock
from registry_helpers import WAIT, Recorder, inproc_url, raw_exchange, sentinel_list

from framerpc import protocol
from framerpc.protocol import RegistryEvents, RegistryMessage
from framerpc.registry import (
    AliveCheckState,
    DeviceRegistry,
    list_devices,
    register_device,
    send_alive_check,
    unregister_device,
)

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
