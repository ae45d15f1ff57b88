"""Native dispatch: running a request (method call, property, inventory,
stop) on the device and building its reply, errors included."""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

import zmq

from .. import _sigseq, transport
from ..transport import keys
from ..wire import messages
from ..wire import shm as wire_shm
from ..wire.messages import Reply, Request, RPCEvents

if TYPE_CHECKING:
    from ..property import RPCProperty
    from ..rpc import callpath
    from .lane import LaneServer
    from .shm_frames import ShmServer

__all__ = ["DispatchMixin"]

_log = logging.getLogger(__name__)


class DispatchMixin:
    """RPCServer's native dispatch (see ``RPCServer``)."""

    # set by RPCServer.__init__
    allow_remote_stop: bool
    _options: transport.SocketOptions
    _message: list | None
    _stop_granted: bool
    _json_methods: dict[str, int | None]
    _buffer_methods: dict[str, int | None]
    _async_methods: set[str]
    _rpc_properties: dict[str, RPCProperty]
    _sequencer: _sigseq.Sequencer
    _shm: ShmServer
    _lane: LaneServer | None
    _responder: callpath.Responder

    if TYPE_CHECKING:  # DiscoveryMixin's, PublishingMixin's

        def _inventory(self) -> dict: ...

        def _publish_signal(self, name: str, *args: Any) -> None: ...

    def _dispatch(self, request: Request) -> list:
        """Frames of the reply to a native request (the Responder answers
        the plain method calls before this)."""
        reply, is_buffer = self._execute(request)
        try:
            if is_buffer and reply.ok and self._shm.clients and self._message:
                # a same-host client may get a shared-memory reference
                return self._shm.reply(
                    self._message[0], reply.request_id, (reply.value, reply.info)
                )
            return messages.encode_reply(reply, is_buffer)
        except Exception as exc:  # a result msgpack cannot carry
            return messages.encode_reply(_failure(request, exc))

    def _execute(self, request: Request) -> tuple[Reply, bool]:
        """Run ``request``; returns the reply and whether it is a buffer's."""
        rid, event = request.request_id, request.event
        is_buffer = False
        try:
            if event is RPCEvents.METHOD_CALL:
                is_buffer = request.method in self._buffer_methods
                value, info = self._call(request)
            elif event is RPCEvents.PROPERTY_GET:
                # sigseq: with the notify signal's number, for snapshots
                name = self._property(request.name)
                value, info = _sigseq.read_property(
                    self, name, self._rpc_properties[name], self._sequencer
                )
            elif event is RPCEvents.PROPERTY_SET:
                setattr(self, self._property(request.name), request.value)
                value, info = None, None
            elif event is RPCEvents.GET_INVENTORY:
                value, info = self._inventory(), None
            elif event is RPCEvents.SHM_HELLO:
                value, info = self._shm_hello(request), None
            elif event is RPCEvents.SHM_SUBSCRIBER:  # shm_signals
                value, info = self._shm_subscriber(request), None
            elif event is RPCEvents.INIT_SIGNALS_HANDLING:
                # Published on the signal socket: the client's receiver sees
                # its token once its subscription is live (no slow joiner).
                self._publish_signal(messages.SYNC_SIGNAL, request.name)
                value, info = self._inventory(), None
            else:  # STOP_SERVER
                refusal = self._stop_refusal()
                if refusal is not None:
                    _log.info("STOP_SERVER refused: %s", refusal)
                    return Reply(rid, False, error=f"PermissionError: {refusal}"), False
                self._stop_granted = True
                value, info = None, None
            return Reply(rid, True, value, info), is_buffer
        except _NotFound as exc:
            return Reply(rid, False, error=str(exc)), False
        except Exception as exc:
            return _failure(request, exc), False

    def _shm_hello(self, request: Request) -> dict:
        """Answer a client's shared-memory handshake (``framerpc.wire.shm``)."""
        identity = bytes(self._message[0]) if self._message else b""
        answer = self._shm.hello(identity, request.name, request.value)
        if self._shm.clients:  # plain calls may now answer with references
            self._responder.shm_release = self._shm.release
            self._responder.shm_threshold = self._shm.threshold
            self._responder.shm = self._shm.reply
        lane = self._lane  # a same-host lane for its calls (server.lane)
        if lane is not None and answer.get(wire_shm.REF_KEY) is True:
            offer = lane.offer(identity)
            if offer is not None:
                answer = {**answer, "lane": offer}
        return answer

    def _shm_subscriber(self, request: Request) -> dict:
        """Answer a claim of a signal subscriber (``server.shm_signals``)."""
        signals = self._shm.signals
        if signals is None or not self._message:
            return wire_shm.hello_reply(False)
        return signals.claim(bytes(self._message[0]), request.value)

    def _call(self, request: Request) -> tuple[Any, dict | None]:
        name = request.method
        if name not in self._json_methods and name not in self._buffer_methods:
            raise _NotFound(f"Method {_clip(name)} not implemented")
        if name in self._async_methods:  # framerpc.aio: only serve() runs them
            raise TypeError(f"async method {name} needs serve()'s native path")
        result = getattr(self, name)(*request.args, **request.kwargs)
        if name in self._json_methods:
            return result, None
        _check_buffer_result(name, result)
        return result

    def _method_failed(self, request_id: int, name: str, exc: Exception) -> list:
        """Error reply frames of method ``name`` that raised ``exc`` (for the
        Responder, from its ``except`` block)."""
        request = Request(RPCEvents.METHOD_CALL, request_id, name)
        return messages.encode_reply(_failure(request, exc))

    def _stop_refusal(self) -> str | None:
        """Why the STOP_SERVER being handled may not stop the server (None:
        it may; see ``allow_remote_stop``)."""
        if not self.allow_remote_stop:
            return "this server does not accept remote stop requests"
        settings = self._options.security
        if settings is None:
            return None
        key = self._peer_key()
        if key is None:
            return "the client's key is unknown: only administrators may stop it"
        if key not in keys.admin_keys(settings):
            return "only an administrator's key may stop this server"
        return None

    def _peer_key(self) -> str | None:
        """Z85 CURVE key of the client whose request is being handled (the
        ZAP handler's User-Id), or None."""
        frames = self._message
        if not frames:
            return None
        try:
            key = frames[-1].get("User-Id")
        except (zmq.ZMQError, AttributeError):  # no ZAP handler, or not a frame
            return None
        return key or None

    def _property(self, name: str) -> str:
        if name not in self._rpc_properties:
            raise _NotFound(f"Property {_clip(name)} not found")
        return name


