"""framerpc.aio: a call that is an idle loop's only business waits for its
reply outside the loop (``_solo.SoloWait``), and gives the loop back
as soon as anything else needs it: a timer due, a callback from another
thread, another descriptor the loop watches. Each of those tests would
hang (the server waits for what the loop must do) if the wait kept the
loop. The wait polls the socket's edge-triggered descriptor, as the
loop's reader does: no message may be left waiting without a wake-up.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
import zmq
from aio_helpers import run
from devices import Camera

import framerpc.aio
from framerpc.aio import _fdwatch, _link, _solo
from framerpc.aio import client as aio_client


@pytest.fixture
def blocking_polls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The solo waits that blocked in poll (their timeouts, ms), of the
    clients connected after this fixture."""
    waits: list[int] = []
    make = _solo._poller
    assert make is not None

    class Poller:
        def __init__(self) -> None:
            self._poller = make()  # type: ignore[misc]

        def register(self, fd: int, mask: int) -> None:
            self._poller.register(fd, mask)

        def poll(self, timeout: int = -1) -> Any:
            if timeout != 0:
                waits.append(timeout)
            return self._poller.poll(timeout)

    monkeypatch.setattr(_solo, "_poller", Poller)
    return waits


async def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once connected (the send retries of a connection still being made
    use the same period): the client's periodic tasks (peer watch,
    restarts) slowed to one turn in 30 s. The next call wakes the watch,
    the ones after it find the loop idle, no timer due before 30 s."""
    monkeypatch.setattr(_link, "_WATCH_S", 30.0)
    monkeypatch.setattr(aio_client, "_WATCH_S", 30.0)
    # their sleeps begun before end first (the loop runs timers in order)
    await asyncio.sleep(0.3)


def _count_solo_replies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch SoloWait.wait to count the calls it completed (their reply
    read in the wait, no turn of the loop)."""
    done = [0]
    real = _solo.SoloWait.wait

    def wait(self: Any, entry: Any, read: Any) -> None:
        real(self, entry, read)
        done[0] += entry.reply is not None

    monkeypatch.setattr(_solo.SoloWait, "wait", wait)
    return done


def test_calls_on_an_idle_loop_complete_in_the_solo_wait(
    ctx, server, monkeypatch
) -> None:
    done = _count_solo_replies(monkeypatch)

    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            assert cam._link._solo is not None
            await _quiet(monkeypatch)
            for i in range(20):
                assert await cam.add(i, 1) == i + 1
            frame, info = await cam.grab([64, 32], "uint16")
            assert frame.shape == (64, 32) and info["shape"] == [64, 32]
            assert not cam._pending

    run(main())
    # the first call wakes the peer watch (the loop has work then); a timer
    # due may take others, never all of them
    assert done[0] >= 1


@pytest.mark.parametrize("purged", [False, True])
def test_a_timer_due_during_a_call_runs(
    ctx, server, blocking_polls, purged, monkeypatch
) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            assert cam._link._solo is not None
            await _quiet(monkeypatch)
            loop = asyncio.get_running_loop()
            if purged:
                # many cancelled timers: the loop's next turn replaces its
                # heap of timers with a new list (the wait must see that one)
                for handle in [loop.call_later(60, print) for _ in range(300)]:
                    handle.cancel()
                await asyncio.sleep(0)
            assert await cam.add(1, 1) == 2  # wakes the peer watch
            blocking_polls.clear()
            # block() has no timeout: only the timer's callback releases it
            loop.call_later(0.05, server.release.set)
            assert await cam.block() is True
            assert blocking_polls, "block() did not wait in the solo wait"
            # never past the timer (ms): the wait read the loop's timers
            assert max(blocking_polls) <= 50

    run(main())


def test_the_wait_reads_the_timers_after_a_purge(monkeypatch) -> None:
    # asyncio replaces its heap of timers with a new list when it purges
    # many cancelled ones: a wait that kept the list it saw when it was
    # made would read only the cancelled timers (60 s) and miss the next
    # one (50 ms), keeping the loop past it
    timeouts: list[int] = []

    class Poller:  # records each wait's timeout; nothing ever arrives
        def register(self, fd: int, mask: int) -> None:
            pass

        def poll(self, timeout: int = -1) -> list:
            timeouts.append(timeout)
            return []

    monkeypatch.setattr(_solo, "_poller", Poller)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        try:
            solo = _solo.SoloWait.make(loop, sock)
            assert solo is not None
            heap = loop._scheduled  # type: ignore[attr-defined]
            for handle in [loop.call_later(60, print) for _ in range(300)]:
                handle.cancel()
            await asyncio.sleep(0)  # the next turn purges them
            assert loop._scheduled is not heap  # type: ignore[attr-defined]
            loop.call_later(0.05, print)
            entry = SimpleNamespace(reply=None, future=None)
            solo.wait(entry, lambda: None)
            assert len(timeouts) == 1 and 0 <= timeouts[0] <= 50
        finally:
            sock.close(0)
            context.term()

    asyncio.run(main())


