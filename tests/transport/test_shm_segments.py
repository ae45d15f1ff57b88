"""Shared-memory segments (issue 14, framerpc.transport.shm): 0600 files with
unguessable names carrying uid, pid and start time; read-only attach;
unlinked at close; segments of a process killed with SIGKILL removed by the
next one, those of other pid namespaces (containers sharing /dev/shm) left
alone."""

from __future__ import annotations

import os
import shutil
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
            # the token starts with the creator's pid namespace
            assert shm.same_namespace(segment.name)
            assert segment.name[-32:-24] == f"{shm.pid_namespace():08x}"
        assert shm.pid_namespace() == os.stat("/proc/self/ns/pid").st_ino
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
        f"framerpc-{os.getuid()}-\u0661-2-" + "a" * 32,  # a non-ASCII digit
        f"framerpc-{os.getuid()}-{'1' * 5000}-2-" + "a" * 32,  # too long
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


def test_the_attach_cache_lookup_is_get() -> None:
    """``lookup`` (what the client hands resolve) attaches on a miss,
    under the same bound, and raises what ``attach`` raises."""
    segments = [shm.Segment(4096) for _ in range(3)]
    cache = shm.AttachCache(limit=2)
    try:
        first = cache.lookup(segments[0].name)
        assert first is cache.get(segments[0].name) and len(cache) == 1
        for segment in segments[1:]:
            assert cache.lookup(segment.name).name == segment.name
        assert len(cache) == 2
        name = segments[0].name
        missing = name[:-1] + ("1" if name.endswith("0") else "0")
        with pytest.raises(OSError):  # no such segment
            cache.lookup(missing)
        assert len(cache) == 2
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


def _dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return int(ended.stdout)


def _plant(name: str) -> str:
    """A 0600 file named ``name`` in /dev/shm, as a segment would be."""
    path = _path(name)
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    return path


def test_the_sweep_removes_only_dead_segments_of_its_own_pid_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uid, ours = os.getuid(), f"{shm.pid_namespace():08x}"
    other = f"{(shm.pid_namespace() + 1) & 0xFFFFFFFF:08x}"
    dead, me = _dead_pid(), os.getpid()
    start = shm.process_start(me)
    random = os.urandom(12).hex()
    gone = f"framerpc-{uid}-{dead}-12345-{ours}{random}"
    kept = {
        # a process of another namespace: its pid means nothing here
        "foreign": f"framerpc-{uid}-{dead}-12345-{other}{random}",
        "foreign, our pid": f"framerpc-{uid}-{me}-{start + 1}-{other}{random}",
        "alive": f"framerpc-{uid}-{me}-{start}-{ours}{random}",
        "another user": f"framerpc-{uid + 1}-{dead}-12345-{ours}{random}",
        # junk is never taken for a segment
        "not hex": f"framerpc-{uid}-{dead}-12345-{ours}" + "g" * 24,
        "short token": f"framerpc-{uid}-{dead}-12345-{ours}",
        "extra field": f"framerpc-{uid}-{dead}-1-12345-{ours}{random}",
        "suffix": f"framerpc-{uid}-{dead}-12345-{ours}{random}.x",
        "unicode digit": f"framerpc-{uid}-{dead}-1234\u0665-{ours}{random}",
    }
    paths = [_plant(gone)] + [_plant(name) for name in kept.values()]
    try:
        assert not shm.same_namespace(kept["foreign"])
        assert shm.same_namespace(gone)
        monkeypatch.setattr(shm, "_stale_done", False)
        assert shm.remove_stale() >= 1
        assert not os.path.exists(_path(gone))
        for what, name in kept.items():
            assert os.path.exists(_path(name)), what
    finally:
        for path in paths:
            if os.path.exists(path):
                os.unlink(path)


_IN_NAMESPACE = """
import sys
from framerpc.transport import shm
segment = shm.Segment(4096)
print(segment.name, flush=True)
sys.stdin.read()  # until the test closes it
segment.close()
"""


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        done = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_a_live_segment_of_another_pid_namespace_survives_the_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process in its own pid namespace (as in a container sharing
    /dev/shm) has pid 1 there: seen from here, another process."""
    if not _unshare_works():
        pytest.skip("needs unshare --pid (root or user namespaces)")
    unshare = ["unshare", "--pid", "--fork", "--mount-proc"]
    child = subprocess.Popen(
        [*unshare, sys.executable, "-c", _IN_NAMESPACE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    name = ""
    try:
        name = child.stdout.readline().strip()
        _uid, pid, start = shm.parse_name(name)
        assert not shm.same_namespace(name)
        assert not shm.process_alive(pid, start)  # it looks dead from here
        monkeypatch.setattr(shm, "_stale_done", False)
        shm.remove_stale()
        assert os.path.exists(_path(name))
    finally:
        child.stdin.close()
        try:
            child.wait(20)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(20)
            child.stdout.close()
            if name and os.path.exists(_path(name)):
                os.unlink(_path(name))


_FORK_IN_NEW_NAMESPACE = """
import ctypes, os, sys
from framerpc.transport import shm
before = shm.pid_namespace()
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x20000000) != 0:  # CLONE_NEWPID: for children to come
    print("unsupported", flush=True)
    sys.exit(0)
child = os.fork()
if child == 0:
    now = shm.pid_namespace()
    truth = os.stat("/proc/self/ns/pid").st_ino & 0xFFFFFFFF
    print(now != before and now == truth, flush=True)
    os._exit(0)
os.waitpid(child, 0)
"""


def test_a_child_forked_into_a_new_pid_namespace_names_its_own() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FORK_IN_NEW_NAMESPACE],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.stdout.strip() == "unsupported":
        pytest.skip("needs unshare(CLONE_NEWPID) (root or user namespaces)")
    assert done.stdout.strip() == "True", done.stderr
