"""The one copy of a big plain array, split between the calling thread and
the compiled engine's worker thread (``ext/_parcopy.h``; issue 14): every
byte lands whatever the size, chunk and threads; the worker lives only
while an arena holds the copier, never in a process pinned to one CPU,
and a forked child starts its own. The pure engine copies alone (no
thread) and answers the same counts.

The worker's lifetime is process-wide, so those tests run in a child
process (other tests here may leave servers open).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from engines import once_per_suite

from framerpc.server.shm_arena import Arena
from framerpc.transport import shm as segments
from framerpc.wire import shmpath

needs_shm = pytest.mark.skipif(not segments.AVAILABLE, reason="needs Linux /dev/shm")
TESTS = Path(__file__).resolve().parent.parent


def _compiled():
    try:
        from framerpc.wire import _shmpath
    except ImportError as exc:  # not built: say so
        pytest.skip(f"compiled shared-memory path not built: {exc}")
    return _shmpath


@pytest.fixture
def held():
    """The copier held (its worker may start), released at the end."""
    shmpath.hold_copier()
    yield
    shmpath.release_copier()


@pytest.fixture
def small_chunks():
    """The compiled copier splitting from 64 KiB in 4 KiB chunks (many
    chunks for little data); the defaults back at the end."""
    compiled = _compiled()
    saved = compiled.copier_stats()
    compiled._copier_configure(threshold=64 << 10, chunk=4096)
    yield compiled
    compiled._copier_configure(
        threshold=saved["threshold"], chunk=saved["chunk"], mode=0
    )


def _segment(nbytes: int) -> segments.Segment:
    return segments.Segment(segments.round_pages(nbytes + 64))


def _check_copy(copy, segment: segments.Segment, value: np.ndarray) -> None:
    """``copy`` lands ``value`` whole at the segment start, and not a byte
    more (the 64 bytes after it keep their 0xA5)."""
    raw = np.frombuffer(segment.map, np.uint8)
    raw[: value.nbytes + 64] = 0xA5
    copy(segment, value)
    landed = np.frombuffer(segment.map, value.dtype, value.size).reshape(value.shape)
    assert np.array_equal(landed, value)
    assert np.all(raw[value.nbytes : value.nbytes + 64] == 0xA5)


def _random(nbytes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, nbytes, np.uint8)


CHUNK = 4096
SMALL_SIZES = [
    (64 << 10) - 1,  # under the threshold: one memcpy
    64 << 10,  # the threshold: split
    (64 << 10) + 1,
    17 * CHUNK - 1,
    17 * CHUNK,
    17 * CHUNK + 1,
    1_000_003,  # odd, 245 chunks and a tail
]


@needs_shm
@pytest.mark.parametrize("nbytes", SMALL_SIZES)
@pytest.mark.parametrize("mode", [0, 1], ids=["split", "worker-only"])
@once_per_suite
def test_every_byte_lands_around_the_threshold_and_chunk_edges(
    held, small_chunks, mode, nbytes
):
    compiled = small_chunks
    compiled._copier_configure(mode=mode)
    before = compiled.copier_stats()
    segment = _segment(nbytes)
    try:
        _check_copy(compiled.copy_into, segment, _random(nbytes, nbytes))
    finally:
        segment.close()
    after = compiled.copier_stats()
    if nbytes < 64 << 10:
        assert after["jobs"] == before["jobs"]  # small: never split
    elif after["alive"]:  # started (2 or more CPUs): split
        chunks = -(-nbytes // CHUNK)
        assert after["jobs"] == before["jobs"] + 1
        assert after["chunks"] - before["chunks"] == chunks
        if mode == 1:  # the worker copied every chunk
            assert after["worker_chunks"] - before["worker_chunks"] == chunks


@needs_shm
@pytest.mark.parametrize(
    "nbytes", [(7 << 19) - 1, 7 << 19, (7 << 19) + 1, 5_760_000, 5_760_003]
)
def test_every_byte_lands_around_the_default_threshold(held, nbytes):
    # the live engine with its defaults (3.5 MiB), as a server copies
    segment = _segment(nbytes)
    try:
        _check_copy(shmpath.copy_into, segment, _random(nbytes, nbytes))
    finally:
        segment.close()


@needs_shm
def test_a_strided_big_array_lands_in_c_order(held):
    value = np.arange(3 << 20, dtype="<u4").reshape(1024, 3072)[:, ::2]
    segment = _segment(value.nbytes)
    try:
        _check_copy(shmpath.copy_into, segment, value)
    finally:
        segment.close()


@needs_shm
@once_per_suite
def test_threads_copying_at_once_all_land(held, small_chunks):
    # one uses the worker at a time, the others copy alone: all correct
    compiled = small_chunks
    before = compiled.copier_stats()
    rounds, errors = 12, []
    start = threading.Barrier(4)

    def copier(seed: int) -> None:
        segment = _segment(700_001)
        try:
            start.wait(10)
            for i in range(rounds):
                value = _random(700_001 - i, seed * 100 + i)
                _check_copy(compiled.copy_into, segment, value)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            segment.close()

    threads = [threading.Thread(target=copier, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    after = compiled.copier_stats()
    # every big copy either split or went alone
    split_or_alone = after["jobs"] + after["alone"] - before["jobs"] - before["alone"]
    assert split_or_alone == 4 * rounds


def test_holders_are_counted_and_never_go_below_zero():
    base = shmpath.copier_stats()["holders"]
    assert shmpath.hold_copier() == base + 1
    assert shmpath.hold_copier() == base + 2
    assert shmpath.release_copier() == base + 1
    assert shmpath.release_copier() == base
    assert shmpath.copier_stats()["holders"] == base


def test_an_arena_holds_the_copier_until_its_first_close():
    base = shmpath.copier_stats()["holders"]
    arena = Arena(1 << 20)
    assert shmpath.copier_stats()["holders"] == base + 1
    arena.close()
    arena.close()  # a second close releases nothing more
    assert shmpath.copier_stats()["holders"] == base


def test_both_engines_report_the_same_stats():
    compiled = _compiled()
    from framerpc.wire import _shmpath_py as pure

    assert set(pure.copier_stats()) == set(compiled.copier_stats())


# -- the worker's lifetime, in a child process ------------------------------

_CHILD_PRELUDE = """
import os, sys
from pathlib import Path
import numpy as np
from framerpc.transport import shm as segments
from framerpc.wire import shmpath

