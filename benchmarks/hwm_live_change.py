"""Why framerpc never changes a signal socket's SNDHWM once subscribers
may be connected (issue 11: bounding each subscriber in bytes).

Run: ``python benchmarks/hwm_live_change.py`` (a few seconds). Not a
test: it prints, for each case, whether a subscriber that reads
everything stopped receiving for good.

libzmq (since 4.2) applies a changed SNDHWM to the pipes a socket already
has (``socket_base_t::update_pipe_options``): the writer's mark at once,
the reader's low-water mark by a command (``send_hwms_to_peer``). A
writer that finds its pipe full stops writing to it until the reader
reports what it has read (``activate_write``), and the reader reports
only when its count of messages read is a multiple of its low-water mark
(``pipe_t::read``: ``_msgs_read % _lwm == 0``). After a change, the
writer may find the pipe full by the new mark, counting reads the reader
has not reported yet, while the reader's next multiple of the new
low-water mark lies beyond what was written: the reader drains the pipe,
never reports, and the writer never writes to it again. The subscriber
receives nothing more until it reconnects. On ``inproc://`` the reader's
low-water mark also counts the binder's mark *at bind time*, so a mark
set lower than that after connecting stops the pipe as soon as it fills.

Setting the mark per emission from the emission's size (so that a
subscriber's queue is bounded in bytes) therefore stops readers;
``framerpc.server.fanout`` bounds each subscriber in bytes on an XPUB
socket instead, with the mark as bound.
"""

from __future__ import annotations

import threading
import time

import zmq


def case(transport: str, marks: list[int], period: int, rcvhwm: int = 1000) -> str:
    """A reader thread (receive mark ``rcvhwm``) reads all it gets while
    the publisher sends 40,000 messages of 20 kB, switching its mark
    through ``marks`` every ``period`` messages; then 50 small messages,
    slowly."""
    count = 40_000
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, marks[0])
    where = {"tcp": "tcp://127.0.0.1:*", "inproc": "inproc://hwm-live"}[transport]
    pub.bind(where)
    url = pub.getsockopt(zmq.LAST_ENDPOINT).decode()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, rcvhwm)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(url)
    while True:  # subscription live
        pub.send(b"s")
        if sub.poll(20):
            break
    while sub.poll(100):
        sub.recv()
    got = [0]
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            if sub.poll(100):
                sub.recv()
                got[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    payload = b"x" * 20_000
    for index in range(count):
        if index % period == 0:
            pub.setsockopt(zmq.SNDHWM, marks[(index // period) % len(marks)])
        pub.send(payload)
    time.sleep(0.5)
    before = got[0]
    for _ in range(50):
        pub.send(b"tail")
        time.sleep(0.01)
    time.sleep(1)
    stop.set()
    thread.join()
    sub.close(linger=0)
    pub.close(linger=0)
    ctx.term()
    tail = got[0] - before
    state = "STOPPED for good" if tail == 0 else "receiving"
    return (
        f"{transport:6} marks {marks} every {period}, RCVHWM {rcvhwm}: "
        f"got {before} of {count}, "
        f"then {tail} of 50 sent slowly: {state}"
    )


def main() -> None:
    print(f"libzmq {zmq.zmq_version()}, pyzmq {zmq.__version__}")
    for transport, marks, period, rcvhwm in (
        ("tcp", [500], 37, 1000),  # control: the mark never changes
        ("tcp", [20], 37, 1000),  # control
        ("tcp", [500, 20], 37, 1000),
        ("tcp", [20, 500], 37, 1000),
        ("tcp", [500, 20], 5000, 1000),
        ("tcp", [64, 32, 16], 37, 1000),
        ("inproc", [500], 37, 10),  # control
        ("inproc", [500, 20], 37, 1000),
        ("inproc", [500, 20], 37, 10),
    ):
        print(case(transport, marks, period, rcvhwm))


if __name__ == "__main__":
    main()
