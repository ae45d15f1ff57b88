"""The compiled message I/O (``framerpc.transport._zmqio``) and its pure twin
(``framerpc.transport._zmqio_py``) move frames alike: large buffers lent until sent
and given back, bad frames refused before anything is sent. (The call
path built on them has its own parity tests: tests/rpc/test_callpath_parity.py.)

The compiled half is skipped (with the reason) when it is not built; CI
builds it.
"""

from __future__ import annotations

import time
import weakref

import numpy as np
import pytest
import zmq
from engines import IO_ENGINES
from router_dealer import WAIT_MS  # the pair's receive bound

ENGINES = IO_ENGINES
_compiled = IO_ENGINES[1].values[0]


def _given_back(engine, ref, timeout=20.0):
    """Whether the object behind ``ref`` is freed within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while ref() is not None:
        if time.monotonic() > deadline:
            return False
        engine.release_returned_buffers()
        time.sleep(0.005)
    return True


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("url", ["inproc://lend", "tcp://127.0.0.1"])
@pytest.mark.parametrize("count", [5_000, 300_000])  # 20 KB: lent, not by pyzmq
def test_send_frames_lends_a_large_buffer_until_it_is_sent(engine, ctx, url, count):
    """A frame past the copy threshold goes out without a copy: the sender's
    buffer must stay alive while libzmq (or an inproc peer) holds it, and be
    freed once it is given back."""
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        for sock in (a, b):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, WAIT_MS)
        a.bind(url if url.startswith("inproc") else url + ":*")
        b.connect(a.getsockopt_string(zmq.LAST_ENDPOINT))
        big = np.arange(count, dtype=np.uint32)
        expected = big.copy()
        ref = weakref.ref(big)
        engine.send_frames(a, [b"head", big])
        del big
        engine.release_returned_buffers()
        frames = engine.recv_frames(b)
        engine.release_returned_buffers()
        # an inproc peer reads the sender's own memory: still lent
        received = np.frombuffer(frames[1], dtype=np.uint32)
        assert np.array_equal(received, expected)
        del received, frames
        assert _given_back(engine, ref)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_send_frames_gives_back_a_buffer_it_could_not_send(engine, ctx):
    lonely = ctx.socket(zmq.DEALER)  # no peer: a NOBLOCK send is refused
    try:
        lonely.setsockopt(zmq.LINGER, 0)
        big = np.zeros(1 << 20, dtype=np.uint8)
        ref = weakref.ref(big)
        with pytest.raises(zmq.Again):
            engine.send_frames(lonely, [big, b"tail"], zmq.NOBLOCK)
        del big
        assert _given_back(engine, ref)
    finally:
        lonely.close()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "bad",
    [np.arange(200_000, dtype=np.uint16)[::2], np.zeros((300, 300)).T, object()],
    ids=["strided", "fortran", "no-buffer"],
)
def test_send_frames_refuses_a_bad_frame_before_sending_any(engine, pair, bad):
    """A frame refused halfway would leave a partial message queued: the
    next message would arrive glued to its first frames."""
    router, dealer = pair
    error = TypeError if type(bad) is object else BufferError
    with pytest.raises(error, match="frame 2"):
        engine.send_frames(dealer, [b"", b"first", bad])
    engine.send_frames(dealer, [b"", b"whole"])
    assert [bytes(f) for f in router.recv_multipart(copy=False)[1:]] == [b"", b"whole"]


@pytest.mark.skipif(_compiled is None, reason="compiled message I/O not built")
def test_send_frames_survives_a_finalizer_that_empties_the_list():
    """Releasing a returned loan may run Python code (the last reference to
    a buffer going) that changes the list about to be sent: the compiled
    send must work on what the list holds then, not read past its end."""
    import subprocess
    import sys

    code = (
        "import numpy as np, zmq\n"
        "from framerpc.transport import _zmqio as io\n"
        "frames = [b'a', b'b', b'c']\n"
        "class Owner(bytearray):\n"
        "    def __del__(self):\n"
        "        frames.clear()\n"
        "ctx = zmq.Context()\n"
        "a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)\n"
        "a.bind('inproc://f'); b.connect('inproc://f')\n"
        "io.send_frames(a, [np.frombuffer(Owner(100_000), np.uint8)])\n"
        "del io.recv_frames(b)[:]\n"  # received and dropped: the loan is returned
        "io.send_frames(a, frames)\n"  # releases it first: Owner.__del__ runs
        "io.send_frames(a, [b'after'])\n"
        "print([bytes(f) for f in io.recv_frames(b)])\n"
        "a.close(); b.close(); ctx.term()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[b'after']"


@pytest.mark.skipif(_compiled is None, reason="compiled message I/O not built")
def test_received_frames_are_read_only(ctx):
    """Over inproc a received frame may be the sender's own lent bytes."""
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://read-only")
        b.connect("inproc://read-only")
        sent = b"s" * 100_000
        _compiled.send_frames(a, [sent])
        frame = _compiled.recv_frames(b)[0]
        assert memoryview(frame).readonly
        with pytest.raises(TypeError):
            memoryview(frame)[0] = 0
        assert sent == b"s" * 100_000
    finally:
        a.close()
        b.close()