def _check_buffer_result(name: str, result: Any) -> None:
    """Raise the TypeError of a buffer method's result that is not
    ``(bytes-like or numpy array, dict)``."""
    if (
        type(result) is not tuple
        or len(result) != 2
        or not isinstance(result[1], dict)
        or not isinstance(result[0], transport.BUFFER_TYPES)
    ):
        raise TypeError(
            f"buffer method {name} must return (bytes-like or numpy array, "
            f"dict), got {_describe(result)}"
        )


def _failure(request: Request, exc: Exception) -> Reply:
    """Error reply for ``exc``, raised while serving ``request`` (call it
    from the ``except`` block: it takes the traceback being handled)."""
    error = _clip(f"{type(exc).__name__}: {exc}")
    _log.info(
        "%s %s failed: %s", request.event, _clip(request.method or request.name), error
    )
    return Reply(
        request.request_id,
        False,
        error=error,
        traceback=_clip(traceback.format_exc(), _MAX_TRACEBACK),
    )


#: Longest error text (characters) a reply or log line carries: a request
#: can make an exception quote its own bytes (a 16 MiB keyword name, event
#: or method name), which would otherwise come back and go to the log whole.
_MAX_ERROR_TEXT = 2000
#: Longest traceback text of a reply (the frames' lines stay readable).
_MAX_TRACEBACK = 64 * 1024


def _clip(text: str, limit: int = _MAX_ERROR_TEXT) -> str:
    """``text``, cut to ``limit`` characters (its tail, where a traceback
    names the error, is kept) with a note of what was left out."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}...[{len(text) - 2 * half} characters cut]...{text[-half:]}"


class _NotFound(LookupError):
    """An unknown method or property: a plain error reply, no traceback."""


def _describe(value: Any) -> str:
    if type(value) is tuple:
        return "(" + ", ".join(type(v).__name__ for v in value) + ")"
    return type(value).__name__
