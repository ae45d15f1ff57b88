"""Sans-I/O protocol: RPC messages as values, to and from lists of frames.

No sockets here: ``encode_request`` and friends return the frames to
send and ``decode_request`` and friends take the frames received, so
the protocol can be tested without ZeroMQ.

Header keys of a native message (frame 0, a msgpack map):

=====  ==========  =====================================================
key    type        meaning
=====  ==========  =====================================================
``v``  int         protocol version (``PROTOCOL_VERSION``)
``e``  str         event, an ``RPCEvents`` value
``i``  int         request id, echoed in the reply
``m``  str         METHOD_CALL: method name
``a``  list        METHOD_CALL: positional arguments
``k``  map         METHOD_CALL: keyword arguments
``p``  str         PROPERTY_GET / PROPERTY_SET: property name;
                   INIT_SIGNALS_HANDLING: handshake token
``x``  any         PROPERTY_SET: value; reply: result; signal: args list
``s``  str         EMIT_SIGNAL: signal name
``ok`` bool        reply: success
``er`` str         reply: error text when ``ok`` is false
``tb`` str         reply: remote traceback when ``ok`` is false
``in`` map         buffer reply: the info dict (``x`` holds the buffer)
=====  ==========  =====================================================

Frames after the header carry large buffers and arrays (see
``framerpc._framing_py``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import framing
from .errors import ProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "SYNC_SIGNAL",
    "KEY_VERSION",
    "KEY_EVENT",
    "KEY_ID",
    "KEY_METHOD",
    "KEY_ARGS",
    "KEY_KWARGS",
    "KEY_VALUE",
    "KEY_OK",
    "KEY_ERROR",
    "KEY_TRACEBACK",
    "KEY_INFO",
    "RPCEvents",
    "RegistryEvents",
    "Request",
    "Reply",
    "SignalEmission",
    "RegistryMessage",
    "encode_request",
    "encode_call",
    "decode_request",
    "encode_reply",
    "encode_result",
    "decode_reply",
    "encode_signal",
    "decode_signal",
    "encode_registry",
    "decode_registry",
    "is_legacy_frame",
    "peek_header",
    "peek_request_id",
    "request_from_header",
]

#: Wire version of the native protocol. Never reuse a number.
PROTOCOL_VERSION = 1
#: Signal name of the subscription handshake (no attribute can be named "").
SYNC_SIGNAL = ""

# -- header keys (the table above), shared with the call path ------------
# framerpc.rpc builds and checks call and reply headers with these names.
KEY_VERSION = "v"
KEY_EVENT = "e"
KEY_ID = "i"
KEY_METHOD = "m"
KEY_ARGS = "a"
KEY_KWARGS = "k"
KEY_VALUE = "x"
KEY_OK = "ok"
KEY_ERROR = "er"
KEY_TRACEBACK = "tb"
KEY_INFO = "in"


class RPCEvents(StrEnum):
    """Kinds of request a client sends to an ``RPCServer``."""

    GET_INVENTORY = "GET_INVENTORY"
    INIT_SIGNALS_HANDLING = "INIT_SIGNALS_HANDLING"
    METHOD_CALL = "METHOD_CALL"
    PROPERTY_GET = "PROPERTY_GET"
    PROPERTY_SET = "PROPERTY_SET"
    STOP_SERVER = "STOP_SERVER"
    EMIT_SIGNAL = "EMIT_SIGNAL"


class RegistryEvents(StrEnum):
    """Kinds of message exchanged with a ``DeviceRegistry``."""

    REGISTER = "REGISTER"
    UNREGISTER = "UNREGISTER"
    CHECK_ALIVE = "CHECK_ALIVE"
    LIST_DEVICES = "LIST_DEVICES"
    REGISTER_ACK = "REGISTER_ACK"
    ACK = "ACK"
    DEVICES = "DEVICES"
    UNSUPPORTED = "UNSUPPORTED"


# Fields each request event must carry, with their wire key and type.
_REQUEST_FIELDS: dict[RPCEvents, tuple[tuple[str, str, type | None], ...]] = {
    RPCEvents.GET_INVENTORY: (),
    RPCEvents.INIT_SIGNALS_HANDLING: (("name", "p", str),),
    RPCEvents.STOP_SERVER: (),
    RPCEvents.METHOD_CALL: (
        ("method", "m", str),
        ("args", "a", list),
        ("kwargs", "k", dict),
    ),
    RPCEvents.PROPERTY_GET: (("name", "p", str),),
    RPCEvents.PROPERTY_SET: (("name", "p", str), ("value", "x", None)),
}


# Wire name -> event, for a dict lookup instead of an enum call per request.
_REQUEST_EVENTS = {event.value: event for event in _REQUEST_FIELDS}


def is_legacy_frame(frame: bytes | memoryview) -> bool:
    """Tell whether frame 0 belongs to the older JSON protocol.

    A JSON object starts with ``{`` (0x7b); a msgpack map never does.
    """
    return len(frame) > 0 and frame[0] == 0x7B


# Request and Reply are not frozen: a frozen dataclass sets each field
# through object.__setattr__, which made building them a measurable part
# of an echo call (0.8 us against 0.2 us). Treat them as values all the same.
@dataclass(slots=True)
class Request:
    """One request from a client. Fields not used by ``event`` stay empty."""

    event: RPCEvents
    request_id: int
    method: str = ""
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    name: str = ""
    value: Any = None

    def __post_init__(self) -> None:
        if self.event not in _REQUEST_FIELDS:
            raise ProtocolError(f"{self.event!r} is not a request event")
        if type(self.request_id) is not int:
            raise ProtocolError(f"request id must be an int, got {self.request_id!r}")


@dataclass(slots=True)
class Reply:
    """The answer to one request.

    ``value`` is the result (for a buffer method, the buffer); ``info`` is
    the info dict of a buffer method's reply and None otherwise.
    """

    request_id: int
    ok: bool
    value: Any = None
    info: dict | None = None
    error: str = ""
    traceback: str = ""


@dataclass(frozen=True, slots=True)
class SignalEmission:
    """One emission of a server-side signal, published to subscribers."""

    name: str
    args: list
    # sigseq: the emission's number and the server's epoch (wire keys "q",
    # "ep"); None from older servers and JSON. Unchecked here: see _sigseq.
    seq: Any = None
    epoch: Any = None


@dataclass(frozen=True, slots=True)
class RegistryMessage:
    """A message to or from the device registry: an event and its payload."""

    event: RegistryEvents
    payload: dict
    request_id: int = 0


def _decode_header(
    frames: Sequence,
    max_frames: int,
    max_header: int,
    max_objects: int = framing.MAX_OBJECTS,
    max_depth: int = framing.MAX_DEPTH,
) -> dict:
    return _check_version(
        framing.decode(frames, max_frames, max_header, max_objects, max_depth)
    )


def _check_version(header: dict) -> dict:
    version = header.get("v")
    # type first: comparing an array (or True, 1.0) to an int is no check
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {version!r} "
            f"(this side speaks {PROTOCOL_VERSION})"
        )
    return header


#: How many leading entries of a header ``peek_header`` reads at most.
_PEEK_ENTRIES = 8


def peek_header(frame: Any) -> dict:
    """Best-effort header of a message that failed to decode, so that an
    error reply can carry its event and request id; {} when unreadable.

    Bounded work whatever the frame holds, no decoding of the rest: reads
    at most 8 leading entries and stops at the first whose value is a
    list or a map. Values that are nil, bools, numbers and strings of up
    to 255 bytes are kept; bytes, ext values and longer strings are
    skipped. Headers written by framerpc start with ``v``, ``e`` and ``i``.
    """
    try:
        view = memoryview(frame).cast("B")
    except (TypeError, ValueError):
        return {}
    end = len(view)
    if end == 0:
        return {}
    tag = view[0]
    if 0x80 <= tag <= 0x8F:
        count, pos = tag & 0x0F, 1
    elif tag == 0xDE and end >= 3:
        count, pos = int.from_bytes(view[1:3], "big"), 3
    elif tag == 0xDF and end >= 5:
        count, pos = int.from_bytes(view[1:5], "big"), 5
    else:
        return {}
    header: dict = {}
    for _ in range(min(count, _PEEK_ENTRIES)):
        key, pos = _peek_scalar(view, pos, end)
        if key is _NOT_SCALAR:
            break
        value, pos = _peek_scalar(view, pos, end)
        if value is _NOT_SCALAR:
            break
        if type(key) is str and value is not _SKIPPED:
            header[key] = value
    return header


_NOT_SCALAR = object()  # a list, a map or bad bytes: the peek stops
# bin 8/16/32, ext 8/16/32, str 8/16/32: bytes of their size field
_SIZE_WIDTHS = {
    0xC4: 1,
    0xC5: 2,
    0xC6: 4,
    0xC7: 1,
    0xC8: 2,
    0xC9: 4,
    0xD9: 1,
    0xDA: 2,
    0xDB: 4,
}
_SKIPPED = object()  # a scalar read past, not kept


def _peek_scalar(view: memoryview, pos: int, end: int) -> tuple[Any, int]:
    """The msgpack scalar at ``view[pos]`` (or ``_SKIPPED``) and the
    position after it; ``_NOT_SCALAR`` for a container or bad bytes."""
    if pos >= end:
        return _NOT_SCALAR, pos
    tag = view[pos]
    if tag <= 0x7F:
        return tag, pos + 1
    if tag >= 0xE0:
        return tag - 0x100, pos + 1
    if tag == 0xC0:
        return None, pos + 1
    if tag in (0xC2, 0xC3):
        return tag == 0xC3, pos + 1
    if tag in (0xCA, 0xCB):  # float 32, 64
        width = 4 if tag == 0xCA else 8
        if pos + 1 + width > end:
            return _NOT_SCALAR, pos
        raw = bytes(view[pos + 1 : pos + 1 + width])
        return struct.unpack(">f" if width == 4 else ">d", raw)[0], pos + 1 + width
    if 0xCC <= tag <= 0xD3:  # uint 8..64, then int 8..64
        width = 1 << ((tag - 0xCC) & 3)
        if pos + 1 + width > end:
            return _NOT_SCALAR, pos
        number = int.from_bytes(
            view[pos + 1 : pos + 1 + width], "big", signed=tag >= 0xD0
        )
        return number, pos + 1 + width
    if 0xD4 <= tag <= 0xD8:  # fixext: a type byte and 1..16 bytes
        return _SKIPPED, pos + 2 + (1 << (tag - 0xD4))
    if 0xA0 <= tag <= 0xBF:
        size, start = tag & 0x1F, pos + 1
    elif tag in _SIZE_WIDTHS:
        width = _SIZE_WIDTHS[tag]
        if pos + 1 + width > end:
            return _NOT_SCALAR, pos
        size = int.from_bytes(view[pos + 1 : pos + 1 + width], "big")
        start = pos + 1 + width + (1 if 0xC7 <= tag <= 0xC9 else 0)  # ext type
    else:
        return _NOT_SCALAR, pos
    if start + size > end:
        return _NOT_SCALAR, pos
    if (tag > 0xBF and tag < 0xD9) or size > 255:  # bytes, ext, a long str
        return _SKIPPED, start + size
    try:
        return bytes(view[start : start + size]).decode(), start + size
    except UnicodeDecodeError:
        return _SKIPPED, start + size


def peek_request_id(frame: Any) -> int:
    """The request id of a header that failed to decode, read by
    ``peek_header`` (bounded work); -1 when it cannot be read."""
    rid = peek_header(frame).get("i")
    return rid if type(rid) is int else -1


def encode_request(request: Request) -> list:
    """Frames of ``request``: the header, then any out-of-band buffers."""
    header: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "e": request.event.value,
        "i": request.request_id,
    }
    for attr, key, _ in _REQUEST_FIELDS[request.event]:
        header[key] = getattr(request, attr)
    return framing.encode(header)


def encode_call(request_id: int, method: str, args: list, kwargs: dict) -> list:
    """Frames of a METHOD_CALL request; same bytes as ``encode_request``."""
    return framing.encode(
        {
            KEY_VERSION: PROTOCOL_VERSION,
            KEY_EVENT: "METHOD_CALL",
            KEY_ID: request_id,
            KEY_METHOD: method,
            KEY_ARGS: args,
            KEY_KWARGS: kwargs,
        }
    )


def decode_request(
    frames: Sequence,
    max_frames: int = framing.MAX_FRAMES,
    max_header: int = framing.MAX_HEADER_SIZE,
    max_objects: int = framing.MAX_OBJECTS,
    max_depth: int = framing.MAX_DEPTH,
) -> Request:
    """Parse the frames of a request (after the routing envelope).

    The limits are those of ``framerpc.framing.decode``.

    Raises
    ------
    ProtocolError
        The message is malformed; the text says which field is wrong.
    MessageTooLargeError
        The message exceeds a limit (a subclass of ProtocolError).
    """
    return request_from_header(
        framing.decode(frames, max_frames, max_header, max_objects, max_depth)
    )


def request_from_header(header: dict) -> Request:
    """The request in a decoded header (see ``decode_request``), for a
    caller that decoded the frames already: the header is decoded once.

    Raises
    ------
    ProtocolError
        A wrong version or a missing or mistyped field.
    """
    _check_version(header)
    name = header.get("e")
    event = _REQUEST_EVENTS.get(name) if type(name) is str else None
    if event is None:
        raise ProtocolError(f"unknown event {header.get('e')!r} for a request")
    values = {}
    for attr, key, kind in _REQUEST_FIELDS[event]:
        if key not in header:
            raise ProtocolError(f"{event} request lacks field {key!r} ({attr})")
        value = header[key]
        if kind is not None and type(value) is not kind:
            raise ProtocolError(
                f"{event} field {attr!r} must be {kind.__name__}, "
                f"got {type(value).__name__}"
            )
        values[attr] = value
    return Request(event, header.get("i"), **values)


def encode_reply(reply: Reply, buffer_reply: bool = False) -> list:
    """Frames of ``reply``.

    With ``buffer_reply`` the value always travels as its own frame, so the
    client receives a memoryview (or an array) over the frame whatever its
    size.
    """
    if reply.ok:
        return encode_result(reply.request_id, reply.value, reply.info, buffer_reply)
    return framing.encode(
        {
            "v": PROTOCOL_VERSION,
            "i": reply.request_id,
            "ok": False,
            "er": reply.error,
            "tb": reply.traceback,
        }
    )


def encode_result(
    request_id: int, value: Any, info: dict | None = None, buffer_reply: bool = False
) -> list:
    """Frames of a successful reply; same bytes as ``encode_reply``."""
    if buffer_reply:
        value = framing.OutOfBand(value)
    if info is None:
        return framing.encode(
            {
                KEY_VERSION: PROTOCOL_VERSION,
                KEY_ID: request_id,
                KEY_OK: True,
                KEY_VALUE: value,
            }
        )
    return framing.encode(
        {
            KEY_VERSION: PROTOCOL_VERSION,
            KEY_ID: request_id,
            KEY_OK: True,
            KEY_VALUE: value,
            KEY_INFO: info,
        }
    )


def decode_reply(
    frames: Sequence,
    max_frames: int = framing.MAX_FRAMES,
    max_header: int = framing.MAX_HEADER_SIZE,
) -> Reply:
    """Parse the frames of a reply (after the empty delimiter frame)."""
    header = _decode_header(frames, max_frames, max_header)
    request_id, ok = header.get("i"), header.get("ok")
    if type(request_id) is not int or type(ok) is not bool:
        raise ProtocolError("reply needs an int request id and a bool 'ok'")
    if ok:
        info = header.get("in")
        if info is not None and type(info) is not dict:
            raise ProtocolError("buffer reply info must be a map")
        return Reply(request_id, True, header.get("x"), info)
    return Reply(
        request_id,
        False,
        error=str(header.get("er", "")),
        traceback=str(header.get("tb", "")),
    )


def encode_signal(emission: SignalEmission) -> list:
    """Frames published for one signal emission."""
    header = {
        "v": PROTOCOL_VERSION,
        "e": RPCEvents.EMIT_SIGNAL.value,
        "s": emission.name,
        "x": emission.args,
    }
    if emission.seq is not None:  # sigseq: numbered emissions
        header["q"], header["ep"] = emission.seq, emission.epoch
    return framing.encode(header)


def decode_signal(
    frames: Sequence,
    max_frames: int = framing.MAX_FRAMES,
    max_header: int = framing.MAX_HEADER_SIZE,
) -> SignalEmission:
    """Parse a published signal emission."""
    header = _decode_header(frames, max_frames, max_header)
    name = header.get("e")
    if type(name) is not str or name != RPCEvents.EMIT_SIGNAL:
        raise ProtocolError(f"expected a signal emission, got {header.get('e')!r}")
    name, args = header.get("s"), header.get("x")
    if type(name) is not str or type(args) is not list:
        raise ProtocolError("signal emission needs a name and an args list")
    return SignalEmission(name, args, header.get("q"), header.get("ep"))  # sigseq


def encode_registry(message: RegistryMessage) -> list:
    """Frames of a registry message."""
    return framing.encode(
        {
            "v": PROTOCOL_VERSION,
            "e": message.event.value,
            "i": message.request_id,
            "pl": message.payload,
        }
    )


def decode_registry(
    frames: Sequence,
    max_frames: int = framing.MAX_FRAMES,
    max_header: int = framing.MAX_HEADER_SIZE,
) -> RegistryMessage:
    """Parse a registry message; unknown events raise ``ProtocolError``."""
    header = _decode_header(frames, max_frames, max_header)
    try:
        name = header.get("e")
        event = RegistryEvents(name if type(name) is str else "")
    except ValueError:
        raise ProtocolError(f"unknown registry event {header.get('e')!r}") from None
    payload, request_id = header.get("pl", {}), header.get("i", 0)
    if type(payload) is not dict or type(request_id) is not int:
        raise ProtocolError("registry message needs a payload map and an int id")
    return RegistryMessage(event, payload, request_id)
