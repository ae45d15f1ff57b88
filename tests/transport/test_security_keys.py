"""Tests of framerpc.security: settings and CURVE key files, and security wired
into servers, clients, signals and the registry.
"""

from __future__ import annotations

import dataclasses
import stat

import pytest
from conftest import wait_until
from curve_keys import REFUSED_WAIT_MS, needs_curve

from framerpc.security import Security, generate_keys, load_public_key

pytestmark = needs_curve


# -- settings and key files --------------------------------------------------------


def test_generate_keys_writes_a_loadable_private_pair(tmp_path):
    public, secret = generate_keys(tmp_path / "new" / "folder", "device")
    assert (public.name, secret.name) == ("device.key", "device.key_secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    settings = Security.from_files(secret)
    assert settings.public_key == load_public_key(public) == load_public_key(secret)
    assert len(settings.secret_key) == 40


def test_generate_keys_never_overwrites_by_default(tmp_path):
    public, secret = generate_keys(tmp_path, "device")
    before = load_public_key(public)
    with pytest.raises(FileExistsError, match=r"device\.key"):
        generate_keys(tmp_path, "device")
    assert load_public_key(public) == before
    generate_keys(tmp_path, "device", overwrite=True)
    assert load_public_key(public) != before
    assert Security.from_files(secret).public_key == load_public_key(public)


@pytest.mark.parametrize("name", ["", "a/b", "..", "a\\b"])
def test_generate_keys_rejects_path_like_names(tmp_path, name):
    with pytest.raises(ValueError, match="name"):
        generate_keys(tmp_path, name)


def test_settings_validate_their_keys(keys, tmp_path):
    alice = Security.from_files(keys.alice_secret)
    mallory = Security.from_files(keys.mallory_secret)
    as_text = Security(alice.public_key.decode(), alice.secret_key.decode())
    assert as_text.public_key == alice.public_key  # str keys become bytes
    with pytest.raises(ValueError, match="public_key"):
        Security(b"short", alice.secret_key)
    with pytest.raises(ValueError, match="Z85"):
        Security(b"\x00" * 40, alice.secret_key)
    with pytest.raises(ValueError, match="does not belong"):
        Security(alice.public_key, mallory.secret_key)
    with pytest.raises(ValueError, match="server_public_key"):
        Security(alice.public_key, alice.secret_key, server_public_key=b"x")
    with pytest.raises(ValueError, match="not a folder"):
        Security(
            alice.public_key,
            alice.secret_key,
            allowed_clients_dir=tmp_path / "missing",
        )
    with pytest.raises(ValueError, match="no secret key"):
        Security.from_files(keys.alice_public)
    with pytest.raises(OSError):
        Security.from_files(tmp_path / "missing.key_secret")


def test_settings_are_frozen_and_hide_the_secret(keys):
    settings = keys.server()
    assert settings.allowed_clients_dir == keys.allowed.resolve()
    with pytest.raises(AttributeError):
        settings.secret_key = b"x" * 40  # type: ignore[misc]
    assert settings.secret_key.decode() not in repr(settings)
    assert "hidden" in repr(settings)


# -- wired into servers, clients, signals and the registry -------------------------


def _secured(settings: Security):
    from framerpc.transport import DEFAULT_OPTIONS

    return dataclasses.replace(DEFAULT_OPTIONS, security=settings)


def test_rpc_server_accepts_an_allowed_client_and_its_signals(ctx, keys, serve):
    from devices import CameraProxy, CameraServer

    server = serve(
        CameraServer(ctx, "tcp://127.0.0.1", options=_secured(keys.server()))
    )
    options = _secured(keys.for_client(keys.alice_secret))
    with CameraProxy(ctx, server.url, options=options) as proxy:
        assert proxy.echo("secret") == "secret"
        got: list = []
        proxy.frame_ready.connect(got.append)
        server.frame_ready.emit(7)
        assert wait_until(lambda: got == [7])


@pytest.mark.parametrize("who", ["stranger", "no keys"])
def test_rpc_server_refuses_other_clients(ctx, keys, serve, who):
    from devices import CameraProxy, CameraServer

    server = serve(
        CameraServer(ctx, "tcp://127.0.0.1", options=_secured(keys.server()))
    )
    options = (
        _secured(keys.for_client(keys.mallory_secret)) if who == "stranger" else None
    )
    kwargs = {"options": options} if options else {}
    with pytest.raises(TimeoutError):
        CameraProxy(ctx, server.url, timeout=REFUSED_WAIT_MS, **kwargs)


def test_registry_and_its_helpers_accept_the_same_settings(ctx, keys):
    from framerpc.registry import DeviceRegistry, list_devices, register_device

    registry = DeviceRegistry(ctx, "127.0.0.1", port=None, security=keys.server())
    registry.start()
    try:
        alice = keys.for_client(keys.alice_secret)
        accepted = register_device(
            ctx, registry.url, "camera", "tcp://127.0.0.1:1", "cam", security=alice
        )
        assert accepted[0] == "cam"
        assert list_devices(ctx, registry.url, security=alice) == {
            "cam": ("camera", "tcp://127.0.0.1:1")
        }
        with pytest.raises(TimeoutError):
            list_devices(ctx, registry.url, timeout=REFUSED_WAIT_MS)
    finally:
        registry.stop()
        registry.join(timeout=5)
