"""The serve loop: receiving requests on the ROUTER socket, handing
plain method calls to the ``Responder`` and the rest to ``_handle_body``,
and sending replies (or keeping them in the backlog)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import zmq

from .. import _lifecycle, sdnotify, transport
from ..errors import ProtocolError
from ..rpc import requests
from ..wire import framing, messages
from ..wire.messages import Reply, RPCEvents
from ..wire.shm import KEY_RELEASES
from .dispatch import _clip

if TYPE_CHECKING:
    from .._ratelog import RateLimitedLog
    from ..registry import RegistryLink
    from ..rpc import callpath
    from ..wire.messages import Request
    from . import outbox
    from .lane import LaneServer
    from .shm_frames import ShmServer

__all__ = ["ServeLoopMixin"]

_log = logging.getLogger(__name__)

#: How often (s) the serve loop wakes with no request, to notice stop().
_POLL_S = 0.1
#: Most routing frames before the empty delimiter (REQ through proxies).
_MAX_ENVELOPE = 8
#: How long (s) the server keeps serving after answering STOP_SERVER: a
#: DEALER with ZMQ_IMMEDIATE drops a reply it has not read yet when the
#: connection closes, so closing at once loses the acknowledgement. This
#: version's clients send STOP_SERVER on a socket without it (their
#: ``_stop_request``), which keeps the reply; older ones need the grace.
_STOP_GRACE_S = 0.2
#: Wait (ms) of the serve loop while replies wait for a client's queue: a
#: ROUTER cannot tell when one peer has room again (its POLLOUT means "some
#: peer has room"), so the loop retries this often, and twice as long
#: after each try that sent nothing (up to _POLL_S: a client that does not
#: read costs a few wake-ups a second).
_FLUSH_WAIT_MS = 2
#: Passes of the serve loop between two checks of the shared-memory
#: clients (``ShmServer.tick``, itself at most once a second), and one when
#: idle: a Python call per message cost echo 3-4% more instructions.
_SHM_TICK_EVERY = 16


class ServeLoopMixin:
    """RPCServer's serve loop (see ``RPCServer``)."""

    # set by RPCServer.__init__
    url: str
    name: str
    uuid: str | None
    _async_methods: set[str]
    _socket: zmq.Socket
    _responder: callpath.Responder
    _backlog: outbox.ReplyBacklog
    _watchdog: sdnotify.Watchdog
    _shm: ShmServer
    _lane: LaneServer | None
    _registry_link: RegistryLink | None
    _limits: tuple[int, int, int, int]
    _refusals: RateLimitedLog
    _serving: threading.Lock
    _serving_ident: int | None
    _ready: threading.Event
    _message: list | None
    _stopping: bool
    _stop_at: float | None
    _stop_granted: bool
    _terminated: bool
    _dead: bool

    if TYPE_CHECKING:  # RPCServer's and the sibling mixins' methods

        def _shutdown(self) -> None: ...

        def _signals_idle(self) -> None: ...

        def _handle_legacy(self, envelope: list, body: list) -> None: ...

        def _dispatch(self, request: Request) -> list: ...

    def _keep_time(self, watchdog: Any) -> None:
        """Once a turn of a serve loop (this one and ``framerpc.aio``'s):
        the systemd ``watchdog`` (None: off), shared-memory slots of ended
        clients, the registry link."""
        if watchdog is not None:
            watchdog.tick()
        if self._shm.clients:  # reclaims the slots of ended clients
            self._shm.tick()
        link = self._registry_link
        if link is not None:
            link.tick()
            # the link may have registered again under a new name
            self.name, self.uuid = link.name, link.uuid

    def serve_forever(self) -> None:
        """Serve requests until ``stop_server`` or a STOP_SERVER request
        (then for 0.2 s more, so that the client reads the acknowledgement).

        Closes the sockets and unregisters from the registry on return.
        A device with ``async def`` methods is served by ``serve`` in a
        new event loop of this thread.
        """
        if self._async_methods:  # framerpc.aio: needs an event loop
            return _aio_server().serve_blocking(self)
        if not self._serving.acquire(blocking=False):
            raise RuntimeError("serve_forever is already running")
        sock = self._socket
        self._serving_ident = threading.get_ident()
        try:
            if self._dead:  # stop_server() came first: nothing to serve
                _log.debug("serve_forever called on a stopped server")
                return
            sock.setsockopt(zmq.RCVTIMEO, int(_POLL_S * 1000))
            respond = self._responder.handle
            backlog = self._backlog
            flush_wait = _FLUSH_WAIT_MS
            sdnotify.ready()
            # the systemd watchdog: a tick per message only when it is on
            watchdog = self._watchdog if self._watchdog.enabled else None
            shm, shm_skip = self._shm, 0
            # same-host lane (server.lane): polls the ROUTER and the lane
            lane = self._lane if self._lane is not None and self._lane.start() else None
            via = None  # the lane's reply callable of a lane request
            self._ready.set()
            # a plain attribute: Event.is_set() is a Python call per message
            while not self._stopping and (
                self._stop_at is None or time.monotonic() < self._stop_at
            ):
                try:
                    if not backlog.pending:
                        if lane is None or not lane.active:
                            frames, via = transport.recv_frames(sock), None
                        else:
                            frames, via = lane.receive(int(_POLL_S * 1000))
                    else:  # replies wait for room: retry sending them often
                        if backlog.flush():
                            flush_wait = _FLUSH_WAIT_MS
                        else:
                            flush_wait = min(2 * flush_wait, int(_POLL_S * 1000))
                        frames = None
                        if lane is not None and lane.active:
                            frames, via = lane.receive(flush_wait)
                        elif sock.poll(flush_wait, zmq.POLLIN):
                            frames, via = transport.recv_frames(sock, zmq.NOBLOCK), None
                except zmq.Again:
                    frames = None
                    self._signals_idle()  # departures free their bytes
                    shm_skip = 0  # idle: time to check the shm clients
                if frames is not None:
                    # whose key _peer_key reads, also in the Responder's
                    # fallback; cleared after, not to keep the frames alive
                    self._message = frames
                    try:
                        # a client with replies waiting takes the general
                        # path, which queues its reply behind them (order)
                        if (backlog.pending and backlog.holds(frames)) or not respond(
                            frames, via
                        ):
                            self._handle(frames)
                    except Exception as exc:  # a bug here must not end serving
                        if _lifecycle.is_context_terminated(exc):
                            raise
                        _log.exception("unexpected error while handling a message")
                    finally:
                        self._message = None
                # _keep_time inlined: a Python call per message cost 1.6k
                # instructions, 2% of an echo (benchmarks/echo_instructions.py)
                if watchdog is not None:
                    watchdog.tick()
                shm_skip -= 1
                if shm_skip < 0:  # reclaims the slots of ended clients
                    shm_skip = _SHM_TICK_EVERY
                    if shm.clients:
                        shm.tick()
                    if lane is not None:  # polled while lane clients are
                        lane.tick()
                link = self._registry_link
                if link is not None:
                    link.tick()
                    # the link may have registered again under a new name
                    self.name, self.uuid = link.name, link.uuid
        except zmq.ZMQError as exc:
            if not _lifecycle.is_context_terminated(exc):
                raise
            # ctx.term() or ctx.destroy(): a clean stop, this thread closes
            # its own sockets below.
            self._terminated = True
            _log.debug("context of %s terminated: serving stops", self.url)
        finally:
            self._serving_ident = None
            self._shutdown()
            self._serving.release()

    async def serve(self) -> None:
        """Serve inside the running asyncio loop until stopped (as
        ``serve_forever``); ``async def`` methods run as concurrent tasks,
        sync ones inline on the loop. See ``framerpc.aio.server.serve``."""
        await _aio_server().serve(self)  # framerpc.aio

    def stop_server(self) -> None:
        """Stop serving, from any thread; unregisters from the registry.

        Returns at once; ``serve_forever`` returns within about 0.1 s.
        When the server is not serving, its sockets are closed now.
        """
        self._stopping = True
        if self._serving.acquire(blocking=False):
            try:
                self._shutdown()
            finally:
                self._serving.release()

    def _handle(self, frames: list) -> None:
        split: int | None  # None: no empty delimiter
        # [identity, b"", ...] from a DEALER or REQ peer is the common case
        if len(frames) > 2 and len(frames[1]) == 0:
            split = 1
        else:
            split = next(
                (i for i, f in enumerate(frames[:_MAX_ENVELOPE]) if len(f) == 0), None
            )
            if split is None:
                _log.warning("dropped a message without routing envelope")
                return
        envelope, body = frames[: split + 1], frames[split + 1 :]
        if not body:
            _log.warning("dropped a message without body")
            return
        try:
            decoded: Any = framing.decode(body, *self._limits)
        except ProtocolError as exc:
            decoded = exc
        self._handle_body(envelope, body, decoded)

    def _handle_body(self, envelope: list, body: list, decoded: Any) -> None:
        """Answer a request whose header was decoded once: ``decoded`` is
        the header dict or the exception decoding raised (the Responder's
        fallback, and the end of ``_handle``)."""
        try:
            if isinstance(decoded, Exception):
                raise decoded
            request = requests.request_from_header(decoded)
            if request.event is RPCEvents.SHM_RELEASE:  # one-way: no reply
                self._shm.release(envelope[0], request.value)
                return
            if KEY_RELEASES in decoded and self._shm.clients:  # a call's releases
                self._shm.release(envelope[0], decoded[KEY_RELEASES])
        except ProtocolError as exc:
            # JSON never parses as msgpack (``{`` is an int followed by
            # extra data): testing for it here keeps it off the hot path.
            # memoryview: a zmq.Frame's or a lane packet's (server.lane)
            if messages.is_legacy_frame(memoryview(body[0])):
                self._handle_legacy(envelope, body)
                return
            exc = ProtocolError(_clip(str(exc)))  # may quote the hostile bytes
            self._refusals.warning("malformed request: %s", exc)
            # the id lets the client's call fail at once instead of timing
            # out; read from the decoded header, or peeked (bounded work)
            rid: Any = decoded.get("i") if type(decoded) is dict else None
            if type(rid) is not int:
                rid = messages.peek_request_id(body[0])
            reply = Reply(rid, False, error=f"ProtocolError: {exc}")
            self._send(envelope, messages.encode_reply(reply))
            return
        self._send(envelope, self._dispatch(request), request.request_id)
        if request.event is RPCEvents.STOP_SERVER:
            self._stop_after_grace()

    def _stop_after_grace(self) -> None:
        # after STOP_SERVER, serve _STOP_GRACE_S more (see its comment);
        # only when _execute found the request authorised
        if self._stop_granted:
            self._stop_soon()

    def _stop_soon(self) -> None:
        # stop the serve loop _STOP_GRACE_S from now: a reply just sent is
        # read before the connection closes
        if self._stop_at is None:
            self._stop_at = time.monotonic() + _STOP_GRACE_S

    def _send(
        self, envelope: list, frames: list, request_id: int | None = None
    ) -> None:
        backlog = self._backlog
        if backlog.pending and backlog.holds(envelope):  # keep the order
            backlog.add(envelope + frames)
            return
        try:
            transport.send_frames(self._socket, envelope + frames, zmq.NOBLOCK)
        except (zmq.ZMQError, TypeError) as exc:
            self._send_failed(envelope, exc, request_id, frames)

    def _send_failed(
        self,
        envelope: list,
        exc: Exception,
        request_id: int | None,
        frames: list | None = None,
    ) -> None:
        if _lifecycle.is_context_terminated(exc):
            raise exc  # the serve loop stops quietly
        # EAGAIN: the client's queue is full (ROUTER_MANDATORY), nothing was
        # sent; the backlog keeps the reply until it has room.
        if isinstance(exc, zmq.Again) and frames is not None:
            self._backlog.add(envelope + frames)
            return
        # Another ZMQError (EHOSTUNREACH: the client left) loses the reply.
        if isinstance(exc, zmq.ZMQError):
            self._backlog.lost(1, f"could not send a reply: {exc}")
            return
        _log.warning("could not send a reply: %s", exc)
        # A TypeError comes before anything is sent (every frame is checked
        # first): a frame without the buffer interface; the caller gets an
        # error.
        if isinstance(exc, TypeError) and request_id is not None:
            error = f"TypeError: the result cannot be sent: {exc}"
            reply = Reply(request_id, False, error=error)
            self._send(envelope, messages.encode_reply(reply))


def _aio_server() -> Any:
    """framerpc.aio.server, imported when first needed (framerpc.aio)."""
    from ..aio import server

    return server
