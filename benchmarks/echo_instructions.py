"""Instructions per echo call, counted by valgrind (deterministic, not timed).

    python benchmarks/echo_instructions.py [--baseline PATH] [--transport ipc]
                                           [--calls 5000] [--engines compiled,pure]
                                           [--kinds echo,small,frame,pool,array]
                                           [--jobs 2]

Timing runs on a loaded 2-CPU VM cannot show a 3% change of a 50 us call;
an instruction count can. A server process and a client process talk over
``ipc://`` (a temporary folder; or tcp loopback), so a same-host client
shakes hands for shared memory as it would in use. One of the two runs
under ``valgrind --tool=callgrind`` (all its threads, libzmq's I/O thread
included), the other natively. The client makes warm-up calls of every
kind, then ``N`` calls of one kind, then stops the server. The difference
of the counted side's totals of a run with ``N = --calls`` and one with
``N = 0``, divided by ``--calls``, is that side's cost of one call,
start-up and warm-up cancelled out; client and server are counted in
separate runs and added.

One Python thread per process on purpose: with client and server in one
process their contention for the GIL (a 5 ms switch interval, in wall
time, which valgrind stretches 50-100x) made identical runs differ by
several percent. What is left: the totals of identical runs differ by a
few million instructions (start-up, the server's idle wake-ups while the
client starts), under 1k per call with 5000 calls, about 1% of an echo
call; run twice to see the spread.

Kinds: ``echo`` (a 10-character str there and back, a JSON method),
``small`` (two ints and a keyword in, a small dict out) and, with
``--kinds``, ``frame``: a buffer method returning the same plain 256 KiB
uint8 array each call (``SocketOptions.shm_threshold``: through shared
memory, one copy, where the checkout has it), which the client drops
before its next call. Its count less echo's is what one frame adds: the
copy (glibc's ``memcpy``: at this size a ``rep movsb``, which callgrind
counts as one instruction a byte, 262k; ``--keep`` and
``callgrind_annotate`` show it apart) and the shared-memory bookkeeping
of both sides (measured at f9aa627: about 62k client, 51k server; with
the compiled ``wire._shmpath``, 2000 calls: 17k client, 44k server,
against 61k and 55k at 53c895a in the same run).

``pool`` and ``array`` are the bench's same-host fetches (``framerpc
bench``'s grab_pooled and grab): a 24.9 MB ``FramePool`` frame referred
to where it lies, and a plain 5.76 MB array copied once into shared
memory. Each is counted against a run of the same warm-ups (echo, small
and a few of its own kind), not echo's: the copy worker's spin varies
under valgrind by thousands of instructions a copy. Its figure is the
whole call (compare it with echo's); use a few hundred calls, an array
call is millions of instructions of memcpy.

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
from pathlib import Path
from typing import Any

__all__ = ["count", "main"]

_SRC = Path(__file__).resolve().parent.parent / "src"
_KINDS = ("echo", "small", "frame")
#: Kinds of megabytes (``--kinds``), warmed up alone: the copy worker's
#: spin (``ext/_parcopy.h``) varies under valgrind by thousands of
#: instructions a copy, which other kinds' warm-ups would add.
_BIG = ("pool", "array")
_FRAME = 256 << 10
#: The bench's 24.9 MB frame (``pool``, a FramePool's) and its 5.76 MB
#: one (``array``, a plain array: one copy into shared memory).
_POOL_SHAPE = (2160, 3840, 3)
_ARRAY_SHAPE = (1200, 800, 3)
_WARMUP = 300
_TOTALS = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def _warmups(kind: str) -> list[tuple[str, int]]:
    """The warm-up calls before ``calls`` of ``kind``: every kind of
    ``_KINDS``, or for a big kind echo, small and a few of it (a copy of
    megabytes is millions of instructions under valgrind)."""
    if kind in _BIG:
        return [("echo", _WARMUP), ("small", _WARMUP), (kind, 30)]
    return [(k, _WARMUP) for k in _KINDS]


def _device() -> tuple[type, type]:
    """The measured device's server and proxy classes (imports framerpc
    from ``PYTHONPATH``)."""
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

        def pooled(self) -> tuple:
            raise NotImplementedError

        def array(self) -> tuple:
            raise NotImplementedError

    class Server(Device, RPCServer):
        def __init__(self, context: zmq.Context, url: str) -> None:
            self._frame = np.arange(_FRAME, dtype=np.uint32).astype(np.uint8)
            self._array = np.ones(_ARRAY_SHAPE, np.uint16)
            self._pool: Any = None  # made at the first pooled call (100 MB)
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

        @RPCServer.register_method_buffer
        def pooled(self) -> tuple:
            if self._pool is None:  # as the bench's grab_pooled
                from framerpc import FramePool

                self._pool = FramePool(_POOL_SHAPE, np.uint8, 4)
            frame = self._pool.acquire(timeout=5)
            return frame, {"shape": list(frame.shape), "dtype": frame.dtype.str}

        @RPCServer.register_method_buffer
        def array(self) -> tuple:
            frame = self._array
            return frame, {"shape": list(frame.shape), "dtype": frame.dtype.str}

    @RPCClient.register_interface(Device)
    class Proxy(Device, RPCClient):
        pass

    return Server, Proxy


def _serve(url: str) -> None:
    """The server process: bind ``url``, print the bound URL, serve until
    the client's STOP_SERVER."""
    import zmq

    server_cls, _ = _device()
    context = zmq.Context()
    server = server_cls(context, url)
    print(server.url, flush=True)
    server.serve_forever()
    context.term()


