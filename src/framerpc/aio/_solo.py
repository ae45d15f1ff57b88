"""A shortcut of the asyncio client's hot path on asyncio's own loops.

Two turns of an asyncio loop, the least a reply read by a loop callback
takes to reach the awaiting task, cost 40k instructions in Python 3.11's
pure-Python loop (callgrind; a whole sync call: 34k).

``SoloWait``: a call that is the loop's only business (nothing ready to
run, no timer due) waits for its reply in ``poll(2)`` on its socket's
descriptor (``ZMQ_FD``) and on the loop's own selector (an epoll or
kqueue descriptor, readable when anything the loop watches is ready),
not in the loop. It stops waiting as soon as something else needs the
loop (a descriptor ready, a callback from another thread: the loop's
self-pipe is one of them) or the next timer is due, and then awaits as
usual; a reply read meanwhile goes through the link's one reader, as any
other. No other task could have run in that time, so nothing is delayed;
the call's task resumes without the two turns, and without a future
(the link makes one only when the call really awaits). Loops that are
not asyncio's selector loops (uvloop, Qt, the Windows proactor),
selectors without a descriptor, platforms without ``select.poll`` and
debug mode (which times callbacks) keep the usual path.

``ZMQ_FD`` is edge-triggered: it signals a change, and ``ZMQ_EVENTS`` (or
a receive) says whether a message is there. The wait polls it as the
loop's own reader does (``FdWatch``, registered with the same selector):
a readable descriptor runs the reader, which receives until nothing is
left (re-arming the signal); the sends of the link check ``ZMQ_EVENTS``
where a send may have taken a reply's signal (``Link._try_send``). So a
message is never waiting unsignaled when the wait begins, as the loop's
reader relies on too. ``select.poll`` with both descriptors registered
once costs a fraction of ``zmq_poll``, which builds its items each call.
"""

from __future__ import annotations

import asyncio
import logging
import select
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

__all__ = ["SoloWait"]

_log = logging.getLogger(__name__)

#: Least time (s) before the loop's next timer worth a solo wait.
_MIN_WAIT_S = 0.001
_POLLIN = getattr(select, "POLLIN", 1)
#: A descriptor that cannot be read again (closed under the wait).
_BROKEN = getattr(select, "POLLERR", 8) | getattr(select, "POLLNVAL", 32)
#: Makes the poll object (tests count the waits through it).
_poller: Callable[[], Any] | None = getattr(select, "poll", None)


class SoloWait:
    """Wait for a socket's reply outside the loop while the loop is idle
    (see the module); ``make`` says whether ``loop`` allows it.

    Parameters
    ----------
    loop : asyncio.BaseEventLoop
        A selector loop of asyncio (``make`` checks).
    fd : int
        The socket's ``ZMQ_FD``.
    selector_fd : int
        The descriptor of the loop's selector.
    """

    def __init__(self, loop: Any, fd: int, selector_fd: int) -> None:
        self._loop = loop
        self._ready = loop._ready  # callbacks to run in the next turn
        # the loop's clock: time.monotonic itself unless a subclass changed it
        base = asyncio.base_events.BaseEventLoop.time
        self._clock = time.monotonic if type(loop).time is base else loop.time
        self._fd = fd
        poller = _poller()  # type: ignore[misc]
        # in this order: poll() reports ready descriptors in the order they
        # were registered, so the socket's comes first when it is ready
        poller.register(fd, _POLLIN)
        poller.register(selector_fd, _POLLIN)
        self._poll = poller.poll

    @classmethod
    def make(cls, loop: asyncio.AbstractEventLoop, sock: zmq.Socket) -> SoloWait | None:
        """A ``SoloWait`` for ``sock`` on ``loop``, or None where the loop
        is not one of asyncio's selector loops with a selector descriptor,
        runs in debug mode, or the platform has no ``select.poll``."""
        if _poller is None:
            return None
        if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
            return None
        if loop.get_debug():
            return None
        selector = getattr(loop, "_selector", None)
        if not isinstance(getattr(loop, "_ready", None), deque):
            return None
        if not isinstance(getattr(loop, "_scheduled", None), list):
            return None
        try:
            fd = selector.fileno()  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):
            return None  # select() and poll() selectors have none
        if type(fd) is not int or fd < 0:
            return None
        return cls(loop, int(sock.getsockopt(zmq.FD)), fd)

    def wait(self, entry: Any, read: Callable[[], None]) -> None:
        """Until ``entry`` (the link's record of the call) has its reply or
        a future (a failure of the link's calls): while the loop is idle,
        wait in ``poll`` and ``read()`` the socket whenever its descriptor
        is readable. Returns then, or as soon as the loop has anything to
        do (the caller then awaits as usual)."""
        ready, loop, poll, fd = self._ready, self._loop, self._poll, self._fd
        try:
            while entry.reply is None and entry.future is None:
                if ready or loop._stopping:
                    return
                timeout_ms = -1
                # the timers' heap (a new list after a purge of cancelled ones)
                scheduled = loop._scheduled
                if scheduled:
                    left = scheduled[0]._when - self._clock()
                    if left < _MIN_WAIT_S:
                        return
                    timeout_ms = int(left * 1000)  # returns before it
                events = poll(timeout_ms)
                if not events:
                    return  # the next timer is due
                ready_fd, flags = events[0]
                if ready_fd != fd:  # the selector alone: anything else it watches
                    return
                # the socket's descriptor (the selector, which watches it
                # too, may be readable for it alone: the next poll says)
                read()
                if flags & _BROKEN:  # closed under us: the read failed the calls
                    return
        except zmq.ZMQError as exc:  # closed under us, or the context ended
            _log.debug("solo wait stopped: %s", exc)
