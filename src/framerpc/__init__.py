"""framerpc: RPC for instruments and camera rigs over ZeroMQ.

Plain values travel as msgpack, images as zero-copy multipart frames. See
the README for a tour and ``docs/protocol.md`` for the wire format.
"""

from ._proxies import closing, connect
from .client import NoResult, RPCClient
from .errors import (
    FramerpcError,
    MessageTooLargeError,
    PeerLostError,
    ProtocolError,
    RemoteError,
    SerializationError,
)
from .pool import FramePool
from .property import RPCProperty
from .registry import (
    AliveCheckState,
    DeviceRegistry,
    list_devices,
    register_device,
    send_alive_check,
    unregister_device,
)
from .server import RPCServer
from .signal import RPCSignal
from .signal_receiver import RPCSignalReceiver
from .stream import RPCStream
from .types import coerce_to_generic, is_instance_of_generic
from .wire.messages import RPCEvents

__version__ = "0.1.0"

__all__ = [
    "AliveCheckState",
    "DeviceRegistry",
    "FramePool",
    "FramerpcError",
    "MessageTooLargeError",
    "NoResult",
    "PeerLostError",
    "ProtocolError",
    "RPCClient",
    "RPCEvents",
    "RPCProperty",
    "RPCServer",
    "RPCSignal",
    "RPCSignalReceiver",
    "RPCStream",
    "RemoteError",
    "SerializationError",
    "closing",
    "coerce_to_generic",
    "connect",
    "is_instance_of_generic",
    "list_devices",
    "register_device",
    "send_alive_check",
    "unregister_device",
]
