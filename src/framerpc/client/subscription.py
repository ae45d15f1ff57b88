"""Subscription: one client-side subscription to an ``RPCStream``.

A thread with its own DEALER connected to the server's stream socket
(``_streamproto`` describes the messages). It subscribes with its policy,
then grants credit for the frames its local buffer can take: its credit
window at first, then one per frame the consumer took (or the callback
returned from). So the local buffer never holds more than the window,
nothing is dropped on the client side, and a slow consumer costs the
server nothing but its own pending frames.

The thread also pings the server while idle (so that the server keeps it
past its heartbeat bound), subscribes again when the server does not know
it (a restart on the same endpoint, or forgotten while frozen), and
follows a new ``stream_url`` when the proxy reads the inventory of a
restarted server (``StreamHandle.url``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import zmq

from .. import _lifecycle, transport
from ..errors import ProtocolError, RemoteError
from ..stream import Policy, credit_window
from ..transport.waker import Waker
from ..wire import streams as _streamproto

if TYPE_CHECKING:
    from .streams import StreamHandle

__all__ = ["Subscription"]

_log = logging.getLogger(__name__)

#: Longest wait (s) of a subscription thread (the asyncio one's timer
#: interval, ``framerpc.aio._subscription``, imports these three): how soon
#: it notices a new URL or resends an unanswered subscription.
_POLL_S = 0.1
#: Wait (s) for the server's answer before subscribing again.
_RESUBSCRIBE_S = 1.0
#: Ping interval (s) when heartbeats are off (the server then keeps
#: silent subscribers, but a ping still finds out that it restarted).
_PING_S = 1.0


class Subscription(threading.Thread):
    """One subscription: iterate it for ``(frame, info)``, or give a callback.

    Made by ``StreamHandle.subscribe``; ``close`` it (or leave its ``with``
    block) to end it. The frame is a read-only numpy array (a read-only
    memoryview for bytes-like frames) over the received buffer, not a
    copy. ``info`` holds the publisher's keys plus ``seq`` (per stream,
    from 0 in each server process), ``t`` (the server's ``time.time()`` at
    publish), ``dropped`` (frames published but not delivered to this
    subscriber since its previous frame: ``seq`` minus the previous ``seq``
    minus one) and ``epoch`` (a number per server process: a new one means
    the server restarted and ``seq`` counts from 0 again).

    Attributes
    ----------
    dropped : int
        Frames dropped for this subscriber so far (summed ``dropped``).
    received : int
        Frames received so far.
    """

    def __init__(
        self,
        handle: StreamHandle,
        policy: Policy,
        window: int,
        callback: Callable[[Any, dict[str, Any]], object] | None,
    ) -> None:
        super().__init__(name=f"Subscription({handle.name})", daemon=True)
        self._handle = handle
        self.policy = policy
        self.queue = window  # frames the server may hold for it
        self.window = credit_window(policy, window)  # frames held here at most
        self._callback = callback
        self._cond = threading.Condition()
        self._ready: collections.deque[tuple[Any, dict[str, Any]]] = collections.deque()
        self._to_grant = 0
        self._stop_flag = threading.Event()
        self._error: Exception | None = None
        self._epoch: int | None = None
        self._ping_s = _PING_S  # set from the options and the server's "ok"
        self._asked = -1e9  # monotonic time of the last "sub" (the thread's)
        self._prev_seq: int | None = None
        self.dropped = 0
        self.received = 0
        self.subscribed = threading.Event()  # the server acknowledged
        self._answered = threading.Event()  # acknowledged or refused
        context = handle._proxy._zmq_context
        self._options: transport.SocketOptions = handle._proxy._options
        self._socket = transport.make_socket(context, zmq.DEALER, self._options)
        try:
            self._waker = Waker(context)
        except BaseException:
            transport.close_quietly(self._socket)
            raise

    # -- consumer side ---------------------------------------------------
    def get(self, timeout: float | None = None) -> tuple[Any, dict[str, Any]]:
        """The next frame and its info; waits up to ``timeout`` s (None: no
        limit, until a frame or ``close``).

        Raises
        ------
        TimeoutError
            No frame within ``timeout``.
        RemoteError
            The server refused the subscription.
        EOFError
            The subscription is closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                if self._error is not None:
                    raise self._error
                if self._stop_flag.is_set():
                    raise EOFError(f"subscription to {self._handle.name} is closed")
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise TimeoutError(
                        f"no frame of stream {self._handle.name} within {timeout} s"
                    )
                self._cond.wait(wait)
            item = self._ready.popleft()
            self._to_grant += 1
        self._waker.wake()  # the thread sends the credit
        return item

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        return self

    def __next__(self) -> tuple[Any, dict[str, Any]]:
        try:
            return self.get(None)
        except EOFError:
            raise StopIteration from None

    def close(self, timeout: float = 5.0) -> None:
        """End the subscription: the thread unsubscribes, closes its socket
        and is joined (not when called from a callback); idempotent.
        An iteration in progress stops."""
        self.stop()
        if self.ident is None:
            self._close_sockets()
        elif self is not threading.current_thread():
            self.join(timeout)
        self._handle._forget(self)

    def stop(self) -> None:
        """Ask the thread to stop, without waiting."""
        self._stop_flag.set()
        with self._cond:
            self._cond.notify_all()
        self._waker.wake()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the subscription thread ------------------------------------------
    def run(self) -> None:
        """Subscribe, grant credit, receive; until ``stop``."""
        sock, waker = self._socket, self._waker
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(waker.socket, zmq.POLLIN)
        url: str | None = None
        subscribed = False
        self._asked = -1e9  # monotonic time of the last "sub"
        ivl = self._options.heartbeat_ivl_ms
        self._ping_s = ivl / 1000 if ivl > 0 else _PING_S
        last_sent = time.monotonic()
        try:
            while not self._stop_flag.is_set():
                target = self._handle.url
                if target != url:
                    if url is not None:
                        sock.disconnect(url)
                    if target is not None:
                        sock.connect(target)
                    url, subscribed, self._asked = target, False, -1e9
                now = time.monotonic()
                if (
                    url is not None
                    and not subscribed
                    and now - self._asked >= _RESUBSCRIBE_S
                    and self._send(
                        "sub", s=self._handle.name, p=self.policy, n=self.queue
                    )
                ):
                    self._asked = last_sent = now
                if subscribed:
                    with self._cond:
                        grant, self._to_grant = self._to_grant, 0
                    if grant:
                        if self._send("credit", c=grant):
                            last_sent = now
                        else:
                            with self._cond:
                                self._to_grant += grant
                ping_s = self._ping_s
                if url is not None and now - last_sent >= ping_s and self._send("ping"):
                    last_sent = now
                ready = dict(poller.poll(int(_POLL_S * 1000)))
                if waker.socket in ready:
                    waker.drain()
                if sock in ready:
                    for _ in range(64):
                        try:
                            # parts past RECV_FRAMES_KEPT dropped as read
                            frames = transport.recv_frames(sock, zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        subscribed = self._on_message(frames, subscribed)
        except zmq.ZMQError as exc:
            if not (self._stop_flag.is_set() or _lifecycle.is_context_terminated(exc)):
                _log.error("subscription to %s failed: %s", self._handle.name, exc)
        finally:
            if not self._stop_flag.is_set():
                self._stop_flag.set()
            try:
                self._send("unsub")
            except zmq.ZMQError:
                pass
            self._close_sockets()
            with self._cond:
                self._cond.notify_all()

    def _send(self, event: str, **fields: Any) -> bool:
        """Send a control message; False when it could not go out now."""
        try:
            self._socket.send(_streamproto.encode_control(event, **fields), zmq.NOBLOCK)
            return True
        except zmq.Again:  # not connected (IMMEDIATE), or its queue is full
            return False

    def _close_sockets(self) -> None:
        transport.close_quietly(self._socket)
        self._waker.close()

    def _on_message(self, frames: list, subscribed: bool) -> bool:
        """Handle one server message; returns whether subscribed now."""
        try:
            first, frame, body = _streamproto.decode_incoming(
                frames, self._options.max_header_size
            )
        except ProtocolError as exc:
            _log.warning(
                "stream %s: ignored a malformed message: %s", self._handle.name, exc
            )
            return subscribed
        event = first["e"]
        if event == "frame":
            assert body is not None
            self._on_frame(first, frame, body)
            return subscribed
        if event == "ok":
            epoch, server_ping = first.get("ep"), first.get("pi")
            if type(server_ping) is int and 0 < server_ping < self._ping_s * 1000:
                self._ping_s = max(server_ping, 10) / 1000  # as often as it asks
            with self._cond:
                if epoch != self._epoch:
                    if self._epoch is not None:
                        _log.info("stream %s: the server restarted", self._handle.name)
                    self._epoch, self._prev_seq = (
                        epoch if type(epoch) is int else None,
                        None,
                    )
                # the credit of an earlier subscription is void: all free slots
                free = self.window - len(self._ready)
                self._to_grant = free if self._callback is None else self.window
            self.subscribed.set()
            self._answered.set()
            self._waker.wake()
            return True
        if event == "nosub":
            self._asked = -1e9  # at once
            _log.debug(
                "stream %s: the server does not know us; subscribing", self._handle.name
            )
            return False
        if event == "err":
            text = str(first.get("er", ""))[:200]
            if not subscribed:
                with self._cond:
                    self._error = RemoteError(text, "")
                    self._cond.notify_all()
                self._stop_flag.set()
                self._answered.set()
            else:
                _log.warning("stream %s: the server said: %s", self._handle.name, text)
            return subscribed
        _log.debug("stream %s: ignored event %r", self._handle.name, event)
        return subscribed

    def _on_frame(self, first: dict, frame: Any, body: dict) -> None:
        seq, epoch = first["q"], first["ep"]
        with self._cond:
            if epoch != self._epoch:  # from the server before a restart
                _log.debug("stream %s: a frame of an old epoch", self._handle.name)
                return
            if self._prev_seq is not None:
                if seq <= self._prev_seq:  # cannot happen: never go back
                    _log.warning(
                        "stream %s: frame %d after %d ignored",
                        self._handle.name,
                        seq,
                        self._prev_seq,
                    )
                    self._to_grant += 1  # its credit is free again
                    return
                dropped = seq - self._prev_seq - 1
            else:
                dropped = first["d"]
            self._epoch, self._prev_seq = epoch, seq
            self.dropped += dropped
            self.received += 1
            info = dict(body["in"])
            info.update(seq=seq, t=body["t"], dropped=dropped, epoch=epoch)
            if self._callback is None:
                self._ready.append((frame, info))
                self._cond.notify()
                return
        try:
            self._callback(frame, info)
        except Exception:
            _log.exception("a callback of stream %s raised", self._handle.name)
        with self._cond:
            self._to_grant += 1
