"""Device registry: a directory of running devices, and the calls to use it.

``DeviceRegistry`` is a thread that keeps ``name -> (device_type,
address)`` for the devices that registered and forgets those that stop
checking in. The module helpers (``register_device`` and friends) are
the client side, and ``RegistryLink`` keeps one server registered
from inside its serve loop without ever blocking it.

The registry answers both the native msgpack messages of
``framerpc.wire.messages`` and the JSON messages of the older protocol
(``framerpc.wire.json_codec``), told apart by frame 0; the request logic lives
once in ``DeviceRegistry._handle_request``, which takes and returns
plain ``(event, payload)`` pairs.

The helpers and ``RegistryLink`` send JSON, which framerpc and older
registries both understand: a device works with either registry without
configuration, and an older registry is never sent msgpack it cannot parse.
JSON messages carry no request id, so each request uses a socket of its own
(helpers) or one request is in flight per socket (link).

The package is split by job: ``.directory`` (the table, without sockets,
on an injected clock), ``.service`` (the registry thread), ``.client``
(the helpers) and ``.link`` (the keep-alive link). Import from the
package: the module layout is not part of the API.
"""

from __future__ import annotations

from ._common import (
    DEFAULT_ALIVE_TIMEOUT,
    DEFAULT_MAX_ALIVE_TIMEOUT,
    DEFAULT_MAX_DEVICES,
)
from .client import (
    AliveCheckState,
    list_devices,
    register_device,
    send_alive_check,
    unregister_device,
)
from .directory import DeviceDirectory, RegistryEntry
from .link import RegistryLink
from .service import DeviceRegistry

__all__ = [
    "DEFAULT_ALIVE_TIMEOUT",
    "DEFAULT_MAX_ALIVE_TIMEOUT",
    "DEFAULT_MAX_DEVICES",
    "AliveCheckState",
    "DeviceDirectory",
    "DeviceRegistry",
    "RegistryEntry",
    "RegistryLink",
    "list_devices",
    "register_device",
    "send_alive_check",
    "unregister_device",
]
