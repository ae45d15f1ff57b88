"""Instructions per echo call, counted by valgrind (deterministic, not timed).

    python benchmarks/echo_instructions.py [--baseline PATH] [--transport ipc]
                                           [--calls 5000] [--engines compiled,pure]
                                           [--kinds echo,small,frame] [--jobs 2]

Timing runs on a loaded 2-CPU VM cannot show a 3% change of a 50 us call;
an instruction count can. Each measurement runs one process under
``valgrind --tool=callgrind`` holding a server (its serving thread) and a
client connected to it (``ipc://`` in a temporary folder by default, so a
same-host client shakes hands for shared memory as it would in use;
``inproc://`` leaves that out), makes warm-up calls of every kind, then
``N`` calls of one kind. The difference of the totals (every thread of
the process: client, serving thread, libzmq's I/O threads) of a run with
``N = --calls`` and one with ``N = 0``, divided by ``--calls``, is the
cost of one call on both sides, start-up and warm-up cancelled out.
The totals of identical runs differ by a few million instructions (start-up;
not per call): with 5000 calls that is under 1k per call, about 1% of an
echo call; run twice to see the spread.

Kinds: ``echo`` (a 10-character str there and back, a JSON method),
``small`` (two ints and a keyword in, a small dict out) and, with
``--kinds``, ``frame``: a buffer method returning the same plain 256 KiB
uint8 array each call (``SocketOptions.shm_threshold``: through shared
memory, one copy, where the checkout has it), which the client drops
before its next call. Its count less echo's is what one frame adds: the
copy (glibc's ``memcpy``, about 0.13 instructions a byte here) and the
shared-memory bookkeeping of both sides.

``--baseline PATH`` also counts another checkout (its ``src`` folder, with
its extensions built: ``python setup.py build_ext --inplace -q`` there),
imported through ``PYTHONPATH``; the table shows both and their ratio.
Issue 14's target: echo and small calls within 3% of the checkout before
shared memory (``git worktree add /tmp/base922 922e72a``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

__all__ = ["count", "main"]

_SRC = Path(__file__).resolve().parent.parent / "src"
_KINDS = ("echo", "small", "frame")
_FRAME = 256 << 10
_WARMUP = 300
_TOTALS = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def _worker(transport: str, kind: str, calls: int) -> None:
    """One measured process: a server thread and a client, ``_WARMUP`` calls
    of each kind then ``calls`` of ``kind`` (imports framerpc from
    ``PYTHONPATH``)."""
    import numpy as np
    import zmq

    from framerpc.client import RPCClient
    from framerpc.server import RPCServer

    class Device:
        def echo(self, text: str) -> str:
            raise NotImplementedError

        def small(self, a: int, b: int, scale: float = 1.0) -> dict:
            raise NotImplementedError

        def frame(self) -> tuple:
            raise NotImplementedError

    class Server(Device, RPCServer):
        def __init__(self, context: zmq.Context, url: str) -> None:
            self._frame = np.arange(_FRAME, dtype=np.uint32).astype(np.uint8)
            RPCServer.__init__(self, context, url)

        @RPCServer.register_method_json
        def echo(self, text: str) -> str:
            return text

        @RPCServer.register_method_json
        def small(self, a: int, b: int, scale: float = 1.0) -> dict:
            return {"sum": a + b, "scale": scale}

        @RPCServer.register_method_buffer
        def frame(self) -> tuple:
            return self._frame, {}

    @RPCClient.register_interface(Device)
    class Proxy(Device, RPCClient):
        pass

    folder = tempfile.mkdtemp()
    url = f"ipc://{folder}/echo.sock" if transport == "ipc" else "inproc://echo"
    context = zmq.Context()
    server = Server(context, url)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    proxy = Proxy(context, url, timeout=60000)
    try:
        for which, n in [(k, _WARMUP) for k in _KINDS] + [(kind, calls)]:
            if which == "echo":
                for _ in range(n):
                    if proxy.echo("abcdefghij") != "abcdefghij":
                        raise AssertionError("echo")
            elif which == "frame":
                for _ in range(n):
                    if proxy.frame()[0].nbytes != _FRAME:
                        raise AssertionError("frame")
            else:
                for _ in range(n):
                    if proxy.small(2, 3, scale=0.5) != {"sum": 5, "scale": 0.5}:
                        raise AssertionError("small")
    finally:
        proxy.close()
        server.stop_server()
        thread.join()
        context.term()
        shutil.rmtree(folder, ignore_errors=True)


def count(src: Path, pure: bool, transport: str, kind: str, calls: int) -> int:
    """Total instructions (callgrind, all threads) of one worker run with
    framerpc imported from ``src``."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "callgrind.out")
        # one OpenBLAS thread: its idle workers' spinning is counted too
        env = dict(
            os.environ,
            PYTHONPATH=str(src),
            PYTHONHASHSEED="0",
            OPENBLAS_NUM_THREADS="1",
        )
        env.pop("FRAMERPC_PURE", None)
        if pure:
            env["FRAMERPC_PURE"] = "1"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--worker",
            transport,
            kind,
            str(calls),
        ]
        subprocess.run(command, env=env, check=True, capture_output=True)
        match = _TOTALS.search(Path(out).read_bytes())
    if match is None:
        raise RuntimeError("no totals in callgrind's output")
    return int(match[1])


def per_call(
    src: Path, pure: bool, transport: str, calls: int, kinds: list[str], jobs: int
) -> dict[str, float]:
    """Instructions of one call of each of ``kinds``, on both sides: the
    difference of a run with ``calls`` of that kind and one with none
    (``jobs`` runs at a time)."""
    runs = [("echo", 0)] + [(kind, calls) for kind in kinds]
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        totals = list(pool.map(lambda run: count(src, pure, transport, *run), runs))
    return {
        kind: (total - totals[0]) / calls
        for kind, total in zip(kinds, totals[1:], strict=True)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", type=Path, help="another checkout's folder")
    parser.add_argument("--transport", choices=("ipc", "inproc"), default="ipc")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--engines", default="compiled,pure")
    parser.add_argument("--kinds", default="echo,small", help="and/or frame")
    parser.add_argument("--jobs", type=int, default=2, help="valgrinds at a time")
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    checkouts = {"this": _SRC}
    if args.baseline is not None:
        base = args.baseline.resolve()
        checkouts["baseline"] = base / "src" if (base / "src").is_dir() else base
    print(
        f"instructions per call, client and server together, {args.transport}, "
        f"{args.calls} calls; ratio = this / baseline"
    )
    for engine in args.engines.split(","):
        kinds = args.kinds.split(",")
        rows = {
            name: per_call(
                src, engine == "pure", args.transport, args.calls, kinds, args.jobs
            )
            for name, src in checkouts.items()
        }
        for kind in kinds:
            cells = "  ".join(f"{name} {row[kind]:9.0f}" for name, row in rows.items())
            ratio = ""
            if "baseline" in rows:
                ratio = f"  ratio {rows['this'][kind] / rows['baseline'][kind]:.4f}"
            print(f"{engine:9s} {kind:6s} {cells}{ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
