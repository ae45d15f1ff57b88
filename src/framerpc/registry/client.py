"""Client helpers: one JSON request each, on a short-lived socket.

They send JSON, which framerpc and older registries both understand, so a
device works with either registry without configuration. JSON messages
carry no request id, so each request uses a socket of its own.
"""

from __future__ import annotations

import dataclasses
import enum
import time

import zmq

from .. import _lifecycle, transport
from ..errors import ProtocolError
from ..transport.keys import Security
from ..wire import json_codec as legacy
from ..wire.messages import RegistryEvents, RegistryMessage
from ._common import _split_envelope

__all__ = [
    "AliveCheckState",
    "list_devices",
    "register_device",
    "send_alive_check",
    "unregister_device",
]


class AliveCheckState(enum.Enum):
    """Outcome of ``send_alive_check``."""

    ok = "ok"
    unknown = "unknown"
    unreachable = "unreachable"


def _close_now(sock: zmq.Socket | None) -> None:
    """Close without linger: an unanswered request must not arrive later.

    Closes even once the context is terminating, when setting LINGER fails
    with ETERM: a socket left open would block ``term()`` for ever.
    """
    _lifecycle.close_socket(sock, 0)


def _decode_reply(frames: list) -> RegistryMessage:
    """The JSON registry reply in ``frames`` (envelope, if any, dropped)."""
    split = _split_envelope(frames)
    return legacy.decode_registry(split[1] if split is not None else frames)


def _client_options(security: Security | None) -> transport.SocketOptions:
    if security is None:
        return transport.DEFAULT_OPTIONS
    return dataclasses.replace(transport.DEFAULT_OPTIONS, security=security)


def _exchange(
    context: zmq.Context,
    registry_url: str,
    event: RegistryEvents,
    payload: dict,
    timeout: float,
    security: Security | None = None,
) -> RegistryMessage:
    """Send one JSON request on a short-lived DEALER socket; return the reply.

    A fresh socket per request stands in for request ids: the first reply
    it receives answers this request.

    Raises
    ------
    TimeoutError
        No reply within ``timeout`` ms (the registry could not even be
        reached, or it did not answer).
    ProtocolError
        The reply is malformed.
    """
    transport.check_url(registry_url, for_bind=False)
    deadline = time.monotonic() + timeout / 1000

    def remaining_ms() -> int:
        return max(0, int((deadline - time.monotonic()) * 1000))

    frame = legacy.encode_registry(RegistryMessage(event, payload))
    # From the shadow: the caller's thread owns the socket, and another
    # thread's context.destroy() must not close it under this poll (an
    # abort in libzmq, or a term() that waits for ever).
    sock = transport.make_socket(
        _lifecycle.private_context(context), zmq.DEALER, _client_options(security)
    )
    try:
        sock.connect(registry_url)
        # IMMEDIATE is set: a DEALER is writable only once connected, so an
        # absent registry shows here instead of as a blocked send.
        if not sock.poll(remaining_ms(), zmq.POLLOUT):
            raise TimeoutError(f"registry at {registry_url} is unreachable")
        # The empty delimiter makes REP and ROUTER registries both answer.
        sock.send_multipart([b"", frame], zmq.NOBLOCK)
        if sock.poll(remaining_ms(), zmq.POLLIN):
            # not recv_multipart: parts past RECV_FRAMES_KEPT are dropped
            return _decode_reply([f.bytes for f in transport.recv_frames(sock)])
        raise TimeoutError(
            f"registry at {registry_url} did not answer {event} within {timeout} ms"
        )
    except zmq.Again as exc:  # writable, then the connection dropped
        raise TimeoutError(f"registry at {registry_url} is unreachable") from exc
    finally:
        _close_now(sock)


def _expect(reply: RegistryMessage, event: RegistryEvents) -> dict:
    """Payload of ``reply`` if it is ``event``; RuntimeError on UNSUPPORTED."""
    if reply.event is RegistryEvents.UNSUPPORTED:
        raise RuntimeError(
            f"registry refused {reply.payload.get('req_event')}: "
            f"{reply.payload.get('error', '')}"
        )
    if reply.event is not event:
        raise ProtocolError(f"expected {event} from the registry, got {reply.event}")
    return reply.payload


