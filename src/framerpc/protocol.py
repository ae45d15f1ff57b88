"""Old import path of ``framerpc.wire.messages`` (native messages and wire
constants) and ``framerpc.rpc.requests`` (the request parser: a
METHOD_CALL's fields are checked in ``framerpc.rpc``), kept so existing
imports keep working."""

from .rpc.requests import (
    decode_request as decode_request,
)
from .rpc.requests import (
    request_from_header as request_from_header,
)
from .wire.messages import (
    PROTOCOL_VERSION as PROTOCOL_VERSION,
)
from .wire.messages import (
    SYNC_SIGNAL as SYNC_SIGNAL,
)
from .wire.messages import (
    RegistryEvents as RegistryEvents,
)
from .wire.messages import (
    RegistryMessage as RegistryMessage,
)
from .wire.messages import (
    Reply as Reply,
)
from .wire.messages import (
    Request as Request,
)
from .wire.messages import (
    RPCEvents as RPCEvents,
)
from .wire.messages import (
    SignalEmission as SignalEmission,
)
from .wire.messages import (
    decode_registry as decode_registry,
)
from .wire.messages import (
    decode_reply as decode_reply,
)
from .wire.messages import (
    decode_signal as decode_signal,
)
from .wire.messages import (
    encode_call as encode_call,
)
from .wire.messages import (
    encode_registry as encode_registry,
)
from .wire.messages import (
    encode_reply as encode_reply,
)
from .wire.messages import (
    encode_request as encode_request,
)
from .wire.messages import (
    encode_result as encode_result,
)
from .wire.messages import (
    encode_signal as encode_signal,
)
from .wire.messages import (
    is_legacy_frame as is_legacy_frame,
)
from .wire.messages import (
    peek_header as peek_header,
)
from .wire.messages import (
    peek_request_id as peek_request_id,
)

__all__ = [
    "PROTOCOL_VERSION",
    "SYNC_SIGNAL",
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
