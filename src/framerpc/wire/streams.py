"""Sans-I/O messages of the stream socket (see docs/guides/streams.md).

A server with ``RPCStream`` members binds one ROUTER socket for them; each
subscription is a DEALER connected to it (one subscription per DEALER).
No sockets here: functions build and check the frames.

Subscriber to server, one msgpack map frame of at most ``MAX_CONTROL``
bytes (``v`` is ``protocol.PROTOCOL_VERSION``)::

    {"v", "e": "sub", "s": stream name, "p": "latest" | "queue", "n": window}
    {"v", "e": "credit", "c": frames it can take now (1..window)}
    {"v", "e": "ping"}        # alive while idle: every heartbeat interval
    {"v", "e": "unsub"}

Server to subscriber::

    {"v", "e": "ok", "s": name, "ep": epoch, "n": window,
     "pi": ping interval in ms, 0 for none}                 # after "sub"
    {"v", "e": "err", "er": text}      # a refused or malformed message
    {"v", "e": "nosub"}                # credit/ping of an unknown subscriber
    {"v", "e": "probe"}                # heartbeats off: is it still there?
                                       # (ignored; a send that fails tells)
    [{"v", "e": "frame", "q": seq, "d": dropped, "ep": epoch},
     header, buffer]                   # one frame, against one credit

``header, buffer`` are ``framing.encode({"t": time, "in": info, "x":
frame})`` with the frame always out of band: encoded once per publish and
shared by every subscriber; only the small first map differs per
subscriber. ``epoch`` is a random number per server process: a restarted
server has a new one and counts ``seq`` from 0 again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from ..errors import ProtocolError
from ..stream import MAX_QUEUE, POLICIES
from . import framing
from .messages import PROTOCOL_VERSION

__all__ = [
    "MAX_CONTROL",
    "Control",
    "decode_control",
    "encode_control",
    "encode_meta",
    "decode_incoming",
]

#: Largest control message (bytes) either side reads; larger ones are
#: refused unread.
MAX_CONTROL = 1024
#: Longest stream name accepted in a "sub".
_MAX_NAME = 200
_SUBSCRIBER_EVENTS = ("sub", "credit", "ping", "unsub")


class Control:
    """One decoded control message: its event and checked fields."""

    __slots__ = ("event", "fields")

    def __init__(self, event: str, fields: dict[str, Any]) -> None:
        self.event = event
        self.fields = fields

    def __repr__(self) -> str:
        return f"Control({self.event!r}, {self.fields!r})"


def encode_control(event: str, **fields: Any) -> bytes:
    """One control frame."""
    return msgpack.packb({"v": PROTOCOL_VERSION, "e": event, **fields})


def encode_meta(seq: int, dropped: int, epoch: int) -> bytes:
    """The per-subscriber first frame of a stream frame message."""
    return msgpack.packb(
        {"v": PROTOCOL_VERSION, "e": "frame", "q": seq, "d": dropped, "ep": epoch}
    )


def _unpack_map(frame: Any) -> dict:
    view = memoryview(frame)
    if view.nbytes > MAX_CONTROL:
        raise ProtocolError(
            f"stream message of {view.nbytes} bytes (most {MAX_CONTROL})"
        )
    try:
        value = msgpack.unpackb(
            view,
            max_str_len=MAX_CONTROL,
            max_bin_len=MAX_CONTROL,
            max_array_len=64,
            max_map_len=16,
            max_ext_len=0,
        )
    except Exception as exc:
        raise ProtocolError(f"stream message is not msgpack: {exc}") from None
    if type(value) is not dict:
        raise ProtocolError("stream message must be a msgpack map")
    version = value.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported stream protocol version {version!r}")
    return value


def decode_control(frames: Sequence) -> Control:
    """Check a subscriber's message (without its routing identity).

    Raises
    ------
    ProtocolError
        Not exactly one frame, too large, not a map of a known event, or a
        field of the wrong type or range.
    """
    if len(frames) != 1:
        raise ProtocolError(f"stream control message has {len(frames)} frames, not 1")
    value = _unpack_map(frames[0])
    event = value.get("e")
    if type(event) is not str or event not in _SUBSCRIBER_EVENTS:
        raise ProtocolError(f"unknown stream event {str(event)[:40]!r}")
    if event == "sub":
        name, policy, window = value.get("s"), value.get("p"), value.get("n")
        if type(name) is not str or not 0 < len(name) <= _MAX_NAME:
            raise ProtocolError("'sub' needs a stream name")
        if type(policy) is not str or policy not in POLICIES:
            raise ProtocolError(f"unknown stream policy {str(policy)[:40]!r}")
        if type(window) is not int or not 1 <= window <= MAX_QUEUE:
            raise ProtocolError(f"stream window must be 1..{MAX_QUEUE}")
        if policy == "latest" and window != 1:
            raise ProtocolError("policy 'latest' has a window of 1")
        return Control(event, {"name": name, "policy": policy, "window": window})
    if event == "credit":
        credit = value.get("c")
        if type(credit) is not int or not 1 <= credit <= MAX_QUEUE:
            raise ProtocolError(f"credit must be 1..{MAX_QUEUE}")
        return Control(event, {"credit": credit})
    return Control(event, {})


def decode_incoming(
    frames: Sequence, max_header: int = framing.MAX_HEADER_SIZE
) -> tuple[dict, Any, dict | None]:
    """Check a message from the stream server (subscriber side).

    Returns
    -------
    tuple
        ``(first map, frame, body)``: for a stream frame the read-only
        array or memoryview over the received buffer and the decoded
        ``{"t", "in"}`` body; for a control message None and None.

    Raises
    ------
    ProtocolError
        A malformed message.
    """
    if not frames:
        raise ProtocolError("empty stream message")
    first = _unpack_map(frames[0])
    event = first.get("e")
    if event != "frame":
        if len(frames) != 1 or type(event) is not str:
            raise ProtocolError("malformed stream control message")
        return first, None, None
    seq, dropped, epoch = first.get("q"), first.get("d"), first.get("ep")
    if not all(type(x) is int and x >= 0 for x in (seq, dropped, epoch)):
        raise ProtocolError("stream frame needs int seq, dropped and epoch")
    if len(frames) != 3:
        raise ProtocolError(f"stream frame message has {len(frames)} frames, not 3")
    body = framing.decode(frames[1:], 2, max_header)
    frame, info, stamp = body.get("x"), body.get("in"), body.get("t")
    if type(info) is not dict or type(stamp) is not float:
        raise ProtocolError("stream frame needs an info map and a float time")
    if not isinstance(frame, memoryview) and not hasattr(frame, "dtype"):
        raise ProtocolError("stream frame must carry a buffer or an array")
    return first, frame, body
