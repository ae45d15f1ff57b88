"""Tests of framerpc.registry: device owners under CURVE.

No test depends on a wall-clock deadline being met: registries and links
run on a :class:`ManualClock` moved by hand, waits poll a condition with
generous bounds, and "nothing arrived" is shown with a sentinel request.
Helpers shared by tests/registry/test_registry*.py are in registry_helpers.py.
"""

from __future__ import annotations

import pytest
from conftest import wait_until
from curve_keys import needs_curve
from manual_clock import ManualClock
from registry_helpers import WAIT, Recorder, inproc_url

from framerpc import security
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

# -- owners under CURVE ---------------------------------------------------------


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


@needs_curve
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


@needs_curve
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


@needs_curve
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
