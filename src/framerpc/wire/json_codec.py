"""Sans-I/O codec of the older JSON protocol (``plantimager.commons.RPC``).

Devices in the field speak plain JSON objects, one per ZeroMQ frame (see
"Older JSON peers" in ``docs/protocol.md``). This module maps those objects to and from
framerpc's own message values (``Request``,
``Reply``, ``SignalEmission``,
``RegistryMessage``), so that the server, client
and registry loops only add a small branch. No sockets here; the JSON
text itself (bounded ``loads``, ``dumps``) is ``json_text``.

RPC requests (a JSON object with ``"event"``; no request ids, 0 stands in)
and their replies:

* GET_INVENTORY -> ``{json_methods, buffer_methods, signals, properties,
  name}``; a framerpc server adds ``framerpc`` (``MARKER``) and
  ``signal_url``.
* INIT_SIGNALS_HANDLING -> ``{"success": true, "signal_port": P}``.
* METHOD_CALL ``{method, params: {args, kwargs}}`` -> ``{"success": true,
  "result": R}``; a buffer method answers two frames ``[info, raw bytes]``.
* PROPERTY_GET ``{property}`` -> ``{"success": true, "value": V}``.
* PROPERTY_SET ``{property, value}`` and STOP_SERVER -> ``{"success": true}``.

A failure is one frame ``{"success": false, "error", "traceback"}``; an
unknown method is exactly ``{"success": false, "error": "Method M not
implemented"}``. A signal emission is one frame ``{"event": "EMIT_SIGNAL",
"signal", "args", "blocking": false}``; a registry message is one frame
``{"event", "payload"}``.

Values: JSON carries None, bool, int, float, str, list and dict. As with
the older implementation, tuples become lists and dict keys strings; numpy
numbers become plain numbers; bytes, arrays and other objects raise
``SerializationError`` naming the type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ProtocolError, SerializationError
from ._framing_common import MAX_DEPTH, MAX_HEADER_SIZE, MAX_OBJECTS
from .json_text import check_json_shape, dumps, loads
from .messages import (
    PROTOCOL_VERSION,
    RegistryEvents,
    RegistryMessage,
    Reply,
    Request,
    RPCEvents,
    SignalEmission,
)

__all__ = [
    "MARKER",
    "dumps",
    "loads",
    "check_json_shape",
    "encode_request",
    "decode_request",
    "encode_reply",
    "encode_inventory",
    "encode_signal_port",
    "encode_error",
    "method_not_implemented",
    "decode_reply",
    "is_framerpc_inventory",
    "raw_buffer",
    "encode_signal",
    "decode_signal",
    "encode_registry",
    "decode_registry",
    "peek_event",
]

#: Key a framerpc server adds to its JSON inventory; its value is the native
#: ``PROTOCOL_VERSION``. Older clients ignore it; a
#: framerpc client seeing its own version switches to the native protocol.
MARKER = "framerpc"

_INVENTORY_KEYS = ("json_methods", "buffer_methods", "signals", "properties", "name")


def _field(message: dict, key: str, kind: type, event: Any) -> Any:
    if key not in message:
        raise ProtocolError(f"{event} request lacks field {key!r}")
    value = message[key]
    if type(value) is not kind:
        raise ProtocolError(
            f"{event} field {key!r} must be {kind.__name__}, got {type(value).__name__}"
        )
    return value


# -- RPC requests ---------------------------------------------------------------
def encode_request(request: Request) -> bytes:
    """The JSON frame of ``request`` (client side).

    Raises
    ------
    SerializationError
        An argument or value cannot travel in JSON.
    """
    event = request.event
    message: dict[str, Any] = {"event": event.value}
    if event is RPCEvents.METHOD_CALL:
        message["method"] = request.method
        message["params"] = {"args": request.args, "kwargs": request.kwargs}
    elif event is RPCEvents.PROPERTY_GET:
        message["property"] = request.name
    elif event is RPCEvents.PROPERTY_SET:
        message["property"] = request.name
        message["value"] = request.value
    return dumps(message)


def decode_request(
    frames: Sequence,
    max_size: int = MAX_HEADER_SIZE,
    max_objects: int = MAX_OBJECTS,
    max_depth: int = MAX_DEPTH,
) -> Request:
    """Parse a JSON request (server side); its request id is 0.

    The limits are those of ``loads``.

    Raises
    ------
    ProtocolError
        Not one JSON object, an unknown event or a missing or mistyped field.
    MessageTooLargeError
        The frame exceeds a limit (a subclass of ProtocolError).
    """
    if len(frames) != 1:
        raise ProtocolError(f"a JSON request is one frame, got {len(frames)}")
    message = loads(frames[0], max_size, max_objects, max_depth)
    wanted: Any = message.get("event")  # any JSON value: the lookup refuses others
    try:
        event = RPCEvents(wanted)
    except ValueError:
        raise ProtocolError(f"unknown event {message.get('event')!r}") from None
    if event is RPCEvents.METHOD_CALL:
        method = _field(message, "method", str, event)
        params = message.get("params", {})
        if type(params) is not dict:
            raise ProtocolError("METHOD_CALL field 'params' must be an object")
        args, kwargs = params.get("args", []), params.get("kwargs", {})
        if type(args) is not list or type(kwargs) is not dict:
            raise ProtocolError(
                "METHOD_CALL params need an args list and kwargs object"
            )
        return Request(event, 0, method, args, kwargs)
    if event is RPCEvents.PROPERTY_GET:
        return Request(event, 0, name=_field(message, "property", str, event))
    if event is RPCEvents.PROPERTY_SET:
        name = _field(message, "property", str, event)
        if "value" not in message:
            raise ProtocolError("PROPERTY_SET request lacks field 'value'")
        return Request(event, 0, name=name, value=message["value"])
    if event is RPCEvents.EMIT_SIGNAL:
        raise ProtocolError("EMIT_SIGNAL is not a request event")
    return Request(event, 0)


# -- RPC replies, server side ---------------------------------------------------
def encode_error(error: str, traceback: str | None = "") -> list:
    """A one-frame failure reply; ``traceback=None`` leaves the key out."""
    message: dict[str, Any] = {"success": False, "error": error}
    if traceback is not None:
        message["traceback"] = traceback
    return [dumps(message)]


def method_not_implemented(method: str) -> list:
    """The older protocol's exact reply to an unknown method."""
    return encode_error(f"Method {method} not implemented", traceback=None)


