"""A flood of bad replies to an asyncio client logs about one line a
second (``framerpc._ratelog.RateLimitedLog``), not one per message."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import zmq

from framerpc import transport
from framerpc.aio._link import Link
from framerpc.wire.messages import Reply, encode_reply

HANG_S = 30
FLOOD = 500  # of each kind: malformed, undelimited
_names = itertools.count()


def test_a_flood_of_bad_replies_logs_about_once_a_second(ctx, caplog):
    url = f"inproc://aio-flood-{next(_names)}"
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.SNDHWM, 0)
    router.bind(url)

    async def main() -> object:
        link = Link(url, transport.SocketOptions())
        link.open(ctx)
        try:
            call = asyncio.ensure_future(link.exchange([b"hello"], 7, None, "m"))
            while not router.poll(0):
                await asyncio.sleep(0.01)
            identity = router.recv_multipart()[0]
            for _ in range(FLOOD):
                router.send_multipart([identity, b"", b"\xc1garbage"])
                router.send_multipart([identity, b"no delimiter"])
            good = encode_reply(Reply(request_id=7, ok=True, value=1))
            router.send_multipart([identity, b"", *good])
            return (await asyncio.wait_for(call, HANG_S)).value
        finally:
            await link.aclose()

    start = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="framerpc.aio._link"):
            assert asyncio.run(main()) == 1
    finally:
        router.close()
    elapsed = time.monotonic() - start
    dropped = [r for r in caplog.records if "dropped a" in r.getMessage()]
    # one at once, then at most one a second: never one per message
    assert 1 <= len(dropped) <= elapsed + 2, (len(dropped), elapsed)
