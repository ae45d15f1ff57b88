"""RPCStream throughput and latency over tcp loopback (not a test).

    python benchmarks/bench_streams.py [--seconds 5] [--fps 20]
                                       [--subscribers 1,2,4] [--json]

Two measurements, each with the server and every subscriber in its own
process (spawned), so that no two share a GIL:

* ``latest``: 24.9 MB frames (2160 x 3840 x 3 uint8, a 4K RGB image)
  published at ``--fps`` to 1, 2 and 4 ``latest`` subscribers: frames/s
  each subscriber received, the frames dropped for it, and the latency
  from ``publish`` to receipt (``time.time()`` at receipt minus the
  frame's ``info["t"]``; same host, same clock), median and 90th
  percentile. Next to it, raw pyzmq PUB/SUB sending the same frames as
  two-frame multipart messages (``copy=False``, no CONFLATE, default
  high-water marks), timed the same way; the publisher's RSS growth
  (peak while publishing) is shown for both. Every frame is a new
  buffer, as from a camera (framerpc copies by default, raw sends a
  copy). The ``stall`` row has one latest subscriber that never reads.
* ``queue``: 5.76 MB frames (1200 x 1600 x 3 uint8) published back to
  back to one ``queue=8`` subscriber, against the same frames fetched
  with a buffer method called back to back by one proxy: frames/s.

The 2-core machines the project runs on share their CPUs with other
work: read the figures as orders of magnitude and ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import resource
import statistics
import struct
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

FRAME_4K = (2160, 3840, 3)  # 24.9 MB
FRAME_QUEUE = (1200, 1600, 3)  # 5.76 MB
_WAIT_S = 30  # ceiling of any wait: a hang, not a measurement


class Bench:
    """The benchmark device: a stream and a buffer method."""

    frames = framerpc.RPCStream()

    def grab(self) -> tuple[Any, dict]:
        """The current frame (buffer method)."""
        raise NotImplementedError


class BenchServer(Bench, framerpc.RPCServer):
    def __init__(self, ctx: zmq.Context, url: str, shape: tuple[int, ...]) -> None:
        super().__init__(ctx, url)
        self.image = np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)

    @framerpc.RPCServer.register_method_buffer(timeout=_WAIT_S * 1000)
    def grab(self) -> tuple[Any, dict]:
        return self.image, {"t": time.time()}


def _rss_mb() -> float:
    """This process's resident memory now (MB; the peak where /proc lacks)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / 1e6
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _publish_paced(
    publish: Any, image: np.ndarray, fps: float, seconds: float
) -> tuple[int, float]:
    """Publish ``image`` at ``fps`` (0: back to back) for ``seconds``;
    returns the count and the peak growth of the resident memory (MB)."""
    start = time.perf_counter()
    count = 0
    rss0 = peak = _rss_mb()
    while time.perf_counter() - start < seconds:
        publish(image, count)
        peak = max(peak, _rss_mb())
        count += 1
        if fps > 0:
            delay = start + count / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    return count, peak - rss0


def stream_server(conn: Any, shape: tuple, fps: float, seconds: float) -> None:
    ctx = zmq.Context()
    server = BenchServer(ctx, "tcp://127.0.0.1", shape)
    server.start()
    conn.send(server.url)
    conn.recv()  # subscribers ready

    def publish(image: np.ndarray, n: int) -> None:
        # copied (the default): a new buffer per frame, as from a camera
        server.frames.publish(image, {"n": n})

    count, growth = _publish_paced(publish, server.image, fps, seconds)
    server.frames.publish(server.image, {"last": True}, copy=False)
    conn.send({"published": count, "rss_growth_mb": growth})
    conn.recv()  # subscribers done
    server.close()
    ctx.term()