def encode_signal_port(port: int) -> list:
    """Reply to INIT_SIGNALS_HANDLING: where the JSON signals are published."""
    return [dumps({"success": True, "signal_port": port})]


def encode_inventory(inventory: dict) -> list:
    """JSON reply to GET_INVENTORY from a framerpc server's native inventory.

    Keeps the older keys, adds ``MARKER`` and the native ``signal_url``
    (so an auto-detecting framerpc client needs no second request), and
    leaves ``signal_port`` out: the older protocol's signal port is the one
    INIT_SIGNALS_HANDLING returns.
    """
    message = {key: inventory[key] for key in _INVENTORY_KEYS}
    message[MARKER] = PROTOCOL_VERSION
    message["signal_url"] = inventory["signal_url"]
    return [dumps(message)]


def raw_buffer(value: Any) -> Any:
    """The bytes of a buffer method's result, as one frame, without a copy.

    Arrays go out as their raw bytes in C order (copied once only when not
    contiguous); dtype and shape are not sent, only the info dict is.

    Raises
    ------
    SerializationError
        An object array (its bytes are pointers).
    """
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise SerializationError(f"arrays of dtype {value.dtype} cannot be sent")
        # A uint8 view has the buffer interface even for datetime64 arrays.
        return np.ascontiguousarray(value).reshape(-1).view(np.uint8)
    if isinstance(value, memoryview) and not value.c_contiguous:
        return value.tobytes()
    return value


def encode_reply(event: RPCEvents, reply: Reply, buffer_reply: bool = False) -> list:
    """Frames answering a JSON request of kind ``event`` (server side).

    Parameters
    ----------
    event : RPCEvents
        The request's event: it decides the reply's shape.
    reply : Reply
        The outcome; for GET_INVENTORY use ``encode_inventory``, for
        INIT_SIGNALS_HANDLING ``encode_signal_port``.
    buffer_reply : bool
        A buffer method's success: ``[info JSON, raw bytes]``.

    Returns
    -------
    list
        The frames. A value JSON cannot carry gives a failure reply naming
        its type instead (the call itself succeeded, its result cannot
        travel).
    """
    if not reply.ok:
        return encode_error(reply.error, reply.traceback)
    try:
        if buffer_reply:
            return [dumps(reply.info), raw_buffer(reply.value)]
        if event is RPCEvents.METHOD_CALL:
            return [dumps({"success": True, "result": reply.value})]
        if event is RPCEvents.PROPERTY_GET:
            return [dumps({"success": True, "value": reply.value})]
    except SerializationError as exc:
        what = "the result" if event is RPCEvents.METHOD_CALL else "the value"
        return encode_error(f"SerializationError: {what} cannot be sent: {exc}")
    return [dumps({"success": True})]


# -- RPC replies, client side ---------------------------------------------------
def is_framerpc_inventory(inventory: Any) -> bool:
    """Whether a JSON inventory comes from a framerpc server of this version."""
    return type(inventory) is dict and inventory.get(MARKER) == PROTOCOL_VERSION


