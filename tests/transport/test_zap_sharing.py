"""A secured registry and a secured server share one context's ZAP handler.

libzmq allows one ZAP handler per context. ``Authenticator`` leases (a
server's allowed-clients folder) found the handler by the libzmq context,
``ClientKeys`` leases (a registry without a folder, which still needs the
client keys) by the Python object: in one context the second of them
started a second handler and failed with "Address already in use".
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import zmq
from devices import CameraProxy, CameraServer

from framerpc.registry import DeviceRegistry, register_device
from framerpc.security import Security, curve_available, generate_keys
from framerpc.transport import SocketOptions

pytestmark = pytest.mark.skipif(not curve_available(), reason="libzmq without CURVE")


@pytest.mark.parametrize("registry_first", [True, False])
def test_secured_registry_and_server_in_one_context(
    tmp_path: Path, registry_first: bool
) -> None:
    server_public, server_secret = generate_keys(tmp_path / "s", "server")
    client_public, client_secret = generate_keys(tmp_path / "c", "client")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(client_public, allowed)
    server_options = SocketOptions(
        security=Security.from_files(server_secret, allowed_clients_dir=allowed)
    )
    client = Security.from_files(client_secret, server_public_file=server_public)
    context = zmq.Context()
    registry = server = thread = None
    try:
        if not registry_first:
            server = CameraServer(context, "tcp://127.0.0.1", options=server_options)
        registry = DeviceRegistry(
            context, "127.0.0.1", port=None, security=Security.from_files(server_secret)
        )
        registry.start()
        if registry_first:
            server = CameraServer(context, "tcp://127.0.0.1", options=server_options)
        assert server is not None
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        with CameraProxy(
            context, server.url, options=SocketOptions(security=client)
        ) as proxy:
            assert proxy.echo("shared") == "shared"
        name, _ = register_device(
            context, registry.url, "camera", server.url, "cam", security=client
        )
        entry = registry.get_entry(name)
        assert entry is not None and entry.owner == client.public_key.decode()
    finally:
        if server is not None:
            server.stop_server()
        if thread is not None:
            thread.join(30)
        if registry is not None:
            registry.stop()
            registry.join(30)
        context.term()
