"""No reply is lost: a client may have any number of calls in flight; the
server keeps what a full queue refuses, within bounds, and counts what it
gives up on (issue 11)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import pytest
import zmq
from conftest import wait_until
from devices import CameraServer
from engines import CALLPATH_ENGINES

from framerpc import protocol
from framerpc.server.outbox import ReplyBacklog
from framerpc.transport import SocketOptions

IN_FLIGHT = 1000
REPEATS = 5
#: Generous ceiling (s) for a batch of replies: it only catches a hang.
BATCH_LIMIT_S = 30


@pytest.fixture(params=["inproc", "tcp"])
def endpoint(request: pytest.FixtureRequest) -> str:
    if request.param == "tcp":
        return "tcp://127.0.0.1"
    return f"inproc://backlog-{uuid.uuid4().hex}"


def _dealer(ctx: zmq.Context, url: str) -> zmq.Socket:
    """A raw DEALER that queues few replies itself (as framerpc clients)."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 10)
    sock.setsockopt(zmq.SNDHWM, 0)  # the whole burst goes out unread
    sock.connect(url)
    return sock


def _pipeline(sock: zmq.Socket, first_id: int, count: int, payload: bytes) -> list:
    """Send ``count`` echo calls before reading any reply; return the ids of
    the replies in the order received (all of them, or a hang caught by
    the ceiling)."""
    for request_id in range(first_id, first_id + count):
        frames = protocol.encode_call(request_id, "echo", [payload], {})
        sock.send_multipart([b"", *frames])
    got: list[int] = []
    while len(got) < count:
        assert sock.poll(BATCH_LIMIT_S * 1000), f"{count - len(got)} replies lost"
        frames = sock.recv_multipart(copy=False)
        reply = protocol.decode_reply(frames[1:])
        assert reply.ok and bytes(reply.value) == payload
        got.append(reply.request_id)
    return got


@pytest.mark.parametrize("payload", [b"p", b"q" * 4096])
def test_a_thousand_pipelined_calls_all_get_a_reply(
    ctx, endpoint: str, serve: Callable, payload: bytes
):
    server = serve(CameraServer(ctx, endpoint))
    sock = _dealer(ctx, server.url)
    try:
        for run in range(REPEATS):
            first = run * IN_FLIGHT
            got = _pipeline(sock, first, IN_FLIGHT, payload)
            # every reply, in the order of the calls (waiting ones go first)
            assert got == list(range(first, first + IN_FLIGHT))
        assert server.stats["dropped_replies"] == 0
        assert wait_until(lambda: server.stats["reply_backlog"] == 0)
    finally:
        sock.close()


def test_pipelined_calls_from_many_threads_all_get_a_reply(ctx, serve: Callable):
    server = serve(CameraServer(ctx, f"inproc://threads-{uuid.uuid4().hex}"))
    count, threads_n = 250, 8
    results: dict[int, object] = {}

    def client(index: int) -> None:
        sock = _dealer(ctx, server.url)
        try:
            results[index] = _pipeline(sock, index * count, count, b"t" * 512)
        except BaseException as exc:
            results[index] = exc
        finally:
            sock.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BATCH_LIMIT_S * 2)
    for index in range(threads_n):
        assert results[index] == list(range(index * count, (index + 1) * count))
    assert server.stats["dropped_replies"] == 0


def test_replies_beyond_the_backlog_bound_are_counted(ctx, serve: Callable):
    options = SocketOptions(reply_backlog_messages=20)
    url = f"inproc://bound-{uuid.uuid4().hex}"
    server = serve(CameraServer(ctx, url, options=options))
    sock = _dealer(ctx, url)
    try:
        sent = 400
        for request_id in range(sent):
            call = protocol.encode_call(request_id, "echo", [1], {})
            sock.send_multipart([b"", *call])
        # every request was handled once the last one's reply is counted
        assert wait_until(
            lambda: (
                server.stats["dropped_replies"] + server.stats["reply_backlog"]
                >= sent - 200
            ),
            timeout=BATCH_LIMIT_S,
        )
        assert server.stats["reply_backlog"] <= 20
        received = 0
        while sock.poll(1000):
            sock.recv_multipart()
            received += 1
            if received + server.stats["dropped_replies"] == sent:
                break
        assert received + server.stats["dropped_replies"] == sent
        assert server.stats["dropped_replies"] > 0
    finally:
        sock.close()


def test_a_reply_to_an_unknown_client_is_counted(ctx):
    """ROUTER_MANDATORY: a reply to a peer that left (an identity the socket
    no longer knows) is counted, not dropped silently."""
    server = CameraServer(ctx, f"inproc://gone-{uuid.uuid4().hex}")
    try:
        reply = protocol.encode_reply(protocol.Reply(1, True, 2))
        server._send([b"gone", b""], reply, 1)
        assert server.stats["dropped_replies"] == 1
        assert server.stats["reply_backlog"] == 0
    finally:
        server.stop_server()


def test_replies_over_the_byte_bound_are_logged_once_with_their_number(caplog):
    """Drops beyond a bound are counted exactly and logged at most once a
    second (``framerpc._ratelog``), not once per reply."""
    backlog = ReplyBacklog(None, None, 10, max_bytes=0, max_total_bytes=0)
    backlog._warn.interval = 3600  # no second record, however slow the machine
    with caplog.at_level(logging.WARNING, logger="framerpc.server"):
        for _ in range(5):
            backlog.add([b"peer", b"", b"reply"])
    assert backlog.dropped == 5 and not backlog.pending
    records = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert records == [
        "1 replies dropped in the last 3600 s (last: a reply of 9 B exceeds"
        " the backlog's byte bound)"
    ]
    backlog._warn._next = 0.0  # the interval has passed
    backlog.lost(2, "client gone")
    assert caplog.records[-1].getMessage() == (
        "6 replies dropped in the last 3600 s (last: client gone)"
    )


class _Echo:
    def echo(self, value):
        return value


@pytest.mark.parametrize("engine", CALLPATH_ENGINES)
def test_responder_hands_a_refused_reply_back_without_blocking(ctx, engine):
    """On a ROUTER_MANDATORY socket a full peer queue makes the Responder's
    send raise EAGAIN: it must not block, and ``send_failed`` gets the
    reply's frames (the server keeps them)."""
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.SNDHWM, 1)
        dealer.setsockopt(zmq.RCVHWM, 1)
        url = f"inproc://refused-{uuid.uuid4().hex}"
        router.bind(url)
        dealer.connect(url)
        refused: list = []
        responder = engine.Responder(
            router,
            _Echo(),
            {"echo": None},
            {},
            None,
            None,
            lambda envelope, exc, rid, frames: refused.append((exc, rid, frames)),
        )
        count = 10
        for request_id in range(count):
            call = protocol.encode_call(request_id, "echo", [request_id], {})
            dealer.send_multipart([b"", *call])
        for _ in range(count):
            assert router.poll(5000)
            assert responder.handle(engine.recv_frames(router)) is True
        assert refused, "a queue of 2 took 10 replies?"
        for exc, rid, frames in refused:
            assert isinstance(exc, zmq.Again)
            assert protocol.decode_reply(frames).value == rid
        delivered: list[int] = []
        while len(delivered) < count - len(refused):
            assert dealer.poll(5000)
            delivered.append(protocol.decode_reply(dealer.recv_multipart()[1:]).value)
        assert sorted(delivered + [rid for _, rid, _ in refused]) == list(range(count))
    finally:
        router.close(0)
        dealer.close(0)
