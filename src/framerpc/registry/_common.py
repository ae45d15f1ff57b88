"""Constants and request helpers shared by the registry's modules."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from .. import transport
from ..wire.messages import RegistryEvents

#: Seconds a device stays listed without checking in, as in the older API.
DEFAULT_ALIVE_TIMEOUT = 20.0
#: Most entries of a registry, unless its ``max_devices`` says otherwise: a
#: flood of registrations cannot grow it without bound (an entry with its
#: indexes takes about 1 KB).
DEFAULT_MAX_DEVICES = 10_000
#: Longest ``alive_timeout`` a registry accepts unless its
#: ``max_alive_timeout`` says otherwise: a silent device is forgotten at
#: the latest 10 minutes after its last check-in.
DEFAULT_MAX_ALIVE_TIMEOUT = 600.0
#: Most routing frames before the empty delimiter (REQ through proxies).
_MAX_ENVELOPE = 8
#: Most messages handled in a row before the loop checks stop and deadlines.
_MAX_BATCH = 100
#: Unanswered check-ins after which a link considers the registry gone.
_MAX_UNANSWERED = 3
#: Shortest check-in interval of a link (s), whatever its alive timeout.
_MIN_INTERVAL = 0.05
#: Registry messages are tiny: refuse large ones before they are read.
_REGISTRY_OPTIONS = dataclasses.replace(
    transport.DEFAULT_OPTIONS, max_message_size=1 << 20
)
_WILDCARD_HOSTS = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]"}
#: Requests answered in JSON: the older protocol's three, and LIST_DEVICES so
#: that list_devices() gets a clean UNSUPPORTED from an older registry.
_JSON_REQUESTS = frozenset(
    {
        RegistryEvents.REGISTER,
        RegistryEvents.UNREGISTER,
        RegistryEvents.CHECK_ALIVE,
        RegistryEvents.LIST_DEVICES,
    }
)

DeviceCallback = Callable[[str, str, str], Any]


class _BadRequest(ValueError):
    """A request payload lacks a field or has one of the wrong type."""


_MISSING = object()


def _field(
    payload: dict, key: str, kinds: tuple[type, ...], default: Any = _MISSING
) -> Any:
    """Return ``payload[key]`` after checking its type (bool is not a number)."""
    if key not in payload:
        if default is _MISSING:
            raise _BadRequest(f"payload lacks field {key!r}")
        return default
    value = payload[key]
    if type(value) not in kinds:
        names = " or ".join(kind.__name__ for kind in kinds)
        raise _BadRequest(f"field {key!r} must be {names}, got {type(value).__name__}")
    return value


def _timeout_field(payload: dict) -> float | None:
    """The request's ``alive_timeout``; None when it does not say."""
    value = _field(payload, "alive_timeout", (int, float, type(None)), None)
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0:
        raise _BadRequest(f"field 'alive_timeout' must be positive, got {value!r}")
    return float(value)


def _unsupported(event: Any, error: str) -> tuple[RegistryEvents, dict]:
    req_event = str(event) if isinstance(event, str) else None
    return RegistryEvents.UNSUPPORTED, {"req_event": req_event, "error": error}


def _split_envelope(frames: list) -> tuple[list, list] | None:
    """Split ``frames`` after the first empty frame; None without one."""
    for index, frame in enumerate(frames[:_MAX_ENVELOPE]):
        if len(frame) == 0:
            return frames[: index + 1], frames[index + 1 :]
    return None


def _connect_url(endpoint: str) -> str:
    """URL a client on this machine uses to reach a bound ``endpoint``."""
    kind, host, port = transport.parse_url(endpoint)
    if kind != "tcp" or host not in _WILDCARD_HOSTS:
        return endpoint
    return f"tcp://{_WILDCARD_HOSTS[host]}:{port}"
