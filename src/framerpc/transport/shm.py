"""Shared-memory segments of one host: created ``0600`` by a server, mapped
read-only by its clients, removed when their process is gone.

A segment is a file under ``/dev/shm`` (Linux tmpfs) mapped with
``mmap``. ``multiprocessing.shared_memory`` is not used: its resource
tracker unlinks, and warns about, segments a client merely attached.

Names are ``framerpc-<uid>-<pid>-<start>-<token>``: the creator's user,
process id and process start time (clock ticks since boot, from
``/proc/<pid>/stat``) and 32 hex digits: 8 naming the creator's pid
namespace (``pid_namespace``), then 24 random ones (``secrets``, 96 bits),
so a name cannot be guessed, and the next framerpc process of that user
can tell the segments of processes that no longer exist (the pid gone, or
reused by a process that started at another time) and remove them
(``remove_stale``): a process killed with SIGKILL leaves no garbage in
``/dev/shm`` beyond the next start. A segment is unlinked when its
``Segment`` is closed or collected; mappings live on until unmapped, so
a client keeps reading what it holds.

Pid namespaces: containers that share ``/dev/shm`` (docker ``--ipc=host``
or ``--ipc=shareable``, a bind-mounted ``/dev/shm``) but not the pid
namespace cannot see each other's processes, so the sweep removes only
segments created in its own namespace; the others wait for the next
framerpc process of their namespace. The namespace rides in the token,
not in a field of its own, so names keep the form that every framerpc
version checks (a reference's segment, the ``SHM_HELLO`` probe). Names
made by a framerpc from before the namespace (32 random digits) read as
another namespace's and are left alone (a reboot empties ``/dev/shm``);
in the one case of 2**32 where their digits match ours they are swept by
pid and start time as that older framerpc swept every name.

Space is reserved when a segment is created (``posix_fallocate``): a
full ``/dev/shm`` raises ``OSError`` there instead of killing the process
with SIGBUS on its first write.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import secrets
import stat
import sys
import threading
import weakref
from collections.abc import Callable

import numpy as np

__all__ = [
    "AVAILABLE",
    "SHM_DIR",
    "AttachCache",
    "Attached",
    "Segment",
    "attach",
    "process_start",
    "parse_name",
    "pid_namespace",
    "process_alive",
    "read_probe",
    "remove_stale",
    "same_namespace",
    "round_pages",
]

_log = logging.getLogger(__name__)

#: Where segments live (tmpfs on Linux).
SHM_DIR = "/dev/shm"
#: Whether this host has segments (Linux with /dev/shm and /proc).
AVAILABLE = (
    sys.platform.startswith("linux")
    and os.path.isdir(SHM_DIR)
    and os.path.isdir("/proc/self")
)
_PREFIX = "framerpc-"
# ASCII digits of bounded length (``\d`` takes any Unicode digit, and a
# name comes from the wire too): a name is at most 84 characters
_NAME = re.compile(
    r"framerpc-([0-9]{1,10})-([0-9]{1,10})-([0-9]{1,20})-([0-9a-f]{32})\Z"
)
#: Hex digits of the token naming the creator's pid namespace.
_NS_DIGITS = 8
_PAGE = mmap.PAGESIZE
_stale_done = False
_stale_lock = threading.Lock()


def round_pages(nbytes: int) -> int:
    """``nbytes`` rounded up to whole pages (at least one)."""
    return max(_PAGE, -(-int(nbytes) // _PAGE) * _PAGE)


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` (clock ticks since boot), None when
    there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split
    # after its closing one; field 22 is the start time
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, start: int) -> bool:
    """Whether process ``pid`` is the one that started at ``start``."""
    return process_start(pid) == start


_namespace: int | None = None


def pid_namespace() -> int:
    """This process's pid namespace: the inode of ``/proc/self/ns/pid``
    (its low 32 bits: Linux numbers namespaces with 32 bits), 0 where the
    kernel does not tell (processes that cannot tell sweep each other's
    segments, as before namespaces were named)."""
    global _namespace
    if _namespace is None:
        try:
            _namespace = os.stat("/proc/self/ns/pid").st_ino & 0xFFFFFFFF
        except OSError:
            _namespace = 0
    return _namespace


def _forget_namespace() -> None:
    global _namespace
    _namespace = None


# a child forked after unshare(CLONE_NEWPID) is in another namespace
os.register_at_fork(after_in_child=_forget_namespace)


def _new_name() -> str:
    pid = os.getpid()
    start = process_start(pid) or 0
    token = f"{pid_namespace():08x}{secrets.token_hex(12)}"
    return f"{_PREFIX}{os.getuid()}-{pid}-{start}-{token}"


def parse_name(name: str) -> tuple[int, int, int] | None:
    """``(uid, pid, start)`` of a framerpc segment name, None for any other
    name (a path, another program's segment)."""
    match = _NAME.match(name)
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3])


