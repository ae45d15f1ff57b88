"""Old import path of ``framerpc.wire.json_codec`` (the older JSON
protocol's codec), kept so existing imports keep working."""

from .wire.json_codec import (
    MARKER as MARKER,
)
from .wire.json_codec import (
    check_json_shape as check_json_shape,
)
from .wire.json_codec import (
    decode_registry as decode_registry,
)
from .wire.json_codec import (
    decode_reply as decode_reply,
)
from .wire.json_codec import (
    decode_request as decode_request,
)
from .wire.json_codec import (
    decode_signal as decode_signal,
)
from .wire.json_codec import (
    dumps as dumps,
)
from .wire.json_codec import (
    encode_error as encode_error,
)
from .wire.json_codec import (
    encode_inventory as encode_inventory,
)
from .wire.json_codec import (
    encode_registry as encode_registry,
)
from .wire.json_codec import (
    encode_reply as encode_reply,
)
from .wire.json_codec import (
    encode_request as encode_request,
)
from .wire.json_codec import (
    encode_signal as encode_signal,
)
from .wire.json_codec import (
    encode_signal_port as encode_signal_port,
)
from .wire.json_codec import (
    is_framerpc_inventory as is_framerpc_inventory,
)
from .wire.json_codec import (
    loads as loads,
)
from .wire.json_codec import (
    method_not_implemented as method_not_implemented,
)
from .wire.json_codec import (
    peek_event as peek_event,
)
from .wire.json_codec import (
    raw_buffer as raw_buffer,
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
