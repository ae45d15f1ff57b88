"""A message of very many empty frames never costs a Python object per frame.

The registry (native and JSON requests), the registry client and link
(replies of a hostile registry) and the signal receiver (a hostile
publisher) receive with ``transport.recv_frames``, which keeps at most
``RECV_FRAMES_KEPT`` frames of a message and drops the rest unread
(tests/transport/test_many_frames.py covers the server and recv_frames
itself). Each error names the frame count it saw: a count past
``RECV_FRAMES_KEPT`` would mean every frame was built, as
``recv_multipart`` does. 100,000 empty frames keep each test quick.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Iterator

import pytest
import zmq
from bad_input_helpers import _dealer_exchange, _logged, _pack
from conftest import wait_until
from manual_clock import ManualClock

from framerpc import protocol
from framerpc.errors import ProtocolError
from framerpc.protocol import RegistryEvents, RegistryMessage, SignalEmission
from framerpc.registry import RegistryLink, list_devices
from framerpc.signal import RPCSignal
from framerpc.signal_receiver import RPCSignalReceiver
from framerpc.transport._zmqio_py import RECV_FRAMES_KEPT
from framerpc.wire import json_codec as legacy

MANY = 100_000
WAIT_MS = 20_000  # catches a hang only


def _frame_count(text: str) -> int:
    """The frame count an error message names ("has N frames", "got N")."""
    match = re.search(r"(?:has|got) (\d+)", text)
    assert match, f"no frame count in {text!r}"
    return int(match.group(1))


def _bounded(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> bool:
    """Whether ``logger`` warned ``text`` naming a bounded frame count."""
    return any(
        record.name == logger
        and text in record.getMessage()
        and _frame_count(record.getMessage()) <= RECV_FRAMES_KEPT
        for record in caplog.records
    )


def test_registry_refuses_a_native_request_of_many_frames(ctx, registry, raw):
    sock = raw(registry.url)
    header = _pack(v=1, e="LIST_DEVICES", i=7, pl={})
    body = _dealer_exchange(sock, [header] + [b""] * MANY, WAIT_MS)
    assert body is not None, "no reply from the registry"
    reply = protocol.decode_registry(body)
    assert (reply.event, reply.request_id) == (RegistryEvents.UNSUPPORTED, 7)
    assert _frame_count(reply.payload["error"]) <= RECV_FRAMES_KEPT
    # the dropped rest was not taken for the next message: this one is whole
    good = protocol.encode_registry(RegistryMessage(RegistryEvents.LIST_DEVICES, {}, 8))
    reply = protocol.decode_registry(_dealer_exchange(sock, good, WAIT_MS))
    assert (reply.event, reply.request_id) == (RegistryEvents.DEVICES, 8)
    assert list_devices(ctx, registry.url, timeout=WAIT_MS) == {}


def test_registry_refuses_a_json_request_of_many_frames(ctx, registry, raw, caplog):
    sock = raw(registry.url)
    request = legacy.encode_registry(RegistryMessage(RegistryEvents.LIST_DEVICES, {}))
    with caplog.at_level(logging.WARNING, logger="framerpc.registry"):
        body = _dealer_exchange(sock, [request] + [b""] * MANY, WAIT_MS)
        assert body is not None, "no reply from the registry"
        assert legacy.loads(body[0]) == {
            "event": "UNSUPPORTED",
            "payload": {"req_event": "LIST_DEVICES"},
        }
        assert _logged(caplog, "framerpc.registry", "one frame, got")
        assert _bounded(caplog, "framerpc.registry", "one frame, got")
    body = _dealer_exchange(sock, [request], WAIT_MS)
    assert legacy.loads(body[0])["event"] == "DEVICES"


class HostileRegistry:
    """A ROUTER that answers each request with the next of ``replies``."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.url = f"inproc://hostile-registry-{uuid.uuid4().hex}"
        self.sock.bind(self.url)

    def answer(self, *replies: list, then: list | None = None) -> None:
        """Answer ``len(replies)`` requests, in order (this thread); the
        last one also gets ``then`` as a second reply."""
        for reply in replies:
            assert self.sock.poll(WAIT_MS), "no request came"
            identity, *_ = self.sock.recv_multipart()
            self.sock.send_multipart([identity, b"", *reply])
        if then is not None:
            self.sock.send_multipart([identity, b"", *then])

    def answering(self, *replies: list) -> threading.Thread:
        thread = threading.Thread(target=self.answer, args=replies)
        thread.start()
        return thread


