"""Bad input never stops a signal receiver."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from bad_input_helpers import EXT_ARRAY, _ext, _pack
from conftest import wait_until

from framerpc import framing, protocol
from framerpc.protocol import SignalEmission
from framerpc.signal import RPCSignal
from framerpc.signal_receiver import RPCSignalReceiver


@pytest.fixture
def publisher(ctx) -> Iterator[tuple[zmq.Socket, str]]:
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    url = f"inproc://signals-{uuid.uuid4().hex}"
    sock.bind(url)
    yield sock, url
    sock.close()


@contextlib.contextmanager
def receiving(ctx, url: str, signals: dict) -> Iterator[RPCSignalReceiver]:
    receiver = RPCSignalReceiver(ctx, url, signals)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
        receiver.join(timeout=5)
        assert not receiver.is_alive()


def _subscribe(pub: zmq.Socket, receiver: RPCSignalReceiver) -> None:
    """Publish the handshake until the receiver's subscription is live."""
    token = uuid.uuid4().hex
    seen = receiver.expect_token(token)
    handshake = protocol.encode_signal(SignalEmission(protocol.SYNC_SIGNAL, [token]))
    assert wait_until(lambda: pub.send_multipart(handshake) or seen.wait(0.02))


def _signal_header(**fields: Any) -> bytes:
    header = {"v": 1, "e": "EMIT_SIGNAL", "s": "count", "x": [1]}
    header.update(fields)
    return _pack(**header)


# Garbage that tests/test_signal_receiver.py does not already send.
SIGNAL_GARBAGE = {
    "truncated msgpack": [_signal_header()[:7]],
    "too many frames": [_signal_header(), *[b"x"] * framing.MAX_FRAMES],
    "args is a map": [_signal_header(x={"a": 1})],
    "name is an int": [_signal_header(s=5)],
    "array larger than its frame": [
        _signal_header(x=[_ext(EXT_ARRAY, [1, "<f8", [4]])]),
        b"\0" * 8,
    ],
    "object dtype": [_signal_header(x=[_ext(EXT_ARRAY, [1, "|O", [1]])]), b"\0" * 8],
    "bin32 declaring 4 GiB": [b"\x81\xa1x\xc6\xff\xff\xff\xffab"],
    "nesting 100000 deep": [b"\x91" * 100_000],
}


def test_signal_garbage_is_ignored_and_logged(ctx, publisher, caplog):
    pub, url = publisher
    received: list[tuple] = []
    signals = {"count": RPCSignal(int)}
    signals["count"].connect(lambda *args: received.append(args))
    with (
        caplog.at_level(logging.WARNING, logger="framerpc.signal_receiver"),
        receiving(ctx, url, signals) as receiver,
    ):
        _subscribe(pub, receiver)
        for frames in SIGNAL_GARBAGE.values():
            pub.send_multipart(frames)
        pub.send_multipart(protocol.encode_signal(SignalEmission("count", [42])))
        assert wait_until(lambda: received == [(42,)])
        assert receiver.is_alive()
        malformed = [r for r in caplog.records if "malformed signal" in r.getMessage()]
        assert len(malformed) == len(SIGNAL_GARBAGE)


@pytest.mark.parametrize("field", ["v", "e"])
def test_signal_receiver_survives_array_valued_header_fields(
    ctx, publisher, monkeypatch, field
):
    pub, url = publisher
    died: list = []  # the thread's exception, instead of a pytest warning
    monkeypatch.setattr(threading, "excepthook", died.append)
    received: list[tuple] = []
    signals = {"count": RPCSignal(int)}
    signals["count"].connect(lambda *args: received.append(args))
    with receiving(ctx, url, signals) as receiver:
        _subscribe(pub, receiver)
        header = {"v": 1, "e": "EMIT_SIGNAL", "s": "count", "x": [1]}
        header[field] = np.array([1, 2])
        pub.send_multipart(framing.encode(header))
        pub.send_multipart(protocol.encode_signal(SignalEmission("count", [42])))
        assert wait_until(lambda: received or not receiver.is_alive())
        assert died == [], f"the receiver thread died: {died[0].exc_value!r}"
        assert received == [(42,)]
