"""The ``pair`` fixture (a ROUTER and a DEALER connected over inproc://) and
its factory ``make_pair``, loaded as a plugin by tests/conftest.py for the
call path and message I/O tests (tests/rpc/, tests/transport/)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
import zmq

#: Receive bound (ms) of ``pair``'s sockets: a missing message fails fast.
WAIT_MS = 2000

_ids = itertools.count(1)


@pytest.fixture
def make_pair(
    ctx: zmq.Context,
) -> Iterator[Callable[..., tuple[zmq.Socket, zmq.Socket]]]:
    """Factory: ``make_pair(**options)`` gives a bound ROUTER and a DEALER
    connected to it, both with ``LINGER`` 0 and ``options`` (names of zmq
    socket options) set; all are closed at the end."""
    made: list[zmq.Socket] = []

    def make(**options: int) -> tuple[zmq.Socket, zmq.Socket]:
        router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
        made.extend((router, dealer))
        endpoint = f"inproc://pair-{next(_ids)}"
        router.bind(endpoint)
        dealer.connect(endpoint)
        for sock in (router, dealer):
            sock.setsockopt(zmq.LINGER, 0)
            for name, value in options.items():
                sock.setsockopt(getattr(zmq, name), value)
        return router, dealer

    yield make
    for sock in made:
        sock.close()


@pytest.fixture
def pair(make_pair: Callable[..., tuple[zmq.Socket, zmq.Socket]]) -> tuple:
    """A ROUTER and a DEALER connected over inproc://, receives bounded by
    ``WAIT_MS``."""
    return make_pair(RCVTIMEO=WAIT_MS)
