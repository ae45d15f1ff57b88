"""Server and client processes of the benchmark.

Each runs ``_child.py`` in a fresh interpreter, which loads this package
by path under a private name, puts the framerpc checkout it is given
first on ``sys.path``, applies the CPU affinity, and only then imports
framerpc (so a ``--baseline`` checkout's framerpc runs this harness);
the environment (``FRAMERPC_PURE``) is the process's own. Parent and
child talk over a ``multiprocessing`` pipe, in plain tuples.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .systems import (
    base_system,
    implementation,
    make_client,
    make_server,
    server_url,
    system_env,
    transports,
)
from .timing import profiled, sample, stream
from .workloads import BY_NAME

__all__ = [
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "ClientJob",
    "ClientProcess",
    "ServerHandle",
    "child_main",
    "cpu_ns",
    "own_library",
    "server_stats",
    "start_server",
    "stop_server",
]

#: How long (s) a peer may take to start, and a server to stop.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0
_CHILD = Path(__file__).with_name("_child.py")


def own_library() -> str:
    """The folder holding the framerpc package this process runs."""
    import framerpc

    return str(Path(framerpc.__file__).resolve().parent.parent)


def cpu_ns(process: Any) -> int | None:
    """CPU time (ns) process ``process`` has run so far, all its threads
    (ZeroMQ's I/O threads included), from ``/proc/<pid>/task/*/schedstat``;
    None where that is not readable."""
    total = 0
    try:
        for task in os.scandir(f"/proc/{process.popen.pid}/task"):
            with open(os.path.join(task.path, "schedstat")) as stat:
                total += int(stat.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


@dataclass(frozen=True)
class ClientJob:
    """What a client process does: timed workloads, then an optional stream.

    Attributes
    ----------
    plan : tuple of (workload name, calls, warm-up calls)
    stream_workload : str or None
        Workload streamed after the plan for ``stream_seconds``.
    """

    plan: tuple[tuple[str, int, int], ...]
    stream_workload: str | None = None
    stream_seconds: float = 0.0


class _Process:
    """A child interpreter, with the part of ``multiprocessing.Process``'s
    interface the runner uses."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def terminate(self) -> None:
        self.popen.terminate()

    def kill(self) -> None:
        self.popen.kill()


def _spawn(
    task: tuple,
    env: Mapping[str, str | None],
    cpus: set[int] | None,
    library: str | None,
) -> tuple[_Process, Connection]:
    """Start ``_child.py`` with ``env`` and send it ``task``."""
    environ = dict(os.environ)
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    parent, child = mp.Pipe()
    command = [
        sys.executable,
        str(_CHILD),
        str(child.fileno()),
        library or own_library(),
        ",".join(str(cpu) for cpu in sorted(cpus or ())),
    ]
    try:
        popen = subprocess.Popen(command, env=environ, pass_fds=(child.fileno(),))
    finally:
        child.close()
    parent.send(task)
    return _Process(popen), parent


def _expect(conn: Connection, process: Any, what: str, timeout: float) -> tuple:
    if not conn.poll(timeout):
        raise RuntimeError(f"{what}: no answer within {timeout:.0f} s")
    try:
        message = conn.recv()
    except EOFError:
        process.join(1)
        raise RuntimeError(f"{what}: process exited ({process.exitcode})") from None
    if message[0] == "error":
        raise RuntimeError(f"{what}: {message[1]}")
    return message


def _kill(process: Any) -> None:
    if process.is_alive():
        process.terminate()
        process.join(2)
    if process.is_alive():
        process.kill()
        process.join(2)


# -- in the child ---------------------------------------------------------
def child_main(conn: Connection) -> None:
    """Entry point of a child process (``_child.py``): run the task the
    parent sent first, ``("serve", kwargs)`` or ``("client", kwargs)``."""
    role, kwargs = conn.recv()
    if role == "serve":
        serve(conn, **kwargs)
    elif role == "client":
        run_client(conn, **kwargs)
    else:
        raise ValueError(f"unknown task {role!r}")


def _origin(system: str) -> str:
    """The folder holding the framerpc package a framerpc system runs."""
    return own_library() if system.startswith("framerpc") else ""


def _watch(
    conn: Connection,
    on_stop: Callable[[], None],
    counters: Callable[[], dict] = dict,
) -> threading.Thread:
    """Call ``on_stop`` when the parent says "stop" or goes away; answer
    "stats" with ``("stats", counters())``."""

    def run() -> None:
        with contextlib.suppress(EOFError, OSError):
            while (message := conn.recv()) != "stop":
                if message == "stats":
                    conn.send(("stats", counters()))
        on_stop()

    thread = threading.Thread(target=run, name="stop-watcher", daemon=True)
    thread.start()
    return thread


def serve(
    conn: Connection,
    system: str,
    url: str,
    profile: str | None = None,
    profile_cpu: bool = False,
) -> None:
    """A server process: binds at ``url``, sends ``("ready", bound_url,
    implementation)`` (or ``("error", text)``) and serves until ``conn``
    receives "stop" or is closed; it answers "stats" with ``("stats",
    dict)`` (see ``server_stats``). With ``profile``, the serving loop runs
    under cProfile (in CPU time with ``profile_cpu``), dumped to that path.
    """
    try:
        server = make_server(system, url)
        impl = implementation(base_system(system))
        conn.send(("ready", server.url, impl, _origin(system)))
        _watch(conn, server.stop, getattr(server, "counters", dict))
        with profiled(profile, profile_cpu):
            server.serve()
        server.close()
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


def run_client(conn: Connection, system: str, job: tuple) -> None:
    """A client process: imports its libraries, sends ``("hello",
    implementation)``, waits for the server URL on ``conn``, then reports
    ``("start", name)`` and ``("samples", name, list_ns)`` per workload,
    each followed by a wait for the parent's "go" (``ClientProcess.go_on``),
    then ``("stream", name, result)`` and ``("done",)``; ``("error", text)``
    on failure. ``job``: the fields of a ``ClientJob``."""
    plan, stream_workload, stream_seconds = job
    client = None
    try:
        impl = implementation(base_system(system))  # imports the library
        if system.startswith("framerpc"):
            from .systems import framerpc_types

            framerpc_types()
        conn.send(("hello", impl, _origin(system)))
        url = conn.recv()
        client = make_client(system, url)
        for name, n, warmup in plan:
            # after each report, wait until the parent has read both
            # processes' CPU counters: a phase must not start before, nor the
            # client close its context (whose threads' CPU time would vanish
            # from /proc) before the last phase is read
            conn.send(("start", name))
            conn.recv()
            conn.send(("samples", name, sample(client, BY_NAME[name], n, warmup)))
            conn.recv()
        if stream_workload is not None:
            conn.send(("start", f"stream {stream_workload}"))
            result = stream(client, BY_NAME[stream_workload], stream_seconds)
            conn.send(("stream", stream_workload, result))
        conn.send(("done",))
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        if client is not None:
            client.close()


# -- in the parent --------------------------------------------------------
@dataclass
class ServerHandle:
    """A running server process: its URL, implementation, the folder of
    the framerpc package it runs ("" for the others), and control pipe."""

    system: str
    url: str
    implementation: str
    process: Any
    conn: Connection
    library: str = ""


def start_server(
    system: str,
    transport: str,
    workdir: str,
    cpus: set[int] | None = None,
    profile: str | None = None,
    profile_cpu: bool = False,
    library: str | None = None,
) -> ServerHandle:
    """Start a server process for ``system`` and wait until it is bound.

    ``profile`` and ``profile_cpu``: cProfile the server (see ``serve``).
    ``library``: the folder holding the framerpc package to run (default:
    this process's).

    Raises
    ------
    RuntimeError
        The server failed or did not report within ``START_TIMEOUT_S``.
    """
    # iceoryx2 has a transport of its own ("shm") whatever is asked
    url = server_url(transports(system, (transport,))[0], workdir)
    kwargs: dict[str, Any] = {"system": system, "url": url, "profile": profile}
    kwargs["profile_cpu"] = profile_cpu
    process, conn = _spawn(("serve", kwargs), system_env(system), cpus, library)
    try:
        _, bound, impl, where = _expect(
            conn, process, f"{system} server", START_TIMEOUT_S
        )
    except BaseException:
        _kill(process)
        conn.close()
        raise
    return ServerHandle(system, bound, impl, process, conn, where)


def server_stats(handle: ServerHandle, timeout: float = STOP_TIMEOUT_S) -> dict:
    """The server's counters now (``RPCServer.stats`` for framerpc; empty
    for the other systems, or when the server does not answer in time)."""
    try:
        handle.conn.send("stats")
        if handle.conn.poll(timeout):
            message = handle.conn.recv()
            if message[0] == "stats":
                return dict(message[1])
    except (OSError, EOFError):
        pass
    return {}


def stop_server(handle: ServerHandle, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Ask a server to stop; terminate it after ``timeout`` s.

    Returns
    -------
    bool
        Whether it stopped cleanly (exit code 0 within ``timeout``).
    """
    with contextlib.suppress(OSError):
        handle.conn.send("stop")
    handle.process.join(timeout)
    clean = handle.process.exitcode == 0
    _kill(handle.process)
    handle.conn.close()
    return clean


class ClientProcess:
    """A client process: spawned at once, measuring once given a server URL.

    Spawning before the server is ready lets both processes import their
    libraries in parallel.
    """

    def __init__(
        self,
        system: str,
        job: ClientJob,
        cpus: set[int] | None = None,
        library: str | None = None,
    ) -> None:
        self.system = system
        self.implementation = ""
        self.library = ""  # the folder of the framerpc package it runs
        fields = (job.plan, job.stream_workload, job.stream_seconds)
        task = ("client", {"system": system, "job": fields})
        self.process, self.conn = _spawn(task, system_env(system), cpus, library)

    def go(self, url: str) -> None:
        """Wait until the client is up, then send it the server URL."""
        what = f"{self.system} client"
        _, self.implementation, self.library = _expect(
            self.conn, self.process, what, START_TIMEOUT_S
        )
        self.conn.send(url)

    def go_on(self) -> None:
        """Let the client go on after a "start" or "samples" report (read
        the CPU counters first)."""
        self.conn.send("go")

    def messages(self, timeout: float) -> Iterator[tuple]:
        """Yield the client's reports until "done".

        Raises
        ------
        RuntimeError
            The client failed or said nothing for ``timeout`` s.
        """
        while True:
            message = _expect(self.conn, self.process, f"{self.system} client", timeout)
            if message[0] == "done":
                return
            yield message

    def close(self) -> None:
        """Close the pipe and join the process (terminate it if it hangs)."""
        self.conn.close()  # a client still waiting for its URL exits on EOF
        self.process.join(STOP_TIMEOUT_S)
        _kill(self.process)
