"""Stopping is authorised: ``allow_remote_stop`` and, under CURVE, the
administrators' keys decide whether a STOP_SERVER request stops a server
(native and older JSON protocol, issue 11)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
from conftest import wait_until
from curve_keys import Keys, needs_curve
from devices import CameraProxy, CameraServer

from framerpc.security import Security
from framerpc.transport import SocketOptions

PROTOCOLS = ["native", "legacy"]


def _serve(server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def _stops(thread: threading.Thread) -> bool:
    """Whether serve_forever returned (a generous bound: catches a hang)."""
    thread.join(10)
    return not thread.is_alive()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_remote_stop_is_honoured_by_default_without_security(ctx, protocol):
    server = CameraServer(ctx, "tcp://127.0.0.1")
    thread = _serve(server)
    proxy = CameraProxy(ctx, server.url, protocol=protocol)
    try:
        assert proxy.stop_server() is True
        assert _stops(thread)
    finally:
        proxy.close()
        server.stop_server()
        thread.join(5)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_remote_stop_refused_when_not_allowed(ctx, protocol, serve: Callable):
    server = serve(CameraServer(ctx, "tcp://127.0.0.1", allow_remote_stop=False))
    proxy = CameraProxy(ctx, server.url, protocol=protocol)
    try:
        assert proxy.stop_server() is False  # an error reply, not a timeout
        # still serving, well past the stop grace period
        for value in range(3):
            assert proxy.echo(value) == value
        assert server._stop_at is None
    finally:
        proxy.close()


def test_refusal_says_why(ctx, serve: Callable):
    from framerpc.protocol import Request, RPCEvents

    server = serve(CameraServer(ctx, "inproc://refuse", allow_remote_stop=False))
    proxy = CameraProxy(ctx, server.url, protocol="native")
    try:
        reply = proxy._request(Request(RPCEvents.STOP_SERVER, 99), 5000)
        assert not reply.ok and reply.error.startswith("PermissionError")
    finally:
        proxy.close()


def test_local_stop_server_always_works(ctx):
    server = CameraServer(ctx, "inproc://local-stop", allow_remote_stop=False)
    thread = _serve(server)
    server.stop_server()
    assert _stops(thread)


# -- CURVE: administrators' keys -------------------------------------------


def _server(keys: Keys, admins: bool = True) -> SocketOptions:
    admins_dir = keys.admins if admins else None
    return SocketOptions(security=keys.server(admins=admins_dir))


def _client(keys: Keys, secret: Path) -> SocketOptions:
    return SocketOptions(security=keys.for_client(secret))


@needs_curve
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_non_admin_key_cannot_stop(ctx, keys: Keys, protocol, serve: Callable):
    server = serve(CameraServer(ctx, "tcp://127.0.0.1", options=_server(keys)))
    proxy = CameraProxy(
        ctx, server.url, protocol=protocol, options=_client(keys, keys.alice_secret)
    )
    try:
        assert proxy.echo("in") == "in"  # an allowed client...
        assert proxy.stop_server() is False  # ...but not an administrator
        assert proxy.echo("still") == "still"
        assert server._stop_at is None
    finally:
        proxy.close()


@needs_curve
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_admin_key_stops(ctx, keys: Keys, protocol):
    server = CameraServer(ctx, "tcp://127.0.0.1", options=_server(keys))
    thread = _serve(server)
    proxy = CameraProxy(
        ctx, server.url, protocol=protocol, options=_client(keys, keys.admin_secret)
    )
    try:
        assert proxy.stop_server() is True
        assert _stops(thread)
    finally:
        proxy.close()
        server.stop_server()
        thread.join(5)


@needs_curve
def test_secured_server_without_admins_refuses_everyone(ctx, keys: Keys, serve):
    server = serve(
        CameraServer(ctx, "tcp://127.0.0.1", options=_server(keys, admins=False))
    )
    proxy = CameraProxy(ctx, server.url, options=_client(keys, keys.admin_secret))
    try:
        assert proxy.stop_server() is False
        assert wait_until(lambda: proxy.echo(1) == 1)
    finally:
        proxy.close()


@needs_curve
def test_admin_keys_dir_needs_allowed_clients_dir(keys: Keys):
    with pytest.raises(ValueError, match="allowed_clients_dir"):
        Security.from_files(keys.server_secret, admin_keys_dir=keys.admins)


@needs_curve
def test_admin_keys_are_read_at_each_request(ctx, keys: Keys, serve: Callable):
    server = serve(CameraServer(ctx, "tcp://127.0.0.1", options=_server(keys)))
    proxy = CameraProxy(ctx, server.url, options=_client(keys, keys.alice_secret))
    try:
        assert proxy.stop_server() is False
        public = keys.alice_public  # allowed, not an administrator
        shutil.copy(public, keys.admins / public.name)
        assert proxy.stop_server() is True
        assert wait_until(lambda: server._stop_at is not None)
    finally:
        proxy.close()


def test_frames_carry_the_peer_key_property(ctx):
    """The compiled Frame answers ``get`` as zmq.Frame does (ZMQError for a
    property the message lacks)."""
    from framerpc import transport

    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://frame-get")
        b.connect("inproc://frame-get")
        b.send(b"x")
        frame = transport.recv_frames(a)[0]
        with pytest.raises(zmq.ZMQError):
            frame.get("User-Id")
    finally:
        a.close(0)
        b.close(0)
