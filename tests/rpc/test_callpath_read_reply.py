"""``read_reply`` (the asyncio client's reader) in both call path twins:
the same replies, the same refusals in ``decode_reply``'s words, None when
nothing waits, and the ``ZMQ_FD`` wake-up re-armed by the receive that
finds nothing."""

from __future__ import annotations

import select

import msgpack
import numpy as np
import pytest
import zmq
from callpath_parity_helpers import ENGINES
from test_callpath_parity import BAD_REPLIES  # the Channel's twin cases

from framerpc import protocol
from framerpc.errors import ProtocolError
from framerpc.protocol import Reply

#: Ceiling (ms) of a wait for a message: only catches a hang.
HANG_MS = 20000


@pytest.fixture
def known_pair(make_pair):
    """``make_pair``'s sockets (no receive bound), the DEALER's identity
    known to the ROUTER."""
    router, dealer = make_pair()
    # the router learns the dealer's identity from a first message
    dealer.send_multipart([b"", b"hello"])
    assert router.poll(HANG_MS)
    identity = router.recv_multipart()[0]
    return router, dealer, identity


def _deliver(router, dealer, identity, *messages: list) -> None:
    """Send ``messages`` (each a list of frames after the identity) and
    wait until the last one is queued on ``dealer``."""
    for message in messages:
        router.send_multipart([identity, *message])
    assert dealer.poll(HANG_MS)


@pytest.mark.parametrize("engine", ENGINES)
def test_replies_in_order_then_none(engine, known_pair):
    router, dealer, identity = known_pair
    read = engine.callpath.read_reply
    assert read(dealer) is None
    array = np.arange(5000, dtype=np.uint16)
    failure = Reply(3, False, error="ValueError: no", traceback="Traceback...")
    _deliver(
        router,
        dealer,
        identity,
        [b"", *protocol.encode_result(1, {"a": [1, "x"]})],
        [b"", *protocol.encode_result(2, array, {"n": 5000}, buffer_reply=True)],
        [b"", *protocol.encode_reply(failure)],
    )
    assert read(dealer) == Reply(1, True, {"a": [1, "x"]})
    second = read(dealer)
    assert (second.request_id, second.ok, second.info) == (2, True, {"n": 5000})
    np.testing.assert_array_equal(np.frombuffer(second.value, np.uint16), array)
    while (third := read(dealer)) is None:  # the three may not be queued yet
        assert dealer.poll(HANG_MS)
    assert third == failure
    assert read(dealer) is None


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bad", BAD_REPLIES, ids=BAD_REPLIES)
def test_bad_replies_raise_the_protocol_s_words(engine, bad, known_pair):
    router, dealer, identity = known_pair
    header = msgpack.packb(BAD_REPLIES[bad])
    with pytest.raises(ProtocolError) as expected:
        protocol.decode_reply([header])
    _deliver(router, dealer, identity, [b"", header])
    with pytest.raises(ProtocolError) as raised:
        engine.callpath.read_reply(dealer)
    assert str(raised.value) == str(expected.value)
    assert engine.callpath.read_reply(dealer) is None  # consumed


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "message", [[b"x", b"y"], [b"only"], [b""]], ids=["not empty", "one", "bare"]
)
def test_without_delimiter_is_refused_and_consumed(engine, message, known_pair):
    router, dealer, identity = known_pair
    _deliver(router, dealer, identity, message)
    with pytest.raises(ProtocolError, match="without delimiter"):
        engine.callpath.read_reply(dealer)
    assert engine.callpath.read_reply(dealer) is None


@pytest.mark.parametrize("engine", ENGINES)
def test_the_empty_receive_re_arms_the_fd(engine, known_pair):
    """After read_reply returned None, the socket's ZMQ_FD signals the next
    reply (the asyncio reader waits on it with no ZMQ_EVENTS check)."""
    router, dealer, identity = known_pair
    fd = dealer.getsockopt(zmq.FD)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    read = engine.callpath.read_reply
    for rid in range(5):
        while read(dealer) is not None:
            pass
        router.send_multipart([identity, b"", *protocol.encode_result(rid, rid)])
        assert poller.poll(HANG_MS), "the fd did not signal the reply"
        while (reply := read(dealer)) is None:  # a wake-up may come early
            assert poller.poll(HANG_MS), "the fd did not signal the reply"
        assert reply == Reply(rid, True, rid)
