"""RPCStream frames/s through the asyncio subscription vs the sync one (not a test).

    python benchmarks/bench_aio_streams.py [--seconds 3] [--rounds 3]
                                           [--policy queue] [--json]

For 1 MiB frames (1024 x 1024 uint8) and 24.9 MB frames (2160 x 3840 x 3
uint8, a 4K RGB image), over tcp loopback, with the server and each
subscriber in its own process (spawned): the server publishes back to
back (the same array lent, ``copy=False``) while its subscriber has fewer
than 8 frames waiting, so that the consumer's pace decides the rate; the
subscriber is a sync proxy's ``Subscription`` (``for frame, info in
sub``) or an asyncio proxy's ``AsyncSubscription`` (``async for frame,
info in sub``), ``policy="queue", queue=8`` by default (``--policy
latest`` also works). Each round subscribes, skips 3 frames, counts the
frames received for ``--seconds`` and unsubscribes; rounds alternate
between the two subscriber processes (sync first, then asyncio, then the
reverse order), so that both see the same load. Prints frames/s (median
of the rounds), the dropped frames, and asyncio/sync.

The 2-core machines the project runs on share their CPUs with other
work: read the figures as ratios and orders of magnitude.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

_SRC = Path(__file__).resolve().parent.parent / "src"
if importlib.util.find_spec("framerpc") is None and (_SRC / "framerpc").is_dir():
    sys.path.insert(0, str(_SRC))  # a source checkout without install

import numpy as np  # noqa: E402
import zmq  # noqa: E402

import framerpc  # noqa: E402
import framerpc.aio  # noqa: E402

SIZES = {"1 MiB": (1024, 1024), "24.9 MB": (2160, 3840, 3)}
_WAIT_S = 30  # ceiling of any wait: a hang, not a measurement
_SKIP = 3  # frames skipped at the start of a round (connection warm-up)


class Bench:
    """The benchmark device: one stream."""

    frames = framerpc.RPCStream()


class BenchServer(Bench, framerpc.RPCServer):
    pass


def stream_server(conn: Any, shape: tuple) -> None:
    """Publish while a subscriber has room (fewer than 8 frames waiting),
    until told to stop."""
    ctx = zmq.Context()
    server = BenchServer(ctx, "tcp://127.0.0.1")
    server.start()
    image = np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)
    conn.send(server.url)
    frames = server.frames
    count = 0
    while not conn.poll(0):
        stats = frames.stats
        if stats["subscribers"] == 0 or stats["pending"] >= 8:
            time.sleep(0.0002)
            continue
        frames.publish(image, {"n": count}, copy=False)
        count += 1
    conn.recv()
    server.close()
    ctx.term()


def _result(received: int, dropped: int, elapsed: float, cpu: float) -> dict:
    return {
        "frames_per_s": received / elapsed if elapsed > 0 else 0.0,
        "received": received,
        "dropped": dropped,
        # the subscriber process's CPU (all its threads) per frame: less
        # sensitive to the machine's load than frames/s
        "cpu_us_per_frame": 1e6 * cpu / received if received else None,
    }


def sync_subscriber(conn: Any, url: str, policy: str, seconds: float) -> None:
    ctx = zmq.Context()
    proxy = framerpc.connect(Bench, ctx, url, protocol="native")
    kwargs = {"queue": 8} if policy == "queue" else {}
    while conn.recv() == "round":
        with proxy.frames.subscribe(policy=policy, **kwargs) as sub:  # type: ignore[arg-type]
            for _ in range(_SKIP):
                sub.get(_WAIT_S)
            dropped0, received = sub.dropped, 0
            start, cpu0 = time.perf_counter(), time.process_time()
            while time.perf_counter() - start < seconds:
                frame, _ = sub.get(_WAIT_S)
                frame[0]
                received += 1
            elapsed = time.perf_counter() - start
            conn.send(
                _result(
                    received,
                    sub.dropped - dropped0,
                    elapsed,
                    time.process_time() - cpu0,
                )
            )
    proxy.close()
    ctx.term()


def aio_subscriber(conn: Any, url: str, policy: str, seconds: float) -> None:
    async def rounds() -> None:
        ctx = zmq.Context()
        async with framerpc.aio.connect(Bench, url, context=ctx) as proxy:
            kwargs = {"queue": 8} if policy == "queue" else {}
            while conn.recv() == "round":
                async with proxy.frames.subscribe(policy=policy, **kwargs) as sub:
                    for _ in range(_SKIP):
                        await sub.get(_WAIT_S)
                    dropped0, received = sub.dropped, 0
                    start, cpu0 = time.perf_counter(), time.process_time()
                    async for frame, _ in sub:
                        frame[0]
                        received += 1
                        if time.perf_counter() - start >= seconds:
                            break
                    elapsed = time.perf_counter() - start
                    conn.send(
                        _result(
                            received,
                            sub.dropped - dropped0,
                            elapsed,
                            time.process_time() - cpu0,
                        )
                    )
        ctx.term()

    asyncio.run(rounds())


def _spawn(target: Any, *args: Any) -> tuple[Any, Any]:
    parent, child = mp.Pipe()
    process = mp.get_context("spawn").Process(target=target, args=(child, *args))
    process.start()
    return process, parent


def run_size(shape: tuple, policy: str, seconds: float, rounds: int) -> dict:
    server, sconn = _spawn(stream_server, shape)
    url = sconn.recv()
    subs = {
        "sync": _spawn(sync_subscriber, url, policy, seconds),
        "asyncio": _spawn(aio_subscriber, url, policy, seconds),
    }
    results: dict[str, list[dict]] = {"sync": [], "asyncio": []}
    try:
        for index in range(rounds):
            order = ["sync", "asyncio"] if index % 2 == 0 else ["asyncio", "sync"]
            for kind in order:
                conn = subs[kind][1]
                conn.send("round")
                results[kind].append(conn.recv())
    finally:
        for process, conn in subs.values():
            conn.send("quit")
            process.join(_WAIT_S)
        sconn.send("stop")
        server.join(_WAIT_S)
    summary: dict[str, Any] = {"rounds": results}
    for kind, rows in results.items():
        summary[kind] = statistics.median(r["frames_per_s"] for r in rows)
        summary[kind + "_dropped"] = sum(r["dropped"] for r in rows)
        summary[kind + "_cpu_us"] = statistics.median(
            r["cpu_us_per_frame"] or 0.0 for r in rows
        )
    summary["ratio"] = summary["asyncio"] / summary["sync"] if summary["sync"] else None
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per round")
    parser.add_argument("--rounds", type=int, default=3, help="per subscriber")
    parser.add_argument("--policy", choices=["queue", "latest"], default="queue")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    table = {
        label: run_size(shape, args.policy, args.seconds, args.rounds)
        for label, shape in SIZES.items()
    }
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    policy = "queue=8" if args.policy == "queue" else "latest"
    print(
        f"stream frames/s, tcp loopback, {policy}, publisher back to back, "
        f"median of {args.rounds} rounds of {args.seconds:g} s"
    )
    print("(subscriber CPU per frame in brackets)")
    print("frame      sync subscription   asyncio subscription   asyncio/sync")
    for label, row in table.items():
        sync = f"{row['sync']:.1f} ({row['sync_cpu_us']:.0f} us)"
        aio = f"{row['asyncio']:.1f} ({row['asyncio_cpu_us']:.0f} us)"
        print(f"{label:<10} {sync:<19} {aio:<22} {row['ratio']:.2f}")
    for label, row in table.items():
        print(
            f"{label}: frames dropped: sync {row['sync_dropped']}, "
            f"asyncio {row['asyncio_dropped']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