def _check_inventory(message: dict) -> dict:
    for key, kind in (
        ("json_methods", dict),
        ("buffer_methods", dict),
        ("signals", list),
        ("properties", list),
    ):
        if type(message.get(key)) is not kind:
            raise ProtocolError(f"inventory field {key!r} must be {kind.__name__}")
    if type(message.get("name", "")) is not str:
        raise ProtocolError("inventory field 'name' must be str")
    return message


def decode_reply(
    request: Request, frames: Sequence, buffer_method: bool = False
) -> Reply:
    """Parse the JSON reply to ``request`` (client side); its id is 0.

    Parameters
    ----------
    request : Request
        The request answered (JSON replies do not say what they answer).
    frames : sequence
        The reply frames, after the empty delimiter.
    buffer_method : bool
        ``request`` calls a buffer method: two frames are ``[info, bytes]``.

    Returns
    -------
    Reply
        For a buffer method, ``value`` is a read-only memoryview over the
        received frame (no copy; it keeps the frame alive) and ``info`` the
        info dict. For GET_INVENTORY ``value`` is the inventory, for
        INIT_SIGNALS_HANDLING the signal port.

    Raises
    ------
    ProtocolError
        The reply does not have the shape the older protocol gives it.
    """
    if not frames:
        raise ProtocolError("empty reply")
    event = request.event
    if buffer_method and event is RPCEvents.METHOD_CALL and len(frames) == 2:
        info = loads(frames[0])
        return Reply(0, True, memoryview(frames[1]).toreadonly(), info)
    if len(frames) != 1:
        raise ProtocolError(f"expected a one-frame reply, got {len(frames)} frames")
    message = loads(frames[0])
    if event is RPCEvents.GET_INVENTORY:
        return Reply(0, True, _check_inventory(message))
    # Per the older protocol a failure is told apart by its "error" key.
    if "error" in message or message.get("success") is False:
        return Reply(
            0,
            False,
            error=str(message.get("error", "")),
            traceback=str(message.get("traceback") or ""),
        )
    if message.get("success") is not True:
        raise ProtocolError(f"{event} reply lacks 'success'")
    if buffer_method and event is RPCEvents.METHOD_CALL:
        raise ProtocolError("buffer method reply lacks its data frame")
    key = {
        RPCEvents.METHOD_CALL: "result",
        RPCEvents.PROPERTY_GET: "value",
        RPCEvents.INIT_SIGNALS_HANDLING: "signal_port",
    }.get(event)
    return Reply(0, True, message.get(key) if key else None)


# -- signals ----------------------------------------------------------------------
def encode_signal(emission: SignalEmission) -> bytes:
    """The JSON frame published for one emission.

    Raises
    ------
    SerializationError
        An argument cannot travel in JSON.
    """
    return dumps(
        {
            "event": RPCEvents.EMIT_SIGNAL.value,
            "signal": emission.name,
            "args": emission.args,
            "blocking": False,
        }
    )


def decode_signal(frame: Any) -> SignalEmission:
    """Parse a JSON emission (as an older server publishes it).

    Raises
    ------
    ProtocolError
        Not a JSON EMIT_SIGNAL object with a name and an args list.
    """
    message = loads(frame)
    args = message.get("args", [])
    if (
        message.get("event") != RPCEvents.EMIT_SIGNAL
        or type(message.get("signal")) is not str
        or type(args) is not list
    ):
        raise ProtocolError("JSON signal message needs event, signal and args")
    return SignalEmission(message["signal"], args)


# -- registry ---------------------------------------------------------------------
def encode_registry(message: RegistryMessage) -> bytes:
    """The JSON frame ``{"event": E, "payload": {...}}`` (no request id).

    Raises
    ------
    SerializationError
        A payload value cannot travel in JSON.
    """
    return dumps({"event": message.event.value, "payload": message.payload})


def decode_registry(frames: Sequence) -> RegistryMessage:
    """Parse a JSON registry message; its request id is 0.

    Raises
    ------
    ProtocolError
        Not one JSON object, an unknown event or a payload that is not an
        object (``peek_event`` still tells the event).
    """
    if len(frames) != 1:
        raise ProtocolError(f"a JSON registry message is one frame, got {len(frames)}")
    message = loads(frames[0])
    wanted: Any = message.get("event")  # any JSON value: the lookup refuses others
    try:
        event = RegistryEvents(wanted)
    except ValueError:
        raise ProtocolError(
            f"unknown registry event {message.get('event')!r}"
        ) from None
    payload = message.get("payload", {})
    if type(payload) is not dict:
        raise ProtocolError("registry payload must be an object")
    return RegistryMessage(event, payload)


def peek_event(frame: Any) -> str | None:
    """Best-effort ``event`` of a JSON message that failed to decode."""
    try:
        event = loads(frame).get("event")
    except ProtocolError:
        return None
    return event if type(event) is str else None
