"""The registry service: a thread answering native and JSON requests.

The request logic lives once in ``DeviceRegistry._handle_request``,
which takes and returns plain ``(event, payload)`` pairs and applies them
to a ``DeviceDirectory``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import zmq

from .. import _lifecycle, transport
from ..errors import ProtocolError
from ..transport.authenticator import ClientKeys
from ..transport.curve import peer_key
from ..transport.keys import Security
from ..wire import json_codec as legacy
from ..wire import messages as protocol
from ..wire.messages import RegistryEvents, RegistryMessage
from ._common import (
    _JSON_REQUESTS,
    _MAX_BATCH,
    _REGISTRY_OPTIONS,
    DEFAULT_ALIVE_TIMEOUT,
    DEFAULT_MAX_ALIVE_TIMEOUT,
    DEFAULT_MAX_DEVICES,
    DeviceCallback,
    _BadRequest,
    _connect_url,
    _field,
    _split_envelope,
    _timeout_field,
    _unsupported,
)
from .directory import DeviceDirectory, RegistryEntry

__all__ = ["DeviceRegistry"]

# The package's logger, named as before the split: "framerpc.registry".
_log = logging.getLogger(__package__)


class DeviceRegistry(threading.Thread):
    """Directory of the devices on a network, served from its own thread.

    The socket is bound in the constructor, so a busy port raises here and
    ``port`` is known before ``start``. The table itself is a
    ``DeviceDirectory``: every request costs O(1) or O(log n).

    Names have owners. A registration returns a token (its uuid) and only
    that token unregisters or checks in for the entry. With ``security``
    (CURVE), the entry also belongs to the client key that registered it:
    only that key can check in for it, unregister it, or replace it (by
    registering the same address again, or the same name with
    ``overwrite``); a device restarted with the same key takes its entry
    back at once. Another key, allowed or not, can neither evict nor
    overwrite it: asking for a held name gets it the next free one
    (``name-1``...), as any name collision does, and registering a held
    address adds an entry of its own beside the holder's. Check-ins and
    unregistrations for another key's entry are answered ``success:
    false``, as for an unknown token. An entry that expired frees its name.
    Without ``security`` the older protocol's rules hold (same address
    replaces, ``overwrite`` takes a name): such a registry trusts its
    network.

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
    security : Security, optional
        CURVE settings of the registry socket; entries are then owned by
        client keys (see above).
    max_devices : int
        Most entries (default 10,000); a REGISTER beyond gets an error
        reply (UNSUPPORTED).
    max_alive_timeout : float
        Longest ``alive_timeout`` accepted (default 600 s); a REGISTER or
        CHECK_ALIVE asking for more gets an error reply.
    clock : callable
        Monotonic time in seconds used for deadlines (default
        ``time.monotonic``); tests pass a clock they move by hand.

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
        ``addr`` is a URL of an unsupported transport, or a limit is not
        positive.
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
        max_devices: int = DEFAULT_MAX_DEVICES,
        max_alive_timeout: float = DEFAULT_MAX_ALIVE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
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
        transport.check_url(bind_url, for_bind=True)
        self._clock = clock
        # Callbacks are collected during a request and fired after it,
        # outside the lock (a callback may call get_devices()).
        self._events: list[tuple[bool, RegistryEntry]] = []
        self._directory = DeviceDirectory(
            default_alive_timeout=default_alive_timeout,
            max_devices=max_devices,
            max_alive_timeout=max_alive_timeout,
            clock=clock,
            on_added=lambda entry: self._events.append((True, entry)),
            on_removed=lambda entry: self._events.append((False, entry)),
        )
        self._poll_ms = max(1, int(min(poll_interval, 0.1) * 1000))
        self._secured = security is not None
        # Under CURVE the owner of an entry is the client key, which libzmq
        # reports (as the User-Id) only when a ZAP handler runs.
        self._keys_lease: ClientKeys | None = None
        if security is not None and security.allowed_clients_dir is None:
            self._keys_lease = ClientKeys(context)
        options = dataclasses.replace(_REGISTRY_OPTIONS, security=security)
        try:
            # a shadow of the context: context.destroy() cannot close the
            # socket under the registry thread; the hook below asks it to stop
            self._sock = transport.make_socket(
                _lifecycle.private_context(context), zmq.ROUTER, options, server=True
            )
        except BaseException:
            self._release_keys()
            raise
        try:
            self.endpoint, self.port = transport.bind(self._sock, bind_url)
        except BaseException:
            transport.close_quietly(self._sock)
            self._release_keys()
            raise
        self.url = _connect_url(self.endpoint)
        # The directory is changed only by the registry thread, under the
        # lock, so that get_devices() from other threads sees a consistent view.
        self._lock = threading.Lock()
        self._added_callbacks: list[DeviceCallback] = []
        self._removed_callbacks: list[DeviceCallback] = []
        self._stop_event = threading.Event()
        # Decides who closes the socket when stop() races with start().
        self._life_lock = threading.Lock()
        self._running = False
        self._destroy_hook = _lifecycle.DestroyHook(
            context, f"DeviceRegistry {self.endpoint}", lambda _linger: self.stop()
        )

    # -- public API -------------------------------------------------------
    def get_devices(self) -> dict[str, tuple[str, str]]:
        """Return ``{name: (device_type, address)}``: a copy, from any thread."""
        with self._lock:
            return self._directory.devices()

    def get_entry(self, name: str) -> RegistryEntry | None:
        """The entry named ``name`` (owner, deadline...), or None; any thread."""
        with self._lock:
            return self._directory.entry(name)

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
                    self._prune()
                except zmq.ContextTerminated:  # term(): a clean stop
                    _log.info("registry context terminated; stopping")
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
    def _release_keys(self) -> None:
        if self._keys_lease is not None:
            self._keys_lease.close()

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
        self._release_keys()
        self._destroy_hook.release()

    def _serve_batch(self) -> None:
        for _ in range(_MAX_BATCH):
            try:
                # Frames (not copied) carry the sender's CURVE key (User-Id);
                # recv_frames drops the parts past RECV_FRAMES_KEPT unread.
                received = transport.recv_frames(self._sock, zmq.NOBLOCK)
            except zmq.Again:
                return
            owner = peer_key(received[0]) if self._secured else None
            self._prune()
            self._process([frame.bytes for frame in received], owner)

    def _prune(self) -> None:
        with self._lock:
            self._directory.prune()
        self._fire_events()

    def _process(self, frames: list, owner: str | None = None) -> None:
        """Answer one received message (routing envelope included)."""
        split = _split_envelope(frames)
        if split is None:
            _log.warning("dropped a registry message without routing envelope")
            return
        envelope, body = split
        if body and protocol.is_legacy_frame(body[0]):
            self._process_json(envelope, body, owner)
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
                    message.event, message.payload, owner
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
        except zmq.ContextTerminated:
            raise  # the loop stops quietly
        except zmq.ZMQError as exc:  # peer gone or queue full: drop the reply
            _log.warning("could not send a registry reply: %s", exc)

    def _process_json(self, envelope: list, body: list, owner: str | None) -> None:
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
                        event, message.payload, owner
                    )
                except Exception as exc:
                    _log.exception("registry failed on %s", event)
                    reply_event, reply_payload = _unsupported(
                        event, f"internal error: {type(exc).__name__}: {exc}"
                    )
        reply = legacy.encode_registry(RegistryMessage(reply_event, reply_payload))
        try:
            self._sock.send_multipart([*envelope, reply], zmq.NOBLOCK)
        except zmq.ContextTerminated:
            raise  # the loop stops quietly
        except zmq.ZMQError as exc:  # peer gone or queue full: drop the reply
            _log.warning("could not send a registry reply: %s", exc)

    # -- request logic (no sockets) ---------------------------------------
    def _handle_request(
        self, event: str, payload: dict, owner: str | None = None
    ) -> tuple[RegistryEvents, dict]:
        """Apply one request from ``owner`` and return its reply as
        ``(event, payload)``.

        Never raises for a bad request: it answers UNSUPPORTED with the reason.
        """
        handlers: dict[str, Callable[[dict, str | None], tuple]] = {
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
        if self._secured and owner is None and handler != self._on_list_devices:
            # Fail closed: without the key nobody could own the entry.
            return _unsupported(event, f"{event!s}: the client's CURVE key is unknown")
        try:
            with self._lock:
                return handler(payload, owner)
        except _BadRequest as exc:
            _log.warning("bad %s request: %s", event, exc)
            return _unsupported(event, str(exc))
        finally:
            self._fire_events()

    def _on_register(
        self, payload: dict, owner: str | None
    ) -> tuple[RegistryEvents, dict]:
        name, device_uuid = self._directory.register(
            _field(payload, "device_type", (str,)),
            _field(payload, "addr", (str,)),
            _field(payload, "name", (str,), ""),
            _field(payload, "overwrite", (bool,), False),
            _timeout_field(payload),
            owner,
        )
        return RegistryEvents.REGISTER_ACK, {"name": name, "uuid": device_uuid}

    def _on_unregister(
        self, payload: dict, owner: str | None
    ) -> tuple[RegistryEvents, dict]:
        success = self._directory.unregister(_field(payload, "uuid", (str,)), owner)
        return RegistryEvents.ACK, {"req_event": "UNREGISTER", "success": success}

    def _on_check_alive(
        self, payload: dict, owner: str | None
    ) -> tuple[RegistryEvents, dict]:
        device_uuid = _field(payload, "uuid", (str,))
        # Without a timeout in the check, keep the one given at registration.
        success = self._directory.check_in(device_uuid, _timeout_field(payload), owner)
        return RegistryEvents.ACK, {"req_event": "CHECK_ALIVE", "success": success}

    def _on_list_devices(
        self, payload: dict, owner: str | None
    ) -> tuple[RegistryEvents, dict]:
        return RegistryEvents.DEVICES, {"devices": self._directory.listing()}

    def _fire_events(self) -> None:
        """Run the callbacks of the entries added and removed (registry thread)."""
        if not self._events:
            return
        events, self._events = self._events, []
        with self._lock:
            added, removed = list(self._added_callbacks), list(self._removed_callbacks)
        for is_added, entry in events:
            for callback in added if is_added else removed:
                try:
                    callback(entry.device_type, entry.address, entry.name)
                except Exception:
                    _log.exception("registry callback %r failed", callback)
