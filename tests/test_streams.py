"""RPCStream: the model and per-subscriber flow control in delivery.

Run under both engines (``FRAMERPC_PURE=1`` for the pure one). No test
measures speed: they wait on events or poll conditions with ceilings that
only catch a hang. Faults and hostile messages: test_streams_faults.py;
interop: test_streams_interop.py.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np
import pytest
from conftest import wait_until
from streams_helpers import WAIT_S, Cam, _frame, _hub_sub

import framerpc
from framerpc.errors import SerializationError
from framerpc.stream import MAX_QUEUE, check_policy

# -- the model ---------------------------------------------------------------


def test_declared_stream_on_a_plain_object_says_it_is_not_served():
    class Plain(Cam):
        pass

    with pytest.raises(RuntimeError, match="not served"):
        Plain().frames.publish(b"x")
    with pytest.raises(RuntimeError, match="not a proxy"):
        Plain().frames.subscribe()
    assert Cam.frames.name == "frames"
    assert "RPCStream" in framerpc.__all__


@pytest.mark.parametrize(
    ("policy", "queue", "window"),
    [
        ("latest", None, 1),
        ("queue", None, 8),
        ("queue", 3, 3),
        ("queue", MAX_QUEUE, MAX_QUEUE),
    ],
)
def test_policy_windows(policy, queue, window):
    assert check_policy(policy, queue) == window


@pytest.mark.parametrize(
    ("policy", "queue"),
    [
        ("newest", None),
        ("latest", 4),
        ("queue", 0),
        ("queue", MAX_QUEUE + 1),
        ("queue", 2.0),
    ],
)
def test_bad_policies_are_refused(policy, queue):
    with pytest.raises(ValueError):
        check_policy(policy, queue)


# -- delivery ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "ipc", "inproc"])
def test_frames_arrive_read_only_with_info(served, proxies, tmp_path, kind):
    url = {
        "tcp": "tcp://127.0.0.1",
        "ipc": f"ipc://{tmp_path}/cam.sock",
        "inproc": "inproc://stream-cam",
    }[kind]
    server = served(url)
    proxy = proxies(server.url)
    image = np.arange(48, dtype=np.uint16).reshape(4, 4, 3)
    with proxy.frames.subscribe(policy="queue", queue=4) as sub:
        assert sub.subscribed.wait(WAIT_S)
        _hub_sub(server)
        server.frames.publish(image, {"exposure": 2.5})
        server.frames.publish(b"raw bytes", {"kind": "raw"})
        frame, info = sub.get(WAIT_S)
        assert frame.dtype == np.uint16 and frame.shape == (4, 4, 3)
        assert np.array_equal(frame, image)
        assert not frame.flags.writeable
        assert info["exposure"] == 2.5 and info["seq"] == 0 and info["dropped"] == 0
        assert type(info["t"]) is float and type(info["epoch"]) is int
        raw, info = sub.get(WAIT_S)
        assert (
            isinstance(raw, memoryview) and raw.readonly and bytes(raw) == b"raw bytes"
        )
        assert info == {**info, "kind": "raw", "seq": 1, "dropped": 0}


def test_publish_copies_by_default(served, proxies):
    """A camera reusing its buffer right after publish does not tear the
    frame subscribers get."""
    server = served()
    proxy = proxies(server.url)
    with proxy.frames.subscribe(policy="queue", queue=4) as sub:
        hub_sub = _hub_sub(server)[0]
        assert wait_until(lambda: hub_sub.credit == 2, WAIT_S)
        buffer = np.zeros(100_000, dtype=np.uint8)
        raw = bytearray(50_000)
        server.frames.publish(buffer)
        buffer[:] = 7  # the camera writes the next image into the same array
        server.frames.publish(raw)
        raw[:] = b"\x07" * len(raw)
        frame, _ = sub.get(WAIT_S)
        assert not frame.any()
        frame, _ = sub.get(WAIT_S)
        assert not any(frame)


def test_publish_refuses_what_cannot_travel(served):
    server = served()
    with pytest.raises(TypeError, match="numpy arrays or bytes-like"):
        server.frames.publish("text")
    with pytest.raises(TypeError, match="info must be a dict"):
        server.frames.publish(b"x", [1])
    with pytest.raises(SerializationError):
        server.frames.publish(b"x", {"bad": object()})
    assert server.frames.stats["published"] == 0


def test_frames_published_before_anyone_subscribed_take_a_seq(served, proxies):
    server = served()
    for _ in range(3):
        server.frames.publish(np.zeros(10))  # nobody listens: no copy, a seq
    proxy = proxies(server.url)
    with proxy.frames.subscribe() as sub:
        server.frames.publish(b"first heard")
        frame, info = sub.get(WAIT_S)
    assert bytes(frame) == b"first heard" and info["seq"] == 3
    assert info["dropped"] == 0  # not dropped for it: it was not subscribed
    assert server.frames.stats["published"] == 4


def test_latest_never_delivers_an_older_frame_after_a_newer(served, proxies):
    """A slowish consumer: the seqs it sees only grow, each frame holds what
    was published with its seq, drops add up, and the last frame arrives."""
    server = served()
    proxy = proxies(server.url)
    total = 300
    seen: list[tuple[int, int]] = []
    with proxy.frames.subscribe(policy="latest") as sub:
        _hub_sub(server)

        def publish() -> None:
            for i in range(total):
                server.frames.publish(_frame(i), {"i": i})

        publisher = threading.Thread(target=publish)
        publisher.start()
        dropped = 0
        while True:
            frame, info = sub.get(WAIT_S)
            assert int(frame[0]) == info["i"] % 251 and info["seq"] == info["i"]
            seen.append((info["seq"], info["dropped"]))
            dropped += info["dropped"]
            if info["i"] == total - 1:
                break
            time.sleep(0.001)  # slower than the publisher: drops happen
        publisher.join()
    seqs = [s for s, _ in seen]
    assert seqs == sorted(set(seqs))
    assert len(seqs) + dropped == total  # subscribed before the first
    assert sub.dropped == dropped


def test_queue_drops_the_oldest_and_counts_exactly(served, proxies):
    """queue=4, consumer stalled: the 2 frames let ahead by its credit, then
    the newest 4; the 14 in between are dropped, counted on both sides."""
    server = served()
    proxy = proxies(server.url)
    with proxy.frames.subscribe(policy="queue", queue=4) as sub:
        hub_sub = _hub_sub(server)[0]
        assert wait_until(lambda: hub_sub.credit == 2, WAIT_S)
        for i in range(2):  # taken by its credit: now it has none left
            server.frames.publish(_frame(i), {"i": i})
        assert wait_until(lambda: sub.received == 2, WAIT_S)
        for i in range(2, 20):
            server.frames.publish(_frame(i), {"i": i})
        assert server.frames.stats["pending"] == 4
        got = [sub.get(WAIT_S) for _ in range(6)]
        assert [info["seq"] for _, info in got] == [0, 1, 16, 17, 18, 19]
        assert [info["dropped"] for _, info in got] == [0, 0, 14, 0, 0, 0]
        assert [int(f[0]) for f, _ in got] == [0, 1, 16, 17, 18, 19]
        assert sub.dropped == 14 and server.frames.stats["dropped"] == 14
        server.frames.publish(_frame(99), {"i": "sentinel"})
        assert sub.get(WAIT_S)[1]["i"] == "sentinel"  # nothing else came first


def test_callback_form_and_latest(served, proxies):
    server = served()
    proxy = proxies(server.url)
    got: list[int] = []
    done = threading.Event()

    def on_frame(frame, info) -> None:
        got.append(info["seq"])
        if len(got) == 5:
            done.set()

    sub = proxy.frames.subscribe(on_frame, policy="queue", queue=8)
    try:
        _hub_sub(server)
        for i in range(5):
            server.frames.publish(_frame(i))
        assert done.wait(WAIT_S)
        assert got == [0, 1, 2, 3, 4]
    finally:
        sub.close()

    def one() -> tuple:
        return proxy.frames.latest(WAIT_S)

    result: list = []
    getter = threading.Thread(target=lambda: result.append(one()))
    getter.start()
    assert wait_until(lambda: server.frames.stats["subscribers"] == 1, WAIT_S)
    assert wait_until(
        lambda: (server.frames.publish(b"one"), result)[1] or not getter.is_alive(),
        WAIT_S,
    )
    getter.join(WAIT_S)
    frame, info = result[0]
    assert bytes(frame) == b"one" and info["seq"] >= 5
    # latest() ended its subscription
    assert wait_until(lambda: server.frames.stats["subscribers"] == 0, WAIT_S)


def test_close_ends_an_iteration_in_another_thread(served, proxies):
    server = served()
    proxy = proxies(server.url)
    sub = proxy.frames.subscribe()
    ended = threading.Event()

    def consume() -> None:
        for _ in sub:
            pass
        ended.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    _hub_sub(server)
    sub.close()
    assert ended.wait(WAIT_S)
    consumer.join(WAIT_S)
    with pytest.raises(EOFError):
        sub.get(0)


def test_a_stalled_subscriber_neither_slows_a_fast_one_nor_grows_memory(
    served, proxies
):
    """The publisher goes in lockstep with the fast subscriber: it gets every
    frame while a latest and a queue=3 subscriber never read. The published
    arrays (lent without a copy) still alive stay within the stalled ones'
    bounds: pending window plus credit."""
    server = served()
    proxy = proxies(server.url)
    stalled_latest = proxy.frames.subscribe(policy="latest")
    stalled_queue = proxy.frames.subscribe(policy="queue", queue=3)
    fast = proxy.frames.subscribe(policy="queue", queue=2)
    try:
        subs = _hub_sub(server, 3)
        assert wait_until(lambda: all(s.credit == s.cap for s in subs), WAIT_S)
        alive: list[weakref.ref] = []
        for i in range(200):
            array = _frame(i, 100_000)
            alive.append(weakref.ref(array))
            server.frames.publish(array, {"i": i}, copy=False)
            del array
            frame, info = fast.get(WAIT_S)
            assert info["i"] == i and info["dropped"] == 0
            del frame
        stats = server.frames.stats
        assert stats["pending"] <= 1 + 3
        # latest: 1 pending + 1 sent; queue=3: 3 pending + 2 sent; the fast
        # one's last frame may still be in flight or held by pyzmq
        bound = 2 + 5 + 2

        def within() -> bool:
            gc.collect()
            return sum(ref() is not None for ref in alive) <= bound

        assert wait_until(within, WAIT_S)
        assert stalled_latest.received == 1 and stalled_queue.received == 2
        _, info = stalled_latest.get(WAIT_S)
        assert info["seq"] == 0
        _, info = stalled_latest.get(WAIT_S)  # the newest, after drops
        assert info["seq"] == 199 and info["dropped"] == 198
    finally:
        for sub in (stalled_latest, stalled_queue, fast):
            sub.close()