def _ack_success(reply: RegistryMessage) -> bool:
    success = _expect(reply, RegistryEvents.ACK).get("success")
    if type(success) is not bool:
        raise ProtocolError("registry ACK lacks a bool 'success'")
    return success


def register_device(
    context: zmq.Context,
    registry_url: str,
    device_type: str,
    addr: str,
    name: str = "",
    overwrite: bool = True,
    alive_timeout: float = 20,
    timeout: float = 1000,
    *,
    security: Security | None = None,
) -> tuple[str, str]:
    """Register a device with the registry at ``registry_url``.

    Parameters
    ----------
    context : zmq.Context
        Context for the short-lived request socket.
    registry_url : str
        The registry's URL, e.g. ``tcp://host:5555``.
    device_type, addr, name : str
        Device type, its server URL and the proposed name (empty: the
        registry names it ``<device_type>-N``).
    overwrite : bool
        Take the name from a device already holding it; otherwise the
        registry picks ``name-1``, ``name-2``...
    alive_timeout : float
        Seconds the registry keeps the device without a check-in.
    timeout : float
        Longest wait for the answer (ms).

    Returns
    -------
    tuple of str
        ``(accepted_name, uuid)``.

    Raises
    ------
    TimeoutError
        The registry did not answer in time.
    RuntimeError
        The registry refused the request (UNSUPPORTED).
    """
    payload = {
        "device_type": device_type,
        "addr": addr,
        "name": name,
        "overwrite": overwrite,
        "alive_timeout": alive_timeout,
    }
    reply = _exchange(
        context, registry_url, RegistryEvents.REGISTER, payload, timeout, security
    )
    body = _expect(reply, RegistryEvents.REGISTER_ACK)
    accepted, device_uuid = body.get("name"), body.get("uuid")
    if type(accepted) is not str or type(device_uuid) is not str:
        raise ProtocolError("REGISTER_ACK needs a str name and uuid")
    return accepted, device_uuid


def unregister_device(
    context: zmq.Context,
    registry_url: str,
    uuid: str,
    timeout: float = 1000,
    *,
    security: Security | None = None,
) -> bool:
    """Remove the device ``uuid``; False when the registry did not know it.

    Raises
    ------
    TimeoutError
        The registry did not answer within ``timeout`` ms.
    RuntimeError
        The registry refused the request (UNSUPPORTED).
    """
    reply = _exchange(
        context,
        registry_url,
        RegistryEvents.UNREGISTER,
        {"uuid": uuid},
        timeout,
        security,
    )
    return _ack_success(reply)


def send_alive_check(
    context: zmq.Context,
    registry_url: str,
    uuid: str,
    alive_timeout: float = 20,
    timeout: float = 1000,
    *,
    security: Security | None = None,
) -> AliveCheckState:
    """Check in for device ``uuid``: its deadline moves to now + ``alive_timeout``.

    Returns
    -------
    AliveCheckState
        ``ok``; ``unknown`` when the registry does not know the uuid;
        ``unreachable`` when it did not answer within ``timeout`` ms.
    """
    payload = {"uuid": uuid, "alive_timeout": alive_timeout}
    try:
        reply = _exchange(
            context,
            registry_url,
            RegistryEvents.CHECK_ALIVE,
            payload,
            timeout,
            security,
        )
    except TimeoutError:
        return AliveCheckState.unreachable
    return AliveCheckState.ok if _ack_success(reply) else AliveCheckState.unknown


def list_devices(
    context: zmq.Context,
    registry_url: str,
    timeout: float = 1000,
    *,
    security: Security | None = None,
) -> dict[str, tuple[str, str]]:
    """Return the registry's ``{name: (device_type, address)}``.

    Raises
    ------
    TimeoutError
        The registry did not answer within ``timeout`` ms.
    """
    reply = _exchange(
        context, registry_url, RegistryEvents.LIST_DEVICES, {}, timeout, security
    )
    devices = _expect(reply, RegistryEvents.DEVICES).get("devices")
    if type(devices) is not dict:
        raise ProtocolError("DEVICES needs a 'devices' map")
    try:
        return {
            name: (device_type, address)
            for name, (device_type, address) in devices.items()
        }
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed DEVICES entry: {exc}") from exc
