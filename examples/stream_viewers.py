"""A camera streaming to two subscribers, one deliberately slow.

    python examples/stream_viewers.py [--seconds 3] [--fps 30]

The camera publishes 1200x1600x3 uint8 frames at ``--fps`` on an
``RPCStream``. A fast viewer and a slow writer (0.2 s per frame) each
subscribe with ``policy="latest"``: the writer gets the newest frame
whenever it is ready and the frames it could not take are dropped for it
alone, without slowing the viewer. Each prints its frames/s and drops.
The camera, its interface and the subscribers' loop are in
framerpc/tools/demo_streams.py (``framerpc demo`` runs them too).
"""

from __future__ import annotations

import argparse

import zmq

from framerpc.tools.demo_streams import Subscriber, stream_to_subscribers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    context = zmq.Context()
    try:
        _published, report = stream_to_subscribers(
            context,
            args.seconds,
            args.fps,
            [Subscriber("viewer"), Subscriber("slow writer", delay=0.2)],
        )
    finally:
        context.term()
    print(f"published about {args.fps * args.seconds:.0f} frames at {args.fps:g} fps")
    for line in report:
        print(line)


if __name__ == "__main__":
    main()
