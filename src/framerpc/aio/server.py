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
from ..rpc import requests
from ..wire import framing
from ..wire import messages as protocol
from ._fdwatch import FdWatch

if TYPE_CHECKING:
    from ..server import RPCServer

__all__ = ["ServerStoppedError", "serve", "serve_blocking"]

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
#: Wait (s) after the cancelled calls replied, before the socket closes.
_REPLY_GRACE_S = 0.2
#: Longest wait (s) at stop for async method tasks to end once cancelled.
_CANCEL_WAIT_S = 2.0


async def serve(server: RPCServer) -> None:
    """Serve ``server`` in the running loop until it is stopped.

    Stops on ``server.stop_server()`` (from any thread), ``server.close()``
    from another thread, or an authorised STOP_SERVER request (0.2 s
    after it, as ``serve_forever``); closes the sockets and unregisters
    on return. Cancelling the task that awaits it stops it too. Async
    method calls still running at stop are cancelled, and their clients
    get an error reply (``ServerStoppedError``: a ``NoResult``, or
    ``RemoteError`` with ``raise_errors``).

    Raises
    ------
    RuntimeError
        The server is already serving.
    """
    if not server._serving.acquire(blocking=False):
        raise RuntimeError("the server is already serving")
    sock = server._socket
    server._serving_ident = threading.get_ident()
    calls = _Calls()
    watch: FdWatch | None = None
    try:
        if server._dead:
            _log.debug("serve called on a stopped server")
            return
        loop = asyncio.get_running_loop()
        waiter: list[asyncio.Future | None] = [None]
        failure: list[BaseException] = []
        events = sock.getsockopt
        recv = transport.recv_frames
        again: list[asyncio.Handle | None] = [None]

        def on_readable() -> None:
            """Answer what is there, in the fd's callback: waking the serve
            task instead took one more loop turn and a future per request
            (about half of a 200 us echo)."""
            again[0] = None
            if failure or server._stopping:
                return
            batch = 0
            try:
                # as the client: the first receive after a wake-up without
                # a ZMQ_EVENTS check, which then ends the drain
                while batch == 0 or int(events(_EVENTS)) & _POLLIN:
                    if batch >= _BATCH:  # a stream must not starve the tasks
                        if again[0] is None:
                            again[0] = loop.call_soon(on_readable)
                        return
                    frames = recv(sock, _NOBLOCK)
                    server._message = frames  # whose CURVE key _peer_key reads
                    try:
                        handle(frames)
                    except Exception as exc:  # a bug must not end serving
                        if _lifecycle.is_context_terminated(exc):
                            raise
                        _log.exception("unexpected error while handling a message")
                    finally:
                        server._message = None
                    batch += 1
            except zmq.Again:  # a wake-up without a request (it re-arms the fd)
                return
            except zmq.ZMQError as exc:  # the context ended: serve() stops
                failure.append(exc)
                _wake_serve(waiter)

        watch = FdWatch(sock, on_readable)
        handle = _handler(server, calls, watch)
        backlog = server._backlog
        flush_wait = _FLUSH_WAIT_MS
        sdnotify.ready()
        watchdog = server._watchdog if server._watchdog.enabled else None
        server._ready.set()
        while not server._stopping and (
            server._stop_at is None or time.monotonic() < server._stop_at
        ):
            wait = _POLL_MS
            if backlog.pending:  # replies wait for room: retry often
                if backlog.flush():
                    flush_wait = _FLUSH_WAIT_MS
                else:
                    flush_wait = min(2 * flush_wait, _POLL_MS)
                wait = flush_wait
                # the flush may have taken the fd's wake-up: look again
                if int(events(_EVENTS)) & _POLLIN:
                    on_readable()
            if failure:
                raise failure[0]
            # requests are answered by on_readable meanwhile; this task
            # only keeps time (stop, watchdog, registry, the backlog)
            future = waiter[0] = loop.create_future()
            timer = loop.call_later(wait / 1000, _wake, future)
            try:
                await future
            finally:
                timer.cancel()
                waiter[0] = None
            if failure:
                raise failure[0]
            server._keep_time(watchdog)  # the sync serve loop's
            # as the sync loop when idle: departed signal subscribers are
            # found (their bytes, their shared-memory slots come back)
            server._signals_idle()
    except zmq.ZMQError as exc:
        if not _lifecycle.is_context_terminated(exc):
            raise
        server._terminated = True
        _log.debug("context of %s terminated: serving stops", server.url)
    finally:
        if watch is not None:
            await watch.aclose()  # no request is read from now on
        await _cancel(server, calls)
        server._serving_ident = None
        server._shutdown()
        server._serving.release()


def _wake_serve(waiter: list[asyncio.Future | None]) -> None:
    future = waiter[0]
    if future is not None and not future.done():
        future.set_result(None)


class _Calls(set):
    """The tasks of the async method calls running; ``stopping`` once
    serve() cancels them at stop (they then reply an error)."""

    stopping = False


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def serve_blocking(server: RPCServer) -> None:
    """Run ``serve`` in a new event loop of the calling thread (for
    ``serve_forever`` and ``start`` of a device with async methods)."""
    asyncio.run(serve(server))


def _handler(server: RPCServer, calls: _Calls, watch: FdWatch) -> Any:
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
                    request = requests.request_from_header(decoded)
                except ProtocolError:
                    pass  # the general path answers with the error
                else:
                    if len(calls) >= MAX_ASYNC_CALLS:
                        _refuse(server, envelope, request)
                        return
                    task = asyncio.create_task(
                        _run(server, envelope, request, watch, calls)
                    )
                    calls.add(task)
                    task.add_done_callback(calls.discard)
                    return
            server._handle_body(envelope, body, decoded)
        elif waiting or not respond(frames):
            server._handle(frames)

    return handle


async def _run(
    server: RPCServer,
    envelope: list,
    request: protocol.Request,
    watch: FdWatch,
    calls: _Calls,
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
    except asyncio.CancelledError:
        if not calls.stopping:
            raise  # not serve()'s cancellation at stop
        # serving stops: the client gets an error now, not a timeout later
        try:
            raise ServerStoppedError(
                f"{server.url} stopped serving during the call"
            ) from None
        except ServerStoppedError as exc:
            frames = server._method_failed(rid, name, exc)
        _reply(server, envelope, frames, rid, name)
        raise
    _reply(server, envelope, frames, rid, name)
    watch.kick()  # the send may have taken the wake-up of a request


class ServerStoppedError(RuntimeError):
    """The error replied to an ``async def`` call still running when its
    server stopped serving (the call was cancelled)."""


def _reply(
    server: RPCServer, envelope: list, frames: list, rid: int, name: str
) -> None:
    try:
        server._send(envelope, frames, rid)
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


async def _cancel(server: RPCServer, calls: _Calls) -> None:
    """Cancel the async calls still running; each replies an error
    (``ServerStoppedError``) to its client before it ends."""
    if not calls:
        return
    calls.stopping = True
    for task in calls:
        task.cancel()
    _, pending = await asyncio.wait(list(calls), timeout=_CANCEL_WAIT_S)
    # as after STOP_SERVER's acknowledgement: a client whose connection
    # closes right after a reply drops that reply unread (ZMQ_IMMEDIATE)
    await asyncio.sleep(_REPLY_GRACE_S)
    if pending:
        _log.warning(
            "%d async call(s) of %s ignored cancellation at stop",
            len(pending),
            server.url,
        )
