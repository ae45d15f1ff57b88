"""What a signal fan-out learns of an XPUB's pipes through ``TOPICS_COUNT``
(issue 11: subscriber churn must not stall the server).

In ``XPUB_MANUAL`` mode ``SUBSCRIBE`` and ``UNSUBSCRIBE`` act on the pipe
of the last input message read (libzmq's ``_last_pipe``), which is none
after a departure's bare ``b"\\x00"`` (then both are no-ops), and
``TOPICS_COUNT`` counts the topics some pipe holds. Every subscriber's
private prefix is held by its pipe alone, so:

- the last pipe holds prefix P when unsubscribing it from P lowers the
  count (:func:`holds_one`: one option set and one read per record);
- nobody holds P (its subscriber left) when subscribing a live last pipe
  to P raises the count (:func:`gone`);
- a departure does not lower the count (libzmq 4.3.5 forgets the pipe
  without counting its topics down), and leaves no last pipe: records
  of departed subscribers are found only once a live pipe was read.

Each function restores what it changed before it returns; the caller holds
the signal lock and sends nothing in between.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import zmq

__all__ = ["count", "gone", "holds_one", "last_pipe_live"]

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

