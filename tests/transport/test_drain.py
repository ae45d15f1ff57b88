"""The pure engine drops the rest of a very long message in batches.

``framerpc.transport._drain`` reads the parts past ``RECV_FRAMES_KEPT``
with ``zmq_recviov`` (a few ctypes calls per thousands of parts) and hands
the rest to pyzmq's one-by-one loop when it cannot batch (large parts,
EAGAIN) or is not available at all. Whichever way, exactly the rest of
the message is dropped: the next message arrives whole.
"""

from __future__ import annotations

import ctypes.util
import uuid
from collections.abc import Iterator

import pytest
import zmq

from framerpc.transport import _drain, _zmqio_py

KEPT = _zmqio_py.RECV_FRAMES_KEPT
WAIT_MS = 20_000  # catches a hang only


class CountingSocket(zmq.Socket):
    """Counts the parts pyzmq receives one by one."""

    received = 0

    def recv(self, *args, **kwargs):
        self.received += 1
        return super().recv(*args, **kwargs)


@pytest.fixture
def pair(ctx) -> Iterator[tuple[zmq.Socket, CountingSocket]]:
    sender = ctx.socket(zmq.PAIR)
    receiver = ctx.socket(zmq.PAIR, socket_class=CountingSocket)
    url = f"inproc://drain-{uuid.uuid4().hex}"
    receiver.bind(url)
    sender.connect(url)
    yield sender, receiver
    sender.close(linger=0)
    receiver.close(linger=0)


def _receive_long_then_sentinel(sender, receiver, tail: list[bytes]) -> None:
    """Send a message of KEPT frames plus ``tail``, then a sentinel; check
    that recv_frames keeps the prefix and the sentinel comes whole."""
    sender.send_multipart([b"first"] + [b"k"] * (KEPT - 1) + tail)
    sender.send_multipart([b"sentinel", b"2"])
    assert receiver.poll(WAIT_MS)
    frames = _zmqio_py.recv_frames(receiver)
    assert len(frames) == KEPT
    assert bytes(frames[0]) == b"first"
    assert receiver.poll(WAIT_MS)
    assert [bytes(f) for f in _zmqio_py.recv_frames(receiver)] == [b"sentinel", b"2"]


# tails ending inside, at and just past the batch sizes (256, 512, ...)
TAILS = [1, 2, 255, 256, 257, 256 + 512, 256 + 512 + 1, 9000]


@pytest.mark.parametrize("count", TAILS)
def test_the_rest_is_dropped_in_batches(pair, count):
    if _drain.drain is None:
        pytest.skip("no batch drain on this pyzmq backend")
    sender, receiver = pair
    _receive_long_then_sentinel(sender, receiver, [b""] * count)
    # one pyzmq call per kept frame and the sentinel's two: none per
    # dropped part
    assert receiver.received == KEPT + 2


@pytest.mark.parametrize("count", [1, 300, 9000])
def test_the_rest_is_dropped_one_by_one_without_the_batch_drain(
    pair, monkeypatch, count
):
    monkeypatch.setattr(_drain, "drain", None)
    sender, receiver = pair
    _receive_long_then_sentinel(sender, receiver, [b""] * count)
    assert receiver.received == KEPT + count + 2


def test_large_dropped_parts_go_to_the_loop_uncopied(pair):
    if _drain.drain is None:
        pytest.skip("no batch drain on this pyzmq backend")
    sender, receiver = pair
    big = b"x" * (_drain._COPY_LIMIT // 4 + 1)
    # the first batch (256 parts) copies more than _COPY_LIMIT: the rest,
    # 300 parts, is read one by one
    tail = [big] * 5 + [b""] * (_drain._FIRST_BATCH - 5) + [b""] * 300
    _receive_long_then_sentinel(sender, receiver, tail)
    assert receiver.received == KEPT + 300 + 2


def test_load_gives_none_without_a_usable_libzmq(tmp_path):
    assert _drain.load(str(tmp_path / "missing.so")) is None
    libc = ctypes.util.find_library("c")
    if libc is not None:  # loads, but has no zmq_recviov
        assert _drain.load(libc) is None
