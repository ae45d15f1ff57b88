"""A flood of bad replies logs about one line a second, not one each.

A server (hostile or broken) answering a call with thousands of malformed
or undelimited replies made the client's Channel log a warning per
message; it now logs through ``framerpc._ratelog.RateLimitedLog``: the
first at once, then at most one a second telling how many it stands for.
Both call path twins (pure and compiled) are run.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
import zmq
from callpath_parity_helpers import ENGINES, WAIT_MS

from framerpc import protocol
from framerpc.protocol import Request, RPCEvents

LOGGER = "framerpc.rpc.callpath"
FLOOD = 500  # of each kind: malformed, undelimited


@pytest.fixture
def flood_pair(make_pair) -> tuple[zmq.Socket, zmq.Socket]:
    """``make_pair``'s sockets without queue bounds: the flood all waits."""
    return make_pair(SNDHWM=0, RCVHWM=0)


def _flood_then_answer(router: zmq.Socket, request_id: int) -> threading.Thread:
    def run() -> None:
        assert router.poll(WAIT_MS * 10), "no request came"
        identity = router.recv_multipart()[0]
        for _ in range(FLOOD):
            router.send_multipart([identity, b"", b"\xc1 not msgpack"])
            router.send_multipart([identity, b"no delimiter"])
        good = protocol.encode_result(request_id, "mine")
        router.send_multipart([identity, b"", *good])

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("engine", ENGINES)
def test_a_flood_of_bad_replies_logs_about_once_a_second(engine, flood_pair, caplog):
    router, dealer = flood_pair
    channel = engine.Channel(dealer, "inproc://flood")
    thread = _flood_then_answer(router, 60)
    request = protocol.encode_request(
        Request(RPCEvents.METHOD_CALL, 60, "echo", ["mine"], {})
    )
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        reply = channel.request(request, 60, WAIT_MS * 10)
    elapsed = time.monotonic() - start
    thread.join()
    assert reply.value == "mine"
    dropped = [r for r in caplog.records if "dropped a" in r.getMessage()]
    # one at once, then at most one a second: never one per message
    assert 1 <= len(dropped) <= elapsed + 2, (len(dropped), elapsed)
