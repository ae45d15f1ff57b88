"""The demo's stream part: a camera publishing on an ``RPCStream`` to
subscribers that each take frames at their own pace.

``framerpc demo`` and ``examples/stream_viewers.py`` both use
``stream_to_subscribers``; it returns one line of figures per
subscriber (frames received, frames/s, frames dropped for it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from .._proxies import connect
from ..server.rpc_server import RPCServer
from ..stream import RPCStream

__all__ = [
    "STREAM_SHAPE",
    "StreamingCamera",
    "StreamingCameraServer",
    "Subscriber",
    "run_stream_demo",
    "stream_to_subscribers",
]

logger = logging.getLogger(__name__)

#: Shape of the streamed frames (uint8, 5.76 MB).
STREAM_SHAPE = (1200, 1600, 3)


class StreamingCamera:
    """The interface: one stream of images."""

    frames = RPCStream(doc="1200x1600 RGB images")


class StreamingCameraServer(StreamingCamera, RPCServer):
    """Serves ``StreamingCamera``; ``run`` publishes frames at a camera's pace."""

    def run(self, fps: float, stop: threading.Event) -> int:
        """Publish a frame every ``1 / fps`` s until ``stop``; return how many."""
        image = np.zeros(STREAM_SHAPE, dtype=np.uint8)
        n = 0
        while not stop.wait(1 / fps):
            image[:] = n % 256  # the camera reuses its buffer: publish copies
            self.frames.publish(image, {"frame": n})
            n += 1
        return n


@dataclass(frozen=True)
class Subscriber:
    """One subscriber of the demo stream.

    Parameters
    ----------
    name : str
        Its name in the report line.
    delay : float
        Seconds of work done on each frame (0: as fast as frames come).
    policy : {"latest", "queue"}
        The subscription's flow control.
    queue : int, optional
        Queue length for ``policy="queue"``.
    """

    name: str
    delay: float = 0.0
    policy: str = "latest"
    queue: int | None = None


def _consume(
    sub: Subscriber, frames: Any, stop: threading.Event, report: dict[str, str]
) -> None:
    """Take frames until ``stop``; put one line of figures in ``report``."""
    received = 0
    first = last = 0.0
    with frames:
        while not stop.is_set():
            try:
                frames.get(timeout=0.5)
            except TimeoutError:
                continue
            last = time.monotonic()
            first = first or last
            received += 1
            time.sleep(sub.delay)  # the work done on each frame
        rate = (received - 1) / (last - first) if last > first else 0.0
        report[sub.name] = (
            f"{sub.name}: {received} frames, {rate:.1f} frames/s, "
            f"{frames.dropped} dropped"
        )


def stream_to_subscribers(
    context: zmq.Context,
    seconds: float,
    fps: float,
    subscribers: Sequence[Subscriber],
) -> tuple[int, list[str]]:
    """Serve a streaming camera on loopback and feed each subscriber.

    Every subscriber has its own proxy and thread; all are subscribed
    (acknowledged by the server) before the first frame is published.

    Parameters
    ----------
    context : zmq.Context
        The context for the server and the proxies (not terminated).
    seconds : float
        How long the camera publishes.
    fps : float
        The camera's frame rate.
    subscribers : sequence of Subscriber
        Who subscribes, and how.

    Returns
    -------
    (int, list of str)
        Frames published, and one report line per subscriber, in the
        order given: ``"NAME: R frames, F frames/s, D dropped"``.
    """
    stop = threading.Event()
    report: dict[str, str] = {}
    published: list[int] = []
    with StreamingCameraServer(context, "tcp://127.0.0.1") as server:
        server.start()
        proxies: list[Any] = [
            connect(StreamingCamera, context, server.url) for _ in subscribers
        ]
        threads: list[threading.Thread] = []
        try:
            for sub, proxy in zip(subscribers, proxies, strict=True):
                kwargs: dict[str, Any] = {"policy": sub.policy}
                if sub.queue is not None:
                    kwargs["queue"] = sub.queue
                frames = proxy.frames.subscribe(**kwargs)
                threads.append(
                    threading.Thread(
                        target=_consume,
                        args=(sub, frames, stop, report),
                        name=f"demo {sub.name}",
                    )
                )
            for thread in threads:
                thread.start()
            camera = threading.Thread(
                target=lambda: published.append(server.run(fps, stop)),
                name="demo stream camera",
            )
            camera.start()
            stop.wait(seconds)
            stop.set()
            for thread in [camera, *threads]:
                thread.join()
        finally:
            stop.set()  # on an error: ends the threads already started
            for thread in threads:
                if thread.ident is not None:
                    thread.join()
            for proxy in proxies:
                proxy.close()
    missing = [s.name for s in subscribers if s.name not in report]
    if missing:  # a consumer thread failed; its traceback is on stderr
        raise RuntimeError(f"no figures from {', '.join(missing)}")
    return (published[0] if published else 0), [report[s.name] for s in subscribers]


def run_stream_demo(
    context: zmq.Context,
    seconds: float = 2.0,
    fps: float = 30.0,
    out: Callable[[str], None] = print,
) -> None:
    """The stream part of ``framerpc demo``: a viewer and a slow writer.

    The viewer takes every frame (``queue=4``); the writer spends 0.2 s on
    each frame and subscribes with ``latest``, so the frames it cannot
    take are dropped for it alone, without slowing the viewer.

    Parameters
    ----------
    context : zmq.Context
        The context for the server and the proxies (not terminated).
    seconds : float
        How long the camera publishes.
    fps : float
        The camera's frame rate.
    out : callable
        Where the report lines go.
    """
    size = np.prod(STREAM_SHAPE) / 1e6
    out(
        f"stream: {'x'.join(map(str, STREAM_SHAPE))} uint8 ({size:.2f} MB) "
        f"at {fps:g} fps for {seconds:g} s to two subscribers"
    )
    subscribers = [
        Subscriber("  viewer (queue=4)", policy="queue", queue=4),
        Subscriber("  slow writer (latest, 0.2 s per frame)", delay=0.2),
    ]
    published, report = stream_to_subscribers(context, seconds, fps, subscribers)
    for line in report:
        out(line)
    out(f"  frames published: {published}")
