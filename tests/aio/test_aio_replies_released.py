"""framerpc.aio: a reply's frames are not kept alive by the client once the
caller drops them.

The asyncio link's peer watch once kept the last call it had checked in
a local across its sleeps: the reply of that call (a 25 MB frame in the
benchmark) stayed alive for 0.1 s, or until the next call when no call
was in flight. libzmq's next receive buffer was then fresh memory, page-
faulted in at each call (a 24.9 MB fetch took twice the sync client's
time).
"""

from __future__ import annotations

import asyncio
import weakref

import numpy as np
from aio_helpers import until
from devices import Camera

import framerpc.aio

#: Ceiling (s) of a test's coroutine and of its waits: only catches a hang.
HANG_S = 30


def test_reply_checked_by_the_peer_watch_is_released(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            link = cam._link
            watch = link.watch
            assert watch is not None  # tcp: the peer watch runs
            checks = []
            check = watch.check

            def counted(mark: int, sent: bool, endless: bool) -> None:
                checks.append(sent)
                check(mark, sent, endless)

            watch.check = counted  # type: ignore[method-assign]
            # block() holds the server (served by one thread): grab() waits
            # behind it, in flight while the watch looks at both calls
            blocked = asyncio.create_task(cam.block())
            await until(lambda: server.calls.count("block") == 1, HANG_S)
            grabbed = asyncio.create_task(cam.grab([512, 512], "uint8"))
            await until(
                lambda: (
                    len(link._pending) == 2
                    and all(entry.sent for entry in link._pending.values())
                ),
                HANG_S,
            )
            checks.clear()
            await until(lambda: len(checks) >= 2, HANG_S)  # one turn of the watch
            server.release.set()
            assert await blocked is True
            frame, info = await grabbed
            assert info["shape"] == [512, 512]
            alive = weakref.ref(frame)
            del frame, info, grabbed, blocked
            for _ in range(3):  # the loop lets go of the finished task
                await asyncio.sleep(0)
            assert alive() is None, "the client still holds the reply"
            # a later call still works (the watch is fine)
            again, _ = await cam.grab([4, 4], "uint8")
            assert isinstance(again, np.ndarray)

    asyncio.run(asyncio.wait_for(main(), HANG_S))


def test_reply_released_when_the_caller_drops_it(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            for _ in range(3):
                frame, _ = await cam.grab([256, 256], "uint16")
                alive = weakref.ref(frame)
                del frame
                # no turn of the loop in between: nothing but the caller
                # held the reply
                assert alive() is None, "the client still holds the reply"

    asyncio.run(asyncio.wait_for(main(), HANG_S))
