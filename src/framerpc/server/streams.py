"""Server side of ``RPCStream``: the hub thread that sends to subscribers.

A server with streams binds one extra ROUTER socket (endpoint derived from
its URL like the signal socket's, ``stream_url`` in the native inventory),
owned by one hub thread. ``publish`` (any thread) encodes the frame once
and appends it to each subscriber's pending deque under a lock, then wakes
the hub through an inproc socket; the hub sends to each subscriber only
against the credit it granted (``_streamproto``). A subscriber's pending
deque holds at most its window (1 for ``latest``, N for ``queue=N``): a
frame pushed out of it is dropped for that subscriber alone and counted.
So publish never waits for a subscriber and the server holds, per
subscriber, at most its window of pending frames plus what its credit let
into the socket (frames are shared between subscribers, never copied).
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from typing import Any

import zmq

from .. import _lifecycle, transport
from .._ratelog import RateLimitedLog
from ..errors import ProtocolError
from ..stream import PREFETCH, credit_window, declared_streams
from ..transport.waker import Waker
from ..wire import streams as _streamproto
from .stream_publisher import StreamPublisher

__all__ = ["StreamHub", "StreamPublisher", "Waker", "attach", "inventory"]

_log = logging.getLogger(__name__)

#: Most subscriptions a server keeps at once; more are refused.
MAX_SUBSCRIBERS = 256
#: Send high-water mark (messages) of the stream socket per subscriber:
#: credit bounds what an honest subscriber has in flight (its credit
#: window, at most PREFETCH frames, and a control reply); this bounds a
#: subscriber that grants credit without reading, each of whose queued
#: frames pins a whole published buffer: so no more than an honest one.
_SNDHWM = PREFETCH + 2
#: Largest message (bytes) the stream socket accepts: only small control
#: messages travel to the server; libzmq drops a peer sending more.
_MAX_IN = 4 * _streamproto.MAX_CONTROL
#: Longest wait (s) of the hub loop with nothing to do: how often it
#: looks for subscribers that went silent.
_IDLE_S = 0.25
#: Wait (ms) before retrying a send refused for a full subscriber queue;
#: doubled while nothing goes out (a ROUTER's POLLOUT is not per peer).
_RETRY_MS = 2
#: With heartbeats off, how often (s) the hub sends each subscriber a
#: "probe": a subscriber without credit gets no frame, so without it one
#: that vanished would keep its place (MAX_SUBSCRIBERS) for ever.
_PROBE_S = 1.0


class _Item:
    """One published frame, encoded once for every subscriber."""

    __slots__ = ("frame", "header", "seq")

    def __init__(self, seq: int, header: bytes, frame: zmq.Frame) -> None:
        self.seq = seq
        self.header = header
        self.frame = frame


class _Subscriber:
    """What the hub knows of one subscription (one DEALER connection)."""

    __slots__ = (
        "cap",
        "credit",
        "dropped",
        "dropped_total",
        "identity",
        "last_seen",
        "pending",
        "sent",
        "stream",
        "window",
    )

    def __init__(self, identity: bytes, stream: str, policy: str, window: int) -> None:
        self.identity = identity
        self.stream = stream
        self.window = window  # most pending frames
        self.cap = credit_window(policy, window)  # most credit
        self.credit = 0
        self.pending: collections.deque[_Item] = collections.deque()
        self.dropped = 0  # since the last frame sent
        self.dropped_total = 0
        self.sent = 0
        self.last_seen = time.monotonic()


class StreamHub(threading.Thread):
    """The thread that owns a server's stream socket (see the module).

    Parameters
    ----------
    context : zmq.Context
        The server's (private) context.
    endpoint : str
        Where to bind (``transport.derive_endpoint(url, ".streams")``).
    publishers : dict of str to StreamPublisher
        Filled by ``attach``.
    options : SocketOptions
        Socket tuning; ``dead_peer_ms`` is how long a silent subscriber is
        kept (with heartbeats off: until a send, or a probe every
        ``_PROBE_S``, finds its connection gone).
    """

    def __init__(
        self,
        context: zmq.Context,
        endpoint: str,
        options: transport.SocketOptions,
    ) -> None:
        super().__init__(name=f"StreamHub({endpoint})", daemon=True)
        self.publishers: dict[str, StreamPublisher] = {}
        self.epoch = random.getrandbits(48)
        self._options = options
        self._lock = threading.Lock()
        self._subs: dict[bytes, _Subscriber] = {}
        self._by_stream: dict[str, list[_Subscriber]] = {}
        self._stop_flag = threading.Event()
        self._closed = False
        self._refusals = RateLimitedLog(_log)
        self.refused = 0  # malformed or refused messages, for tests and stats
        # control replies waiting for room (the oldest go past the bound)
        self._unsent: collections.deque[list] = collections.deque(
            maxlen=MAX_SUBSCRIBERS
        )
        self._socket = transport.make_socket(context, zmq.ROUTER, options, server=True)
        self._waker: Waker | None = None
        try:
            self._socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._socket.setsockopt(zmq.SNDHWM, _SNDHWM)
            self._socket.setsockopt(zmq.MAXMSGSIZE, _MAX_IN)
            self.url, self.port = transport.bind(self._socket, endpoint, options)
            self._waker = Waker(context)
        except BaseException:
            transport.close_quietly(self._socket)
            raise

    # -- any thread ------------------------------------------------------
    def publish(self, publisher: StreamPublisher, header: bytes, buffer: Any) -> None:
        """Queue one encoded frame for the subscribers of ``publisher``."""
        frame = zmq.Frame(buffer, copy=False)
        wake = False
        with self._lock:
            if self._closed:
                return
            item = _Item(publisher._seq, header, frame)
            publisher._seq += 1
            publisher.published += 1
            for sub in self._by_stream.get(publisher.name or "", ()):
                pending = sub.pending
                if len(pending) >= sub.window:  # the oldest goes, for it alone
                    pending.popleft()
                    sub.dropped += 1
                    sub.dropped_total += 1
                    publisher.dropped += 1
                pending.append(item)
                wake = wake or sub.credit > 0
        if wake and self._waker is not None:
            self._waker.wake()

    def count(self, publisher: StreamPublisher) -> None:
        """A frame published while nobody subscribed: it takes a seq."""
        with self._lock:
            publisher._seq += 1
            publisher.published += 1

    def stream_stats(self, publisher: StreamPublisher) -> dict[str, int]:
        with self._lock:
            subs = self._by_stream.get(publisher.name or "", [])
            held = {id(item) for sub in subs for item in sub.pending}
            return {
                "published": publisher.published,
                "subscribers": len(subs),
                "dropped": publisher.dropped,
                "pending": sum(len(sub.pending) for sub in subs),
                "held_frames": len(held),
            }

    def stop(self) -> None:
        """Ask the thread to stop (it closes its sockets); never waits."""
        self._stop_flag.set()
        if self._waker is not None:
            self._waker.wake()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it; idempotent."""
        self.stop()
        if self.ident is None:  # never started: close here
            self._close_sockets()
        elif self is not threading.current_thread():
            self.join(timeout)

    # -- the hub thread --------------------------------------------------
    def run(self) -> None:
        """Serve subscriptions until ``stop`` or the context's termination."""
        sock, waker = self._socket, self._waker
        assert waker is not None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(waker.socket, zmq.POLLIN)
        dead_ms = self._options.dead_peer_ms
        next_sweep = time.monotonic() + _IDLE_S
        retry_ms: int | None = None
        try:
            while not self._stop_flag.is_set():
                wait = int(_IDLE_S * 1000) if retry_ms is None else retry_ms
                ready = dict(poller.poll(wait))
                if waker.socket in ready:
                    waker.drain()
                if sock in ready:
                    self._receive(sock)
                blocked = self._flush(sock)
                if not blocked:
                    retry_ms = None
                else:
                    retry_ms = _RETRY_MS if retry_ms is None else min(2 * retry_ms, 100)
                now = time.monotonic()
                if dead_ms is not None and now >= next_sweep:
                    next_sweep = now + _IDLE_S
                    self._sweep(now - dead_ms / 1000)
                elif dead_ms is None and now >= next_sweep:
                    next_sweep = now + _PROBE_S
                    self._probe(sock)
        except zmq.ZMQError as exc:
            if not _lifecycle.is_context_terminated(exc):
                _log.error("stream hub at %s failed: %s", self.url, exc)
        except Exception:  # a bug must not leave the sockets open
            _log.exception("stream hub at %s failed", self.url)
        finally:
            self._close_sockets()

    def _close_sockets(self) -> None:
        with self._lock:
            self._closed = True
            self._subs.clear()
            self._by_stream.clear()
        if self._waker is not None:
            self._waker.close()
        transport.close_quietly(self._socket)

    def _receive(self, sock: zmq.Socket) -> None:
        # a bounded batch, so that sending is not starved by a flood
        for _ in range(256):
            try:
                # not recv_multipart: parts past RECV_FRAMES_KEPT are dropped
                # as read, without a Python object each
                frames = transport.recv_frames(sock, zmq.NOBLOCK)
            except zmq.Again:
                return
            identity = bytes(frames[0])
            try:
                control = _streamproto.decode_control(frames[1:])
                self._handle(identity, control)
            except ProtocolError as exc:
                self.refused += 1
                self._refusals.warning("refused a stream message: %s", exc)
                self._reply(identity, "err", er=str(exc)[:200])

    def _handle(self, identity: bytes, control: _streamproto.Control) -> None:
        event = control.event
        if event == "sub":
            self._subscribe(identity, **control.fields)
            return
        with self._lock:
            sub = self._subs.get(identity)
            if sub is not None:
                sub.last_seen = time.monotonic()
                if event == "credit":
                    sub.credit = min(sub.credit + control.fields["credit"], sub.cap)
                elif event == "unsub":
                    self._forget(sub)
        if sub is None and event != "unsub":
            self._reply(identity, "nosub")  # a restart, or forgotten: subscribe again

    def _subscribe(self, identity: bytes, name: str, policy: str, window: int) -> None:
        if name not in self.publishers:
            self.refused += 1
            self._reply(identity, "err", er=f"no stream named {name[:80]!r}")
            return
        with self._lock:
            old = self._subs.get(identity)
            if old is not None:  # subscribed again (a resend): start afresh
                self._forget(old)
            sub = None
            if len(self._subs) < MAX_SUBSCRIBERS:
                sub = _Subscriber(identity, name, policy, window)
                self._subs[identity] = sub
                self._by_stream.setdefault(name, []).append(sub)
        if sub is None:
            self.refused += 1
            self._reply(identity, "err", er=f"more than {MAX_SUBSCRIBERS} subscribers")
            return
        _log.debug(
            "stream %s: subscriber %s (%s, %d)", name, identity.hex(), policy, window
        )
        # pi: how often (ms) it must show it is alive (0: it is never forgotten)
        ping_ms = self._options.heartbeat_ivl_ms if self._options.dead_peer_ms else 0
        self._reply(identity, "ok", s=name, ep=self.epoch, n=window, pi=ping_ms)

    def _forget(self, sub: _Subscriber) -> None:
        """Drop a subscriber and its pending frames (caller holds the lock)."""
        self._subs.pop(sub.identity, None)
        peers = self._by_stream.get(sub.stream)
        if peers is not None and sub in peers:
            peers.remove(sub)
        sub.pending.clear()

    def _sweep(self, deadline: float) -> None:
        with self._lock:
            silent = [s for s in self._subs.values() if s.last_seen < deadline]
            for sub in silent:
                _log.info("stream %s: forgot a silent subscriber", sub.stream)
                self._forget(sub)

    def _probe(self, sock: zmq.Socket) -> None:
        """Forget the subscribers whose connection is gone (ROUTER_MANDATORY
        refuses a send to them); live ones ignore the probe."""
        with self._lock:
            subs = list(self._subs.values())
        probe = _streamproto.encode_control("probe")
        for sub in subs:
            try:
                sock.send_multipart([sub.identity, probe], zmq.NOBLOCK)
            except zmq.Again:  # there, with a full queue
                pass
            except zmq.ZMQError as exc:
                if _lifecycle.is_context_terminated(exc):
                    raise
                with self._lock:  # EHOSTUNREACH: it left
                    if self._subs.get(sub.identity) is sub:
                        _log.info("stream %s: forgot a vanished subscriber", sub.stream)
                        self._forget(sub)

    def _reply(self, identity: bytes, event: str, **fields: Any) -> None:
        message = [identity, _streamproto.encode_control(event, **fields)]
        if not self._send_reply(message):
            self._unsent.append(message)  # sent by _flush when there is room

    def _send_reply(self, message: list) -> bool:
        """Send a control reply; False when its peer's queue is full (libzmq
        may also see it full for a moment after the peer has read it)."""
        try:
            self._socket.send_multipart(message, zmq.NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if _lifecycle.is_context_terminated(exc):
                raise
            _log.debug("stream reply not sent: %s", exc)  # gone
        return True

    def _flush(self, sock: zmq.Socket) -> bool:
        """Send what credit allows; True when a full queue refused a frame."""
        with self._lock:
            batch = []
            for sub in self._subs.values():
                while sub.credit > 0 and sub.pending:
                    item = sub.pending.popleft()
                    sub.credit -= 1
                    batch.append((sub, item, sub.dropped))
                    sub.dropped = 0
        blocked = False
        if self._unsent:  # control replies refused by a full queue, retried
            waiting = [m for m in self._unsent if not self._send_reply(m)]
            self._unsent.clear()
            self._unsent.extend(waiting)
            blocked = bool(waiting)
        epoch = self.epoch
        for sub, item, dropped in batch:
            meta = _streamproto.encode_meta(item.seq, dropped, epoch)
            try:
                sock.send_multipart(
                    [sub.identity, meta, item.header, item.frame],
                    zmq.NOBLOCK,
                    copy=False,
                )
                sub.sent += 1
            except zmq.Again:  # its queue is full: keep the frame and credit
                blocked = True
                self._put_back(sub, item, dropped)
            except zmq.ZMQError as exc:
                if _lifecycle.is_context_terminated(exc):
                    raise
                with self._lock:  # EHOSTUNREACH: it left
                    self._forget(sub)
        return blocked

    def _put_back(self, sub: _Subscriber, item: _Item, dropped: int) -> None:
        with self._lock:
            if self._subs.get(sub.identity) is not sub:
                return
            sub.credit += 1
            sub.dropped += dropped
            if len(sub.pending) < sub.window:
                sub.pending.appendleft(item)
            else:  # newer frames filled its window meanwhile: the oldest goes
                sub.dropped += 1
                sub.dropped_total += 1
                self.publishers[sub.stream].dropped += 1


def attach(server: Any) -> StreamHub | None:
    """Give ``server`` a hub and a publisher per declared ``RPCStream``.

    Each publisher is put in the server's ``__dict__`` under the stream's
    name, so ``self.frames.publish`` finds it. Returns the started hub, or
    None when the server's class declares no stream.
    """
    declared = declared_streams(type(server))
    if not declared:
        return None
    hub = StreamHub(
        server._zmq_context,
        transport.derive_endpoint(server.url, ".streams"),
        server._options,
    )
    for name, stream in declared.items():
        publisher = StreamPublisher(hub, stream, name)
        hub.publishers[name] = publisher
        server.__dict__[name] = publisher
    hub.start()
    return hub


def inventory(hub: StreamHub | None) -> dict[str, Any]:
    """The native inventory fields of a server's streams ({} without any)."""
    if hub is None:
        return {}
    return {
        "streams": list(hub.publishers),
        "stream_url": hub.url,
        "stream_docs": {n: p.doc for n, p in hub.publishers.items() if p.doc},
    }
