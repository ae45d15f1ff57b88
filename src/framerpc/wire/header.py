"""The native header's vocabulary: the protocol version, the header keys,
the event names, and the version check every decoder runs first.

The messages themselves (``Request``, ``Reply``...) and the table of
header keys are in ``framerpc.wire.messages``, which re-exports all of
this; the shared-memory and stream codecs need only these names.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from ..errors import ProtocolError
from . import framing

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
    "is_legacy_frame",
    "decode_header",
    "check_version",
]

#: Wire version of the native protocol. Never reuse a number.
PROTOCOL_VERSION = 1
#: Signal name of the subscription handshake (no attribute can be named "").
SYNC_SIGNAL = ""

# -- header keys (the table in wire.messages), shared with the call path -
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
    SHM_HELLO = "SHM_HELLO"  # shared memory (wire.shm): same-host handshake,
    SHM_RELEASE = "SHM_RELEASE"  # the client's one-way release of slots,
    SHM_SUBSCRIBER = "SHM_SUBSCRIBER"  # its claim of a signal subscriber


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


def is_legacy_frame(frame: bytes | memoryview) -> bool:
    """Tell whether frame 0 belongs to the older JSON protocol.

    A JSON object starts with ``{`` (0x7b); a msgpack map never does.
    """
    return len(frame) > 0 and frame[0] == 0x7B


def decode_header(
    frames: Sequence,
    max_frames: int,
    max_header: int,
    max_objects: int = framing.MAX_OBJECTS,
    max_depth: int = framing.MAX_DEPTH,
) -> dict:
    """The header of ``frames`` (``framing.decode``), its version checked."""
    return check_version(
        framing.decode(frames, max_frames, max_header, max_objects, max_depth)
    )


def check_version(header: dict) -> dict:
    """``header``, if it has this side's version; else ProtocolError."""
    version = header.get("v")
    # type first: comparing an array (or True, 1.0) to an int is no check
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {version!r} "
            f"(this side speaks {PROTOCOL_VERSION})"
        )
    return header
