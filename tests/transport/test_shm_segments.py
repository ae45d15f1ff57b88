"""Shared-memory segments (issue 14, framerpc.transport.shm): 0600 files with
unguessable names carrying uid, pid and start time; read-only attach;
unlinked at close; segments of a process killed with SIGKILL removed by the
next one."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest

from framerpc.transport import shm

pytestmark = pytest.mark.skipif(not shm.AVAILABLE, reason="needs Linux /dev/shm")


def _path(name: str) -> str:
    return os.path.join(shm.SHM_DIR, name)


def test_a_segment_is_0600_and_its_name_says_whose_it_is() -> None:
    first, second = shm.Segment(1), shm.Segment(5000)
    try:
        for segment in (first, second):
            info = os.stat(_path(segment.name))
            assert stat.S_IMODE(info.st_mode) == 0o600
            assert info.st_uid == os.getuid()
            assert info.st_size == segment.size
            uid, pid, start = shm.parse_name(segment.name)
            assert (uid, pid) == (os.getuid(), os.getpid())
            assert start == shm.process_start(os.getpid())
        assert first.size == shm.round_pages(1) and second.size == 8192
        # 32 random hex digits: two segments never share a name
        assert first.name[-32:] != second.name[-32:]
    finally:
        first.close()
        second.close()


def test_close_unlinks_and_a_mapping_outlives_the_name() -> None:
    segment = shm.Segment(4096)
    segment.array(0, 4)[:] = [1, 2, 3, 4]
    mapped = shm.attach(segment.name)
    segment.close()
    assert not os.path.exists(_path(segment.name))
    assert segment.closed
    view = np.frombuffer(mapped.map, np.uint8, 4)
    assert view.tolist() == [1, 2, 3, 4]
    with pytest.raises(FileNotFoundError):
        shm.attach(segment.name)


def test_attach_is_read_only() -> None:
    segment = shm.Segment(4096)
    try:
        mapped = shm.attach(segment.name)
        view = np.frombuffer(mapped.map, np.uint8, 4)
        assert not view.flags.writeable
        with pytest.raises(TypeError):
            mapped.map[0:1] = b"x"
        segment.array(0, 1)[0] = 9  # the creator writes, the client sees it
        assert view[0] == 9
    finally:
        segment.close()


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "framerpc-0-1-2-xyz",
        "psm_1234",
        f"framerpc-{os.getuid() + 1}-1-2-" + "a" * 32,
    ],
)
def test_attach_refuses_names_that_are_not_this_users_segments(name: str) -> None:
    with pytest.raises(ValueError):
        shm.attach(name)


_OTHER_USER = """
import os, sys
os.setgid(65534)
os.setuid(65534)
try:
    os.open(sys.argv[1], os.O_RDONLY)
except PermissionError:
    print("refused")
else:
    print("opened")
"""


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run as another user")
def test_another_local_user_cannot_open_a_segment() -> None:
    segment = shm.Segment(4096)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _OTHER_USER, _path(segment.name)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.stdout.strip() == "refused", done.stderr
    finally:
        segment.close()


def test_attach_refuses_a_segment_with_wider_mode() -> None:
    segment = shm.Segment(4096)
    try:
        os.chmod(_path(segment.name), 0o644)
        with pytest.raises(OSError, match="0600"):
            shm.attach(segment.name)
    finally:
        segment.close()


def test_process_alive_tells_a_reused_pid_by_its_start_time() -> None:
    start = shm.process_start(os.getpid())
    assert start is not None
    assert shm.process_alive(os.getpid(), start)
    assert not shm.process_alive(os.getpid(), start + 1)


def test_the_attach_cache_is_bounded() -> None:
    segments = [shm.Segment(4096) for _ in range(3)]
    cache = shm.AttachCache(limit=2)
    try:
        for segment in segments:
            assert cache.get(segment.name).name == segment.name
        assert len(cache) == 2
        assert cache.get(segments[2].name) is cache.get(segments[2].name)
        cache.close()
        assert len(cache) == 0
    finally:
        for segment in segments:
            segment.close()


def test_the_attach_cache_forgets_unlinked_segments() -> None:
    gone, kept, new = shm.Segment(4096), shm.Segment(4096), shm.Segment(4096)
    cache = shm.AttachCache()
    try:
        cache.get(gone.name)
        cache.get(kept.name)
        gone.close()
        assert len(cache) == 2
        cache.get(new.name)  # a new attach drops the unlinked one
        assert len(cache) == 2
        assert cache.get(kept.name).name == kept.name and len(cache) == 2
    finally:
        for segment in (gone, kept, new):
            segment.close()


_CHILD = """
import sys, time
from framerpc.transport import shm
segment = shm.Segment(4096)
print(segment.name, flush=True)
time.sleep(60)
"""


def test_segments_of_a_process_killed_with_sigkill_are_removed_by_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True
    )
    try:
        name = child.stdout.readline().strip()
        assert os.path.exists(_path(name))
        ours = shm.Segment(4096)  # a live process's segment stays
        monkeypatch.setattr(shm, "_stale_done", False)
        assert shm.remove_stale() == 0  # the child is alive
        assert os.path.exists(_path(name))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(20)
        child.stdout.close()
    assert os.path.exists(_path(name))  # SIGKILL leaves it behind
    monkeypatch.setattr(shm, "_stale_done", False)
    shm.Segment(4096).close()  # the next segment created sweeps first
    assert not os.path.exists(_path(name))
    assert os.path.exists(_path(ours.name))
    ours.close()