def stream_subscriber(
    conn: Any, url: str, policy: str, queue: int | None, stall: bool
) -> None:
    ctx = zmq.Context()
    proxy = framerpc.connect(Bench, ctx, url, protocol="native")
    kwargs = {"queue": queue} if queue else {}
    sub = proxy.frames.subscribe(policy=policy, **kwargs)  # type: ignore[arg-type]
    sub.subscribed.wait(_WAIT_S)
    conn.send("ready")
    latencies: list[float] = []
    first = last = 0.0
    if stall:  # never reads: the server must not hold more for it
        conn.recv()
    else:
        while True:
            frame, info = sub.get(_WAIT_S)
            now = time.time()
            if info.get("last"):
                break
            latencies.append(now - info["t"])
            last = time.perf_counter()
            first = first or last
            del frame
    received = len(latencies)
    rate = (received - 1) / (last - first) if received > 1 and last > first else 0.0
    conn.send(
        {
            "frames_per_s": rate,
            "received": received,
            "dropped": sub.dropped,
            "latency_ms_median": 1000 * statistics.median(latencies)
            if latencies
            else None,
            "latency_ms_p90": 1000 * _p90(latencies) if latencies else None,
        }
    )
    sub.close()
    proxy.close()
    ctx.term()


def raw_publisher(conn: Any, shape: tuple, fps: float, seconds: float) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    image = np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)
    conn.send(f"tcp://127.0.0.1:{port}")
    conn.recv()
    time.sleep(0.5)  # PUB/SUB slow joiner: let the subscriptions arrive

    def publish(image: np.ndarray, n: int) -> None:
        # a new buffer per frame, as from a camera (and as framerpc copies)
        frame = image.copy()
        sock.send_multipart([struct.pack("<dq", time.time(), n), frame], copy=False)

    count, growth = _publish_paced(publish, image, fps, seconds)
    sock.send_multipart([struct.pack("<dq", time.time(), -1), b""])
    conn.send({"published": count, "rss_growth_mb": growth})
    conn.recv()
    sock.close(linger=0)
    ctx.term()


