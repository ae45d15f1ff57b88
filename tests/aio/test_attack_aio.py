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

from framerpc import RPCServer, transport
from framerpc.aio import server as aio_server
from framerpc.aio._link import Link
from framerpc.aio._signals import SignalHub
from framerpc.wire.messages import (
    Reply,
    Request,
    RPCEvents,
    decode_reply,
    encode_reply,
    encode_request,
)

HANG_S = 30
_names = itertools.count()


class _Count(logging.Handler):
    def __init__(self, text: str = "") -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
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
    # late replies are logged one each (debug); garbage at most once a second
    dropped = _Count("late reply")
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
    assert dropped.count == total // 2
    # the ticker ran while the reader was part way through the flood
    assert any(0 < n < total // 2 for n in seen), seen[:5]


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


class Holder:
    def hold(self) -> None:
        """async: never returns (until the server stops)."""
        raise NotImplementedError

    def add(self, a: int, b: int) -> int:
        """sync: ``a + b``."""
        raise NotImplementedError


class HolderServer(Holder, RPCServer):
    @RPCServer.register_method_json(timeout=None)
    async def hold(self) -> None:
        await asyncio.Event().wait()

    @RPCServer.register_method_json
    def add(self, a: int, b: int) -> int:
        return a + b


def test_async_calls_that_never_return_are_bounded(ctx, monkeypatch):
    """Calls of a never-returning async method each keep a task for ever
    (their client may have given up or left): beyond MAX_ASYNC_CALLS the
    server answers with a clear error instead of growing without bound,
    and sync calls are still answered."""
    monkeypatch.setattr(aio_server, "MAX_ASYNC_CALLS", 5, raising=False)
    server = HolderServer(ctx, f"inproc://attack-hold-{next(_names)}")
    server.start()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(server.url)

    def call(rid: int, method: str, *args: int) -> None:
        request = Request(RPCEvents.METHOD_CALL, rid, method=method, args=list(args))
        dealer.send_multipart([b"", *encode_request(request)])

    try:
        for rid in range(8):
            call(rid, "hold")
        call(100, "add", 2, 3)  # the sentinel: answered after the 8 above
        replies = {}
        while 100 not in replies:
            assert dealer.poll(HANG_S * 1000)
            reply = decode_reply(dealer.recv_multipart()[1:])
            replies[reply.request_id] = reply
        assert replies[100].ok and replies[100].value == 5
        refused = sorted(rid for rid, r in replies.items() if rid != 100)
        assert refused == [5, 6, 7]
        for rid in refused:
            assert not replies[rid].ok and "server busy" in replies[rid].error
    finally:
        dealer.close()
        server.close()
