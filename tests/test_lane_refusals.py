"""The same-host lane refuses what is not its own client's (issue 14): a
wrong token, garbage, a packet over the bound, a malformed message,
another user, too many connections; the server goes on serving, the
client on ZeroMQ. A client killed during a call frees its connection."""

from __future__ import annotations

import os
import signal
import struct

import pytest
from conftest import wait_until
from lane_helpers import (
    LaneDevice,
    LaneProxy,
    closed_by_peer,
    lane_stats,
    needs_lane,
    raw_lane,
)
from shm_helpers import child_process, options

from framerpc.server import lane as server_lane
from framerpc.transport import lane as packets

pytestmark = needs_lane

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def device(ctx, tmp_path, serve):
    """A served LaneDevice whose lane listens, with offers made to two
    client identities that do not exist (``device.fake``, ``device.fake2``:
    lane id, token)."""
    device = LaneDevice(ctx, f"ipc://{tmp_path}/d.sock")
    assert device._lane.start()  # before serving: no race on the offers
    _, lane_id, token, _ = device._lane.offer(b"\x00fake")
    device.fake = (lane_id, token)
    _, lane_id, token, _ = device._lane.offer(b"\x00fake2")
    device.fake2 = (lane_id, token)
    return serve(device)


def _flip(token: bytes) -> bytes:
    return bytes([token[0] ^ 1]) + token[1:]


@pytest.mark.parametrize(
    "first_packet",
    [
        pytest.param(lambda fake: packets.hello(fake[0], _flip(fake[1])), id="token"),
        pytest.param(lambda fake: packets.hello(fake[0] ^ 1, fake[1]), id="lane-id"),
        pytest.param(lambda fake: b"GET / HTTP/1.0\r\n\r\n", id="garbage"),
        pytest.param(lambda fake: b"\x01" + b"\x00" * 40, id="call-before-hello"),
        pytest.param(
            lambda fake: packets.hello(*fake) + b"\x00" * packets.MAX_PACKET,
            id="oversize",
        ),
    ],
)
def test_a_bad_first_packet_closes_the_connection(device, first_packet) -> None:
    with raw_lane(device) as sock:
        sock.send(first_packet(device.fake))
        assert closed_by_peer(sock)
    assert lane_stats(device)["lane_refused"] == 1
    _still_serves(device)


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(b"\x00", id="control"),
        pytest.param(b"\x05" + b"\x00" * 3, id="truncated-lengths"),
        pytest.param(b"\x02" + struct.pack("<I", 1000) + b"x", id="short-frames"),
        pytest.param(b"\x01" + b"\x00" * (packets.MAX_PACKET + 1), id="oversize"),
    ],
)
def test_a_malformed_packet_after_the_hello_closes_the_connection(
    device, packet
) -> None:
    with raw_lane(device) as sock:
        sock.send(packets.hello(*device.fake))
        assert sock.recv(16) == packets.ACK
        sock.send(packet)
        assert closed_by_peer(sock)
    assert lane_stats(device)["lane_refused"] == 1
    _still_serves(device)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xc1", id="not-msgpack"),  # 0xc1: never valid
        pytest.param(b'{"event": "GET_INVENTORY"}', id="json"),
        pytest.param(b"\x81\xa1v\x01", id="not-a-call"),
    ],
)
def test_a_packet_that_is_no_call_gets_its_reply_over_zeromq(device, body) -> None:
    """A well-formed packet that is not a METHOD_CALL: the server's general
    path answers (to the routing id of the offer, over ZeroMQ: gone here)
    and keeps the lane."""
    with raw_lane(device) as sock:
        sock.send(packets.hello(*device.fake))
        assert sock.recv(16) == packets.ACK
        sock.send(b"\x01" + body)
        assert wait_until(lambda: lane_stats(device)["lane_calls"] == 1)
        _still_serves(device)
        # this one stays (the proxy's went with it)
        assert wait_until(lambda: lane_stats(device)["lane_connections"] == 1)
        assert lane_stats(device)["lane_refused"] == 0
    assert wait_until(lambda: lane_stats(device)["lane_connections"] == 0)


def test_another_user_is_refused_and_its_client_keeps_zeromq(ctx, tmp_path, serve):
    device = LaneDevice(ctx, f"ipc://{tmp_path}/d.sock")
    device._lane.uid = os.getuid() + 1  # as if the client ran as another user
    serve(device)
    with LaneProxy(ctx, device.url) as proxy:
        assert proxy._channel.lane is None
        assert proxy.echo(4) == 4
    stats = lane_stats(device)
    assert stats["lane_refused"] == 1 and stats["lane_calls"] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_another_user_cannot_reach_the_lane_socket(device) -> None:
    script = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except PermissionError:\n"
        "    print('refused')\n"
        "else:\n"
        "    print('connected')\n"
    )
    with child_process(script, device._lane.path) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "refused"
        assert child.wait(timeout=20) == 0
    assert oct(os.stat(os.path.dirname(device._lane.path)).st_mode & 0o777) == "0o700"