def same_namespace(name: str) -> bool:
    """Whether framerpc segment ``name`` was created in this process's pid
    namespace, so that its pid and start time can be checked here (see
    the module); False for any other name."""
    match = _NAME.match(name)
    return match is not None and int(match[4][:_NS_DIGITS], 16) == pid_namespace()


def remove_stale() -> int:
    """Unlink this user's framerpc segments, created in this pid namespace,
    whose process is gone; return how many. Segments of other namespaces
    and names of other forms are left alone (see the module). Runs once
    per process (``Segment`` calls it)."""
    global _stale_done
    with _stale_lock:
        if _stale_done or not AVAILABLE:
            return 0
        _stale_done = True
    uid, removed = os.getuid(), 0
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    for name in names:
        owner = parse_name(name)
        if (
            owner is None
            or owner[0] != uid
            or not same_namespace(name)
            or process_alive(owner[1], owner[2])
        ):
            continue
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            removed += 1
        except OSError:  # another process removed it first
            pass
    if removed:
        _log.info("removed %d shared-memory segments of ended processes", removed)
    return removed


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _address(view: mmap.mmap) -> int:
    """Address of a mapping's first byte (without keeping an export)."""
    return int(np.frombuffer(view, np.uint8, count=1).ctypes.data)


class Segment:
    """A segment this process created, writable, ``0600``.

    Parameters
    ----------
    size : int
        Bytes (rounded up to whole pages); reserved at once.

    Raises
    ------
    OSError
        No ``/dev/shm`` (see ``AVAILABLE``) or no room in it.

    Attributes
    ----------
    name : str
        What a client passes to ``attach``.
    size : int
        Bytes mapped.
    address : int
        Address of the first byte in this process.
    """

    def __init__(self, size: int) -> None:
        if not AVAILABLE:
            raise OSError("shared memory needs Linux with /dev/shm")
        remove_stale()
        self.size = round_pages(size)
        self.name = _new_name()
        path = os.path.join(SHM_DIR, self.name)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        try:
            # unlinked on close, on collection, at exit (whichever first)
            self._finalizer = weakref.finalize(self, _unlink, path)
            os.fchmod(fd, 0o600)  # whatever the umask
            os.posix_fallocate(fd, 0, self.size)
            self.map = mmap.mmap(fd, self.size, mmap.MAP_SHARED)
        except BaseException:
            _unlink(path)
            raise
        finally:
            os.close(fd)
        self.address = _address(self.map)

    def array(self, offset: int, nbytes: int) -> np.ndarray:
        """A writable uint8 array over ``nbytes`` from ``offset``."""
        return np.frombuffer(self.map, np.uint8, nbytes, offset)

    @property
    def closed(self) -> bool:
        """Whether the name is gone."""
        return not self._finalizer.alive

    def close(self) -> None:
        """Unlink the segment: no client can attach it any more. Mappings
        (this one, the clients') stay valid until they are dropped."""
        self._finalizer()

    def __repr__(self) -> str:
        return f"<Segment {self.name} {self.size} bytes>"


