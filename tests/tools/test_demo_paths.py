"""The demo tells the path each fetched frame took (framerpc.tools.demo):
shared memory with zero or one copy, or the socket, from what the client
sees (its array in a read-only mapped segment) and the server's stats."""

from __future__ import annotations

import re

import numpy as np
import pytest

from framerpc import FramePool
from framerpc.tools.demo import (
    PATH_SHM_COPY,
    PATH_SHM_ZERO_COPY,
    PATH_SOCKET,
    frame_path,
    in_shared_segment,
    run_demo,
    trace_frames,
)
from framerpc.transport import shm as segments

needs_shm = pytest.mark.skipif(not segments.AVAILABLE, reason="no /dev/shm")

ROW = (
    r"(uint16|uint8|pool|socket) \d+x\d+x3 \((5\.76|24\.88) MB\): +"
    r"[\d.]+ frames/s +\d+ MB/s  (.*)"
)


@needs_shm
def test_the_demo_tells_which_path_each_kind_of_frame_took():
    lines: list[str] = []
    run_demo(frames=3, out=lines.append, stream_seconds=0)
    assert lines[3].startswith("fetching 3 frames of each"), lines
    rows = [re.fullmatch(ROW, line.strip()) for line in lines[4:8]]
    assert all(rows), lines
    took = {row.group(1): row.group(3) for row in rows if row}
    # the camera shares the host: plain arrays are copied once into shared
    # memory, the FramePool frame not at all, shm=False takes the socket
    assert took == {
        "uint16": f"3 {PATH_SHM_COPY}",
        "uint8": f"3 {PATH_SHM_COPY}",
        "pool": f"3 {PATH_SHM_ZERO_COPY}",
        "socket": f"3 {PATH_SOCKET}",
    }
    assert lines[8].endswith("frames grabbed on the server: 12")


def test_private_memory_is_not_in_a_shared_segment():
    assert not in_shared_segment(np.ones(1 << 20, np.uint8))


@needs_shm
def test_a_writable_mapping_of_a_segment_is_not_a_clients():
    # a server's pool slot lies in a segment this process maps read-write:
    # only a read-only mapping (a client's of a server's segment) counts
    pool = FramePool((256, 256), np.uint8, 1)
    assert pool.shared
    frame = pool.acquire(0)
    assert not in_shared_segment(frame)
    del frame


@pytest.mark.parametrize(
    ("shared", "replies", "copies", "path"),
    [
        (False, 0, 0, PATH_SOCKET),
        (True, 1, 1, PATH_SHM_COPY),
        (True, 1, 0, PATH_SHM_ZERO_COPY),
        # the client's view and the server's counters disagree: not guessed
        (True, 0, 0, "unexplained"),
        (False, 1, 1, "unexplained"),
        (True, 2, 1, "unexplained"),
    ],
)
def test_a_frame_path_comes_from_the_array_and_the_stats_deltas(
    shared, replies, copies, path
):
    before = {"shm_replies": 5, "shm_copies": 2}
    after = {"shm_replies": 5 + replies, "shm_copies": 2 + copies}
    assert frame_path(shared, before, after) == path


def test_a_server_without_shared_memory_counters_means_the_socket():
    assert frame_path(False, {}, {"dropped_replies": 0}) == PATH_SOCKET


def test_trace_frames_counts_each_frame_once():
    counters = {"shm_replies": 0, "shm_copies": 0}
    fetched = []

    def fetch() -> np.ndarray:
        fetched.append(1)
        return np.zeros(16, np.uint8)

    rate, mbps, paths = trace_frames(fetch, lambda: dict(counters), 4)
    assert len(fetched) == 4
    assert paths == {PATH_SOCKET: 4}
    assert rate > 0 and mbps > 0
