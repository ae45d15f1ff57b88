"""Interoperability with the older JSON protocol: the registry, both ways.

Against the independent peers of ``legacy_peers`` (written from
legacy-protocol.md with plain pyzmq and json); the other directions are in
the other tests/test_legacy_*.py files.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from conftest import wait_until
from devices import CameraServer
from legacy_peers import LegacyClient, LegacyRegistry
from manual_clock import ManualClock

from framerpc import registry
from framerpc.registry import (
    AliveCheckState,
    DeviceRegistry,
    list_devices,
    register_device,
    send_alive_check,
    unregister_device,
)

# == registry, both ways =========================================================


@pytest.fixture
def reg_clock() -> ManualClock:
    """The clock of ``reg`` and ``legacy_registry``: their deadlines pass
    only when a test moves it, never because the machine is slow."""
    return ManualClock()


@pytest.fixture
def reg(ctx: zmq.Context, reg_clock: ManualClock) -> Iterator[DeviceRegistry]:
    """A running framerpc DeviceRegistry on loopback TCP (0.3 s default),
    on ``reg_clock``."""
    registry_ = DeviceRegistry(
        ctx, "127.0.0.1", None, default_alive_timeout=0.3, clock=reg_clock
    )
    registry_.start()
    yield registry_
    registry_.stop()
    registry_.join(timeout=5)
    assert not registry_.is_alive()


def _register(client: LegacyClient, **payload: Any) -> dict:
    payload.setdefault("device_type", "camera")
    payload.setdefault("addr", "tcp://10.0.0.1:5000")
    return client.request({"event": "REGISTER", "payload": payload})


def test_register_row(reg, legacy_client):
    reply = _register(legacy_client(reg.url), name="cam")
    assert set(reply) == {"event", "payload"} and reply["event"] == "REGISTER_ACK"
    assert set(reply["payload"]) == {"name", "uuid"}
    assert reply["payload"]["name"] == "cam"
    assert reg.get_devices() == {"cam": ("camera", "tcp://10.0.0.1:5000")}


def test_register_row_naming_rules(reg, legacy_client):
    client = legacy_client(reg.url)

    def name(**payload: Any) -> str:
        return _register(client, **payload)["payload"]["name"]

    assert name(name="cam", addr="tcp://h:1") == "cam"
    assert name(name="cam", addr="tcp://h:2") == "cam-1"  # overwrite defaults false
    assert name(name="cam", addr="tcp://h:3", overwrite=False) == "cam-2"
    assert name(name="", addr="tcp://h:4") == "camera-0"
    assert name(addr="tcp://h:5") == "camera-1"  # no name at all: same as empty
    # the same address registering again replaces its old entry
    assert name(name="cam-1", addr="tcp://h:2") == "cam-1"
    assert len(reg.get_devices()) == 5
    # overwrite true: the holder of the name is removed first
    assert name(name="cam", addr="tcp://h:9", overwrite=True) == "cam"
    devices = reg.get_devices()
    assert devices["cam"] == ("camera", "tcp://h:9")
    assert "tcp://h:1" not in {address for _, address in devices.values()}


def test_unregister_row(reg, legacy_client):
    client = legacy_client(reg.url)
    device_uuid = _register(client, name="cam")["payload"]["uuid"]
    unregister = {"event": "UNREGISTER", "payload": {"uuid": device_uuid}}
    assert client.request(unregister) == {
        "event": "ACK",
        "payload": {"req_event": "UNREGISTER", "success": True},
    }
    assert reg.get_devices() == {}
    assert client.request(unregister)["payload"] == {
        "req_event": "UNREGISTER",
        "success": False,
    }


def _listed_after_sentinel(client: LegacyClient, reg: DeviceRegistry) -> set[str]:
    """Names listed once ``reg`` answered a request: it prunes up to its
    clock's time before each one (a check of an unknown uuid, harmless)."""
    unknown = {"event": "CHECK_ALIVE", "payload": {"uuid": "no-such-device"}}
    assert client.request(unknown)["payload"]["success"] is False
    return set(reg.get_devices())


