"""The keep-alive link: keeps one server registered from its serve loop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import zmq

from .. import _lifecycle, transport
from ..errors import ProtocolError
from ..transport.keys import Security
from ..wire import json_codec as legacy
from ..wire.messages import RegistryEvents, RegistryMessage
from ._common import _MAX_UNANSWERED, _MIN_INTERVAL
from .client import (
    _client_options,
    _close_now,
    _decode_reply,
    register_device,
    unregister_device,
)

__all__ = ["RegistryLink"]

# The package's logger, named as before the split: "framerpc.registry".
_log = logging.getLogger(__package__)


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
    security : Security, optional
        CURVE settings of the link's sockets (this device's key pair and the
        registry's public key).
    clock : callable
        Monotonic time in seconds that schedules the check-ins (default
        ``time.monotonic``); tests pass a clock they move by hand.

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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        transport.check_url(registry_url, for_bind=False)
        self.context = context
        self._clock = clock
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
        self._next_check = self._clock() + self._first_check_delay()
        return self.name, self.uuid

    def tick(self, now: float | None = None) -> None:
        """Check in when due and read answers; never blocks.

        Parameters
        ----------
        now : float, optional
            The link's clock read by the caller, to save a call.
        """
        if self._closed or self.uuid is None:
            return
        if now is None:
            now = self._clock()
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
            # ETERM also as a plain ZMQError (pyzmq's when zmq_socket() fails)
            if _lifecycle.is_context_terminated(exc):
                raise  # term() or destroy(): the serve loop stops quietly
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
            self._sock = transport.make_socket(
                _lifecycle.private_context(self.context), zmq.DEALER, options
            )
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
        self._sent_at = self._clock()

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
            # not recv_multipart: parts past RECV_FRAMES_KEPT are dropped
            frames = [f.bytes for f in transport.recv_frames(sock, zmq.NOBLOCK)]
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
        # Read from the package at call time, where it has always lived (and
        # where tests patch it), not from a copy bound at import.
        from . import DEFAULT_ALIVE_TIMEOUT

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
                    self._next_check, self._clock() + self._first_check_delay()
                )
            else:
                _log.warning("malformed REGISTER_ACK: %r", payload)
        elif reply.event is RegistryEvents.UNSUPPORTED:
            _log.warning("registry refused a request: %s", payload.get("error"))
        else:
            _log.warning("unexpected registry reply %s", reply.event)
