"""FramePool (issue 14): a camera serving pool frames never tears one, and what a
plain reused array does today (the reason for the pool), shown
deterministically. Frames are filled with their sequence number (see
test_frame_pool.py).
"""

from __future__ import annotations

import numpy as np
from conftest import wait_until
from frame_pool_helpers import (
    DTYPE,
    SHAPE,
    CameraProxy,
    Rechecked,
    _check,
    _hold_a_reply_open,
    _no_heartbeats,
    _port,
    _stuck_frame_shape,
    fetch_while_refilling,
)

from framerpc import FramePool


def test_pool_frames_are_never_torn(ctx, url, make_camera):
    """Three clients fetch while a writer refills the pool as fast as it
    can and emits every tenth frame; every frame received matches its
    sequence number, also when checked again one fetch later (over
    inproc:// the client's array is the slot's own memory)."""
    # few slots: a slot given back too early would be refilled within
    # microseconds, while its frame is still being sent or read
    pool = FramePool(SHAPE, DTYPE, depth=6)
    camera = make_camera(url, pool)
    bad: list[str] = []
    signalled: list[int] = []
    heard = Rechecked(bad, "signal ")

    def on_frame(frame: np.ndarray, seq: int) -> None:
        heard.check(frame, seq)
        signalled.append(seq)

    def emit_every_tenth(frame: np.ndarray, seq: int) -> None:
        if seq % 10 == 0:
            camera.frame_ready.emit(frame, seq)

    listener = CameraProxy(ctx, camera.url, timeout=20000)
    try:
        listener.frame_ready.connect(on_frame)
        seen = fetch_while_refilling(
            pool,
            camera.publish,
            lambda: CameraProxy(ctx, camera.url, timeout=20000),
            "grab",
            on_written=emit_every_tenth,
            while_writing=lambda: wait_until(lambda: bool(signalled), timeout=20),
            min_distinct=3 * pool.depth,
        )
    finally:
        listener.close()
    heard.clear()
    assert signalled, "no signal arrived"
    bad += seen.bad
    assert not bad, bad[:5]
    assert len(seen.fetched) >= 180
    # the slots were reused many times over while the clients fetched
    assert seen.written > 3 * pool.depth
    assert len(set(seen.fetched)) > 3 * pool.depth


# -- today's behaviour of a plain array (why the pool exists) ---------------
def test_documents_that_a_plain_array_refilled_after_return_tears_over_tcp(
    ctx, make_camera, stalling_link
):
    """DOCUMENTS TODAY'S BEHAVIOUR, not a wish: a plain array returned from
    a buffer method is sent after the method returns, from its own memory.
    A camera that refills it while the reply is still on its way (here: a
    client that has not read it yet) changes what the client receives; the
    start of the frame had left already, the rest is the next frame."""
    pool = FramePool(_stuck_frame_shape(), DTYPE, depth=1)
    camera = make_camera("tcp://127.0.0.1", pool, options=_no_heartbeats())
    link = stalling_link(_port(camera.url))
    client = _hold_a_reply_open(ctx, camera, link, "plain")
    try:
        camera.plain_frame[...] = 8  # the camera's next frame, same array
        link.resume()
        frame, info = client.reply()
        assert info["seq"] == 7
        assert frame[0, 0] == 7 and frame[-1, -1] == 8  # torn
    finally:
        client.close()


def test_documents_that_a_plain_array_changes_under_an_inproc_client(ctx, make_camera):
    """DOCUMENTS TODAY'S BEHAVIOUR: over inproc:// the client's received
    array is the server's plain array itself, so refilling it changes a
    frame the client already holds. A pool frame cannot be refilled then
    (see test_over_inproc_the_receiver_holds_the_slot)."""
    pool = FramePool(SHAPE, DTYPE, depth=1)
    camera = make_camera(f"inproc://pool-{id(pool)}", pool)
    with CameraProxy(ctx, camera.url, timeout=20000) as proxy:
        frame, info = proxy.plain(1)
        assert info["seq"] == 1 and _check(frame, 1)
        camera.plain_frame[...] = 2
        assert _check(frame, 2)  # changed after it arrived
