"""FramePool (issue 14, the socket path): a pool frame is never torn, its
slot comes back only after every receiver is done with it, acquire is
bounded in depth and in time. Plus what a plain reused array does today
(the reason for the pool), shown deterministically.

Every frame here is filled with one value, its sequence number, which the
reply's info (or the signal's second argument) also carries: a frame with
any other value anywhere was torn (rows of two frames) or stale (a later
frame than its info says).

This file: the pool alone. A camera serving pool frames and a plain array:
test_frame_pool_camera.py; when a slot comes back: test_frame_pool_slots.py.
"""

from __future__ import annotations

import gc
import queue
import threading
from typing import Any

import numpy as np
import pytest
from frame_pool_helpers import DTYPE, SHAPE, _check

import framerpc
from framerpc import FramePool
from framerpc.pool import DEFAULT_ACQUIRE_TIMEOUT_S


# -- the pool alone ----------------------------------------------------------
def test_acquire_gives_writable_frames_of_the_pool_shape():
    pool = FramePool((3, 4), np.uint16, depth=2)
    frame = pool.acquire()
    assert frame.shape == (3, 4) and frame.dtype == np.uint16
    assert frame.flags.writeable and frame.flags.c_contiguous
    frame[:] = 7
    assert _check(frame, 7)
    assert pool.depth == 2 and pool.nbytes == 24 and "FramePool" in repr(pool)
    assert isinstance(framerpc.FramePool(5, "f4", 1).acquire(), np.ndarray)


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2)])
def test_zero_d_and_empty_frames(shape: tuple[int, ...]):
    pool = FramePool(shape, np.float32, depth=1)
    frame = pool.acquire()
    assert frame.shape == shape and frame.dtype == np.float32
    del frame
    assert pool.available == 1


def test_depth_bounds_the_frames_out_and_acquire_times_out():
    pool = FramePool(SHAPE, DTYPE, depth=3)
    frames = [pool.acquire(timeout=0) for _ in range(3)]
    assert pool.available == 0
    # three distinct slots
    addresses = {f.__array_interface__["data"][0] for f in frames}
    assert len(addresses) == 3
    with pytest.raises(TimeoutError, match="3 slots"):
        pool.acquire(timeout=0)
    with pytest.raises(TimeoutError):
        pool.acquire(timeout=0.05)
    del frames[0]
    assert pool.available == 1
    pool.acquire(timeout=0)


def test_the_default_wait_is_finite():
    assert 0 < DEFAULT_ACQUIRE_TIMEOUT_S < float("inf")
    pool = FramePool(4, np.uint8, depth=1, timeout=0.05)
    held = pool.acquire()
    with pytest.raises(TimeoutError):
        pool.acquire()  # None: the pool's timeout, not for ever
    del held


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_a_timeout_must_be_finite_and_not_negative(bad: float):
    pool = FramePool(4, np.uint8, depth=1)
    with pytest.raises(ValueError, match="timeout"):
        pool.acquire(timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        FramePool(4, np.uint8, depth=1, timeout=bad)
    assert pool.available == 1  # nothing lost


@pytest.mark.parametrize(
    "args, error",
    [
        (((4,), np.uint8, 0), ValueError),
        (((4,), np.uint8, 1.5), TypeError),
        (((-1,), np.uint8, 1), ValueError),
        (((4,), object, 1), TypeError),
        (((4,), [("a", "u1"), ("b", "f4")], 1), TypeError),
    ],
)
def test_bad_pool_arguments_are_refused(args: tuple, error: type):
    with pytest.raises(error):
        FramePool(*args)


def test_views_keep_the_slot_out():
    pool = FramePool(SHAPE, DTYPE, depth=1)
    frame = pool.acquire()
    row = frame[3]
    flat = frame.reshape(-1).view(np.uint8)
    buffer = memoryview(frame)
    del frame
    assert pool.available == 0
    del row, flat
    assert pool.available == 0
    buffer.release()
    del buffer
    assert pool.available == 1


def test_a_frame_in_a_reference_cycle_comes_back_at_collection():
    pool = FramePool(4, np.uint8, depth=1)
    cycle: list[Any] = [pool.acquire()]
    cycle.append(cycle)
    del cycle
    gc.collect()
    assert pool.available == 1


def test_acquire_wakes_when_a_slot_comes_back_from_another_thread():
    pool = FramePool(SHAPE, DTYPE, depth=1)
    held: list[Any] = [pool.acquire()]
    waiting = threading.Event()
    got: queue.Queue = queue.Queue()

    def wait_for_slot() -> None:
        waiting.set()
        got.put(pool.acquire(timeout=20))

    thread = threading.Thread(target=wait_for_slot)
    thread.start()
    assert waiting.wait(10)
    held.clear()  # the slot comes back
    frame = got.get(timeout=20)
    thread.join(10)
    assert frame.shape == SHAPE
