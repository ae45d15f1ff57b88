"""Helpers shared by tests/test_signal_receiver.py and tests/test_signal_seq.py:
an ``RPCSignalReceiver`` on a bare PUB socket, subscribed before use."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import zmq
from conftest import wait_until

from framerpc.protocol import SYNC_SIGNAL, SignalEmission, encode_signal
from framerpc.signal import RPCSignal
from framerpc.signal_receiver import RPCSignalReceiver


@contextlib.contextmanager
def synced_receiver(
    ctx: zmq.Context, pub: tuple[zmq.Socket, str], signals: dict[str, RPCSignal]
) -> Iterator[RPCSignalReceiver]:
    """A started receiver of ``signals`` from ``pub`` (its socket and URL),
    subscribed: a sync token sent through ``pub`` has arrived. Stopped and
    joined at the end."""
    sock, endpoint = pub
    thread = RPCSignalReceiver(ctx, endpoint, signals)
    thread.start()
    try:
        token = uuid.uuid4().hex
        seen = thread.expect_token(token)
        handshake = encode_signal(SignalEmission(SYNC_SIGNAL, [token]))
        assert wait_until(lambda: sock.send_multipart(handshake) or seen.wait(0.02))
        yield thread
    finally:
        thread.stop()
        thread.join(timeout=5)
    assert not thread.is_alive()
