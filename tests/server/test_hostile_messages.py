"""Hostile message shapes cost the server work in proportion to their size.

A header of empty msgpack lists builds one Python object (70 bytes) per
byte; JSON ``[]`` one per two bytes. Every shape of a few MiB here must be
refused (or served) while another client's call is answered, with the
server's thread spending little CPU on it. The limits are the fields of
``SocketOptions`` (issue 11, "bounded work per message"). Also here: a
``bytes`` frame is lent to libzmq, not copied.
The decoders alone, both engines: test_hostile_decoders.py.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator

import msgpack
import numpy as np
import pytest
import zmq
from devices import CameraProxy, CameraServer
from hostile_helpers import _array32, _call_header, _native_shapes

from framerpc import protocol, transport
from framerpc._ratelog import RateLimitedLog
from framerpc.errors import MessageTooLargeError
from framerpc.transport import SocketOptions
from framerpc.wire import _framing_py

MIB = 1024 * 1024
#: Generous bound (ms) for an answer that must come: catches a hang only.
REPLY_WAIT_MS = 20000
#: Server-thread CPU (s) a hostile message of 4 MiB may cost. The bound of
#: issue 11 is 1 s for 16 MiB; the old code spent about 7 s on 4 MiB of
#: empty lists. Generous: CPU time, not wall time, but a loaded machine
#: still slows caches.
CPU_BOUND_S = 3.0

try:
    from framerpc.wire import _framing as _framing_c  # type: ignore[attr-defined]
except ImportError:  # no compiler: the pure engine only
    _framing_c = None
ENGINES = [_framing_py] + ([_framing_c] if _framing_c is not None else [])


def _json_request(args_json: bytes) -> bytes:
    return (
        b'{"event": "METHOD_CALL", "method": "echo", "params": {"args": ['
        + args_json
        + b'], "kwargs": {}}}'
    )


def _json_shapes(size: int) -> dict[str, tuple[bytes, str]]:
    return {
        "JSON empty arrays": (_json_request(b"[]," * (size // 3) + b"[]"), "objects"),
        "JSON empty objects": (_json_request(b"{}," * (size // 3) + b"{}"), "objects"),
        "JSON deep nesting": (_json_request(b"[" * size + b"]" * size), "objects"),
        "JSON deep but few": (
            _json_request(b"[" * 200 + b"]" * 200 + b',"' + b"x" * size + b'"'),
            "deeper than",
        ),
    }


# -- a server whose serving thread we can watch --------------------------------------
class _Served:
    def __init__(self, server: CameraServer) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    def cpu(self) -> float:
        """CPU time (s) of the serving thread so far (Linux)."""
        clock = time.pthread_getcpuclockid(self.thread.ident)  # type: ignore[arg-type]
        return time.clock_gettime(clock)

    def stop(self) -> None:
        self.server.stop_server()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "serve_forever did not return"


@pytest.fixture
def served(ctx: zmq.Context) -> Iterator[Callable[..., _Served]]:
    started: list[_Served] = []

    def start(**options) -> _Served:
        server = CameraServer(ctx, "tcp://127.0.0.1", options=SocketOptions(**options))
        started.append(_Served(server))
        return started[-1]

    yield start
    for item in started:
        item.stop()


@pytest.fixture
def raw(ctx: zmq.Context) -> Iterator[Callable[[str], zmq.Socket]]:
    made: list[zmq.Socket] = []

    def make(url: str) -> zmq.Socket:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(url)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        sock.close()


def _exchange(sock: zmq.Socket, frame: bytes) -> list[bytes]:
    sock.send_multipart([b"", frame], copy=False)
    assert sock.poll(REPLY_WAIT_MS), "no reply to a hostile message"
    delimiter, *body = sock.recv_multipart()
    assert delimiter == b""
    return body


def _refused_while_served(
    served: _Served, raw: Callable, ctx: zmq.Context, frame: bytes
) -> tuple[list[bytes], float]:
    """Send ``frame``, then a call from another client at once; both must
    be answered. Returns the reply to ``frame`` and the server CPU spent."""
    # the handshake's wait as generous as the others' (its default, 1 s, was
    # missed on a loaded CI machine); echo keeps its method's own timeout
    proxy = CameraProxy(ctx, served.server.url, timeout=REPLY_WAIT_MS)
    try:
        assert proxy.echo("warm") == "warm"
        sock = raw(served.server.url)
        before = served.cpu()
        sock.send_multipart([b"", frame], copy=False)
        assert proxy.echo("meanwhile") == "meanwhile"  # within its 10 s timeout
        assert sock.poll(REPLY_WAIT_MS), "no reply to a hostile message"
        spent = served.cpu() - before
        delimiter, *body = sock.recv_multipart()
        assert delimiter == b""
        return body, spent
    finally:
        proxy.close()


# -- the server ------------------------------------------------------------------
@pytest.mark.parametrize("shape", list(_native_shapes(1)))
def test_native_hostile_shape_is_refused_while_another_client_is_served(
    served, raw, ctx, shape
):
    frame, rid, text = _native_shapes(4 * MIB)[shape]
    body, spent = _refused_while_served(served(), raw, ctx, frame)
    reply = protocol.decode_reply(body)
    assert (reply.ok, reply.request_id) == (False, rid)
    assert reply.error.startswith("ProtocolError: ") and text in reply.error
    assert spent < CPU_BOUND_S, f"{shape}: {spent:.2f} s of server CPU"


@pytest.mark.parametrize("shape", list(_json_shapes(1)))
def test_json_hostile_shape_is_refused_while_another_client_is_served(
    served, raw, ctx, shape
):
    frame, text = _json_shapes(4 * MIB)[shape]
    body, spent = _refused_while_served(served(), raw, ctx, frame)
    reply = json.loads(body[0])
    assert reply["success"] is False
    assert reply["error"].startswith("ProtocolError: ") and text in reply["error"]
    assert spent < CPU_BOUND_S, f"{shape}: {spent:.2f} s of server CPU"


def test_16_mib_of_empty_lists_costs_little_and_the_server_serves_on(served, raw, ctx):
    # the case: 30 s and 2.4 GB of peak RSS with the old code
    frame = _call_header(7, b"\x91" + _array32(16 * MIB - 64, b"\x90"))
    body, spent = _refused_while_served(served(), raw, ctx, frame)
    reply = protocol.decode_reply(body)
    assert (reply.ok, reply.request_id) == (False, 7)
    assert "objects" in reply.error
    assert spent < CPU_BOUND_S, f"{spent:.2f} s of server CPU"


def test_json_larger_than_the_header_limit_is_refused_unread(served, raw, ctx):
    frame = _json_request(b'"' + b"x" * (17 * MIB) + b'"')
    body, _ = _refused_while_served(served(), raw, ctx, frame)
    reply = json.loads(body[0])
    assert reply["success"] is False and "exceeds the limit" in reply["error"]


def test_long_string_of_4_mib_is_served(served, raw, ctx):
    # a long value is no amplification: served, not refused
    text = "x" * (4 * MIB)
    frame = protocol.encode_call(8, "echo", [text], {})[0]
    body, _ = _refused_while_served(served(), raw, ctx, frame)
    reply = protocol.decode_reply(body)
    assert (reply.ok, reply.request_id, reply.value) == (True, 8, text)


def test_limits_are_socket_options(served, raw):
    server = served(max_objects=1000, max_depth=5, max_header_size=200_000)
    sock = raw(server.server.url)
    pad = "p" * 70_000  # above 64 KiB: the shape is checked

    def native(rid: int, args: list) -> protocol.Reply:
        frame = protocol.encode_call(rid, "arg_types", args, {})[0]
        return protocol.decode_reply(_exchange(sock, frame))

    assert native(1, [[1] * 900, pad]).ok
    too_many = native(2, [[1] * 1000, pad])
    assert (too_many.ok, too_many.request_id) == (False, 2)
    assert "more than 1000 objects" in too_many.error
    # the header map (1), the args (2) and four more lists: depth 6
    too_deep = native(3, [[[[[1]]]], pad])
    assert (too_deep.ok, too_deep.request_id) == (False, 3)
    assert "deeper than 5" in too_deep.error
    assert native(4, [[[[1]]], pad]).ok
    too_large = native(5, ["q" * 200_000])
    assert (too_large.ok, too_large.request_id) == (False, 5)
    assert "exceeds the limit of 200000" in too_large.error
    # the JSON path has the same bounds
    for args, text in (
        ([[1] * 1000, pad], "more than 1000 objects"),
        ([[[[[1]]]], pad], "deeper than 5"),
        (["q" * 200_000], "exceeds the limit of 200000"),
    ):
        request = json.dumps(
            {
                "event": "METHOD_CALL",
                "method": "arg_types",
                "params": {"args": args, "kwargs": {}},
            }
        ).encode()
        reply = json.loads(_exchange(sock, request)[0])
        assert reply["success"] is False and text in reply["error"]
    ok = {
        "event": "METHOD_CALL",
        "method": "arg_types",
        "params": {"args": [[1] * 400, pad], "kwargs": {}},
    }
    assert json.loads(_exchange(sock, json.dumps(ok).encode())[0])["success"]


def test_refusals_are_logged_at_most_once_a_second(served, raw, caplog):
    server = served(max_objects=1000)
    sock = raw(server.server.url)
    frame = _native_shapes(100_000)["empty arrays as args"][0]
    with caplog.at_level(logging.WARNING, logger="framerpc.server"):
        for _ in range(20):
            assert "objects" in protocol.decode_reply(_exchange(sock, frame)).error
    records = [r for r in caplog.records if "malformed request" in r.getMessage()]
    # 20 refusals within a few seconds at most: one record per second
    assert 1 <= len(records) < 20
    good = protocol.encode_call(9, "echo", ["still here"], {})[0]
    assert protocol.decode_reply(_exchange(sock, good)).value == "still here"


def test_rate_limited_log_counts_what_it_leaves_out(caplog):
    log = RateLimitedLog(logging.getLogger("framerpc.test_ratelog"), interval=3600)
    with caplog.at_level(logging.WARNING, logger="framerpc.test_ratelog"):
        for number in range(10):
            log.warning("bad %d", number)
        assert [r.getMessage() for r in caplog.records] == ["bad 0"]
        log._next = 0.0  # the interval has passed
        log.warning("bad %d", 10)
    assert caplog.records[-1].getMessage() == (
        "bad 10 (and 9 more not logged in the last 3600.0 s)"
    )


def test_rate_limited_log_count_logs_the_total_since_its_last_record(caplog):
    """``count`` (the reply backlog's drops) adds up the numbers it is given,
    so each record tells how many events it stands for."""
    log = RateLimitedLog(logging.getLogger("framerpc.test_ratelog"), interval=3600)
    with caplog.at_level(logging.WARNING, logger="framerpc.test_ratelog"):
        log.count(3, "replies dropped", "first")
        log.count(4, "replies dropped", "second")
        log.count(5, "replies dropped", "third")
        assert [r.getMessage() for r in caplog.records] == [
            "3 replies dropped in the last 3600 s (last: first)"
        ]
        log._next = 0.0  # the interval has passed
        log.count(1, "replies dropped", "fourth")
    assert caplog.records[-1].getMessage() == (
        "10 replies dropped in the last 3600 s (last: fourth)"
    )


# -- bytes frames are lent, not copied -------------------------------------------
@pytest.mark.parametrize("size", [20_000, 70_000, 4 * MIB])
def test_a_bytes_frame_is_lent_to_libzmq(ctx, size):
    """Over inproc a lent frame arrives as the sender's own memory."""
    lends_from = 16 * 1024 if transport.IO_IMPLEMENTATION == "compiled" else 65536
    sender, receiver = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        address = f"inproc://lend-{size}"
        sender.bind(address)
        receiver.connect(address)
        data = bytes(range(256)) * (size // 256)
        transport.send_frames(sender, [b"header", data])
        frames = transport.recv_frames(receiver)
        received = np.frombuffer(memoryview(frames[1]), np.uint8)
        sent = np.frombuffer(data, np.uint8)
        assert bytes(received) == data
        lent = received.ctypes.data == sent.ctypes.data
        assert lent == (len(data) >= lends_from)
        del frames, received
        transport.release_returned_buffers()
    finally:
        sender.close()
        receiver.close()


@pytest.mark.skipif(_framing_c is None, reason="no compiled engine")
def test_both_engines_take_the_same_decision_on_random_headers():
    """The compiled scan and the pure engine's hooks count alike: on
    well-formed headers they accept and refuse the same ones (which limit
    a header exceeding both is reported for may differ)."""
    rnd = random.Random(2)
    inline = msgpack.ExtType(3, msgpack.packb(["u1", [1], b"\0"]))

    def value(depth: int):
        pick = rnd.random()
        if depth > 6 or pick < 0.4:
            return rnd.choice([1, -5, 300, 1.5, None, True, "s", b"b", inline])
        if pick < 0.7:
            return [value(depth + 1) for _ in range(rnd.randint(0, 6))]
        keys = ["a", "b", "c", 1, 2]
        return {rnd.choice(keys): value(depth + 1) for _ in range(rnd.randint(0, 4))}

    outcomes = set()
    for _ in range(300):
        frames = [msgpack.packb({"pad": "p" * 66_000, "x": value(0)})]
        limits = {"max_objects": rnd.randint(3, 80), "max_depth": rnd.randint(1, 9)}
        decisions = []
        for engine in (_framing_py, _framing_c):
            try:
                engine.decode(frames, **limits)
                decisions.append("ok")
            except MessageTooLargeError:
                decisions.append("refused")
        assert decisions[0] == decisions[1], limits
        outcomes.add(decisions[0])
    assert outcomes == {"ok", "refused"}