def test_check_alive_row_moves_the_deadline(reg, reg_clock, legacy_client):
    client = legacy_client(reg.url)
    device_uuid = _register(client, name="cam")["payload"]["uuid"]
    check = {"event": "CHECK_ALIVE", "payload": {"uuid": device_uuid}}
    for _ in range(5):  # 1 s in all, three times the registry's 0.3 s default
        reg_clock.advance(0.2)
        # the registry prunes before answering: success means still listed
        assert client.request(check) == {
            "event": "ACK",
            "payload": {"req_event": "CHECK_ALIVE", "success": True},
        }
    assert "cam" in _listed_after_sentinel(client, reg)
    longer = {
        "event": "CHECK_ALIVE",
        "payload": {"uuid": device_uuid, "alive_timeout": 2},
    }
    assert client.request(longer)["payload"]["success"] is True
    reg_clock.advance(1.99)  # far past the 0.3 s default, not past 2 s
    assert "cam" in _listed_after_sentinel(client, reg)
    shorter = {
        "event": "CHECK_ALIVE",
        "payload": {"uuid": device_uuid, "alive_timeout": 0.1},
    }
    assert client.request(shorter)["payload"]["success"] is True
    reg_clock.advance(0.09)
    assert "cam" in _listed_after_sentinel(client, reg)
    reg_clock.advance(0.02)  # past the 0.1 s deadline
    assert wait_until(lambda: reg.get_devices() == {})
    assert client.request(check)["payload"] == {
        "req_event": "CHECK_ALIVE",
        "success": False,
    }


@pytest.mark.parametrize(
    ("data", "event"),
    [
        (b'{"event": "DANCE", "payload": {}}', "DANCE"),
        (b'{"event": "REGISTER_ACK", "payload": {"name": "x"}}', "REGISTER_ACK"),
        (b'{"event": "DANCE"}', "DANCE"),
        (b'{"event": 5, "payload": {}}', None),
        (b"{not json", None),
    ],
    ids=["unknown", "a reply kind", "no payload", "event not str", "not json"],
)
def test_unsupported_row(reg, legacy_client, data, event):
    client = legacy_client(reg.url)
    assert client.request(data) == {
        "event": "UNSUPPORTED",
        "payload": {"req_event": event},
    }
    assert _register(client, name="after")["event"] == "REGISTER_ACK"


def test_malformed_payload_is_unsupported_with_a_reason(reg, legacy_client):
    reply = legacy_client(reg.url).request(
        {"event": "REGISTER", "payload": {"name": "no type"}}
    )
    assert reply["event"] == "UNSUPPORTED"
    assert reply["payload"]["req_event"] == "REGISTER"
    assert "device_type" in reply["payload"]["error"]


def test_older_devices_and_list_devices_see_one_directory(ctx, reg, legacy_client):
    _register(legacy_client(reg.url), name="old-cam", addr="tcp://h:1")
    register_device(ctx, reg.url, "camera", "tcp://h:2", "new-cam")
    expected = {"old-cam": ("camera", "tcp://h:1"), "new-cam": ("camera", "tcp://h:2")}
    assert list_devices(ctx, reg.url) == expected == reg.get_devices()


@pytest.fixture
def legacy_registry(
    ctx: zmq.Context, reg_clock: ManualClock
) -> Iterator[LegacyRegistry]:
    """An older registry on ``reg_clock`` (20 s default deadline)."""
    peer = LegacyRegistry(ctx, clock=reg_clock)
    peer.start()
    yield peer
    peer.close()
    assert peer.errors == []


def test_helpers_with_an_older_registry(ctx, legacy_registry):
    url = legacy_registry.url
    name, device_uuid = register_device(ctx, url, "camera", "tcp://h:1", "cam")
    assert name == "cam" and legacy_registry.devices() == {
        "cam": ("camera", "tcp://h:1")
    }
    name_2, _ = register_device(ctx, url, "camera", "tcp://h:2", "cam", overwrite=False)
    assert name_2 == "cam-1"
    assert send_alive_check(ctx, url, device_uuid) is AliveCheckState.ok
    assert send_alive_check(ctx, url, "unknown") is AliveCheckState.unknown
    assert unregister_device(ctx, url, device_uuid) is True
    assert unregister_device(ctx, url, device_uuid) is False
    assert legacy_registry.devices() == {"cam-1": ("camera", "tcp://h:2")}
    # framerpc's own LIST_DEVICES: refused cleanly, the older registry lives on
    with pytest.raises(RuntimeError, match="refused LIST_DEVICES"):
        list_devices(ctx, url)
    assert send_alive_check(ctx, url, "unknown") is AliveCheckState.unknown
    assert legacy_registry.events() == [
        "REGISTER",
        "REGISTER",
        "CHECK_ALIVE",
        "CHECK_ALIVE",
        "UNREGISTER",
        "UNREGISTER",
        "LIST_DEVICES",
        "CHECK_ALIVE",
    ]


