"""Device registry: a directory of running devices, and the calls to use it.

``DeviceRegistry`` is a thread that keeps ``name -> (device_type,
address)`` for the devices that registered and forgets those that stop
checking in. The module helpers (``register_device`` and friends) are
the client side, and ``RegistryLink`` keeps one server registered
from inside its serve loop without ever blocking it.

The registry answers both the native msgpack messages of
``framerpc.protocol`` and the JSON messages of the older protocol
(``framerpc.legacy``), told apart by frame 0; the request logic lives
once in ``DeviceRegistry._handle_request``, which takes and returns
plain ``(event, payload)`` pairs.

The helpers and ``RegistryLink`` send JSON, which framerpc and older
registries both understand: a device works with either registry without
configuration, and an older registry is never sent msgpack it cannot parse.
JSON messages carry no request id, so each request uses a socket of its own
(helpers) or one request is in flight per socket (link).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import logging
import math
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from . import legacy, protocol, transport
from .errors import ProtocolError
from .protocol import RegistryEvents, RegistryMessage
from .security import Security

__all__ = [
    "AliveCheckState",
    "DeviceRegistry",
    "RegistryLink",
    "list_devices",
    "register_device",
    "send_alive_check",
    "unregister_device",
]

_log = logging.getLogger(__name__)

#: Seconds a device stays listed without checking in, as in the older API.
DEFAULT_ALIVE_TIMEOUT = 20.0
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


class AliveCheckState(enum.Enum):
    """Outcome of ``send_alive_check``."""

    ok = "ok"
    unknown = "unknown"
    unreachable = "unreachable"


@dataclass(slots=True)
class _Device:
    device_type: str
    address: str
    name: str
    alive_timeout: float
    deadline: float


class _BadRequest(Exception):
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


def _timeout_field(payload: dict, default: float) -> float:
    value = _field(payload, "alive_timeout", (int, float, type(None)), None)
    if value is None:
        return default
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


class DeviceRegistry(threading.Thread):
    """Directory of the devices on a network, served from its own thread.

    The socket is bound in the constructor, so a busy port raises here and
    ``port`` is known before ``start``.

    Parameters
    ----------
    context : zmq.Context
        Context of the registry socket.
    addr : str
        Host to bind (``"*"`` for all interfaces), or a full URL
        (``tcp://host:port``, ``ipc://path``, ``inproc://name``), in which
        case ``port`` is ignored.
    port : str, int or None
        TCP port; ``"*"``, ``"0"``, 0 or None let the OS pick a free one.
    default_alive_timeout : float
        Seconds a device stays listed without checking in, when its
        messages do not say.
    poll_interval : float
        Longest wait (s) for a message before the loop checks deadlines
        and ``stop``; capped at 0.1.

    Attributes
    ----------
    context, addr
        As given.
    port : int or None
        The bound TCP port (None for ipc:// and inproc://).
    url : str
        URL a client on this machine can connect to.

    Raises
    ------
    zmq.ZMQError
        The address cannot be bound (e.g. the port is taken).
    ValueError
        ``addr`` is a URL of an unsupported transport.
    """

    def __init__(
        self,
        context: zmq.Context,
        addr: str = "*",
        port: str | int | None = "5555",
        *,
        default_alive_timeout: float = DEFAULT_ALIVE_TIMEOUT,
        poll_interval: float = 0.1,
        security: Security | None = None,
    ) -> None:
        super().__init__(name="framerpc-registry", daemon=True)
        self.context = context
        self.addr = addr
        if "://" in addr:
            bind_url = addr
        elif port in ("*", "0", 0, None):
            bind_url = f"tcp://{addr}"
        else:
            bind_url = f"tcp://{addr}:{port}"
        self._default_alive_timeout = float(default_alive_timeout)
        self._poll_ms = max(1, int(min(poll_interval, 0.1) * 1000))
        options = dataclasses.replace(_REGISTRY_OPTIONS, security=security)
        self._sock = transport.make_socket(context, zmq.ROUTER, options, server=True)
        try:
            self.endpoint, self.port = transport.bind(self._sock, bind_url)
        except BaseException:
            transport.close_quietly(self._sock)
            raise
        self.url = _connect_url(self.endpoint)
        # uuid -> device; written only by the registry thread, under the lock
        # so that get_devices() from other threads sees a consistent view.
        self._devices: dict[str, _Device] = {}
        self._lock = threading.Lock()
        self._added_callbacks: list[DeviceCallback] = []
        self._removed_callbacks: list[DeviceCallback] = []
        self._stop_event = threading.Event()
        # Decides who closes the socket when stop() races with start().
        self._life_lock = threading.Lock()
        self._running = False

    # -- public API -------------------------------------------------------
    def get_devices(self) -> dict[str, tuple[str, str]]:
        """Return ``{name: (device_type, address)}``: a copy, from any thread."""
        with self._lock:
            return {d.name: (d.device_type, d.address) for d in self._devices.values()}

    def add_new_device_callback(self, callback: DeviceCallback) -> None:
        """Call ``callback(device_type, address, name)`` for each new device.

        Callbacks run in the registry thread; their exceptions are logged.
        """
        with self._lock:
            self._added_callbacks.append(callback)

    def add_device_removed_callback(self, callback: DeviceCallback) -> None:
        """Call ``callback(device_type, address, name)`` for each removed device.

        Removal covers unregistering, a missed deadline and replacement by a
        device taking the name or the address. Runs in the registry thread.
        """
        with self._lock:
            self._removed_callbacks.append(callback)

    def stop(self) -> None:
        """Ask the loop to stop; returns at once (then ``join``).

        Safe to call twice. A registry never started closes its socket now.
        """
        with self._life_lock:
            self._stop_event.set()
            if not self._running:
                self._close_socket()

    def run(self) -> None:
        """Serve requests and prune silent devices until ``stop``."""
        with self._life_lock:
            if self._stop_event.is_set():
                self._close_socket()
                return
            self._running = True
        _log.info("device registry listening at %s", self.endpoint)
        try:
            while not self._stop_event.is_set():
                try:
                    if self._sock.poll(self._poll_ms, zmq.POLLIN):
                        self._serve_batch()
                    self._prune(time.monotonic())
                except zmq.ContextTerminated:
                    _log.warning("registry context terminated; stopping")
                    break
                except Exception:
                    # A failed turn must not end the registry; the wait stops
                    # a persistent fault from spinning the CPU.
                    _log.exception("device registry loop error")
                    self._stop_event.wait(self._poll_ms / 1000)
        finally:
            self._close_socket()
            _log.info("device registry at %s stopped", self.endpoint)

    # -- socket side ------------------------------------------------------
    def _close_socket(self) -> None:
        if self._sock.closed:
            return
        # close() frees the address later, in ZeroMQ's I/O thread; unbinding
        # first frees an inproc name at once (and a TCP port sooner), so a
        # registry restarted at the same URL can bind.
        try:
            self._sock.unbind(self.endpoint)
        except zmq.ZMQError:
            pass
        transport.close_quietly(self._sock)

    def _serve_batch(self) -> None:
        for _ in range(_MAX_BATCH):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._prune(time.monotonic())
            self._process(frames)

    def _process(self, frames: list) -> None:
        """Answer one received message (routing envelope included)."""
        split = _split_envelope(frames)
        if split is None:
            _log.warning("dropped a registry message without routing envelope")
            return
        envelope, body = split
        if body and protocol.is_legacy_frame(body[0]):
            self._process_json(envelope, body)
            return
        try:
            message = protocol.decode_registry(body)
        except ProtocolError as exc:
            header = protocol.peek_header(body[0]) if body else {}
            event, request_id = header.get("e"), header.get("i")
            event = event if isinstance(event, str) else None
            request_id = request_id if type(request_id) is int else 0
            _log.warning("malformed registry message: %s", exc)
            reply_event, reply_payload = _unsupported(event, str(exc))
        else:
            request_id = message.request_id
            try:
                reply_event, reply_payload = self._handle_request(
                    message.event, message.payload
                )
            except Exception as exc:
                _log.exception("registry failed on %s", message.event)
                reply_event, reply_payload = _unsupported(
                    message.event, f"internal error: {type(exc).__name__}: {exc}"
                )
        reply = RegistryMessage(reply_event, reply_payload, request_id)
        try:
            self._sock.send_multipart(
                envelope + protocol.encode_registry(reply), zmq.NOBLOCK
            )
        except zmq.ZMQError as exc:  # peer gone or queue full: drop the reply
            _log.warning("could not send a registry reply: %s", exc)

    def _process_json(self, envelope: list, body: list) -> None:
        """Answer a JSON message as the older protocol's table says (plus
        LIST_DEVICES); unknown events get exactly ``{"req_event": E}``."""
        reply_event: RegistryEvents = RegistryEvents.UNSUPPORTED
        try:
            message = legacy.decode_registry(body)
        except ProtocolError as exc:
            _log.warning("malformed JSON registry message: %s", exc)
            reply_payload: dict = {"req_event": legacy.peek_event(body[0])}
        else:
            event = message.event
            if event not in _JSON_REQUESTS:
                _log.warning("unsupported JSON registry event %s", event)
                reply_payload = {"req_event": str(event)}
            else:
                try:
                    reply_event, reply_payload = self._handle_request(
                        event, message.payload
                    )
                except Exception as exc:
                    _log.exception("registry failed on %s", event)
                    reply_event, reply_payload = _unsupported(
                        event, f"internal error: {type(exc).__name__}: {exc}"
                    )
        reply = legacy.encode_registry(RegistryMessage(reply_event, reply_payload))
        try:
            self._sock.send_multipart([*envelope, reply], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone or queue full: drop the reply
            _log.warning("could not send a registry reply: %s", exc)

    # -- request logic (no sockets) ---------------------------------------
    def _handle_request(self, event: str, payload: dict) -> tuple[RegistryEvents, dict]:
        """Apply one request and return its reply as ``(event, payload)``.

        Never raises for a bad request: it answers UNSUPPORTED with the reason.
        """
        handlers = {
            RegistryEvents.REGISTER: self._on_register,
            RegistryEvents.UNREGISTER: self._on_unregister,
            RegistryEvents.CHECK_ALIVE: self._on_check_alive,
            RegistryEvents.LIST_DEVICES: self._on_list_devices,
        }
        handler = handlers.get(event) if isinstance(event, str) else None
        if handler is None:
            _log.warning("unsupported registry event %r", event)
            return _unsupported(event, f"{event!s} is not a registry request")
        if type(payload) is not dict:
            return _unsupported(event, "payload must be a map")
        try:
            return handler(payload)
        except _BadRequest as exc:
            _log.warning("bad %s request: %s", event, exc)
            return _unsupported(event, f"{event!s}: {exc}")

    def _on_register(self, payload: dict) -> tuple[RegistryEvents, dict]:
        device_type = _field(payload, "device_type", (str,))
        address = _field(payload, "addr", (str,))
        name = _field(payload, "name", (str,), "")
        overwrite = _field(payload, "overwrite", (bool,), False)
        alive_timeout = _timeout_field(payload, self._default_alive_timeout)
        # A device that restarts comes back from the same address: its old
        # entry goes first, so that it can keep its name.
        for old_uuid, old in list(self._devices.items()):
            if old.address == address:
                _log.info("%s re-registers; replacing %r", address, old.name)
                self._remove(old_uuid)
        taken = {d.name: u for u, d in self._devices.items()}
        if not name:
            name = next(
                f"{device_type}-{i}"
                for i in itertools.count()
                if f"{device_type}-{i}" not in taken
            )
        elif name in taken:
            if overwrite:
                _log.info("%s takes the name %r over", address, name)
                self._remove(taken[name])
            else:
                name = next(
                    f"{name}-{i}"
                    for i in itertools.count(1)
                    if f"{name}-{i}" not in taken
                )
        device_uuid = uuid_mod.uuid4().hex
        device = _Device(
            device_type, address, name, alive_timeout, time.monotonic() + alive_timeout
        )
        with self._lock:
            self._devices[device_uuid] = device
            callbacks = list(self._added_callbacks)
        _log.info("registered %s %r at %s", device_type, name, address)
        self._fire(callbacks, device)
        return RegistryEvents.REGISTER_ACK, {"name": name, "uuid": device_uuid}

    def _on_unregister(self, payload: dict) -> tuple[RegistryEvents, dict]:
        device_uuid = _field(payload, "uuid", (str,))
        success = self._remove(device_uuid)
        return RegistryEvents.ACK, {"req_event": "UNREGISTER", "success": success}

    def _on_check_alive(self, payload: dict) -> tuple[RegistryEvents, dict]:
        device_uuid = _field(payload, "uuid", (str,))
        device = self._devices.get(device_uuid)
        # Without a timeout in the check, keep the one given at registration.
        default = device.alive_timeout if device else self._default_alive_timeout
        alive_timeout = _timeout_field(payload, default)
        if device is not None:
            device.alive_timeout = alive_timeout
            device.deadline = time.monotonic() + alive_timeout
        else:
            _log.debug("alive check from unknown uuid %s", device_uuid)
        return RegistryEvents.ACK, {
            "req_event": "CHECK_ALIVE",
            "success": device is not None,
        }

    def _on_list_devices(self, payload: dict) -> tuple[RegistryEvents, dict]:
        devices = {
            name: [device_type, address]
            for name, (device_type, address) in self.get_devices().items()
        }
        return RegistryEvents.DEVICES, {"devices": devices}

    def _remove(self, device_uuid: str) -> bool:
        with self._lock:
            device = self._devices.pop(device_uuid, None)
            callbacks = list(self._removed_callbacks)
        if device is None:
            return False
        _log.info(
            "removed %s %r at %s", device.device_type, device.name, device.address
        )
        self._fire(callbacks, device)
        return True

    def _prune(self, now: float) -> None:
        expired = [u for u, d in self._devices.items() if d.deadline < now]
        for device_uuid in expired:
            _log.info("device %s missed its deadline", self._devices[device_uuid].name)
            self._remove(device_uuid)

    @staticmethod
    def _fire(callbacks: list[DeviceCallback], device: _Device) -> None:
        for callback in callbacks:
            try:
                callback(device.device_type, device.address, device.name)
            except Exception:
                _log.exception("registry callback %r failed", callback)


# -- client side ------------------------------------------------------------


def _close_now(sock: zmq.Socket | None) -> None:
    """Close without linger: an unanswered request must not arrive later."""
    if sock is not None and not sock.closed:
        sock.setsockopt(zmq.LINGER, 0)
        transport.close_quietly(sock)


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
    deadline = time.monotonic() + timeout / 1000

    def remaining_ms() -> int:
        return max(0, int((deadline - time.monotonic()) * 1000))

    frame = legacy.encode_registry(RegistryMessage(event, payload))
    sock = transport.make_socket(context, zmq.DEALER, _client_options(security))
    try:
        sock.connect(registry_url)
        # IMMEDIATE is set: a DEALER is writable only once connected, so an
        # absent registry shows here instead of as a blocked send.
        if not sock.poll(remaining_ms(), zmq.POLLOUT):
            raise TimeoutError(f"registry at {registry_url} is unreachable")
        # The empty delimiter makes REP and ROUTER registries both answer.
        sock.send_multipart([b"", frame], zmq.NOBLOCK)
        if sock.poll(remaining_ms(), zmq.POLLIN):
            return _decode_reply(sock.recv_multipart())
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


class RegistryLink:
    """Keeps one server registered, from inside its single-threaded loop.

    ``register`` blocks once; then ``tick``, called every loop turn,
    never blocks: it checks in every ``alive_timeout / 3`` seconds on a
    long-lived DEALER socket and reads answers without waiting. A registry
    that forgot the device (it restarted) gets a new REGISTER under the
    current name; one that stays silent for 3 check-ins is reported gone,
    and check-ins go on until it is back.

    Messages are JSON, understood by framerpc and older registries alike.
    They carry no request id, so one request at most is in flight per
    socket: the socket of an unanswered request is replaced before the
    next one, and a late answer can never be taken for the next request's.
    The first check-in comes within a third of the older registries'
    default 20 s deadline, since they may ignore ``alive_timeout`` in
    REGISTER.

    Parameters
    ----------
    context : zmq.Context
        Context for the link's sockets.
    registry_url : str
        The registry's URL.
    device_type, name, address : str
        Device type, proposed name and the server's URL.
    alive_timeout : float
        Seconds the registry keeps the device without a check-in.
    overwrite : bool
        For the first registration: take the name from its holder.

    Attributes
    ----------
    name : str
        The name the registry accepted (may change on re-registration).
    uuid : str or None
        The registry's id of the device; None when not registered.
    registry_url : str
        As given.
    """

    def __init__(
        self,
        context: zmq.Context,
        registry_url: str,
        device_type: str,
        name: str,
        address: str,
        alive_timeout: float,
        overwrite: bool = True,
        *,
        security: Security | None = None,
    ) -> None:
        self.context = context
        self.security = security
        self.registry_url = registry_url
        self.device_type = device_type
        self.name = name
        self.address = address
        self.alive_timeout = float(alive_timeout)
        self.overwrite = overwrite
        self.uuid: str | None = None
        self.interval = max(self.alive_timeout / 3, _MIN_INTERVAL)
        self._sock: zmq.Socket | None = None
        self._pending: RegistryEvents | None = None  # request awaiting a reply
        self._outbox: list | None = None  # its frames, until the socket takes them
        self._sent_at = 0.0  # when the socket took them
        self._unanswered = 0
        self._next_check = 0.0
        self._closed = False

    def register(self, timeout: float = 1000) -> tuple[str, str]:
        """Register now (blocking); returns ``(accepted_name, uuid)``.

        Raises
        ------
        TimeoutError
            The registry did not answer within ``timeout`` ms.
        RuntimeError
            The registry refused the request.
        """
        self.name, self.uuid = register_device(
            self.context,
            self.registry_url,
            self.device_type,
            self.address,
            self.name,
            overwrite=self.overwrite,
            alive_timeout=self.alive_timeout,
            timeout=timeout,
            security=self.security,
        )
        self._pending, self._outbox, self._unanswered = None, None, 0
        self._next_check = time.monotonic() + self._first_check_delay()
        return self.name, self.uuid

    def tick(self, now: float | None = None) -> None:
        """Check in when due and read answers; never blocks.

        Parameters
        ----------
        now : float, optional
            ``time.monotonic()`` of the caller, to save a call.
        """
        if self._closed or self.uuid is None:
            return
        if now is None:
            now = time.monotonic()
        try:
            self._read_replies()
            self._flush()
            if now < self._next_check:
                return
            if self._pending is not None and now - self._sent_at < self.interval:
                return  # it went out late (connecting): give it its full time
            self._next_check = now + self.interval
            if self._pending is not None:
                self._count_unanswered()
            self._send(
                RegistryEvents.CHECK_ALIVE,
                {"uuid": self.uuid, "alive_timeout": self.alive_timeout},
            )
        except zmq.ZMQError as exc:
            # The serve loop must go on; a fresh socket may do better.
            _log.warning("registry link error: %s", exc)
            self._reset_socket()

    def unregister(self, timeout: float = 1000) -> bool:
        """Unregister (blocking, best effort); False if it did not happen.

        Check-ins stop either way. Never raises for a silent registry.
        """
        device_uuid, self.uuid = self.uuid, None
        self._pending, self._outbox = None, None
        if device_uuid is None:
            return False
        try:
            return unregister_device(
                self.context,
                self.registry_url,
                device_uuid,
                timeout=timeout,
                security=self.security,
            )
        except (TimeoutError, RuntimeError, ProtocolError, zmq.ZMQError) as exc:
            _log.warning("could not unregister %r: %s", self.name, exc)
            return False

    def close(self) -> None:
        """Close the link's socket; idempotent. Does not unregister."""
        self._closed = True
        _close_now(self._sock)
        self._sock = None

    # -- internals ----------------------------------------------------------
    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            options = _client_options(self.security)
            self._sock = transport.make_socket(self.context, zmq.DEALER, options)
            self._sock.connect(self.registry_url)
        return self._sock

    def _reset_socket(self) -> None:
        # Dropping the socket drops requests still queued for a dead peer,
        # and reconnects where the transport would not (inproc).
        _close_now(self._sock)
        self._sock = None

    def _send(self, event: RegistryEvents, payload: dict) -> None:
        self._pending = event
        message = RegistryMessage(event, payload)
        self._outbox = [b"", legacy.encode_registry(message)]
        self._flush()

    def _flush(self) -> None:
        """Hand the outgoing request to the socket once it is connected."""
        if self._outbox is None:
            return
        try:
            self._socket().send_multipart(self._outbox, zmq.NOBLOCK)
        except zmq.Again:
            return  # not connected yet (IMMEDIATE): retried next tick
        self._outbox = None
        self._sent_at = time.monotonic()

    def _count_unanswered(self) -> None:
        sent = self._outbox is None
        self._pending, self._outbox = None, None
        self._unanswered += 1
        if self._unanswered == _MAX_UNANSWERED:
            _log.warning(
                "registry at %s seems gone (%d check-ins unanswered); retrying",
                self.registry_url,
                self._unanswered,
            )
        # A request that went out may still be answered: only a new socket
        # cannot receive that late answer. One never sent (not connected)
        # needs none, but now and then a fresh socket reconnects where the
        # transport would not (inproc); not every time, as connecting takes time.
        if sent or self._unanswered % _MAX_UNANSWERED == 0:
            self._reset_socket()

    def _read_replies(self) -> None:
        sock = self._sock
        while sock is not None and sock.poll(0, zmq.POLLIN):
            frames = sock.recv_multipart(zmq.NOBLOCK)
            try:
                reply = _decode_reply(frames)
            except ProtocolError as exc:
                _log.warning("malformed reply from the registry: %s", exc)
                continue
            if self._pending is None:
                _log.debug("ignored an unexpected registry reply (%s)", reply.event)
                continue
            self._pending = None
            if self._unanswered >= _MAX_UNANSWERED:
                _log.info("registry at %s answers again", self.registry_url)
            self._unanswered = 0
            self._on_reply(reply)

    def _first_check_delay(self) -> float:
        return min(self.interval, DEFAULT_ALIVE_TIMEOUT / 3)

    def _on_reply(self, reply: RegistryMessage) -> None:
        payload = reply.payload
        if reply.event is RegistryEvents.ACK:
            if payload.get("success") is False:
                # The registry restarted or pruned us: register again, without
                # taking the name from whoever may hold it now.
                _log.info("registry forgot %r; registering again", self.name)
                self._send(
                    RegistryEvents.REGISTER,
                    {
                        "device_type": self.device_type,
                        "addr": self.address,
                        "name": self.name,
                        "overwrite": False,
                        "alive_timeout": self.alive_timeout,
                    },
                )
        elif reply.event is RegistryEvents.REGISTER_ACK:
            name, device_uuid = payload.get("name"), payload.get("uuid")
            if type(name) is str and type(device_uuid) is str:
                if name != self.name:
                    _log.info("registered again as %r (was %r)", name, self.name)
                else:
                    _log.info("registered again as %r", name)
                self.name, self.uuid = name, device_uuid
                self._next_check = min(
                    self._next_check, time.monotonic() + self._first_check_delay()
                )
            else:
                _log.warning("malformed REGISTER_ACK: %r", payload)
        elif reply.event is RegistryEvents.UNSUPPORTED:
            _log.warning("registry refused a request: %s", payload.get("error"))
        else:
            _log.warning("unexpected registry reply %s", reply.event)
