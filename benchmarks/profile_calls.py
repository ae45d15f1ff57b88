"""Profile where a system spends CPU per call, on both sides, with cProfile.

    python benchmarks/profile_calls.py [--system framerpc] [--workload echo]
                                       [--transport tcp] [--calls 5000]
                                       [--top 25] [--pin] [--out DIR]

The server runs in its own process with its serving loop under cProfile;
the client loop runs here under cProfile. Both top-function tables (by own
time) are printed, and the raw ``.prof`` files are kept in ``--out`` for
snakeviz or ``python -m pstats``. cProfile slows pure-Python code more
than C code: compare functions with each other, not with unprofiled
latencies.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import pstats
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

_SRC = Path(__file__).resolve().parent.parent / "src"
if importlib.util.find_spec("framerpc") is None and (_SRC / "framerpc").is_dir():
    sys.path.insert(0, str(_SRC))  # a source checkout without install

from framerpc.tools.bench import (  # noqa: E402
    processes,
    systems,
    timing,
    workloads,
)

__all__ = ["main"]


def _table(path: str, title: str, top: int, calls: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    total = stats.total_tt  # type: ignore[attr-defined]
    out.write(f"== {title}: {total * 1e6 / calls:.1f} us profiled per call\n")
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """Profile ``--calls`` calls; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", default="framerpc", choices=systems.SYSTEMS)
    parser.add_argument(
        "--workload", default="echo", choices=[w.name for w in workloads.WORKLOADS]
    )
    parser.add_argument("--transport", default="tcp", choices=("tcp", "ipc"))
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--pin", action="store_true", help="one CPU for both sides")
    parser.add_argument(
        "--wall",
        action="store_true",
        help="time in wall-clock time (default: each thread's CPU time)",
    )
    parser.add_argument("--out", default=None, help="folder for the .prof files")
    args = parser.parse_args(argv)
    workload = next(w for w in workloads.WORKLOADS if w.name == args.workload)
    out = Path(args.out or tempfile.mkdtemp(prefix="framerpc-prof-"))
    out.mkdir(parents=True, exist_ok=True)
    server_prof = str(out / f"server-{args.system}-{args.workload}.prof")
    client_prof = str(out / f"client-{args.system}-{args.workload}.prof")
    cpus = {min(os.sched_getaffinity(0))} if args.pin else None
    env = systems.system_env(args.system)
    if any(os.environ.get(key) != value for key, value in env.items()):
        # this process is the client, and framerpc chose its engine when it
        # was imported: start again with the system's environment
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        own = sys.argv[1:] if argv is None else list(argv)
        os.execv(sys.executable, [sys.executable, __file__, *own])
    if cpus:
        os.sched_setaffinity(0, cpus)
    with tempfile.TemporaryDirectory(prefix="framerpc-prof-") as workdir:
        server = processes.start_server(
            args.system,
            args.transport,
            workdir,
            cpus,
            profile=server_prof,
            profile_cpu=not args.wall,
        )
        client = systems.make_client(args.system, server.url)
        try:
            timing.sample(client, workload, 100, 10)
            with timing.profiled(client_prof, cpu=not args.wall):
                timing.sample(client, workload, args.calls, 0)
        finally:
            client.close()
            processes.stop_server(server)
    print(f"{args.system} {args.workload} over {args.transport}, {args.calls} calls")
    print(_table(client_prof, "client", args.top, args.calls))
    # the server profile also holds the warm-up calls and idle receive timeouts
    print(_table(server_prof, "server", args.top, args.calls + 110))
    print(f"profiles kept in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
