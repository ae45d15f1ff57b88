"""Instructions per asyncio call next to the sync client's (callgrind).

    python benchmarks/aio_instructions.py [--calls 2000] [--engines compiled,pure]
                                          [--kinds echo,frame] [--transport ipc]
                                          [--jobs 2]

The client side of ``echo_instructions.py``'s measurement, for both
clients: the same device served by a native process, a client process
under ``valgrind --tool=callgrind`` (all its threads, libzmq's I/O thread
included) that makes warm-up calls of every kind, then ``N`` calls of
one kind with the sync proxy or the asyncio proxy (``framerpc.aio``, one
call at a time on ``asyncio.run``'s loop: the solo wait's case). The
difference of its totals with ``N = --calls`` and ``N = 0``, over ``N``,
is one call's cost; the server's is the same for both clients and left
out. Issue 16 compares the two: the asyncio client's overhead is Python
frames (the proxy's coroutine, the link's exchange, the solo wait, the
reader) where the sync client makes one compiled call. ``frame`` is a
256 KiB array through shared memory on ``ipc://`` (see
``echo_instructions.py``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import sys
from pathlib import Path

import echo_instructions as base

__all__ = ["count", "main"]

_CLIENTS = ("sync", "aio")


def _call_aio(url: str, kind: str, calls: int) -> None:
    """The asyncio client process: as ``echo_instructions._call``."""
    import asyncio

    import zmq

    import framerpc.aio

    _, proxy_cls = base._device()
    interface = proxy_cls.__bases__[0]

    async def main(context: zmq.Context) -> None:
        async with framerpc.aio.connect(
            interface, url, context=context, timeout=600000
        ) as proxy:
            for which, n in [(k, base._WARMUP) for k in base._KINDS] + [(kind, calls)]:
                for _ in range(n):
                    if which == "echo":
                        ok = await proxy.echo("abcdefghij") == "abcdefghij"
                    elif which == "frame":
                        ok = (await proxy.frame())[0].nbytes == base._FRAME
                    else:
                        ok = await proxy.small(2, 3, scale=0.5) == {
                            "sum": 5,
                            "scale": 0.5,
                        }
                    if not ok:
                        raise AssertionError(which)
            await proxy.stop_server()

    context = zmq.Context()
    try:
        asyncio.run(main(context))
    finally:
        context.term()


def count(
    src: Path, pure: bool, transport: str, client: str, kind: str, calls: int
) -> int:
    """Total instructions (callgrind, all threads) of the ``client``
    ("sync" or "aio") process in one run with framerpc from ``src``."""
    worker = [sys.executable, __file__, "--worker", client]
    return base.count(src, pure, transport, "client", kind, calls, client=worker)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--transport", choices=("ipc", "tcp"), default="ipc")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--engines", default="compiled,pure")
    parser.add_argument("--kinds", default="echo,frame", help="of echo,small,frame")
    parser.add_argument("--jobs", type=int, default=2, help="valgrinds at a time")
    args = parser.parse_args(argv)
    if args.worker:
        client, url, kind, calls = args.worker
        (_call_aio if client == "aio" else base._call)(url, kind, int(calls))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    kinds = args.kinds.split(",")
    print(f"client instructions per call, {args.transport}, {args.calls} calls")
    for engine in args.engines.split(","):
        runs = [
            (c, k, n)
            for c in _CLIENTS
            for k, n in [("echo", 0)] + [(k, args.calls) for k in kinds]
        ]
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            totals = dict(
                zip(
                    runs,
                    pool.map(
                        lambda run, pure=engine == "pure": count(
                            base._SRC, pure, args.transport, *run
                        ),
                        runs,
                    ),
                    strict=True,
                )
            )
        for kind in kinds:
            per = {
                c: (totals[(c, kind, args.calls)] - totals[(c, "echo", 0)]) / args.calls
                for c in _CLIENTS
            }
            ratio = per["aio"] / per["sync"]
            print(
                f"{engine:9s} {kind:6s} sync {per['sync']:8.0f}  "
                f"asyncio {per['aio']:8.0f}  asyncio / sync {ratio:.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