def test_server_registers_checks_in_and_unregisters_with_an_older_registry(
    ctx, serve, legacy_registry
):
    server = CameraServer(ctx, "tcp://127.0.0.1", alive_timeout=0.3)
    assert server.register_to_registry("camera", "cam", legacy_registry.url) == "cam"
    assert legacy_registry.devices() == {"cam": ("camera", server.url)}
    serve(server)
    assert wait_until(lambda: legacy_registry.events().count("CHECK_ALIVE") >= 3)
    checks = [
        r["payload"] for r in legacy_registry.requests if r["event"] == "CHECK_ALIVE"
    ]
    assert checks[0] == {"uuid": server.uuid, "alive_timeout": 0.3}
    server.stop_server()
    assert wait_until(lambda: legacy_registry.devices() == {})
    assert legacy_registry.events()[-1] == "UNREGISTER"


def test_server_name_clash_with_an_older_registry(ctx, legacy_registry):
    register_device(ctx, legacy_registry.url, "camera", "tcp://h:1", "cam")
    server = CameraServer(ctx, "tcp://127.0.0.1")
    try:
        name = server.register_to_registry(
            "camera", "cam", legacy_registry.url, overwrite=False
        )
        assert name == "cam-1" == server.name
    finally:
        server.stop_server()
    assert legacy_registry.devices() == {"cam": ("camera", "tcp://h:1")}


def test_server_registers_again_when_an_older_registry_forgets_it(
    ctx, serve, legacy_registry
):
    server = CameraServer(ctx, "tcp://127.0.0.1", alive_timeout=0.3)
    server.register_to_registry("camera", "cam", legacy_registry.url)
    old_uuid = server.uuid
    serve(server)
    legacy_registry.forget()  # as after a restart
    assert wait_until(
        lambda: legacy_registry.devices() == {"cam": ("camera", server.url)}
    )
    assert wait_until(lambda: server.uuid != old_uuid)
    registers = [r for r in legacy_registry.requests if r["event"] == "REGISTER"]
    assert registers[-1]["payload"]["overwrite"] is False
    assert registers[-1]["payload"]["name"] == "cam"


def test_first_check_in_beats_an_older_registrys_default_deadline(
    ctx, serve, monkeypatch, legacy_client
):
    """An older registry may ignore alive_timeout in REGISTER and keep its
    default deadline (20 s; 300 s here) until the first check-in, while a
    server's own period can be longer (60 / 3 s by default; 1000 s here).

    The registry and the server's link share a clock moved by hand. The
    times are far beyond the wait's real ceiling: only that clock, passed
    to register_to_registry, can make the check-in due; and the server has
    all the real time it needs to check in before the registry's 300 s pass.
    """
    monkeypatch.setattr(registry, "DEFAULT_ALIVE_TIMEOUT", 300.0)
    clock = ManualClock()
    peer = LegacyRegistry(ctx, default_alive_timeout=300.0, clock=clock)
    peer.start()
    try:
        server = CameraServer(ctx, "tcp://127.0.0.1", alive_timeout=3000)
        server.register_to_registry("camera", "cam", peer.url, clock=clock)
        serve(server)
        # Due after 300 / 3 s; the server's own period (1000 s) is far from due.
        clock.advance(150.0)
        assert wait_until(lambda: "CHECK_ALIVE" in peer.events()), "no check-in"
        clock.advance(200.0)  # past the default deadline, not the 3000 s one
        # the older registry prunes before answering: a sentinel request
        unknown = {"event": "CHECK_ALIVE", "payload": {"uuid": "no-such-device"}}
        assert legacy_client(peer.url).request(unknown)["payload"]["success"] is False
        assert peer.devices() == {"cam": ("camera", server.url)}
        server.stop_server()
    finally:
        peer.close()
    assert peer.errors == []
