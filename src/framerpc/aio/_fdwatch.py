"""Readiness of a ZeroMQ socket in an asyncio loop, with little overhead.

A ZeroMQ socket exposes a file descriptor (``ZMQ_FD``) that becomes
readable when the socket's events *may* have changed (edge-triggered),
after which ``ZMQ_EVENTS`` says what is ready. ``zmq.asyncio`` watches
that descriptor in the loop and turns each wait into futures; its
``poll``/``recv`` cost about 2.5x a whole sync echo call (measured by
benchmarks/bench_aio.py), so the hot path here registers the descriptor
with ``loop.add_reader`` itself, as ``zmq.asyncio`` does internally, and
drains the socket in the callback. Loops without ``add_reader`` (the
Windows proactor loop) fall back to a task awaiting ``zmq.asyncio``'s
``poll``.

Rules that keep edge-triggering safe: the callback drains until
``zmq.Again``; whoever sends on the socket calls ``kick`` after, since a
send can consume the notification of a message that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from .. import transport

__all__ = ["BATCH", "FdWatch"]

_log = logging.getLogger(__name__)

_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_EVENTS = int(zmq.EVENTS)
_NOBLOCK = int(zmq.NOBLOCK)
#: Most messages ``read_each`` takes in one turn of the loop.
BATCH = 256


class FdWatch:
    """Call ``on_readable()`` on the running loop whenever ``sock`` may
    have messages to read; wait for room to send with ``writable``.

    Parameters
    ----------
    sock : zmq.Socket
        A plain socket, used only from the loop's thread from now on.
    on_readable : callable
        Reads what is there, until ``zmq.Again``; must not raise
        (``zmq.ZMQError`` of a closed socket excepted, which stops the
        watch).
    """

    def __init__(self, sock: zmq.Socket, on_readable: Callable[[], None]) -> None:
        self._sock = sock
        self._on_readable = on_readable
        self._loop = asyncio.get_running_loop()
        self._send_waiters: list[asyncio.Future] = []
        self._asock: Any = None
        self._task: asyncio.Task | None = None
        fd = int(sock.getsockopt(zmq.FD))
        self._fd: int | None = fd
        try:
            self._loop.add_reader(fd, self._ready)
        except NotImplementedError:  # no add_reader: zmq.asyncio polls
            self._fd = None
            self._asock = zmq.asyncio.Socket.from_socket(sock)
            self._task = self._loop.create_task(self._poll_loop())
        self._loop.call_soon(self._ready)  # what came before the watch

    @property
    def on_loop_reader(self) -> bool:
        """Whether the loop watches the descriptor itself (``add_reader``),
        not a ``zmq.asyncio`` polling task."""
        return self._fd is not None

    def _ready(self) -> None:
        sock = self._sock
        try:
            if sock.closed:
                return
            self._on_readable()
            waiters = self._send_waiters
            if waiters:
                events = int(sock.getsockopt(_EVENTS))
                if events & _POLLIN:  # came after the drain: this check took
                    self._loop.call_soon(self._ready)  # its wake-up, read it
                if events & _POLLOUT:
                    self._send_waiters = []
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
        except zmq.ZMQError as exc:  # closed under us, or the context ended
            _log.debug("socket watch stopped: %s", exc)
            self._stop_watching()

    async def _poll_loop(self) -> None:
        while True:
            await self._asock.poll(None, _POLLIN)
            self._ready()

    def read_each(self, handle: Callable[[list], object], budget: int = BATCH) -> None:
        """Receive the waiting messages and pass each to ``handle(frames)``,
        ``budget`` of them at most in this turn of the loop: then the rest
        in the next turn (``kick``), so that a flood cannot starve the
        loop. Stops when ``handle`` closed the socket. For an
        ``on_readable`` (it drains until ``ZMQ_EVENTS`` shows no message).
        """
        sock = self._sock
        recv = transport.recv_frames
        events = sock.getsockopt
        while int(events(_EVENTS)) & _POLLIN:  # cheaper than a zmq.Again
            budget -= 1
            if budget < 0:
                self.kick()
                return
            handle(recv(sock, _NOBLOCK))
            if sock.closed:  # handle closed it (a subscription's callback)
                return

    def kick(self) -> None:
        """After a send: have ``on_readable`` run if a message is waiting
        (the send may have taken the descriptor's wake-up)."""
        if int(self._sock.getsockopt(_EVENTS)) & _POLLIN:
            self._loop.call_soon(self._ready)

    def drain(self) -> None:
        """Run ``on_readable`` now if a message is waiting."""
        if self._sock.closed:
            return
        try:
            ready = int(self._sock.getsockopt(_EVENTS)) & _POLLIN
        except zmq.ZMQError as exc:  # closed under us, or the context ended
            _log.debug("socket watch stopped: %s", exc)
            self._stop_watching()
            return
        if ready:
            self._ready()

    async def writable(self, timeout_s: float) -> None:
        """Wait until the socket may have room to send, ``timeout_s`` at
        most (the caller tries again either way)."""
        if self._asock is not None:
            await self._asock.poll(int(timeout_s * 1000), _POLLOUT)
            return
        waiter = self._loop.create_future()
        self._send_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            pass

    def _stop_watching(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._fd = None

    async def aclose(self) -> None:
        """Stop watching; call before the socket closes."""
        self.close_now()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def close_now(self) -> None:
        """``aclose`` without waiting for the polling task to end (for
        ``Context.destroy()``, which cannot await); in the loop's thread."""
        self._stop_watching()
        if self._task is not None:  # kept: aclose waits for its end
            self._task.cancel()
        if self._asock is not None:
            self._asock._clear_io_state()  # unregister before the fd closes
            self._asock = None
        for waiter in self._send_waiters:
            waiter.cancel()
        self._send_waiters = []