def _json(event: RegistryEvents, payload: dict) -> bytes:
    return legacy.encode_registry(RegistryMessage(event, payload))


@pytest.fixture
def hostile(ctx) -> Iterator[HostileRegistry]:
    registry = HostileRegistry(ctx)
    yield registry
    registry.sock.close()


def test_registry_client_refuses_a_reply_of_many_frames(ctx, hostile):
    devices = _json(RegistryEvents.DEVICES, {"devices": {}})
    thread = hostile.answering([devices] + [b""] * MANY, [devices])
    try:
        with pytest.raises(ProtocolError, match="one frame, got") as caught:
            list_devices(ctx, hostile.url, timeout=WAIT_MS)
        assert _frame_count(str(caught.value)) <= RECV_FRAMES_KEPT
        assert list_devices(ctx, hostile.url, timeout=WAIT_MS) == {}
    finally:
        thread.join(WAIT_MS / 1000)
    assert not thread.is_alive()


def test_registry_link_drops_a_reply_of_many_frames(ctx, hostile, caplog):
    clock = ManualClock()
    link = RegistryLink(ctx, hostile.url, "cam", "dev", "tcp://h:1", 30, clock=clock)
    registered = _json(RegistryEvents.REGISTER_ACK, {"name": "dev", "uuid": "u1"})
    thread = hostile.answering([registered])
    try:
        assert link.register(WAIT_MS) == ("dev", "u1")
        thread.join(WAIT_MS / 1000)
        clock.advance(60)  # a check-in is due
        link.tick()
        assert link._pending is RegistryEvents.CHECK_ALIVE
        ack = _json(RegistryEvents.ACK, {"req_event": "CHECK_ALIVE", "success": True})
        with caplog.at_level(logging.WARNING, logger="framerpc.registry"):
            # the check-in gets a reply of many frames, then a whole ACK: the
            # first is refused and its dropped rest not taken for the second
            hostile.answer([ack] + [b""] * MANY, then=[ack])
            assert wait_until(lambda: link.tick() or link._pending is None)
            assert _bounded(caplog, "framerpc.registry", "malformed reply")
    finally:
        thread.join(WAIT_MS / 1000)
        link.close()
    assert not thread.is_alive()


def test_signal_receiver_drops_a_message_of_many_frames(ctx, caplog):
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    url = f"inproc://signals-{uuid.uuid4().hex}"
    pub.bind(url)
    received: list[tuple] = []
    signals = {"count": RPCSignal(int)}
    signals["count"].connect(lambda *args: received.append(args))
    receiver = RPCSignalReceiver(ctx, url, signals)
    receiver.start()
    try:
        token = uuid.uuid4().hex
        seen = receiver.expect_token(token)
        handshake = protocol.encode_signal(
            SignalEmission(protocol.SYNC_SIGNAL, [token])
        )
        assert wait_until(lambda: pub.send_multipart(handshake) or seen.wait(0.02))
        header = _pack(v=1, e="EMIT_SIGNAL", s="count", x=[1])
        with caplog.at_level(logging.WARNING, logger="framerpc.signal_receiver"):
            pub.send_multipart([header] + [b""] * MANY)
            pub.send_multipart(protocol.encode_signal(SignalEmission("count", [42])))
            assert wait_until(lambda: received == [(42,)])
            assert _bounded(caplog, "framerpc.signal_receiver", "malformed signal")
        assert receiver.is_alive()
    finally:
        receiver.stop()
        receiver.join(timeout=5)
        pub.close()
    assert not receiver.is_alive()
