"""A camera streaming to two subscribers, one deliberately slow.

    python examples/stream_viewers.py [--seconds 3] [--fps 30]

The camera publishes 1200x1600x3 uint8 frames at ``--fps`` on an
``RPCStream``. A fast viewer and a slow writer (0.2 s per frame) each
subscribe with ``policy="latest"``: the writer gets the newest frame
whenever it is ready and the frames it could not take are dropped for it
alone, without slowing the viewer. Each prints its frames/s and drops.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import numpy as np
import zmq

import framerpc


class Camera:
    """The interface: one stream of images."""

    frames = framerpc.RPCStream(doc="1200x1600 RGB images")


class CameraServer(Camera, framerpc.RPCServer):
    """Serves ``Camera``; ``run`` publishes frames at a camera's pace."""

    def run(self, fps: float, stop: threading.Event) -> None:
        image = np.zeros((1200, 1600, 3), dtype=np.uint8)
        n = 0
        while not stop.wait(1 / fps):
            image[:] = n % 256  # the camera reuses its buffer: publish copies
            self.frames.publish(image, {"frame": n})
            n += 1


def consume(
    name: str, camera: Any, delay: float, stop: threading.Event, report: list[str]
) -> None:
    """Take frames until ``stop``; append one line of figures to ``report``."""
    received = 0
    first = last = 0.0
    with camera.frames.subscribe(policy="latest") as frames:
        while not stop.is_set():
            try:
                _frame, _info = frames.get(timeout=0.5)
            except TimeoutError:
                continue
            last = time.monotonic()
            first = first or last
            received += 1
            time.sleep(delay)  # the work done on each frame
        rate = (received - 1) / (last - first) if last > first else 0.0
        report.append(
            f"{name}: {received} frames, {rate:.1f} frames/s, {frames.dropped} dropped"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    context = zmq.Context()
    stop = threading.Event()
    report: list[str] = []
    with CameraServer(context, "tcp://127.0.0.1") as server:
        server.start()
        viewer = framerpc.connect(Camera, context, server.url)
        writer = framerpc.connect(Camera, context, server.url)
        with framerpc.closing(viewer), framerpc.closing(writer):
            threads = [
                threading.Thread(target=consume, args=(n, p, d, stop, report))
                for n, p, d in (("viewer", viewer, 0.0), ("slow writer", writer, 0.2))
            ]
            for thread in threads:
                thread.start()
            camera = threading.Thread(target=server.run, args=(args.fps, stop))
            camera.start()
            time.sleep(args.seconds)
            stop.set()
            for thread in [camera, *threads]:
                thread.join()
    context.term()
    print(f"published about {args.fps * args.seconds:.0f} frames at {args.fps:g} fps")
    for line in sorted(report, key=lambda line: line.startswith("slow")):
        print(line)


if __name__ == "__main__":
    main()
