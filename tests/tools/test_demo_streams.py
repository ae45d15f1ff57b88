"""The demo's stream part (framerpc.tools.demo_streams): a camera streams to
a fast and a slow subscriber, and the demo prints each one's figures."""

from __future__ import annotations

import re

import zmq

from framerpc.tools.demo import run_demo
from framerpc.tools.demo_streams import Subscriber, stream_to_subscribers

FIGURES = r"(\d+) frames, \d+\.\d frames/s, (\d+) dropped"


def test_the_demo_prints_the_stream_part_after_the_fetches():
    lines: list[str] = []
    run_demo(frames=1, out=lines.append, stream_seconds=0.5)
    assert len(lines) == 13, lines
    assert lines[8].startswith("frame_ready signals received: ")
    assert re.fullmatch(
        r"stream: 1200x1600x3 uint8 \(5\.76 MB\) at 30 fps for 0\.5 s "
        r"to two subscribers",
        lines[9],
    ), lines[9]
    viewer = re.fullmatch(rf"  viewer \(queue=4\): {FIGURES}", lines[10])
    writer = re.fullmatch(
        rf"  slow writer \(latest, 0\.2 s per frame\): {FIGURES}", lines[11]
    )
    published = re.fullmatch(r"  frames published: (\d+)", lines[12])
    assert viewer and writer and published, lines
    # Both were subscribed before the first frame: a subscriber can only
    # have received or dropped frames that were published.
    for match in (viewer, writer):
        assert int(match.group(1)) + int(match.group(2)) <= int(published.group(1))


def test_the_demo_without_the_stream_part_prints_what_it_always_did():
    lines: list[str] = []
    run_demo(frames=1, out=lines.append, stream_seconds=0)
    assert len(lines) == 9, lines
    assert lines[8].startswith("frame_ready signals received: ")


def test_each_subscriber_gets_its_own_line_in_the_order_given():
    context = zmq.Context()
    try:
        published, report = stream_to_subscribers(
            context,
            0.5,
            20,
            [
                Subscriber("slow", delay=0.2),
                Subscriber("queued", policy="queue", queue=2),
            ],
        )
    finally:
        context.term()
    slow = re.fullmatch(f"slow: {FIGURES}", report[0])
    queued = re.fullmatch(f"queued: {FIGURES}", report[1])
    assert slow and queued, report
    assert len(report) == 2
    # Nothing is counted twice: received plus dropped never exceeds what
    # was published (no wall-clock bound: under load, fewer frames come).
    for match in (slow, queued):
        assert int(match.group(1)) + int(match.group(2)) <= published