def test_a_message_seen_by_the_send_check_is_read() -> None:
    # the socket's wake-up (ZMQ_FD) is edge-triggered: the ZMQ_EVENTS check
    # for calls waiting to send takes the wake-up of a message that came
    # after the reader's drain, so the reader must run again for it (the
    # solo wait, like the loop, relies on no message waiting unsignaled)
    left, right = socket.socketpair()  # a descriptor that stays quiet
    reads: list[int] = []

    class Sock:  # ZMQ_EVENTS answers in turn; then nothing is there
        closed = False
        events = [zmq.POLLIN | zmq.POLLOUT]

        def getsockopt(self, option: int) -> int:
            if option == zmq.FD:
                return right.fileno()
            return int(self.events.pop(0)) if self.events else 0

    async def main() -> None:
        watch = _fdwatch.FdWatch(Sock(), lambda: reads.append(1))  # type: ignore[arg-type]
        try:
            await asyncio.sleep(0)  # its first read, of what came before
            assert len(reads) == 1
            waiting = asyncio.ensure_future(watch.writable(30))
            await asyncio.sleep(0)  # a call waits for room to send
            watch._ready()  # the descriptor was readable: drain, then check
            assert len(reads) == 2
            await asyncio.wait_for(waiting, 30)  # POLLOUT: room to send
            for _ in range(3):
                await asyncio.sleep(0)
            assert len(reads) == 3  # and POLLIN: the message read after it
        finally:
            watch.close_now()

    try:
        asyncio.run(main())
    finally:
        left.close()
        right.close()


@pytest.mark.parametrize("source", ["threadsafe", "reader"])
def test_the_loop_is_given_back_for_other_work(
    ctx, server, source, blocking_polls, monkeypatch
) -> None:
    left, right = socket.socketpair()
    worker: list[threading.Thread] = []

    async def main() -> None:
        # its timeout: no deadline timer of the inventory's call due soon
        async with framerpc.aio.connect(
            Camera, server.url, context=ctx, timeout=60_000
        ) as cam:
            assert cam._link._solo is not None
            await _quiet(monkeypatch)
            # wakes the peer watch (a property: the client's timeout)
            assert await cam.gain == 1
            loop = asyncio.get_running_loop()
            if source == "threadsafe":  # through the loop's self-pipe

                def poke() -> None:
                    loop.call_soon_threadsafe(server.release.set)

            else:  # another descriptor the loop watches

                def readable() -> None:
                    right.recv(1)
                    server.release.set()

                loop.add_reader(right.fileno(), readable)

                def poke() -> None:
                    left.send(b"x")

            # poked once the call is in flight (the server has it)
            def poke_when_blocked() -> None:
                for _ in range(3000):
                    if "block" in server.calls:
                        break
                    time.sleep(0.01)
                poke()

            thread = threading.Thread(target=poke_when_blocked)
            worker.append(thread)
            blocking_polls.clear()
            thread.start()
            try:
                assert await cam.block() is True
                # no timer due before 30 s: only the loop's other work
                # (this test's poke) could end the solo wait in time
                assert max(blocking_polls) > 10_000
            finally:
                if source == "reader":
                    loop.remove_reader(right.fileno())

    try:
        run(main())
    finally:
        for thread in worker:
            thread.join(30)
        left.close()
        right.close()


def test_a_call_cancelled_in_the_solo_wait_drops_its_late_reply(
    ctx, server, blocking_polls, monkeypatch
) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            assert cam._link._solo is not None
            await _quiet(monkeypatch)
            assert await cam.add(1, 1) == 2  # wakes the peer watch
            blocking_polls.clear()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(cam.block(), 0.05)
            assert blocking_polls, "block() did not wait in the solo wait"
            assert not cam._pending
            server.release.set()  # its reply comes now, to nobody
            assert await cam.add(2, 3) == 5
            assert await cam.echo("after") == "after"
            assert not cam._pending

    run(main())


def test_no_solo_wait_where_the_loop_does_not_allow_it(ctx, server) -> None:
    async def calls() -> Any:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            assert await cam.add(1, 1) == 2
            return cam._link._solo

    # select() has no descriptor to poll: the usual path, calls work
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        assert loop.run_until_complete(calls()) is None
    finally:
        loop.close()
    # debug mode times each callback: a wait outside the loop would be
    # reported as a slow one
    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    try:
        assert loop.run_until_complete(calls()) is None
    finally:
        loop.close()
    # asyncio's default loop has it
    assert run(calls()) is not None
