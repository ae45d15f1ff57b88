"""A hostile server against the asyncio client's reader (framerpc.aio).

Run under both engines (``FRAMERPC_PURE=1`` for the pure one). The
hostile server is a raw ROUTER over inproc://, so every message it sends
is in the client's queue before the loop runs again: no timing involved.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import zmq

from framerpc import transport
from framerpc.aio._link import Link
from framerpc.aio._signals import SignalHub
from framerpc.wire.messages import Reply, encode_reply

HANG_S = 30
_names = itertools.count()


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def test_a_flood_of_garbage_replies_does_not_starve_the_loop(ctx):
    """The reader reads a bounded batch, then lets the loop run its other
    tasks: a server streaming garbage (or replies for unknown ids) must
    not stop every other coroutine of the program while it lasts."""
    url = f"inproc://attack-aio-{next(_names)}"
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.SNDHWM, 0)
    router.bind(url)
    dropped = _Count()
    logger = logging.getLogger("framerpc.aio._link")
    logger.addHandler(dropped)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    total = 3000

    async def main() -> tuple[list[int], bool]:
        link = Link(url, transport.SocketOptions())
        link.open(ctx)
        try:
            call = asyncio.ensure_future(link.exchange([b"hello"], 7, None, "m"))
            while not router.poll(0):
                await asyncio.sleep(0.01)
                assert not call.done()
            identity = router.recv_multipart()[0]
            # garbage, then late replies for unknown ids, then the reply
            for i in range(total):
                if i % 2:
                    router.send_multipart([identity, b"", b"\xc1garbage"])
                else:
                    late = encode_reply(Reply(request_id=10_000 + i, ok=True))
                    router.send_multipart([identity, b"", *late])
            router.send_multipart(
                [identity, b"", *encode_reply(Reply(request_id=7, ok=True, value=1))]
            )
            seen: list[int] = []

            async def ticker() -> None:
                while not call.done():
                    seen.append(dropped.count)
                    await asyncio.sleep(0)

            await asyncio.gather(ticker(), asyncio.wait_for(call, HANG_S))
            return seen, call.result().value == 1
        finally:
            await link.aclose()

    try:
        seen, answered = asyncio.run(main())
    finally:
        logger.removeHandler(dropped)
        logger.setLevel(old_level)
        router.close()
    assert answered
    assert dropped.count == total
    # the ticker ran while the reader was part way through the flood
    assert any(0 < n < total for n in seen), seen[:5]


def test_a_flood_of_garbage_emissions_does_not_starve_the_loop(ctx):
    """The same for the signal socket: a (hostile) server publishing
    malformed emissions nonstop."""
    url = f"inproc://attack-aio-sig-{next(_names)}"
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind(url)
    dropped = _Count()
    logger = logging.getLogger("framerpc.aio._signals")
    logger.addHandler(dropped)
    total = 3000

    async def main() -> list[int]:
        hub = SignalHub(ctx, url, transport.SocketOptions())
        try:
            while not pub.poll(0):  # its subscription
                await asyncio.sleep(0.01)
            pub.recv()
            for _ in range(total):
                pub.send_multipart([b"\xc1garbage", b"x"])
            seen: list[int] = []
            while dropped.count < total:
                seen.append(dropped.count)
                await asyncio.sleep(0)
            return seen
        finally:
            await hub.aclose()

    try:
        seen = asyncio.run(asyncio.wait_for(main(), HANG_S))
    finally:
        logger.removeHandler(dropped)
        pub.close()
    assert any(0 < n < total for n in seen), seen[:5]
