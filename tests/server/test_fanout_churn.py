"""Subscriber churn does not stall the server (framerpc.server.fanout,
issue 11): a read of the signal input stops after ``READ_WORK`` records
probed, the serve loop answers other clients between two reads, and the
rest is read later; a second ``b""`` from one pipe is still refused, a
departure's record is found at the next arrival, and a handshake token
reaches only subscribers whose subscription was read."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import zmq
from conftest import wait_until
from devices import CameraServer
from fanout_helpers import subscribe

from framerpc import protocol
from framerpc.server import fanout as fanout_module

JOINING = 300


def _subs(ctx, made, url: str, count: int) -> list[zmq.Socket]:
    return [subscribe(ctx, made, url) for _ in range(count)]


@pytest.fixture
def fan(ctx: zmq.Context) -> Iterator[fanout_module.Fanout]:
    xpub = ctx.socket(zmq.XPUB)
    fanout = fanout_module.SignalFanouts(1 << 24, 4096).attach(xpub)
    xpub.bind(f"inproc://churn-{id(xpub)}")
    yield fanout
    fanout.close()
    xpub.close(linger=0)


def _read_until(fan, condition, work: int = fanout_module.READ_WORK) -> bool:
    """Read the input (each read bounded by ``work``) until ``condition``."""

    def read() -> bool:
        fan.read_input(work=work)
        return bool(condition())

    return wait_until(read, timeout=30)


def _url(fan: fanout_module.Fanout) -> str:
    return fan.sock.getsockopt_string(zmq.LAST_ENDPOINT)


def test_a_read_stops_after_its_work_and_the_rest_comes_later(ctx, socks, fan):
    _subs(ctx, socks, _url(fan), JOINING)
    work = 512
    added: list[tuple[int, int, bool]] = []  # (records before, added, left)

    def read() -> bool:
        before = len(fan.subscribers)
        left = fan.read_input(work=work)
        added.append((before, len(fan.subscribers) - before, left))
        return len(fan.subscribers) == JOINING

    assert wait_until(read, timeout=30)
    # each read probed about ``work`` records: an arrival probes every
    # record there is, so a read adds at most work / records (+1) of them
    for before, count, _ in added:
        if before >= 32:
            assert count <= work // before + 1, (before, count)
    # a read returned with input left, and a later one read the rest
    assert any(left and before + count < JOINING for before, count, left in added)
    assert len({sub.prefix for sub in fan}) == JOINING


def test_a_second_subscription_from_one_pipe_is_still_ignored(ctx, socks, fan):
    url = _url(fan)
    _subs(ctx, socks, url, 20)
    assert _read_until(fan, lambda: len(fan.subscribers) == 20)
    raw = ctx.socket(zmq.XSUB)
    socks.append(raw)
    raw.connect(url)
    raw.send(b"\x01")
    assert _read_until(fan, lambda: len(fan.subscribers) == 21)
    ignored = fan.ignored
    raw.send(b"\x01")  # the same pipe again: no second prefix
    _subs(ctx, socks, url, 1)  # a sentinel read after it
    assert _read_until(fan, lambda: len(fan.subscribers) == 22)
    assert fan.ignored == ignored + 1


def test_departed_records_are_forgotten_while_idle(ctx, socks, fan):
    url = _url(fan)
    leaving = _subs(ctx, socks, url, 50)
    staying = _subs(ctx, socks, url, 5)
    assert _read_until(fan, lambda: len(fan.subscribers) == 55)
    kept = {sub.ident for sub in fan}
    for sock in leaving:
        sock.close(linger=0)
        socks.remove(sock)
    # no arrival: reads of the input alone find the departed records
    assert _read_until(fan, lambda: len(fan.subscribers) == 5, work=8)
    assert _read_until(fan, lambda: fan._finder is None and fan.unresolved == 0)
    remaining = {sub.ident for sub in fan}
    assert len(remaining) == 5 and remaining <= kept
    fan.publish(protocol.SignalEmission("after", []))
    for sock in staying:  # the staying ones still get emissions
        assert sock.poll(10000)
        assert protocol.decode_signal(sock.recv_multipart()).name == "after"
    assert fan.ignored == 0  # the finder's messages are not a peer's


def test_departed_records_are_forgotten_at_the_next_arrival(ctx, socks, fan):
    url = _url(fan)
    leaving = _subs(ctx, socks, url, 20)
    _subs(ctx, socks, url, 3)
    assert _read_until(fan, lambda: len(fan.subscribers) == 23)
    for sock in leaving:
        sock.close(linger=0)
        socks.remove(sock)
    # departures read with no work left for a finder: an arrival finds them
    assert _read_until(fan, lambda: fan.unresolved == 20, work=0)
    assert fan._finder is None and len(fan.subscribers) == 23
    _subs(ctx, socks, url, 1)
    assert _read_until(fan, lambda: len(fan.subscribers) == 4)
    assert fan.unresolved == 0


def test_calls_are_answered_while_subscribers_join(ctx, socks, serve):
    server = serve(CameraServer(ctx, "tcp://127.0.0.1"))
    fan = server._signal_fanout
    real = fan.read_input
    stopped_early = threading.Event()
    answered = threading.Event()
    seen: list[int] = []

    def gated(*args, **kwargs) -> bool:
        # once a read left input queued, read no more until the call below
        # is answered: the serve loop must answer it between two reads
        if stopped_early.is_set() and not answered.is_set():
            return True
        left = real(*args, **kwargs)
        if left and not stopped_early.is_set():
            seen.append(len(fan.subscribers))
            stopped_early.set()
        return left

    fan.read_input = gated
    _subs(ctx, socks, server._inventory()["signal_url"], JOINING)
    assert stopped_early.wait(30), "every subscription was read at once"
    dealer = ctx.socket(zmq.DEALER)
    socks.append(dealer)
    dealer.connect(server.url)
    dealer.send_multipart([b"", *protocol.encode_call(1, "echo", ["here"], {})])
    assert dealer.poll(30000), "no answer while subscribers were joining"
    reply = protocol.decode_reply(dealer.recv_multipart()[1:])
    answered.set()
    assert reply.ok and reply.value == "here"
    assert seen[0] < JOINING
    # the rest is read later, by the idle serve loop
    assert wait_until(lambda: len(fan.subscribers) == JOINING, timeout=30)


def test_a_token_reaches_only_subscribers_whose_subscription_was_read(ctx, socks, fan):
    subs = _subs(ctx, socks, _url(fan), JOINING)
    present: list[set[int]] = []  # the records when each token was sent
    while len(fan.subscribers) < JOINING:  # a token after each partial read
        fan.publish(protocol.SignalEmission("", [len(present)]))
        present.append(set(fan.subscribers))
    assert len(present) > 1  # several partial reads
    for sock in subs:
        assert sock.poll(10000)
        frames = sock.recv_multipart()
        ident = int.from_bytes(frames[0][5:9], "big")
        first = protocol.decode_signal(frames).args[0]
        # its first token: the first one sent once its record was made
        assert first == min(k for k, idents in enumerate(present) if ident in idents)
