"""AsyncSubscription: one subscription of an asyncio proxy to an ``RPCStream``.

The asyncio twin of ``framerpc.client.subscription.Subscription``, with the
same messages (``framerpc.wire.streams``) and the same credit: its window
at first, then one per frame the consumer took (or the callback returned
from), so the server needs no change. No thread: a DEALER of its own,
read by a callback of the loop (``FdWatch.read_each``, a bounded number of
messages per wake-up), and one timer of the loop every 0.1 s that connects
to a new ``stream_url`` (a restarted server), subscribes again when
unanswered, pings while idle and retries credit that could not go out.
Credit goes out at once, from the consumer's ``get``, on the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import zmq

from .. import _lifecycle, transport
from ..client.subscription import _PING_S, _POLL_S, _RESUBSCRIBE_S
from ..errors import ProtocolError, RemoteError
from ..stream import Policy, credit_window
from ..wire import streams as _streamproto
from ._fdwatch import FdWatch
from ._link import private_context

if TYPE_CHECKING:
    from ._streams import AsyncStream

__all__ = ["AsyncSubscription"]

_log = logging.getLogger(__name__)

#: Wait (s) for the server's acknowledgement when the proxy has no timeout.
_ANSWER_S = 2.0

Frame = tuple[Any, dict[str, Any]]


class AsyncSubscription:
    """One subscription: ``async for frame, info in sub``, or a callback.

    Made by ``AsyncStream.subscribe``; it is live at once. Await it (or
    enter its ``async with``) to wait for the server's acknowledgement:
    frames published from then on are delivered as the policy says.
    ``close``/``aclose`` (or leaving the ``async with`` block) end it, as
    does closing the proxy: the iteration then ends (``StopAsyncIteration``)
    once the frames already received are read.

    Frames and ``info`` are those of the sync ``Subscription``: a read-only
    array (memoryview for bytes-like frames) over the received buffer, and
    the publisher's keys plus ``seq``, ``t``, ``dropped`` and ``epoch``.

    Attributes
    ----------
    dropped : int
        Frames dropped for this subscriber so far (summed ``dropped``).
    received : int
        Frames received so far.
    subscribed : asyncio.Event
        Set once the server acknowledged the subscription.
    """

    def __init__(
        self,
        handle: AsyncStream,
        policy: Policy,
        window: int,
        callback: Callable[[Any, dict[str, Any]], object] | None,
    ) -> None:
        client = handle._client
        self._handle = handle
        self.name = handle.name
        self.policy = policy
        self.queue = window  # frames the server may hold for it
        self.window = credit_window(policy, window)  # frames held here at most
        self._callback = callback
        self._timeout_ms: int | None = client._timeout
        self._loop = asyncio.get_running_loop()
        self._ready: deque[Frame] = deque()
        self._waiters: list[asyncio.Future] = []
        self._tasks: set[asyncio.Task] = set()  # async callbacks running
        self._to_grant = 0
        self._closed = False
        self._error: Exception | None = None
        self._epoch: int | None = None
        self._prev_seq: int | None = None
        self.dropped = 0
        self.received = 0
        self.subscribed = asyncio.Event()
        self._answered = asyncio.Event()  # acknowledged or refused
        self._options: transport.SocketOptions = client._options
        ivl = self._options.heartbeat_ivl_ms
        self._ping_s = ivl / 1000 if ivl > 0 else _PING_S
        self._url: str | None = None
        self._live = False  # the server knows us (answered "ok")
        self._asked = -1e9  # loop time of the last "sub"
        self._last_sent = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        context = private_context(client.context)
        self._socket = transport.make_socket(context, zmq.DEALER, self._options)
        try:
            self._fdwatch = FdWatch(self._socket, self._on_readable)
        except BaseException:
            transport.close_quietly(self._socket)
            raise
        self._tick()  # connects and subscribes now

    # -- consumer side ---------------------------------------------------
    async def get(self, timeout: float | None = None) -> Frame:
        """The next frame and its info; waits up to ``timeout`` s (None:
        until a frame comes or the subscription ends).

        Raises
        ------
        TimeoutError
            No frame within ``timeout``.
        RemoteError
            The server refused the subscription.
        EOFError
            The subscription is closed (and its received frames read).
        RuntimeError
            Called from another loop than the proxy's.
        TypeError
            The subscription has a callback (which gets the frames).
        """
        if self._callback is not None:
            raise TypeError(f"subscription to {self.name} has a callback: not iterable")
        loop = self._loop
        if asyncio.get_running_loop() is not loop:
            raise RuntimeError(
                f"subscription to {self.name} belongs to another event loop"
            )
        deadline = None if timeout is None else loop.time() + timeout
        while not self._ready:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise EOFError(f"subscription to {self.name} is closed")
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                if deadline is None:
                    await waiter
                else:
                    async with asyncio.timeout_at(deadline):
                        await waiter
            except TimeoutError:
                raise TimeoutError(
                    f"no frame of stream {self.name} within {timeout} s"
                ) from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        item = self._ready.popleft()
        if not self._closed:
            self._to_grant += 1  # its slot is free again: one more credit
            self._grant()
        return item

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> Frame:
        try:
            return await self.get(None)
        except EOFError:
            raise StopAsyncIteration from None

    async def started(self) -> AsyncSubscription:
        """Wait until the server acknowledged the subscription (at most
        the proxy's timeout; then a warning is logged and the subscription
        goes on trying); returns it.

        Raises
        ------
        RemoteError
            The server refused it (no such stream, too many subscribers);
            it is closed.
        """
        wait = self._timeout_ms / 1000 if self._timeout_ms is not None else _ANSWER_S
        try:
            async with asyncio.timeout(wait):
                await self._answered.wait()
        except TimeoutError:
            if not self._closed:
                _log.warning("subscription to stream %s not confirmed yet", self.name)
        if self._error is not None:
            raise self._error
        return self

    def __await__(self) -> Generator[Any, None, AsyncSubscription]:
        return self.started().__await__()

    async def __aenter__(self) -> AsyncSubscription:
        try:
            return await self.started()
        except BaseException:  # refused or cancelled: nothing stays open
            await self.aclose()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def close(self, linger: int | None = None) -> None:
        """End the subscription now: unsubscribe, close its socket, cancel
        running async callbacks; idempotent. Iterations end once the frames
        already received are read. From the loop's thread."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._url is not None and not self._socket.closed:
            try:
                self._send("unsub")  # the server forgets it now, not later
            except zmq.ZMQError:
                pass  # the context is ending: the socket closes anyway
        self._fdwatch.close_now()  # before the socket closes
        _lifecycle.close_socket(self._socket, linger)
        for task in list(self._tasks):
            task.cancel()
        self._wake()
        self._answered.set()
        self._handle._forget(self)

    async def aclose(self) -> None:
        """``close``, then wait for the cancelled callbacks to end."""
        tasks = list(self._tasks)
        await self._fdwatch.aclose()  # its polling task (no add_reader) first
        self.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def closed(self) -> bool:
        """Whether the subscription ended (closed, refused or its proxy closed)."""
        return self._closed

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- the socket --------------------------------------------------------
    def _tick(self) -> None:
        """Housekeeping, every ``_POLL_S`` (and at once when told "nosub")."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed:
            return
        try:
            self._housekeep()
        except zmq.ZMQError as exc:
            if not _lifecycle.is_context_terminated(exc):
                _log.error("subscription to %s failed: %s", self.name, exc)
            self.close()
            return
        self._timer = self._loop.call_later(min(_POLL_S, self._ping_s), self._tick)

    def _housekeep(self) -> None:
        sock = self._socket
        target = self._handle.url
        if target != self._url:
            if self._url is not None:
                try:
                    sock.disconnect(self._url)
                except zmq.ZMQError:
                    pass  # not connected any more
            if target is not None:
                sock.connect(target)
            self._url, self._live, self._asked = target, False, -1e9
        if self._url is None:
            return
        now = self._loop.time()
        if not self._live and now - self._asked >= _RESUBSCRIBE_S:
            if self._send("sub", s=self.name, p=self.policy, n=self.queue):
                self._asked = now
        self._grant()
        if now - self._last_sent >= self._ping_s:
            self._send("ping")

    def _send(self, event: str, **fields: Any) -> bool:
        """Send a control message; False when it could not go out now."""
        try:
            self._socket.send(_streamproto.encode_control(event, **fields), zmq.NOBLOCK)
        except zmq.Again:  # not connected (IMMEDIATE), or its queue is full
            return False
        self._last_sent = self._loop.time()
        self._fdwatch.kick()  # the send may have taken a message's wake-up
        return True

    def _grant(self) -> None:
        """Send the credit owed, if subscribed (else the "ok" sets it)."""
        if self._live and self._to_grant and self._send("credit", c=self._to_grant):
            self._to_grant = 0

    def _on_readable(self) -> None:
        self._fdwatch.read_each(self._on_message)

    def _on_message(self, frames: list) -> None:
        """Handle one message of the server."""
        try:
            first, frame, body = _streamproto.decode_incoming(
                frames, self._options.max_header_size
            )
        except ProtocolError as exc:
            _log.warning("stream %s: ignored a malformed message: %s", self.name, exc)
            return
        event = first["e"]
        if event == "frame":
            assert body is not None
            self._on_frame(first, frame, body)
        elif event == "ok":
            self._on_ok(first)
        elif event == "nosub":
            _log.debug("stream %s: the server does not know us; subscribing", self.name)
            self._live, self._asked = False, -1e9
            self._loop.call_soon(self._tick)  # not inside the read loop
        elif event == "err":
            text = str(first.get("er", ""))[:200]
            if self._live:
                _log.warning("stream %s: the server said: %s", self.name, text)
                return
            self._error = RemoteError(text, "")
            self._answered.set()
            self.close()
        else:
            _log.debug("stream %s: ignored event %r", self.name, event)

    def _on_ok(self, first: dict) -> None:
        epoch, server_ping = first.get("ep"), first.get("pi")
        if type(server_ping) is int and 0 < server_ping < self._ping_s * 1000:
            self._ping_s = max(server_ping, 10) / 1000  # as often as it asks
        if epoch != self._epoch:
            if self._epoch is not None:
                _log.info("stream %s: the server restarted", self.name)
            self._epoch = epoch if type(epoch) is int else None
            self._prev_seq = None
        # the credit of an earlier subscription is void: all free slots
        held = len(self._ready) + len(self._tasks)
        self._to_grant = max(self.window - held, 0)
        self._live = True
        self.subscribed.set()
        self._answered.set()
        self._grant()

    def _on_frame(self, first: dict, frame: Any, body: dict) -> None:
        seq, epoch = first["q"], first["ep"]
        if epoch != self._epoch:  # from the server before a restart
            _log.debug("stream %s: a frame of an old epoch", self.name)
            return
        if self._prev_seq is not None:
            if seq <= self._prev_seq:  # cannot happen: never go back
                _log.warning(
                    "stream %s: frame %d after %d ignored",
                    self.name,
                    seq,
                    self._prev_seq,
                )
                self._to_grant += 1  # its credit is free again
                self._grant()
                return
            dropped = seq - self._prev_seq - 1
        else:
            dropped = first["d"]
        self._prev_seq = seq
        self.dropped += dropped
        self.received += 1
        info = dict(body["in"])
        info.update(seq=seq, t=body["t"], dropped=dropped, epoch=epoch)
        self._ready.append((frame, info))
        if self._callback is None:
            self._wake()
        elif not self._tasks:
            self._run_callbacks()

    def _run_callbacks(self) -> None:
        """Hand the received frames to the callback, one at a time and in
        order: an async callback's next frame waits until its task ends."""
        callback = self._callback
        assert callback is not None
        while self._ready and not self._closed:
            frame, info = self._ready.popleft()
            try:
                result = callback(frame, info)
            except Exception:
                _log.exception("a callback of stream %s raised", self.name)
                result = None
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._callback_done)
                return
            self._returned()

    def _callback_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error(
                "a callback of stream %s raised", self.name, exc_info=task.exception()
            )
        self._returned()
        if not self._tasks:
            self._run_callbacks()

    def _returned(self) -> None:
        """A callback is done with its frame: one more credit."""
        if not self._closed:
            self._to_grant += 1
            self._grant()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "live" if self._live else "subscribing"
        return f"<AsyncSubscription {self.name} {self.policy} {state}>"
