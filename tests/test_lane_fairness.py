"""A lane connection kept full cannot starve the server's other clients
(issue 14: the server goes on serving other clients). ``LaneServer.receive``
used to serve a ready lane connection before the ROUTER, and the first
registered connection before the others: a client flooding its lane with
one-way releases left ZeroMQ clients 63 echo calls in 4 s. Each round now
takes one message from each ready source.

The server's ``receive`` is driven here by hand, on a ROUTER and a lane of
its own, so that the order is what the test reads, not a race."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import zmq
from lane_helpers import needs_lane

from framerpc.server.lane import LaneServer
from framerpc.transport import lane as packets
from framerpc.wire import shm as wire_shm

pytestmark = needs_lane

#: Packets queued on the flooding connection before the victim's message.
FLOOD = 20


@pytest.fixture
def lane(ctx, tmp_path) -> Iterator[LaneServer]:
    router = ctx.socket(zmq.ROUTER)
    router.bind(f"ipc://{tmp_path}/r.sock")
    server = LaneServer(router, lambda *args: None)
    assert server.start()
    yield server
    server.close()
    router.close(linger=0)


def _receive(lane: LaneServer) -> list:
    """The next message ``lane`` hands the serve loop (hellos are handled
    inside, and give zmq.Again)."""
    for _ in range(100):
        try:
            frames, _ = lane.receive(2000)
        except zmq.Again:
            continue
        return frames
    raise AssertionError("no message came")


def _bound(lane: LaneServer, identity: bytes) -> socket.socket:
    """A lane connection bound to ``identity``, acknowledged."""
    _, lane_id, token, _ = lane.offer(identity)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(20)
    sock.connect(lane.path)
    sock.send(packets.hello(lane_id, token))
    for _ in range(10):  # accept, then the hello
        try:
            lane.receive(2000)
        except zmq.Again:
            pass
        sock.setblocking(False)
        try:
            ack = sock.recv(16)
        except BlockingIOError:
            continue
        finally:
            sock.settimeout(20)
        assert ack == packets.ACK
        return sock
    raise AssertionError("no acknowledgement")


def _flood(sock: socket.socket) -> None:
    release = wire_shm.encode_release([(slot, 7) for slot in range(64)])
    packet = b"".join(bytes(part) for part in packets.encode(release))
    for _ in range(FLOOD):
        sock.send(packet)


def _identities(lane: LaneServer, count: int) -> list[bytes]:
    return [bytes(_receive(lane)[0]) for _ in range(count)]


def test_a_flooded_lane_leaves_the_router_its_turn(ctx, lane) -> None:
    flooder = _bound(lane, b"\x00flood")
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.IDENTITY, b"\x00victim")
    dealer.connect(lane._router.getsockopt(zmq.LAST_ENDPOINT).decode())
    try:
        _flood(flooder)
        dealer.send_multipart([b"", b"\x81\xa1v\x01"])
        assert lane._router.poll(20000, zmq.POLLIN)  # queued, not read
        order = _identities(lane, FLOOD + 1)
        # before: the victim's message came after all FLOOD packets
        assert order.index(b"\x00victim") <= 1, order
        assert order.count(b"\x00flood") == FLOOD  # none lost
    finally:
        flooder.close()
        dealer.close(linger=0)


def test_a_flooded_lane_leaves_another_lane_its_turn(lane) -> None:
    flooder = _bound(lane, b"\x00flood")
    other = _bound(lane, b"\x00other")
    try:
        _flood(flooder)
        call = wire_shm.encode_release([(1, 7)])
        other.send(b"".join(bytes(part) for part in packets.encode(call)))
        order = _identities(lane, FLOOD + 1)
        # before: the connection registered first was always read first
        assert order.index(b"\x00other") <= 1, order
        assert order.count(b"\x00flood") == FLOOD
    finally:
        flooder.close()
        other.close()


def test_the_lane_goes_before_the_router_in_a_round(ctx, lane) -> None:
    """What a client sent on its lane before a message over ZeroMQ is
    handled first (docs/protocol.md, "Same-host lane")."""
    sock = _bound(lane, b"\x00client")
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.IDENTITY, b"\x00client")
    dealer.connect(lane._router.getsockopt(zmq.LAST_ENDPOINT).decode())
    try:
        release = wire_shm.encode_release([(1, 7)])
        sock.send(b"".join(bytes(part) for part in packets.encode(release)))
        dealer.send_multipart([b"", b"\x81\xa1v\x02"])
        assert lane._router.poll(20000, zmq.POLLIN)
        first, second = _receive(lane), _receive(lane)
        assert [bytes(part) for part in first[2:]] == [bytes(part) for part in release]
        assert bytes(second[-1]) == b"\x81\xa1v\x02"
    finally:
        sock.close()
        dealer.close(linger=0)
