"""Sans-I/O protocol: RPC messages as values, to and from lists of frames.

No sockets here: ``encode_request`` and friends return the frames to
send and ``decode_reply`` and friends take the frames received, so
the protocol can be tested without ZeroMQ. ``framerpc.rpc.requests``
parses a request: a METHOD_CALL's fields with ``framerpc.rpc``'s one check,
the other events' here (``request_event``, ``request_from_fields``).

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
``framerpc.wire._framing_py``); ``peek`` reads the header of a message
that failed to decode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProtocolError
from . import framing
from .header import (
    KEY_ARGS,
    KEY_ERROR,
    KEY_EVENT,
    KEY_ID,
    KEY_INFO,
    KEY_KWARGS,
    KEY_METHOD,
    KEY_OK,
    KEY_TRACEBACK,
    KEY_VALUE,
    KEY_VERSION,
    PROTOCOL_VERSION,
    SYNC_SIGNAL,
    RegistryEvents,
    RPCEvents,
    check_version,
    is_legacy_frame,
)
from .header import decode_header as _decode_header
from .peek import peek_header, peek_request_id

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
    "check_version",
    "request_event",
    "request_from_fields",
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
]

# Fields each request event must carry, with their wire key and type. Not
# METHOD_CALL: framerpc.rpc checks its fields (the call path's one check,
# compiled and pure), and encode_call writes them.
_REQUEST_FIELDS: dict[RPCEvents, tuple[tuple[str, str, type | None], ...]] = {
    RPCEvents.GET_INVENTORY: (),
    RPCEvents.INIT_SIGNALS_HANDLING: (("name", "p", str),),
    RPCEvents.STOP_SERVER: (),
    RPCEvents.PROPERTY_GET: (("name", "p", str),),
    RPCEvents.PROPERTY_SET: (("name", "p", str), ("value", "x", None)),
    RPCEvents.SHM_HELLO: (("name", "p", str), ("value", "x", bytes)),
    RPCEvents.SHM_RELEASE: (("value", "x", list),),
    RPCEvents.SHM_SUBSCRIBER: (("value", "x", list),),
}


# Wire name -> event, for a dict lookup instead of an enum call per request.
_REQUEST_EVENTS = {e.value: e for e in RPCEvents if e is not RPCEvents.EMIT_SIGNAL}


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
        if self.event not in _REQUEST_EVENTS:  # a StrEnum: its value's hash
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


def encode_request(request: Request) -> list:
    """Frames of ``request``: the header, then any out-of-band buffers."""
    if request.event is RPCEvents.METHOD_CALL:
        return encode_call(
            request.request_id, request.method, request.args, request.kwargs
        )
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


def request_event(header: dict) -> RPCEvents:
    """The event of a decoded request header, its version checked first.

    Raises
    ------
    ProtocolError
        A wrong version, or an event that is not a request's.
    """
    check_version(header)
    name = header.get("e")
    event = _REQUEST_EVENTS.get(name) if type(name) is str else None
    if event is None:
        raise ProtocolError(f"unknown event {header.get('e')!r} for a request")
    return event


def __getattr__(name: str) -> Any:
    # the general request parser moved up a layer: say where, not just "no"
    if name in ("decode_request", "request_from_header"):
        raise AttributeError(
            f"framerpc.wire.messages.{name} moved to framerpc.rpc.requests "
            "(framerpc.protocol still has it)"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def request_from_fields(header: dict, event: RPCEvents) -> Request:
    """The request of ``event`` in a decoded header (see ``request_event``);
    every request event but METHOD_CALL, whose fields ``framerpc.rpc`` checks.

    Raises
    ------
    ProtocolError
        A missing or mistyped field, or a request id that is not an int.
    ValueError
        ``event`` has no fields table here.
    """
    fields = _REQUEST_FIELDS.get(event)
    if fields is None:
        raise ValueError(f"{event} requests are not parsed by framerpc.wire")
    values = {}
    for attr, key, kind in fields:
        if key not in header:
            raise ProtocolError(f"{event} request lacks field {key!r} ({attr})")
        value = header[key]
        if kind is not None and type(value) is not kind:
            raise ProtocolError(
                f"{event} field {attr!r} must be {kind.__name__}, "
                f"got {type(value).__name__}"
            )
        values[attr] = value
    request_id: Any = header.get("i")  # any value: Request refuses a non-int
    return Request(event, request_id, **values)


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