def _call(url: str, kind: str, calls: int) -> None:
    """The client process: warm-up calls of every kind, ``calls`` of
    ``kind``, then stop the server."""
    import zmq

    _, proxy_cls = _device()
    context = zmq.Context()
    proxy = proxy_cls(context, url, timeout=600000)
    try:
        for which, n in [*_warmups(kind), (kind, calls)]:
            if which == "echo":
                for _ in range(n):
                    if proxy.echo("abcdefghij") != "abcdefghij":
                        raise AssertionError("echo")
            elif which == "frame":
                for _ in range(n):
                    if proxy.frame()[0].nbytes != _FRAME:
                        raise AssertionError("frame")
            elif which in ("pool", "array"):
                fetch = proxy.pooled if which == "pool" else proxy.array
                shape = _POOL_SHAPE if which == "pool" else _ARRAY_SHAPE
                for _ in range(n):
                    if fetch()[0].shape != shape:
                        raise AssertionError(which)
            else:
                for _ in range(n):
                    if proxy.small(2, 3, scale=0.5) != {"sum": 5, "scale": 0.5}:
                        raise AssertionError("small")
        proxy.stop_server()
    finally:
        proxy.close()
        context.term()


def count(
    src: Path,
    pure: bool,
    transport: str,
    side: str,
    kind: str,
    calls: int,
    keep: Path | None = None,
    client: list[str] | None = None,
) -> int:
    """Total instructions (callgrind, all threads) of ``side`` ("client"
    or "server") in one run of a pair with framerpc imported from ``src``;
    callgrind's output is copied into ``keep`` when given. ``client`` is
    the client worker's command before its url, kind and calls (default:
    this module's sync client)."""
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
        grind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        url = f"ipc://{folder}/echo.sock" if transport == "ipc" else "tcp://127.0.0.1"
        serve = [sys.executable, __file__, "--worker", "server", url]
        server = subprocess.Popen(
            (grind if side == "server" else []) + serve,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            bound = server.stdout.readline().strip()
            if not bound:
                raise RuntimeError("the server process did not start")
            if client is None:
                client = [sys.executable, __file__, "--worker", "client"]
            call = [*client, bound, kind]
            subprocess.run(
                (grind if side == "client" else []) + call + [str(calls)],
                env=env,
                check=True,
                capture_output=True,
            )
            server.wait(600)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            if server.stdout is not None:
                server.stdout.close()
        if keep is not None:
            engine = "pure" if pure else "compiled"
            name = f"{src.parent.name}-{engine}-{side}-{kind}-{calls}.callgrind"
            shutil.copyfile(out, keep / name)
        match = _TOTALS.search(Path(out).read_bytes())
    if match is None:
        raise RuntimeError("no totals in callgrind's output")
    return int(match[1])


def per_call(
    src: Path,
    pure: bool,
    transport: str,
    calls: int,
    kinds: list[str],
    jobs: int,
    keep: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Instructions of one call of each of ``kinds``, by side ("client",
    "server"): the difference of a run with ``calls`` of that kind and one
    with none (``jobs`` runs at a time)."""
    zero = {kind: kind if kind in _BIG else "echo" for kind in kinds}  # same warm-ups
    runs = [
        (side, kind, n)
        for side in ("client", "server")
        for kind, n in dict.fromkeys(
            [(zero[k], 0) for k in kinds] + [(k, calls) for k in kinds]
        )
    ]
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        totals = dict(
            zip(
                runs,
                pool.map(lambda run: count(src, pure, transport, *run, keep), runs),
                strict=True,
            )
        )
    return {
        kind: {
            side: (totals[(side, kind, calls)] - totals[(side, zero[kind], 0)]) / calls
            for side in ("client", "server")
        }
        for kind in kinds
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", type=Path, help="another checkout's folder")
    parser.add_argument("--transport", choices=("ipc", "tcp"), default="ipc")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--engines", default="compiled,pure")
    parser.add_argument("--kinds", default="echo,small", help="and/or frame,pool,array")
    parser.add_argument("--jobs", type=int, default=2, help="valgrinds at a time")
    parser.add_argument(
        "--keep", type=Path, help="keep callgrind's outputs here (callgrind_annotate)"
    )
    args = parser.parse_args(argv)
    if args.worker:
        if args.worker[0] == "server":
            _serve(args.worker[1])
        else:
            _call(args.worker[1], args.worker[2], int(args.worker[3]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    checkouts = {"this": _SRC}
    if args.baseline is not None:
        base = args.baseline.resolve()
        checkouts["baseline"] = base / "src" if (base / "src").is_dir() else base
    print(
        f"instructions per call (client + server), {args.transport}, "
        f"{args.calls} calls; ratio = this / baseline"
    )
    kinds = args.kinds.split(",")
    for engine in args.engines.split(","):
        rows = {
            name: per_call(
                src,
                engine == "pure",
                args.transport,
                args.calls,
                kinds,
                args.jobs,
                args.keep,
            )
            for name, src in checkouts.items()
        }
        for kind in kinds:
            cells, totals = [], {}
            for name, row in rows.items():
                client, server = row[kind]["client"], row[kind]["server"]
                totals[name] = client + server
                cells.append(
                    f"{name} {client:7.0f} + {server:7.0f} = {totals[name]:7.0f}"
                )
            ratio = ""
            if "baseline" in totals:
                ratio = f"  ratio {totals['this'] / totals['baseline']:.4f}"
            print(f"{engine:9s} {kind:6s} {'  '.join(cells)}{ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
