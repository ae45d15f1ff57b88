"""Waker: wake a thread blocked in ``zmq.Poller.poll`` from any thread
(the stream hub and each stream subscription use one)."""

from __future__ import annotations

import threading
import uuid

import zmq

from .. import transport

__all__ = ["Waker"]


class Waker:
    """Wake a thread blocked in ``zmq.Poller.poll`` from any thread.

    ``socket`` (a PULL) belongs to the woken thread; ``wake`` may be called
    from any thread (its PUSH is used under a lock). At most one wake-up
    is queued: waking twice before the thread drains wakes it once.
    """

    def __init__(self, context: zmq.Context) -> None:
        address = f"inproc://framerpc-wake-{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._push: zmq.Socket | None = None
        self.socket = context.socket(zmq.PULL)
        try:
            self._push = context.socket(zmq.PUSH)
            for sock in (self.socket, self._push):
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, 1)
                sock.setsockopt(zmq.RCVHWM, 1)
            self.socket.bind(address)
            self._push.connect(address)
        except BaseException:
            # ETERM (a context being terminated): open sockets would make
            # its term() wait for ever
            self.close()
            raise

    def wake(self) -> None:
        """Queue a wake-up unless one is queued; never blocks or raises."""
        with self._lock:
            if self._push is None:
                return
            try:
                self._push.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:  # EAGAIN: one is queued; ETERM: stopping
                pass

    def drain(self) -> None:
        """Read the queued wake-ups (the owner thread)."""
        try:
            while True:
                self.socket.recv(zmq.NOBLOCK)
        except zmq.Again:
            pass

    def close(self) -> None:
        """Close both ends (the owner thread, or before it started)."""
        with self._lock:
            push, self._push = self._push, None
        transport.close_quietly(push)
        transport.close_quietly(self.socket)
