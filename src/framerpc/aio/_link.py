"""Link: the request socket of an asyncio client and its calls in flight.

One DEALER socket, as in the sync client, read by one reader: a callback
of the loop (``FdWatch``) that hands each reply to the future of the call
carrying its request id. Calls from any number of tasks send their
request at once (whole, without an await between its frames) and wait on
their own future; nothing is held across an await, so calls overlap. A
reply whose call was cancelled or timed out finds no future and is
dropped. One timer serves the deadlines of all calls, and while calls are
in flight a task checks every 0.1 s that the server is still there
(``PeerWatch``, as the sync client's wait slices).

The socket is an ordinary one made by ``framerpc.transport`` (same
options, CURVE, message I/O engine: compiled or pure twin): messages move
through ``transport.send_frames`` / ``transport.recv_frames`` without
blocking, and only readiness is waited for on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

import zmq

from .. import _lifecycle, transport
from .._peerwatch import PeerWatch
from .._ratelog import RateLimitedLog
from ..errors import PeerLostError, ProtocolError
from ..rpc import callpath
from ..wire.messages import Reply, Request
from ._fdwatch import FdWatch
from ._linkutil import describe, private_context
from ._linkwait import SendWaits
from ._solo import SoloWait

__all__ = ["Link", "describe"]

_log = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)
#: Most messages the reader takes in one turn of the loop.
_BATCH = 256
#: How often (s) calls in flight check that their server is still there.
_WATCH_S = 0.1
#: Most calls of one client in flight (sent, not yet answered); more wait
#: for a slot. The request socket's receive queue (RCVHWM) holds as many
#: replies: when it was full (100) while the loop was blocked, libzmq
#: stopped reading the connection, the heartbeat PONGs with it, and the
#: link fell to its own heartbeat timeout. A hostile server still meets
#: a bound (this many messages), after which that timeout applies.
MAX_IN_FLIGHT = 10_000


class _Pending:
    """A call in flight: its future (None until the call awaits: a call
    answered in the solo wait never needs one), its deadline (loop time,
    None: no timeout) and what the peer watch needs."""

    __slots__ = ("deadline", "endless", "future", "mark", "reply", "sent")

    def __init__(self, deadline: float | None) -> None:
        self.future: asyncio.Future | None = None
        self.deadline = deadline
        self.mark = 0
        self.endless = deadline is None
        self.sent = False
        self.reply: Reply | None = None


class Link(SendWaits):
    """The request socket of one client (see the module).

    Parameters
    ----------
    url : str
        The server's URL.
    options : SocketOptions
        Socket tuning.
    immediate : bool
        Whether the socket has ``ZMQ_IMMEDIATE`` (queues requests only on
        a live connection; needed by ``PeerWatch``). Without it, a reply
        not read yet outlives a connection the server closes right after
        it (``stop_server``), and there is no ``PeerWatch``: only the
        calls' timeouts bound them.
    """

    def __init__(
        self, url: str, options: transport.SocketOptions, *, immediate: bool = True
    ) -> None:
        self.url = url
        self._options = options
        self._immediate = immediate
        self._pending: dict[int, _Pending] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: Callable[[], float] = time.monotonic  # the loop's time
        self._socket: zmq.Socket | None = None
        self._fdwatch: FdWatch | None = None
        self._watch: PeerWatch | None = None
        self._tasks: list[asyncio.Task] = []
        self._busy = asyncio.Event()
        self._busy_set = False  # self._busy.is_set(), without a call
        self._solo: SoloWait | None = None  # see _solo
        # requests sent minus replies read: with none outstanding, no reply
        # can arrive meanwhile, so a send cannot take its wake-up
        self._unanswered = 0
        self._limit = MAX_IN_FLIGHT
        self._in_flight = 0  # calls sent and not finished
        self._slot_waiters: deque[asyncio.Future] = deque()
        # a flood of bad replies logs at most one line a second
        self._bad_replies = RateLimitedLog(_log)

    def check_usable(self) -> asyncio.AbstractEventLoop:
        """The loop it was opened in; RuntimeError when closed or used from
        another event loop (its sockets live in that one)."""
        loop = self._loop
        if self._closed or loop is None:
            raise RuntimeError(f"client of {self.url} is closed")
        if asyncio.get_running_loop() is not loop:
            raise RuntimeError(
                f"client of {self.url} belongs to another event loop: "
                "use it from the loop it was opened in"
            )
        return loop

    @property
    def watch(self) -> PeerWatch | None:
        """The socket's ``PeerWatch`` (None for inproc://)."""
        return self._watch

    def open(self, context: zmq.Context) -> None:
        """Make and connect the socket, in the running loop; ``aclose``
        it even when this raises."""
        loop = self._loop = asyncio.get_running_loop()
        if type(loop).time is not asyncio.BaseEventLoop.time:  # not monotonic()
            self._clock = loop.time
        # a plain shadow of the user's context: framerpc's own socket list
        # (see _lifecycle), plain sockets for the transport's message I/O
        sock = transport.make_socket(
            private_context(context), zmq.DEALER, self._options
        )
        self._socket = sock
        # room for the reply of every call in flight (see MAX_IN_FLIGHT)
        sock.setsockopt(zmq.RCVHWM, max(self._limit, self._options.hwm))
        if not self._immediate:
            sock.setsockopt(zmq.IMMEDIATE, 0)
        elif not self.url.startswith("inproc://"):  # cannot go away alone
            fresh_ms = self._options.reconnect_ivl_ms // 2  # see PeerWatch
            self._watch = PeerWatch(
                sock, self.url, self._options.dead_peer_ms, fresh_ms
            )
        sock.connect(self.url)
        self._fdwatch = FdWatch(sock, self._on_readable)
        if self._fdwatch.on_loop_reader:  # not with zmq.asyncio's poller
            self._solo = SoloWait.make(loop, sock)
        if self._watch is not None:
            self._tasks.append(
                asyncio.create_task(self._watch_peer(), name=f"aio-watch {self.url}")
            )

    async def exchange(
        self,
        frames: list,
        rid: int,
        timeout: int | None,
        method: str,
        request: Request | None = None,
        unsent: Callable[[], object] | None = None,
    ) -> Reply:
        """Send a request and wait for the reply carrying ``rid``; errors
        name ``method``, or ``request`` when given. ``unsent`` is called
        when the call ends without its request sent."""
        loop = self.check_usable()
        watch = self._watch
        started = self._clock()
        deadline = None if timeout is None else started + timeout / 1000
        entry = _Pending(deadline)
        pending = self._pending
        # registered before the send: the deadline timer sees sends waiting
        pending[rid] = entry
        try:
            if deadline is not None and (
                self._timer is None or deadline < self._timer_at
            ):
                self._arm(deadline)
            message = [b"", *frames]
            if watch is not None:
                entry.mark = watch.mark()
            if (
                self._in_flight >= self._limit
                or self._slot_waiters
                or not self._try_send(message)
            ):
                await self._send_slowly(message, entry)  # makes the future
            entry.sent = True
            self._in_flight += 1
            if watch is not None and not self._busy_set:
                self._busy_set = True
                self._busy.set()
            future = entry.future
            if future is None:  # no await yet: no other code ran meanwhile
                solo = self._solo
                if solo is not None and len(pending) == 1:  # loop idle
                    solo.wait(entry, self._on_readable)
                    if entry.reply is not None:
                        return entry.reply  # no future, no turn of the loop
                future = entry.future  # set by a failure in the wait
                if future is None:
                    future = entry.future = loop.create_future()
            # the reply is no result of the future: the loop's handle that
            # wakes this task holds the future until the turn ends
            await future
            return entry.reply  # type: ignore[return-value]
        except _Expired:
            what = describe(request) if request is not None else repr(method)
            raise TimeoutError(
                f"no reply to {what} from {self.url} within {timeout / 1000:g} s"  # type: ignore[operator]
            ) from None
        except PeerLostError as exc:
            what = describe(request) if request is not None else repr(method)
            waited = loop.time() - started
            raise PeerLostError(
                f"no reply to {what} after {waited:.1f} s: {exc}"
            ) from None
        finally:
            self._pending.pop(rid, None)
            if entry.sent:
                self._in_flight -= 1
                if self._slot_waiters:
                    self._free_slot()
            elif unsent is not None:
                unsent()

    def _arm(self, deadline: float) -> None:
        """Have ``_expire_due`` run at ``deadline`` (loop time).

        One timer for all calls, set for the earliest deadline: a timer
        per call (scheduled, then cancelled at the reply) cost 15 us of a
        90 us echo call.
        """
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._expire_due)  # type: ignore[union-attr]

    def _expire_due(self) -> None:
        """Fail the calls whose deadline passed; re-arm for the next one."""
        self._timer = None
        now = self._loop.time()  # type: ignore[union-attr]
        upcoming: float | None = None
        for entry in self._pending.values():
            deadline, future = entry.deadline, entry.future
            # (no future: a call between its start and its first await)
            if deadline is None or future is None or future.done():
                continue
            if deadline <= now:
                future.set_exception(_Expired())
            elif upcoming is None or deadline < upcoming:
                upcoming = deadline
        if upcoming is not None:
            self._arm(upcoming)

    def _try_send(self, message: list) -> bool:
        sock = self._socket
        if sock is None:  # aclose() ran while the call waited
            raise RuntimeError(f"client of {self.url} was closed during a call")
        try:
            transport.send_frames(sock, message, _NOBLOCK)
        except zmq.Again:  # not connected (IMMEDIATE) or the queue is full
            return False
        # a send may take the wake-up of a reply that came meanwhile (one
        # can only come while an earlier request is unanswered: the check
        # costs 3-8 us, a tenth of the call's overhead); other calls in
        # flight: check anyway (a stray extra reply from a broken server
        # would have made the count low)
        if self._unanswered or len(self._pending) > 1:
            self._fdwatch.kick()  # type: ignore[union-attr]
        self._unanswered += 1
        return True

    def sent_aside(self) -> None:
        """A one-way message went out on the socket (shared-memory
        releases): it may have taken a reply's wake-up, as in _try_send."""
        if (self._unanswered or self._pending) and self._fdwatch is not None:
            self._fdwatch.kick()

    def _on_readable(self) -> None:
        """The one reader (run by the socket's FdWatch): hand each reply to
        the future of its call; drops late and malformed ones."""
        sock = self._socket
        if sock is None:
            return
        read, idle = _read_reply, _read_idle
        pending = self._pending
        try:
            # one C call per message (compiled engine): receive, delimiter
            # and header; the receive that finds nothing (None) re-arms the
            # fd's wake-up as a ZMQ_EVENTS check would, and costs no more
            for _ in range(_BATCH):
                try:
                    reply = (read if self._unanswered else idle)(sock)
                except ProtocolError as exc:
                    if self._unanswered:
                        self._unanswered -= 1
                    self._bad_replies.warning(
                        "dropped a malformed reply from %s: %s", self.url, exc
                    )
                    continue
                if reply is None:
                    return
                if self._unanswered:
                    self._unanswered -= 1
                entry = pending.pop(reply.request_id, None)
                if entry is None:
                    _log.debug("dropped a late reply to request %s", reply.request_id)
                    continue
                future = entry.future
                if future is None:  # its call is in the solo wait
                    entry.reply = reply
                    continue
                if future.done():
                    _log.debug("dropped a late reply to request %s", reply.request_id)
                    continue
                entry.reply = reply
                future.set_result(None)
            # the rest next turn: a flood must not starve the loop
            self._fdwatch.kick()  # type: ignore[union-attr]
        except zmq.ZMQError as exc:  # the socket closed or the context ended
            if not self._closed:
                _log.debug("reader of %s stopped: %s", self.url, exc)
            self._fail_all(RuntimeError(f"client of {self.url} stopped: {exc}"))
            raise

    async def _watch_peer(self) -> None:
        """While calls are in flight, check every 0.1 s that their server
        is still there (``PeerWatch``, as the sync client's wait slices)."""
        watch = self._watch
        assert watch is not None
        while True:
            await self._busy.wait()
            await asyncio.sleep(_WATCH_S)
            if self._fdwatch is not None:
                # replies first: a reply that came before the server went
                # is the call's answer
                self._fdwatch.drain()
            # the watch's own locals hold no call across its sleeps: a call's
            # reply (a 25 MB frame) kept alive for 0.1 s made libzmq's next
            # buffers fresh memory, page-faulted in at every call
            lost = self._lost_calls(watch)
            if lost:
                if self._fdwatch is not None:
                    # libzmq reports the disconnect before it hands over the
                    # messages read with it: a reply sent right before the
                    # server closed (a call cancelled at its stop) comes next
                    await asyncio.sleep(_WATCH_S / 2)
                    self._fdwatch.drain()
                for entry, exc in lost:
                    self._fail(entry, exc)
                del entry, exc
                lost.clear()
            if not self._pending:
                self._busy_set = False
                self._busy.clear()

    def _lost_calls(self, watch: PeerWatch) -> list[tuple[_Pending, PeerLostError]]:
        """The calls sent whose server went away (``PeerWatch.check``)."""
        lost = []
        for entry in list(self._pending.values()):
            if not entry.sent:  # _send_later checks those
                continue
            try:
                watch.check(entry.mark, True, entry.endless)
            except PeerLostError as exc:
                lost.append((entry, exc))
        return lost

    def _fail_all(self, exc: BaseException) -> None:
        for entry in list(self._pending.values()):
            self._fail(entry, exc)
        self._pending.clear()

    def _fail(self, entry: _Pending, exc: BaseException) -> None:
        future = entry.future
        if future is None:  # a call in the solo wait: it awaits this one
            future = entry.future = self._loop.create_future()  # type: ignore[union-attr]
        if not future.done():
            future.set_exception(exc)

    async def aclose(self, linger: int | None = None) -> None:
        """Fail the calls in flight (``RuntimeError``), stop the tasks,
        close the socket (with ``linger`` ms, None: its own); idempotent."""
        tasks = self._tasks
        if self._fdwatch is not None:
            await self._fdwatch.aclose()  # its polling task ends first
        self.close_now(linger)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def close_now(
        self, linger: int | None = None, why: str = "was closed during a call"
    ) -> None:
        """``aclose`` without waiting for the tasks to end (for
        ``Context.destroy()``); in the loop's thread."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fail_all(RuntimeError(f"client of {self.url} {why}"))
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        self._solo = None
        if self._fdwatch is not None:
            self._fdwatch.close_now()  # before the socket closes
            self._fdwatch = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        sock, self._socket = self._socket, None
        _lifecycle.close_socket(sock, linger)


_read_reply = callpath.read_reply
if callpath.IMPLEMENTATION == "compiled":
    _read_idle = _read_reply
else:
    _POLLIN = int(zmq.POLLIN)

    def _read_idle(sock: zmq.Socket) -> Reply | None:
        """The pure engine's ``read_reply`` when every request is answered
        (the end of a solo call's drain): asked first whether a message is
        there. Its receive that finds none raises ``zmq.Again`` inside
        pyzmq, 30k instructions (callgrind); ``zmq_poll`` with no timeout
        takes 3k and re-arms ``ZMQ_FD`` alike (it checks ``ZMQ_EVENTS``).
        With replies due, a receive is the likelier to find one."""
        if not zmq.zmq_poll([(sock, _POLLIN)], 0):
            return None
        return _read_reply(sock)


class _Expired(Exception):
    """A call's timer fired (becomes the TimeoutError that names the call)."""
