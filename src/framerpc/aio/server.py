"""Serving an ``RPCServer`` inside a running asyncio loop.

``await server.serve()`` (``RPCServer.serve`` delegates here) runs the
serve loop of ``RPCServer.serve_forever`` as a coroutine: it waits for
requests on the loop (the socket's ``ZMQ_FD``, see ``_fdwatch``) instead
of blocking, so the loop runs other tasks meanwhile, and each call of an
``async def`` method runs as a task of its own: a slow one does not hold
back other calls, and several run at once. Everything else (sync
methods, properties, the inventory, signals, older JSON clients) is
answered inline, on the loop's thread, by the server's own code, exactly
as ``serve_forever`` answers it: a sync method blocks the loop while it
runs and never runs concurrently with another request. Put slow blocking
work in an ``async def`` method that awaits ``asyncio.to_thread``.

A server whose device has ``async def`` methods and is run by
``serve_forever`` or ``start`` runs this loop in a private event loop of
its thread (``serve_blocking``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import zmq

from .. import _lifecycle, sdnotify, transport
from .._ratelog import RateLimitedLog
from ..errors import ProtocolError
from ..wire import framing
from ..wire import messages as protocol
from ._fdwatch import FdWatch

if TYPE_CHECKING:
    from ..server import RPCServer

__all__ = ["serve", "serve_blocking"]

_log = logging.getLogger(__name__)
_refusals = RateLimitedLog(_log)

_NOBLOCK = int(zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)
_EVENTS = int(zmq.EVENTS)
#: How often (ms) the loop wakes with no request, to notice stop_server().
_POLL_MS = 100
#: Retry interval (ms) of replies waiting for a client's queue (as in
#: server.py: doubled after each fruitless try, up to _POLL_MS).
_FLUSH_WAIT_MS = 2
#: Messages handled in a row before the serve loop lets other tasks run.
_BATCH = 64
#: Most ``async def`` method calls running at once; more are refused with
#: an error reply: a call that never returns holds its task (about 1.4 KB)
#: for ever, even after its client gave up or left.
MAX_ASYNC_CALLS = 10_000
#: Longest wait (s) at stop for async method tasks to end once cancelled.
_CANCEL_WAIT_S = 2.0


async def serve(server: RPCServer) -> None:
    """Serve ``server`` in the running loop until it is stopped.

    Stops on ``server.stop_server()`` (from any thread), ``server.close()``
    from another thread, or an authorised STOP_SERVER request (0.2 s
    after it, as ``serve_forever``); closes the sockets and unregisters
    on return. Cancelling the task that awaits it stops it too. Async
    method calls still running at stop are cancelled (their clients get
    no reply).

    Raises
    ------
    RuntimeError
        The server is already serving.
    """
    if not server._serving.acquire(blocking=False):
        raise RuntimeError("the server is already serving")
    sock = server._socket
    server._serving_ident = threading.get_ident()
    calls: set[asyncio.Task] = set()
    watch: FdWatch | None = None
    ticker: list[asyncio.TimerHandle] = []
    try:
        if server._dead:
            _log.debug("serve called on a stopped server")
            return
        loop = asyncio.get_running_loop()
        wakeup: list[asyncio.Future | None] = [None]

        def on_readable() -> None:  # the serve loop reads, not the callback
            waiter = wakeup[0]
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        # one perpetual 0.1 s tick (to notice stop_server) instead of a
        # timer per wait: scheduling and cancelling one cost 15 us a call

        def tick() -> None:
            on_readable()
            ticker[:] = [loop.call_later(_POLL_MS / 1000, tick)]

        tick()
        watch = FdWatch(sock, on_readable)
        handle = _handler(server, calls, watch)
        backlog = server._backlog
        flush_wait = _FLUSH_WAIT_MS
        events = sock.getsockopt
        recv = transport.recv_frames
        sdnotify.ready()
        watchdog = server._watchdog if server._watchdog.enabled else None
        server._ready.set()
        while not server._stopping and (
            server._stop_at is None or time.monotonic() < server._stop_at
        ):
            batch = 0
            # ZMQ_EVENTS, not a zmq.Again, ends a drain (as the client)
            while batch < _BATCH and int(events(_EVENTS)) & _POLLIN:
                frames = recv(sock, _NOBLOCK)
                server._message = frames  # whose CURVE key _peer_key reads
                try:
                    handle(frames)
                except Exception as exc:  # a bug here must not end serving
                    if _lifecycle.is_context_terminated(exc):
                        raise
                    _log.exception("unexpected error while handling a message")
                finally:
                    server._message = None
                batch += 1
            if batch >= _BATCH:  # a stream of requests must not starve tasks
                await asyncio.sleep(0)
            else:
                wait = _POLL_MS
                if backlog.pending:  # replies wait for room: retry often
                    if backlog.flush():
                        flush_wait = _FLUSH_WAIT_MS
                    else:
                        flush_wait = min(2 * flush_wait, _POLL_MS)
                    wait = flush_wait
                # the flush may have taken the fd's wake-up: look again
                if not int(events(_EVENTS)) & _POLLIN:
                    waiter = wakeup[0] = loop.create_future()
                    timer = (
                        loop.call_later(wait / 1000, _wake, waiter)
                        if wait < _POLL_MS
                        else None
                    )
                    try:
                        await waiter
                    finally:
                        if timer is not None:
                            timer.cancel()
                        wakeup[0] = None
            if watchdog is not None:
                watchdog.tick()
            link = server._registry_link
            if link is not None:
                link.tick()
                server.name, server.uuid = link.name, link.uuid
    except zmq.ZMQError as exc:
        if not _lifecycle.is_context_terminated(exc):
            raise
        server._terminated = True
        _log.debug("context of %s terminated: serving stops", server.url)
    finally:
        for handle in ticker:
            handle.cancel()
        await _cancel(calls)
        if watch is not None:
            await watch.aclose()  # the loop stops watching the fd first
        server._serving_ident = None
        server._shutdown()
        server._serving.release()


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def serve_blocking(server: RPCServer) -> None:
    """Run ``serve`` in a new event loop of the calling thread (for
    ``serve_forever`` and ``start`` of a device with async methods)."""
    asyncio.run(serve(server))


def _handler(server: RPCServer, calls: set[asyncio.Task], watch: FdWatch) -> Any:
    """The function that answers one received message."""
    respond = server._responder.handle
    backlog = server._backlog
    async_methods = server._async_methods
    limits = server._limits

    def handle(frames: list) -> None:
        # a client with replies waiting takes the general path, which
        # queues its reply behind them (order)
        waiting = backlog.pending and backlog.holds(frames)
        if async_methods and len(frames) >= 3 and len(frames[1]) == 0:
            # decode once here: the Responder would call an async method
            # as a plain one
            envelope, body = frames[:2], frames[2:]
            try:
                decoded: Any = framing.decode(body, *limits)
            except ProtocolError as exc:
                decoded = exc
            if (
                type(decoded) is dict
                and decoded.get("e") == "METHOD_CALL"
                and decoded.get("m") in async_methods
            ):
                try:
                    request = protocol.request_from_header(decoded)
                except ProtocolError:
                    pass  # the general path answers with the error
                else:
                    if len(calls) >= MAX_ASYNC_CALLS:
                        _refuse(server, envelope, request)
                        return
                    task = asyncio.create_task(_run(server, envelope, request, watch))
                    calls.add(task)
                    task.add_done_callback(calls.discard)
                    return
            server._handle_body(envelope, body, decoded)
        elif waiting or not respond(frames):
            server._handle(frames)

    return handle


async def _run(
    server: RPCServer, envelope: list, request: protocol.Request, watch: FdWatch
) -> None:
    """Run one async method call and send its reply."""
    rid, name = request.request_id, request.method
    try:
        result = await getattr(server, name)(*request.args, **request.kwargs)
        if name in server._buffer_methods:
            _check_buffer_result(name, result)
            frames = protocol.encode_result(
                rid, result[0], result[1], buffer_reply=True
            )
        else:
            frames = protocol.encode_result(rid, result)
    except Exception as exc:  # a failing method or a result msgpack refuses
        frames = server._method_failed(rid, name, exc)
    try:
        server._send(envelope, frames, rid)
        watch.kick()  # the send may have taken the wake-up of a request
    except zmq.ZMQError as exc:  # the context ended: nobody to answer
        _log.debug("reply to %s not sent: %s", name, exc)


def _refuse(server: RPCServer, envelope: list, request: protocol.Request) -> None:
    """Answer a call beyond ``MAX_ASYNC_CALLS`` with an error."""
    busy = RuntimeError(
        f"server busy: {MAX_ASYNC_CALLS} async method calls already running"
    )
    _refusals.warning("refused a call of %s: %s", request.method, busy)
    rid = request.request_id
    server._send(envelope, server._method_failed(rid, request.method, busy), rid)


def _check_buffer_result(name: str, result: Any) -> None:
    from ..server.dispatch import _check_buffer_result as check

    check(name, result)


async def _cancel(calls: set[asyncio.Task]) -> None:
    if not calls:
        return
    for task in calls:
        task.cancel()
    await asyncio.wait(list(calls), timeout=_CANCEL_WAIT_S)