def copier_threads():
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            pass
    return names.count("framerpc-copy")

def big_copy(seed):
    value = np.random.default_rng(seed).integers(0, 256, 6_000_001, np.uint8)
    segment = segments.Segment(segments.round_pages(value.nbytes))
    try:
        shmpath.copy_into(segment, value)
        assert bytes(segment.map[: value.nbytes]) == value.tobytes()
    finally:
        segment.close()

# a worker is expected: compiled engine, 2 or more CPUs allowed
EXPECT = shmpath.IMPLEMENTATION == "compiled" and len(os.sched_getaffinity(0)) >= 2
"""

_FORK = (
    _CHILD_PRELUDE
    + """
shmpath.hold_copier()
big_copy(1)
assert copier_threads() == EXPECT, copier_threads()
pid = os.fork()
if pid == 0:  # the child: no worker until its first big copy
    code = 1
    try:
        assert copier_threads() == 0
        assert shmpath.copier_stats()["alive"] == 0
        big_copy(2)
        assert copier_threads() == EXPECT
        shmpath.release_copier()
        assert copier_threads() == 0
        code = 0
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
big_copy(3)  # the parent's worker still serves
assert copier_threads() == EXPECT
shmpath.release_copier()
assert copier_threads() == 0 and shmpath.copier_stats()["alive"] == 0
print("ok", shmpath.copier_stats()["started"])
"""
)

_ONE_CPU = (
    _CHILD_PRELUDE
    + """
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
shmpath.hold_copier()
big_copy(1)
big_copy(2)
stats = shmpath.copier_stats()
assert copier_threads() == 0 and stats["alive"] == 0 and stats["started"] == 0, stats
shmpath.release_copier()
print("ok", stats["started"])
"""
)

_SERVERS = (
    _CHILD_PRELUDE
    + """
sys.path.insert(0, sys.argv[1])
import zmq
from shm_helpers import ShmCamera, ShmCameraProxy, in_shared_memory

ctx = zmq.Context()
cameras = [ShmCamera(ctx, "tcp://127.0.0.1") for _ in range(2)]
import threading
threads = [threading.Thread(target=c.serve_forever) for c in cameras]
for thread in threads:
    thread.start()
for n, camera in enumerate(cameras):
    camera.plain_frame = np.zeros((2048, 1024), np.uint16)  # 4 MiB: split
    with ShmCameraProxy(ctx, camera.url, timeout=20000) as proxy:
        frame, _ = proxy.plain(n + 7)
        assert in_shared_memory(frame) and np.all(frame == n + 7)
        del frame
started = shmpath.copier_stats()["started"]
assert copier_threads() == EXPECT and started == EXPECT, (copier_threads(), started)
for camera, thread in zip(cameras, threads):
    camera.stop_server()
    thread.join(20)
    camera.close()
stats = shmpath.copier_stats()
assert copier_threads() == 0 and stats["alive"] == 0 and stats["holders"] == 0, stats
ctx.term()
print("ok", started)
"""
)


def _run_child(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _expect_worker() -> bool:
    return shmpath.IMPLEMENTATION == "compiled" and len(os.sched_getaffinity(0)) >= 2


@needs_shm
def test_a_forked_child_has_no_worker_until_its_own_big_copy():
    # the parent started one worker (the child's start is counted in the child)
    started = "1" if _expect_worker() else "0"
    assert _run_child(_FORK).split() == ["ok", started]


@needs_shm
def test_a_process_pinned_to_one_cpu_never_starts_the_worker():
    assert _run_child(_ONE_CPU).split() == ["ok", "0"]


_NO_THREAD = (
    _CHILD_PRELUDE
    + """
sys.path.insert(0, sys.argv[1])
import threading
import zmq
from framerpc.transport import SocketOptions
from shm_helpers import ShmCamera, ShmCameraProxy, in_shared_memory

ctx = zmq.Context()
camera = ShmCamera(ctx, "tcp://127.0.0.1", options=SocketOptions(shm_copy_thread=False))
thread = threading.Thread(target=camera.serve_forever)
thread.start()
camera.plain_frame = np.zeros((2048, 1024), np.uint16)  # 4 MiB: would split
with ShmCameraProxy(ctx, camera.url, timeout=20000) as proxy:
    for n in range(3):
        frame, _ = proxy.plain(n + 7)
        assert in_shared_memory(frame) and np.all(frame == n + 7)
        del frame
stats = shmpath.copier_stats()
assert copier_threads() == 0 and stats["started"] == 0, stats
assert stats["jobs"] == 0 and stats["holders"] == 0, stats
camera.stop_server()
thread.join(20)
camera.close()
ctx.term()
print("ok")
"""
)


@needs_shm
def test_a_server_without_the_copy_thread_copies_alone():
    # SocketOptions(shm_copy_thread=False): one thread fewer, whole copies
    assert _run_child(_NO_THREAD, str(TESTS)).split() == ["ok"]


@needs_shm
def test_no_worker_thread_remains_after_the_servers_close():
    started = "1" if _expect_worker() else "0"
    assert _run_child(_SERVERS, str(TESTS)).split() == ["ok", started]
