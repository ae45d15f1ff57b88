"""A shortcut of the asyncio client's hot path on asyncio's own loops.

Two turns of an asyncio loop, the least a reply read by a loop callback
takes to reach the awaiting task, cost 40k instructions in Python 3.11's
pure-Python loop (callgrind; a whole sync call: 34k).

``SoloWait``: a call that is the loop's only business (nothing ready to
run, no timer due) waits for its reply in ``zmq_poll`` on its socket and
on the loop's own selector (an epoll or kqueue descriptor, readable when
anything the loop watches is ready), not in the loop. It stops waiting
as soon as something else needs the loop (a descriptor ready, a callback
from another thread: the loop's self-pipe is one of them) or the next
timer is due, and then awaits as usual; a reply read meanwhile goes
through the link's one reader, as any other. No other task could have
run in that time, so nothing is delayed; the call's task resumes without
the two turns. Loops that are not asyncio's selector loops (uvloop, Qt,
the Windows proactor), selectors without a descriptor, and debug mode
(which times callbacks) keep the usual path.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

__all__ = ["SoloWait"]

_log = logging.getLogger(__name__)

_POLLIN = int(zmq.POLLIN)
#: Least time (s) before the loop's next timer worth a solo wait.
_MIN_WAIT_S = 0.001


class SoloWait:
    """Wait for a socket's reply outside the loop while the loop is idle
    (see the module); ``make`` says whether ``loop`` allows it.

    Parameters
    ----------
    loop : asyncio.BaseEventLoop
        A selector loop of asyncio (``make`` checks).
    sock : zmq.Socket
        The socket whose replies are awaited.
    selector_fd : int
        The descriptor of the loop's selector.
    """

    def __init__(self, loop: Any, sock: zmq.Socket, selector_fd: int) -> None:
        self._loop = loop
        self._ready = loop._ready  # callbacks to run in the next turn
        self._clock = loop.time
        self._items: list[Any] = [(sock, _POLLIN), (selector_fd, _POLLIN)]
        self._sock = sock

    @classmethod
    def make(cls, loop: asyncio.AbstractEventLoop, sock: zmq.Socket) -> SoloWait | None:
        """A ``SoloWait`` for ``sock`` on ``loop``, or None where the loop
        is not one of asyncio's selector loops with a selector descriptor,
        or runs in debug mode."""
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
        return cls(loop, sock, fd)

    def wait(self, done: Callable[[], bool], read: Callable[[], None]) -> None:
        """Until ``done()``: while the loop is idle, wait in ``zmq_poll``
        and ``read()`` the socket whenever it is readable. Returns when
        done, or as soon as the loop has anything to do (the caller then
        awaits as usual)."""
        items, ready, loop = self._items, self._ready, self._loop
        sock, poll = self._sock, zmq.zmq_poll
        try:
            while not done():
                if ready or loop._stopping:
                    return
                timeout_ms = -1
                # the timers' heap (a new list after a purge of cancelled ones)
                scheduled = loop._scheduled
                if scheduled:
                    left = scheduled[0].when() - self._clock()
                    if left < _MIN_WAIT_S:
                        return
                    timeout_ms = math.floor(left * 1000)  # returns before it
                events = poll(items, timeout_ms)
                if not events:
                    return  # the next timer is due
                if events[0][0] is sock:  # zmq_poll keeps the items' order
                    read()
                    continue
                # the selector alone: anything the loop watches, or the
                # socket's own descriptor (a command without a message,
                # which zmq_poll has just taken): ask the selector again
                if poll(items[1:], 0):
                    return
        except zmq.ZMQError as exc:  # closed under us, or the context ended
            _log.debug("solo wait stopped: %s", exc)
