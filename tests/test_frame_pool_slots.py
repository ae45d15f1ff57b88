"""FramePool (issue 14): a slot comes back only after every receiver is done with
its frame: sending, a vanished client, the reply backlog, signals, inproc.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zmq
from conftest import wait_until
from frame_pool_helpers import (
    DTYPE,
    SHAPE,
    CameraProxy,
    _check,
    _hold_a_reply_open,
    _no_heartbeats,
    _port,
    _stuck_frame_shape,
)

from framerpc import FramePool, protocol, transport


def _free(pool: FramePool) -> int:
    """Free slots once the buffers libzmq gave back are released (the
    compiled engine does that at its next send or receive)."""
    transport.release_returned_buffers()
    return pool.available


def test_a_slot_stays_out_while_its_frame_is_being_sent(
    ctx, make_camera, stalling_link
):
    """Over tcp:// a client that has not read the frame yet holds its slot:
    the pool cannot hand it out (the camera cannot overwrite it); once the
    frame is through, the slot comes back and the client got it whole."""
    pool = FramePool(_stuck_frame_shape(), DTYPE, depth=1)
    camera = make_camera("tcp://127.0.0.1", pool, options=_no_heartbeats())
    link = stalling_link(_port(camera.url))
    client = _hold_a_reply_open(ctx, camera, link, "fresh")
    try:
        assert _free(pool) == 0
        with pytest.raises(TimeoutError):
            pool.acquire(timeout=0.2)
        link.resume()
        frame, info = client.reply()
        assert info["seq"] == 7 and _check(frame, 7)
        del frame
        assert wait_until(lambda: _free(pool) == 1)
    finally:
        client.close()


def test_a_client_gone_before_reading_gives_the_slot_back(
    ctx, make_camera, stalling_link
):
    pool = FramePool(_stuck_frame_shape(), DTYPE, depth=1)
    camera = make_camera("tcp://127.0.0.1", pool, options=_no_heartbeats())
    link = stalling_link(_port(camera.url))
    client = _hold_a_reply_open(ctx, camera, link, "fresh")
    try:
        assert _free(pool) == 0
        link.cut()  # the client's connection dies with the frame unread
        assert wait_until(lambda: _free(pool) == 1)
    finally:
        client.close()


def test_a_reply_in_the_backlog_keeps_its_slot_and_a_dropped_one_returns_it(
    ctx, make_camera, stalling_link
):
    """A client whose queue is full: its next replies wait in the server's
    reply backlog with their frames (slots out), a reply over the backlog's
    byte bound is dropped (its slot comes back at once, the link still
    stalled); once the client reads, every frame arrives whole."""
    shape = _stuck_frame_shape()
    nbytes = shape[0] * shape[1] * 4
    options = dataclasses.replace(
        _no_heartbeats(), hwm=1, reply_backlog_bytes=nbytes + nbytes // 2
    )
    pool = FramePool(shape, DTYPE, depth=8)
    camera = make_camera("tcp://127.0.0.1", pool, options=options)
    link = stalling_link(_port(camera.url))
    client = _hold_a_reply_open(ctx, camera, link, "fresh")
    seqs = [7]  # the replies kept for the client, in order; 7 is in the link

    def ask(other: CameraProxy) -> None:
        seqs.append(seqs[-1] + 1)
        client.send(len(seqs) + 1, "fresh", seqs[-1])
        calls = len(seqs)
        assert wait_until(lambda: camera.calls == calls)
        assert other.ping() == 1  # that reply is handled

    try:
        with CameraProxy(ctx, camera.url, timeout=20000) as other:
            # more requests until one reply waits in the backlog (libzmq's
            # queue of one message and its send in progress hold the others)
            while camera.stats["reply_backlog"] == 0:
                assert len(seqs) < pool.depth - 1, "no reply went to the backlog"
                ask(other)
            assert _free(pool) == pool.depth - len(seqs)
            # Then more until one is over the backlog's byte bound. Usually
            # the next one is; but libzmq learns late that its queue has room
            # (its reader's count comes as a command), so the backlog may
            # have moved on into libzmq meanwhile and the next one is kept.
            while camera.stats["dropped_replies"] == 0:
                assert len(seqs) < pool.depth - 1, "no reply was dropped"
                ask(other)
            assert camera.stats["dropped_replies"] == 1
            seqs.pop()  # the newest: dropped when added
            assert _free(pool) == pool.depth - len(seqs)  # the dropped one is back
        link.resume()
        for seq in seqs:
            frame, info = client.reply()
            assert info["seq"] == seq and _check(frame, seq)
        del frame
        assert wait_until(lambda: _free(pool) == pool.depth)
    finally:
        client.close()


def test_a_signal_keeps_its_slot_until_the_subscriber_got_it(
    ctx, make_camera, stalling_link
):
    """An emitted pool frame is lent to the PUB socket: its slot stays out
    while a subscriber behind a stalled link has not received it."""
    pool = FramePool(_stuck_frame_shape(), DTYPE, depth=1)
    camera = make_camera("tcp://127.0.0.1", pool, options=_no_heartbeats())
    link = stalling_link(_port(camera._inventory()["signal_url"]))
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{link.port}")
        small = np.zeros(4, DTYPE)

        def subscribed() -> bool:  # no slow joiner: a small emission arrived
            camera.frame_ready.emit(small, 0)
            return bool(sub.poll(20))

        assert wait_until(subscribed)
        while sub.poll(50):
            sub.recv_multipart()
        link.stall()
        frame = pool.acquire()
        frame[...] = 9
        camera.frame_ready.emit(frame, 9)
        del frame
        assert _free(pool) == 0  # libzmq still sends it
        link.resume()
        assert sub.poll(30000)
        emission = protocol.decode_signal(sub.recv_multipart(copy=False))
        received, seq = emission.args
        assert seq == 9 and _check(received, 9)
        del received, emission
        assert wait_until(lambda: _free(pool) == 1)
    finally:
        sub.close()


def test_over_inproc_the_receiver_holds_the_slot(ctx, make_camera):
    """inproc:// passes the lent frame itself: the client's array is the
    slot's memory, so the slot is out until the client drops the array."""
    pool = FramePool(SHAPE, DTYPE, depth=1)
    camera = make_camera(f"inproc://pool-{id(pool)}", pool)
    with CameraProxy(ctx, camera.url, timeout=20000) as proxy:
        frame, info = proxy.fresh(5)
        assert _check(frame, 5)
        assert proxy.ping() == 1  # the server has finished with the call
        assert _free(pool) == 0
        result = proxy.fresh(6)  # the camera cannot get a slot
        assert not result and "TimeoutError" in result.error
        assert _check(frame, 5)
        del frame, info
        assert wait_until(lambda: _free(pool) == 1)
        frame, _ = proxy.fresh(8)
        assert _check(frame, 8)


def test_small_frames_are_copied_and_their_slot_comes_back_at_once(ctx, make_camera):
    """Under the engines' zero-copy thresholds a frame is copied when sent:
    the slot is free again while the client still holds what it received."""
    pool = FramePool((16, 16), DTYPE, depth=1)  # 1 KiB
    camera = make_camera(f"inproc://pool-{id(pool)}", pool)
    with CameraProxy(ctx, camera.url, timeout=20000) as proxy:
        frame, _ = proxy.fresh(3)
        assert wait_until(lambda: _free(pool) == 1)
        again, _ = proxy.fresh(4)  # the same slot, refilled
        assert _check(frame, 3) and _check(again, 4)