class Attached:
    """A segment of another process, mapped read-only.

    Attributes
    ----------
    name : str
    size : int
    map : mmap.mmap
        The read-only mapping; unmapped when the last reference goes
        (arrays over it keep it, see ``framerpc.client.shm``).
    address : int
    """

    __slots__ = ("address", "map", "name", "size")

    def __init__(self, name: str, view: mmap.mmap, size: int) -> None:
        self.name = name
        self.map = view
        self.size = size
        self.address = _address(view)


def attach(name: str) -> Attached:
    """Map segment ``name`` read-only.

    Raises
    ------
    ValueError
        ``name`` is not a framerpc segment name of this user.
    OSError
        No such segment, or it is not a regular file owned by this user
        with mode ``0600``.
    """
    owner = parse_name(name)
    if owner is None or owner[0] != os.getuid():
        raise ValueError(f"not a shared-memory segment of this user: {name[:80]!r}")
    fd, info = _open_private(name)
    try:
        if info.st_size <= 0:
            raise OSError(f"segment {name} is empty")
        view = mmap.mmap(fd, info.st_size, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
    return Attached(name, view, info.st_size)


def _open_private(name: str) -> tuple[int, os.stat_result]:
    """Open ``/dev/shm/name`` read-only with its status; OSError unless it
    is a regular ``0600`` file of this user. ``O_NONBLOCK``: opening a FIFO
    named by a peer must not wait for a writer (it would stop a serve loop
    for good); ``O_NOFOLLOW``: no symlink."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(os.path.join(SHM_DIR, name), flags)
    try:
        info = os.fstat(fd)
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != os.getuid()
            or stat.S_IMODE(info.st_mode) != 0o600
        ):
            raise OSError(f"segment {name} is not a 0600 file of this user")
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def _exists(name: str) -> bool:
    return os.path.exists(os.path.join(SHM_DIR, name))


class _Maps(dict[str, Attached]):
    """An ``AttachCache``'s mappings by name; a missing one is attached
    (``AttachCache._attach``), so that a hit is one C-level lookup."""

    __slots__ = ("cache",)
    cache: AttachCache

    def __missing__(self, name: str) -> Attached:
        return self.cache._attach(name)


class AttachCache:
    """The segments a client mapped, by name, at most ``limit`` of them.

    Beyond ``limit`` the oldest is forgotten (its mapping lives on while
    arrays use it). Each new attach also forgets the mappings whose
    segment was unlinked meanwhile (the server closed it or is gone), so
    the cache does not keep their memory. ``close`` forgets all of them.
    Thread-safe.

    Attributes
    ----------
    lookup : callable
        ``get`` without a Python call on a hit (``dict.__getitem__`` of
        the mappings): what ``wire.shmpath.resolve`` is given, on every
        received array's path.
    """

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._maps = _Maps()
        self._maps.cache = self
        self._lock = threading.Lock()
        self.lookup: Callable[[str], Attached] = self._maps.__getitem__

    def get(self, name: str) -> Attached:
        """The mapping of ``name``, attached on first use (see ``attach``)."""
        # a hit without the lock: one dict read is atomic (the GIL)
        return self._maps[name]

    def _attach(self, name: str) -> Attached:
        found = attach(name)
        with self._lock:
            for old in [n for n in self._maps if not _exists(n)]:
                del self._maps[old]
            self._maps[name] = found
            while len(self._maps) > self.limit:
                del self._maps[next(iter(self._maps))]
        return found

    def __len__(self) -> int:
        return len(self._maps)

    def close(self) -> None:
        """Forget every mapping (arrays still using one keep it mapped)."""
        with self._lock:
            self._maps.clear()


def read_probe(name: str, size: int) -> bytes | None:
    """The first ``size`` bytes of a peer's probe segment, or None when
    it cannot be opened (another host, another user) or is not a ``0600``
    regular file (``_open_private``)."""
    try:
        fd, _ = _open_private(name)
    except OSError:
        return None
    try:
        return os.pread(fd, size, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
