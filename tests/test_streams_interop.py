"""RPCStream: interop with the rest of framerpc.

Run under both engines. Waits poll conditions with ceilings that only catch
a hang.
"""

from __future__ import annotations

import threading

import msgpack
import pytest
import zmq
from conftest import wait_until
from streams_helpers import (
    GOOD_FRAME,
    STREAM_OK,
    WAIT_S,
    Cam,
    CamServer,
    _hub,
    _hub_sub,
    hostile_stream_server,
)

import framerpc
from framerpc import legacy, transport
from framerpc.client.subscription import Subscription
from framerpc.errors import RemoteError
from framerpc.server.streams import StreamPublisher
from framerpc.transport import SocketOptions
from framerpc.wire import streams as _streamproto

# -- interop -----------------------------------------------------------------


def test_inventory_lists_streams_natively_but_never_in_json(served, proxies):
    server = served()
    inventory = server._inventory()
    assert inventory["streams"] == ["frames"]
    assert inventory["stream_url"] == _hub(server).url
    text = bytes(legacy.encode_inventory(inventory)[0])
    assert b"stream" not in text


def test_an_auto_proxy_finds_the_stream_url_natively(served, ctx):
    server = served()
    proxy = framerpc.connect(Cam, ctx, server.url, protocol="auto")
    try:
        assert proxy.frames.url is None  # the JSON inventory has no streams
        with proxy.frames.subscribe() as sub:
            _hub_sub(server)
            server.frames.publish(b"x")
            assert bytes(sub.get(WAIT_S)[0]) == b"x"
        assert proxy.frames.url == transport.connect_url_for(
            server.url, _hub(server).url
        )
    finally:
        proxy.close()


def test_a_legacy_proxy_has_no_streams(served, ctx):
    server = served()
    proxy = framerpc.connect(Cam, ctx, server.url, protocol="legacy")
    try:
        with pytest.raises(RuntimeError, match="older JSON protocol"):
            proxy.frames.subscribe()
    finally:
        proxy.close()


def test_servers_without_streams_are_unchanged(ctx, serve):
    from devices import CameraServer

    server = serve(CameraServer(ctx, "tcp://127.0.0.1"))
    assert server._stream_hub is None
    assert "streams" not in server._inventory()


def test_closing_the_proxy_ends_its_subscriptions(served, ctx):
    server = served()
    proxy = framerpc.connect(Cam, ctx, server.url)
    sub = proxy.frames.subscribe()
    assert isinstance(sub, Subscription)
    _hub_sub(server)
    proxy.close()
    assert not sub.is_alive()
    assert wait_until(lambda: server.frames.stats["subscribers"] == 0, WAIT_S)
    with pytest.raises(RuntimeError, match="closed"):
        proxy.frames.subscribe()


def test_the_server_publisher_is_a_stream(served):
    server = served()
    assert isinstance(server.frames, StreamPublisher)
    assert isinstance(server.frames, framerpc.RPCStream)


def test_context_destroy_stops_hub_and_subscriptions():
    """``ctx.destroy()`` with a subscription live: every stream thread ends
    and closes its own sockets, so the context terminates."""
    ctx = zmq.Context()
    server = CamServer(ctx, "tcp://127.0.0.1")
    server.start()
    proxy = framerpc.connect(Cam, ctx, server.url)
    sub = proxy.frames.subscribe()
    hub = _hub(server)
    server.frames.publish(b"x")
    sub.get(WAIT_S)
    closer = threading.Thread(target=ctx.destroy, kwargs={"linger": 0})
    closer.start()
    closer.join(WAIT_S)
    assert not closer.is_alive(), "context.destroy() hung"
    for thread in (sub, hub, server._thread):
        thread.join(WAIT_S)
        assert not thread.is_alive()
    server.frames.publish(b"after")  # dropped quietly: nobody is left


