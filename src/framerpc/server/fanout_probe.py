"""What a signal fan-out learns of an XPUB's pipes through ``TOPICS_COUNT``
(issue 11: subscriber churn must not stall the server).

In ``XPUB_MANUAL`` mode ``SUBSCRIBE`` and ``UNSUBSCRIBE`` act on the pipe
of the last input message read (libzmq's ``_last_pipe``), which is none
after a departure's bare ``b"\\x00"`` (then both are no-ops), and
``TOPICS_COUNT`` counts the topics some pipe holds. Every subscriber's
private prefix is held by its pipe alone, so:

- the last pipe holds prefix P when unsubscribing it from P lowers the
  count (``holds_one``: one option set and one read per record);
- nobody holds P (its subscriber left) when subscribing a live last pipe
  to P raises the count (``gone``);
- a departure does not lower the count (libzmq 4.3.5 forgets the pipe
  without counting its topics down), and leaves no last pipe: records
  of departed subscribers are found at the next arrival (its pipe is
  live), or by a ``Finder`` once the input is read.

An arrival probes every record on the new pipe to refuse a second ``b""``
from a pipe that has a prefix already (one prefix, one bound per
connection): O(records) per arrival, O(N^2) for N joining at once. So a
read of the input (``Fanout.read_input``) stops after ``READ_WORK``
records probed, and the serve loop answers other clients before the next
read. A handshake token may thus be emitted while subscriptions are still
queued: it reaches only pipes with a prefix, so never one whose
subscription was not read, and that client sends its handshake again
(every 20 ms) and gets a later token.

Each function restores what it changed before it returns; the caller holds
the signal lock and sends nothing in between.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import zmq

__all__ = ["Finder", "find_departed", "count", "gone", "holds_one", "last_pipe_live"]

_TOPICS = int(zmq.TOPICS_COUNT)
_SUBSCRIBE = int(zmq.SUBSCRIBE)
_UNSUBSCRIBE = int(zmq.UNSUBSCRIBE)
#: A topic no subscriber holds and no emission starts with (0xc1 is never
#: used in msgpack, and is not JSON whitespace); held for an instant only.
_MARK = b"\xc1\xc1framerpc-probe"


def count(sock: zmq.Socket) -> int:
    """Topics some pipe of ``sock`` holds."""
    return int(sock.getsockopt(_TOPICS))


def last_pipe_live(sock: zmq.Socket) -> bool:
    """True when ``sock`` has a last pipe (the last input read came from a
    pipe still attached), so that subscriptions act on it."""
    before = count(sock)
    sock.setsockopt(_SUBSCRIBE, _MARK)
    if count(sock) == before:  # a no-op: no last pipe
        return False
    sock.setsockopt(_UNSUBSCRIBE, _MARK)
    return True


def holds_one(sock: zmq.Socket, subs: Iterable[Any]) -> Any:
    """The record among ``subs`` whose prefix the last pipe holds, or None
    (``before`` read once: only these calls change the count here)."""
    before = count(sock)
    for sub in subs:
        sock.setsockopt(_UNSUBSCRIBE, sub.prefix)
        after = count(sock)
        if after == before - 1:  # it held the prefix alone: give it back
            sock.setsockopt(_SUBSCRIBE, sub.prefix)
            return sub
        before = after
    return None


def gone(sock: zmq.Socket, subs: Iterator[Any], work: int) -> tuple[list, int]:
    """The records among the next ``work`` of ``subs`` whose prefix no pipe
    holds (the last pipe must be live: else none is found), and how many
    were looked at."""
    found, seen = [], 0
    for sub in subs:
        before = count(sock)
        sock.setsockopt(_SUBSCRIBE, sub.prefix)
        if count(sock) == before + 1:  # nobody held it
            found.append(sub)
            sock.setsockopt(_UNSUBSCRIBE, sub.prefix)
        else:  # held already: by the last pipe (a no-op) or another
            _own(sock, sub.prefix, before)
        seen += 1
        if seen >= work:
            break
    return found, seen


def _own(sock: zmq.Socket, prefix: bytes, before: int) -> None:
    """After subscribing the last pipe to a held ``prefix``: take it back,
    and give it again when the last pipe was its holder (unsubscribing
    then lowered the count)."""
    sock.setsockopt(_UNSUBSCRIBE, prefix)
    if count(sock) == before - 1:
        sock.setsockopt(_SUBSCRIBE, prefix)


#: What the finder's own pipe sends to become the XPUB's last pipe, and
#: what the XPUB reads once that pipe is closed.
PROBE_MESSAGE = b"\x01" + _MARK + b"-finder"
PROBE_GONE = b"\x00" + _MARK + b"-finder"


class Finder:
    """Finds the records of departed subscribers while the server is idle.

    A departure leaves the XPUB without a last pipe, so the fan-out
    connects a pipe of its own (an XSUB over ``inproc://``, open only while
    departures are looked for) whose message makes it the last pipe, then
    checks each record with ``gone``, ``work`` records a step.
    """

    def __init__(self, fan: Any) -> None:
        if fan._probe_url is None:
            fan._probe_url = f"inproc://framerpc-fanout-{uuid.uuid4().hex}"
            fan.sock.bind(fan._probe_url)
        self.fan = fan
        self.base = fan.unresolved  # departures this pass accounts for
        self.sock = fan.sock.context.socket(zmq.XSUB)
        self.scanning = False  # True once its message was read
        self._unseen: Iterator[Any] = iter(list(fan.subscribers.values()))
        try:
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(fan._probe_url)
            self.sock.send(PROBE_MESSAGE, zmq.NOBLOCK)
        except zmq.ZMQError:
            self.sock.close(linger=0)
            raise

    def step(self, work: int) -> int:
        """Look at up to ``work`` records; the number looked at."""
        fan, xpub = self.fan, self.fan.sock
        try:
            if not last_pipe_live(xpub):  # a departure was read since: again
                self.scanning = False
                self.sock.send(PROBE_MESSAGE, zmq.NOBLOCK)
                return 1
            work = max(1, work)
            found, seen = gone(xpub, self._unseen, work)
        except zmq.ZMQError:  # closing, or its pipe full: another pass later
            self.close()
            return 1
        for sub in found:
            if sub.ident in fan.subscribers:
                fan._forget(sub)
        if seen < work:  # every record looked at
            fan.unresolved = max(0, fan.unresolved - self.base)
            self.close()
        return seen

    def close(self) -> None:
        if self.fan._finder is self:
            self.fan._finder = None
        self.sock.close(linger=0)


def find_departed(fan: Any, work: int) -> None:
    """``fan``'s input was read: look for departed records (about ``work``
    of them) with a pipe of its own."""
    finder = fan._finder
    try:
        if finder is not None and finder.scanning:
            finder.step(work)
        elif finder is None and fan.unresolved and fan._probe and work > 0:
            fan._finder = Finder(fan)
    except zmq.ZMQError:  # closing: records stay, bytes came back
        pass