def raw_subscriber(conn: Any, url: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(url)
    conn.send("ready")
    latencies: list[float] = []
    first = last = 0.0
    expected = 0
    dropped = 0
    while sock.poll(_WAIT_S * 1000):
        head, frame = sock.recv_multipart(copy=False)
        now = time.time()
        stamp, n = struct.unpack("<dq", head.bytes)
        if n < 0:
            break
        dropped += n - expected
        expected = n + 1
        np.frombuffer(frame.buffer, np.uint8)
        latencies.append(now - stamp)
        last = time.perf_counter()
        first = first or last
    received = len(latencies)
    conn.send(
        {
            "frames_per_s": (received - 1) / (last - first) if last > first else 0.0,
            "received": received,
            "dropped": dropped,
            "latency_ms_median": 1000 * statistics.median(latencies)
            if latencies
            else None,
            "latency_ms_p90": 1000 * _p90(latencies) if latencies else None,
        }
    )
    sock.close(linger=0)
    ctx.term()


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def _spawn(target: Any, *args: Any) -> tuple[Any, Any]:
    parent, child = mp.Pipe()
    process = mp.get_context("spawn").Process(target=target, args=(child, *args))
    process.start()
    return process, parent


def run_fanout(
    kind: str, subscribers: int, fps: float, seconds: float, stall: bool
) -> dict:
    """One row: a publisher process and ``subscribers`` subscriber processes."""
    if kind == "framerpc":
        server, sconn = _spawn(stream_server, FRAME_4K, fps, seconds)
    else:
        server, sconn = _spawn(raw_publisher, FRAME_4K, fps, seconds)
    url = sconn.recv()
    subs = []
    for index in range(subscribers):
        if kind == "framerpc":
            subs.append(
                _spawn(stream_subscriber, url, "latest", None, stall and index == 0)
            )
        else:
            subs.append(_spawn(raw_subscriber, url))
    for _, conn in subs:
        conn.recv()
    sconn.send("go")
    published = sconn.recv()
    results = []
    for index, (_, conn) in enumerate(subs):
        if stall and index == 0 and kind == "framerpc":
            conn.send("stop")
        results.append(conn.recv())
    sconn.send("done")
    for process, _ in [(server, sconn), *subs]:
        process.join(_WAIT_S)
    return {
        "kind": kind,
        "subscribers": subscribers,
        "stall": stall,
        **published,
        "per_subscriber": results,
    }


def queue_server(conn: Any, shape: tuple, seconds: float) -> None:
    """Publish back to back, but only while the subscriber's queue has
    room: a producer as fast as the consumer, which does not spin on
    frames that would be dropped (and steal the hub's CPU)."""
    ctx = zmq.Context()
    server = BenchServer(ctx, "tcp://127.0.0.1", shape)
    server.start()
    conn.send(server.url)
    conn.recv()
    rss0 = _rss_mb()
    frames = server.frames
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        while frames.stats["pending"] >= 8:
            time.sleep(0.0002)
        frames.publish(server.image, {"n": count}, copy=False)
        count += 1
    frames.publish(server.image, {"last": True}, copy=False)
    conn.send({"published": count, "rss_growth_mb": _rss_mb() - rss0})
    conn.recv()
    server.close()
    ctx.term()


def buffer_client(conn: Any, url: str, seconds: float) -> None:
    ctx = zmq.Context()
    proxy = framerpc.connect(Bench, ctx, url, protocol="native")
    proxy.grab()
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        proxy.grab()
        count += 1
    conn.send({"frames_per_s": count / (time.perf_counter() - start)})
    proxy.close()
    ctx.term()


def run_queue(seconds: float) -> dict:
    server, sconn = _spawn(queue_server, FRAME_QUEUE, seconds)
    url = sconn.recv()
    sub, conn = _spawn(stream_subscriber, url, "queue", 8, False)
    conn.recv()
    sconn.send("go")
    published = sconn.recv()
    stream = conn.recv()
    sub.join(_WAIT_S)
    client, cconn = _spawn(buffer_client, url, seconds)
    buffer = cconn.recv()
    client.join(_WAIT_S)
    sconn.send("done")
    server.join(_WAIT_S)
    return {
        "stream_queue8": {**published, **stream},
        "buffer_method": buffer,
        "ratio": stream["frames_per_s"] / buffer["frames_per_s"]
        if buffer["frames_per_s"]
        else None,
    }


def _cell(r: dict) -> str:
    latency = f"{_fmt(r['latency_ms_median'])}/{_fmt(r['latency_ms_p90'])}"
    return f"{_fmt(r['frames_per_s'])}/s, {r['dropped']}, {latency}"


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--fps", type=float, default=20.0, help="camera pace of the fan-out"
    )
    parser.add_argument("--subscribers", default="1,2,4")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    rows = []
    for count in [int(c) for c in args.subscribers.split(",")]:
        for kind in ("framerpc", "raw"):
            rows.append(run_fanout(kind, count, args.fps, args.seconds, False))
    rows.append(run_fanout("framerpc", 2, args.fps, args.seconds, True))
    queue = run_queue(args.seconds)
    if args.json:
        print(json.dumps({"fanout": rows, "queue": queue}, indent=1))
        return 0
    print(f"24.9 MB frames at {args.fps:g} fps for {args.seconds:g} s, tcp loopback")
    print("kind         subs published RSS+MB  per subscriber:")
    print(
        "                                     frames/s, dropped, latency median/p90 ms"
    )
    for row in rows:
        label = row["kind"] + (" stall" if row["stall"] else "")
        cells = "; ".join(_cell(r) for r in row["per_subscriber"])
        head = f"{label:<15}{row['subscribers']:>2} {row['published']:>6}"
        print(f"{head} {row['rss_growth_mb']:>8.0f}   {cells}")
    s, b = queue["stream_queue8"], queue["buffer_method"]
    print("5.76 MB frames back to back:")
    lost = f"{s['dropped']} dropped of {s['published']}"
    print(f"  stream queue=8:  {s['frames_per_s']:.1f} frames/s ({lost})")
    print(f"  buffer method:   {b['frames_per_s']:.1f} frames/s")
    print(f"  ratio:           {_fmt(queue['ratio'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