def test_subscriptions_beyond_the_limit_are_refused(served, proxies, monkeypatch):
    from framerpc.server import streams as _streamhub

    monkeypatch.setattr(_streamhub, "MAX_SUBSCRIBERS", 1)
    server = served()
    proxy = proxies(server.url)
    with proxy.frames.subscribe() as first:
        with pytest.raises(RemoteError, match="more than 1 subscribers"):
            proxy.frames.subscribe()
        server.frames.publish(b"first still served")
        assert bytes(first.get(WAIT_S)[0]) == b"first still served"


def test_streams_under_curve_serve_allowed_keys_only(ctx, proxies, tmp_path):
    """The stream socket is secured like the others: an allowed proxy
    receives frames; a socket with a key not allowed is never subscribed."""
    import dataclasses
    import shutil

    from framerpc.security import Security, generate_keys

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    server_public, server_secret = generate_keys(tmp_path / "server", "srv")
    alice_public, alice_secret = generate_keys(tmp_path / "alice", "alice")
    shutil.copy(alice_public, allowed / alice_public.name)
    _, mallory_secret = generate_keys(tmp_path / "mallory", "mallory")

    def options(settings: Security) -> SocketOptions:
        return dataclasses.replace(SocketOptions(), security=settings)

    server = CamServer(
        ctx,
        "tcp://127.0.0.1",
        options=options(
            Security.from_files(server_secret, allowed_clients_dir=allowed)
        ),
    )
    server.start()
    try:
        alice = Security.from_files(alice_secret, server_public_file=server_public)
        proxy = proxies(server.url, options=options(alice))
        mallory = Security.from_files(mallory_secret, server_public_file=server_public)
        intruder = transport.make_socket(ctx, zmq.DEALER, options(mallory))
        intruder.setsockopt(zmq.IMMEDIATE, 0)  # queue it: it must still not arrive
        intruder.connect(_hub(server).url)
        intruder.send(_streamproto.encode_control("sub", s="frames", p="latest", n=1))
        with proxy.frames.subscribe() as sub:
            server.frames.publish(b"for alice")
            assert bytes(sub.get(WAIT_S)[0]) == b"for alice"
            assert server.frames.stats["subscribers"] == 1
        intruder.close(linger=0)
    finally:
        server.close()


def test_a_subscription_survives_a_hostile_server(ctx, served, proxies):
    """Garbage from the stream socket is logged and skipped: the frames
    after it still arrive, in order."""
    from framerpc import framing

    server = served()
    proxy = proxies(server.url)
    bad_body = framing.encode({"t": "x", "in": 3, "x": 5})
    garbage = [
        [b"\xc1"],
        [msgpack.packb({"v": 1, "e": "frame", "q": 0, "d": 0, "ep": 7})],
        [_streamproto.encode_meta(0, 0, 7), *bad_body],
        [_streamproto.encode_meta(1, 0, 7), b"\x00" * 10, b"junk"],
    ]
    with hostile_stream_server(ctx, [*garbage, STREAM_OK, GOOD_FRAME]) as url:
        handle = proxy.frames
        handle.url = url
        with handle.subscribe() as sub:
            frame, info = sub.get(WAIT_S)
            assert bytes(frame) == b"good" and info["seq"] == 5
            assert info["epoch"] == 7


def test_subscribe_to_a_server_that_is_down_returns_and_logs(served, proxies, caplog):
    """No acknowledgement within the proxy's timeout: subscribe returns
    (the subscription goes on trying) with a warning; nothing hangs."""
    from conftest import finishes_within

    server = served()
    proxy = proxies(server.url, timeout=300)
    proxy.frames._resolve()  # the URL is known; now the server goes away
    server.close()
    with caplog.at_level("WARNING", logger="framerpc"):
        sub = finishes_within(WAIT_S, lambda: proxy.frames.subscribe())
    try:
        assert not sub.subscribed.is_set()
        assert "not confirmed" in caplog.text
        with pytest.raises(TimeoutError):
            sub.get(0.05)
    finally:
        sub.close()
