"""The child server of bench_hostile.py and bench_many_frames.py, and its
peak RSS reading.

``server_process`` starts ``python hostile_server.py`` (a fresh
interpreter, so that its peak RSS starts from a quiet baseline) and gives
its URL; the server answers ``echo``, ``length`` and ``stats`` (its CPU
time and peak RSS). Uses only what older framerpc builds have too (but
``heartbeats=False``), so the scripts measure a checkout without the
limits as well.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import zmq


def peak_rss_kb() -> int:
    """Peak RSS (kB) of this process image. Not ru_maxrss: Linux carries it
    over exec from the parent, whose frames are hundreds of MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def serve(heartbeats: bool = True) -> None:
    """Serve on tcp 127.0.0.1 until killed, after printing the URL.

    Without ``heartbeats``, for a raw sender that does not answer PINGs:
    libzmq would drop its connection, and an unfinished message with it.
    """
    import logging

    from framerpc import RPCServer

    logging.basicConfig(level=logging.ERROR)  # refusals are the point here

    class Server(RPCServer):
        @RPCServer.register_method_json
        def echo(self, value: Any) -> Any:
            return value

        @RPCServer.register_method_json
        def length(self, value: Any) -> int:
            return len(value)

        @RPCServer.register_method_json
        def stats(self) -> list:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return [usage.ru_utime + usage.ru_stime, peak_rss_kb()]

    kwargs: dict[str, Any] = {}
    if not heartbeats:
        import dataclasses

        from framerpc import transport

        options = transport.DEFAULT_OPTIONS
        kwargs["options"] = dataclasses.replace(options, heartbeat_ivl_ms=0)
    context = zmq.Context()
    server = Server(context, "tcp://127.0.0.1", **kwargs)
    print(server.url, flush=True)
    server.serve_forever()
    context.term()


@contextlib.contextmanager
def server_process(heartbeats: bool = True) -> Iterator[str]:
    """A fresh server in a child process: its URL; killed at the end."""
    command = [sys.executable, __file__]
    if not heartbeats:
        command.append("--no-heartbeats")
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        yield child.stdout.readline().strip()  # type: ignore[union-attr]
    finally:
        child.kill()
        child.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-heartbeats", action="store_true")
    serve(heartbeats=not parser.parse_args().no_heartbeats)