def test_connections_beyond_the_bound_are_closed(device, monkeypatch) -> None:
    monkeypatch.setattr(server_lane, "MAX_CONNECTIONS", 2)
    url = device.url
    with LaneProxy(device.context, url) as a, LaneProxy(device.context, url) as b:
        assert a._channel.lane is not None and b._channel.lane is not None
        assert wait_until(lambda: lane_stats(device)["lane_connections"] == 2)
        before = lane_stats(device)["lane_calls"]
        with raw_lane(device) as three:  # each bound and its client live
            assert closed_by_peer(three)
        assert a.echo(1) == 1 and b.echo(2) == 2
        assert lane_stats(device)["lane_calls"] == before + 2  # on their lanes
    assert lane_stats(device)["lane_refused"] == 1
    assert wait_until(lambda: lane_stats(device)["lane_connections"] == 0)
    _still_serves(device)


def test_a_full_table_closes_the_lanes_of_clients_gone_from_zeromq(
    device, monkeypatch
) -> None:
    """Bound lanes whose client's ZeroMQ connection is gone (a frozen
    client's, once its heartbeats timed out) cannot keep later clients off
    the lane: before, they stayed until their peer closed them. The fake
    offers' routing ids have no ZeroMQ connection at all."""
    monkeypatch.setattr(server_lane, "MAX_CONNECTIONS", 2)
    with raw_lane(device) as one, raw_lane(device) as two:
        for sock, offer in ((one, device.fake), (two, device.fake2)):
            sock.send(packets.hello(*offer))
            assert sock.recv(16) == packets.ACK
        with LaneProxy(device.context, device.url) as proxy:
            assert proxy._channel.lane is not None
            assert proxy.echo(5) == 5
            assert proxy._channel.lane.sent >= 1
        assert closed_by_peer(one) and closed_by_peer(two)
    assert lane_stats(device)["lane_refused"] == 2


def test_a_frozen_clients_lane_makes_room_once_its_heartbeats_time_out(
    ctx, tmp_path, serve, monkeypatch
) -> None:
    monkeypatch.setattr(server_lane, "MAX_CONNECTIONS", 1)
    fast = options(heartbeat_ivl_ms=250, heartbeat_timeout_ms=1250)
    device = serve(LaneDevice(ctx, f"ipc://{tmp_path}/d.sock", options=fast))
    script = (
        f"import sys, time; sys.path.insert(0, {TESTS!r})\n"
        "import zmq\n"
        "from lane_helpers import LaneProxy\n"
        "proxy = LaneProxy(zmq.Context(), sys.argv[1], timeout=20000)\n"
        "print('lane' if proxy._channel.lane is not None else 'zmq', flush=True)\n"
        "time.sleep(60)\n"
    )

    def a_new_client_gets_a_lane() -> bool:
        with LaneProxy(ctx, device.url) as proxy:
            return proxy._channel.lane is not None

    with child_process(script, device.url) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "lane"
        assert not a_new_client_gets_a_lane()  # the table is full
        child.send_signal(signal.SIGSTOP)  # its lane stays bound
        assert wait_until(a_new_client_gets_a_lane, 30)
    _still_serves(device)


def test_a_full_table_closes_its_oldest_connection_without_a_hello(
    device, monkeypatch
) -> None:
    """Connections that never say hello cannot keep the lane from later
    clients: before, they stayed until their peer closed them, and the
    client below got no lane."""
    monkeypatch.setattr(server_lane, "MAX_CONNECTIONS", 2)
    with raw_lane(device) as one, raw_lane(device) as two:
        assert wait_until(lambda: lane_stats(device)["lane_connections"] == 2)
        with LaneProxy(device.context, device.url) as proxy:
            assert proxy._channel.lane is not None
            assert proxy.echo(5) == 5
            assert proxy._channel.lane.sent >= 1
        assert closed_by_peer(one)  # the oldest silent one made room
        two.send(packets.hello(*device.fake))  # the other is still there
        assert two.recv(16) == packets.ACK
    assert lane_stats(device)["lane_refused"] == 1


def test_an_offer_binds_one_connection(device) -> None:
    with raw_lane(device) as one, raw_lane(device) as two:
        one.send(packets.hello(*device.fake))
        assert one.recv(16) == packets.ACK
        two.send(packets.hello(*device.fake))  # before: a second ACK
        assert closed_by_peer(two)
    assert lane_stats(device)["lane_refused"] == 1
    _still_serves(device)


def test_a_client_killed_during_a_call_frees_its_connection(device) -> None:
    script = (
        f"import sys; sys.path.insert(0, {TESTS!r})\n"
        "import zmq\n"
        "from lane_helpers import LaneProxy\n"
        "proxy = LaneProxy(zmq.Context(), sys.argv[1], timeout=30000)\n"
        "print('lane' if proxy._channel.lane is not None else 'zmq', flush=True)\n"
        "proxy.wait(25)\n"
    )
    with child_process(script, device.url) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "lane"
        assert device.entered.wait(20)  # the call is in flight
        child.kill()
        child.wait(timeout=20)
    device.release.set()  # its reply goes nowhere
    assert wait_until(lambda: lane_stats(device)["lane_connections"] == 0)
    _still_serves(device)


def _still_serves(device) -> None:
    """A proxy's calls still go over the lane (and count)."""
    before = lane_stats(device)["lane_calls"]
    with LaneProxy(device.context, device.url) as proxy:
        assert proxy._channel.lane is not None
        assert proxy.echo("ok") == "ok"
    assert lane_stats(device)["lane_calls"] == before + 1
