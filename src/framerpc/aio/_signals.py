"""Signals of an asyncio proxy: one SUB socket and one reader task per
client, emissions handed to callbacks run on the loop and to async
iterators with bounded queues."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from .. import _lifecycle, _sigseq, transport
from ..errors import ProtocolError
from ..signal import RPCSignal
from ..wire import messages as protocol
from ..wire import shm as wire_shm
from ._fdwatch import FdWatch

__all__ = ["AsyncSignal", "SignalHub", "SignalIterator"]

_log = logging.getLogger(__name__)

#: Most emissions the reader takes in one turn of the loop.
_BATCH = 256
#: Default bound of an iterator's queue (emissions).
DEFAULT_QUEUE = 1000


class SignalIterator:
    """Emissions of one signal as an async iterator of argument tuples.

    Made by ``AsyncSignal.subscribe`` (or ``async for`` on the signal).
    Receives what is emitted from its creation on; ends when ``close``
    is called or the client closes.

    Parameters
    ----------
    maxsize : int
        Most emissions kept while the consumer is behind; when full, the
        oldest is dropped and counted in ``dropped`` (a slow consumer
        never holds back the client or other consumers).
    """

    def __init__(self, hub: SignalHub, name: str, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self._hub = hub
        self._name = name
        self._items: deque[tuple] = deque()
        self._maxsize = maxsize
        self._wakeup: asyncio.Future | None = None
        self._closed = False
        #: Emissions dropped because the queue was full.
        self.dropped = 0

    def _put(self, args: tuple) -> None:
        if len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(args)
        self._wake()

    def _wake(self) -> None:
        waiter, self._wakeup = self._wakeup, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Stop receiving; iteration ends once the queued emissions are read."""
        if not self._closed:
            self._closed = True
            self._hub._iterators.get(self._name, set()).discard(self)
            self._wake()

    def __aiter__(self) -> SignalIterator:
        return self

    async def __anext__(self) -> tuple:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
        return self._items.popleft()

    async def __aenter__(self) -> SignalIterator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class AsyncSignal:
    """A remote signal on an asyncio proxy.

    ``async for args in proxy.sig:`` iterates over emissions (tuples of
    the emitted arguments); ``proxy.sig.connect(callback)`` calls
    ``callback(*args)`` on the loop for each (a coroutine function's
    coroutine runs as a task).
    """

    def __init__(self, hub: SignalHub, name: str) -> None:
        self._hub = hub
        self.name = name

    def subscribe(self, maxsize: int = DEFAULT_QUEUE) -> SignalIterator:
        """A new iterator of this signal's emissions (see ``SignalIterator``)."""
        iterator = SignalIterator(self._hub, self.name, maxsize)
        if self._hub.closed:
            iterator.close()
        else:
            self._hub._iterators.setdefault(self.name, set()).add(iterator)
        return iterator

    def __aiter__(self) -> SignalIterator:
        return self.subscribe()

    def connect(self, callback: Callable[..., Any]) -> None:
        """Call ``callback(*args)`` on the loop at each emission.

        Exceptions of a callback are logged. Duplicates are ignored.

        Raises
        ------
        TypeError
            ``callback`` is not callable.
        """
        if not callable(callback):
            raise TypeError(f"{callback!r} is not callable")
        callbacks = self._hub._callbacks.setdefault(self.name, [])
        if callback not in callbacks:
            callbacks.append(callback)

    def disconnect(self, callback: Callable[..., Any] | None = None) -> None:
        """Remove ``callback`` (None: all callbacks).

        Raises
        ------
        ValueError
            ``callback`` is not connected.
        """
        callbacks = self._hub._callbacks.setdefault(self.name, [])
        if callback is None:
            callbacks.clear()
        elif callback in callbacks:
            callbacks.remove(callback)
        else:
            raise ValueError(f"{callback!r} is not connected to {self.name}")

    # sigseq: what the emissions' sequence numbers showed (no snapshot=)
    @property
    def sequence(self) -> _sigseq.SequenceState:
        """Numbers seen, gaps, restarts, rejected emissions (see
        ``framerpc.RPCSignal.sequence``)."""
        return self._hub.sequences.setdefault(self.name, _sigseq.SequenceState())

    @property
    def gaps(self) -> int:
        """Gaps seen in this signal's sequence numbers."""
        return self.sequence.gaps

    def __repr__(self) -> str:
        return f"<AsyncSignal {self.name}>"


class SignalHub:
    """A client's subscription to its server's signals (one SUB socket).

    Parameters
    ----------
    context : zmq.Context
        A plain context for the SUB socket.
    url : str
        The server's signal endpoint.
    options : SocketOptions
        Socket tuning.
    types : dict of str to RPCSignal, optional
        The interface's signals: arguments are checked and coerced to
        their types, as the sync receiver does.
    """

    def __init__(
        self,
        context: zmq.Context,
        url: str,
        options: transport.SocketOptions,
        types: dict[str, RPCSignal] | None = None,
    ) -> None:
        self.url = url
        self.types = dict(types or {})
        self.closed = False
        self._iterators: dict[str, set[SignalIterator]] = {}
        self._callbacks: dict[str, list[Callable]] = {}
        self._tokens: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task] = set()
        self.sequences: dict[str, _sigseq.SequenceState] = {}  # sigseq
        self._seq = _sigseq.SeqTracker(url)  # sigseq
        #: client.shm_signals.SignalShm once the proxy claimed shared memory
        self.shm: Any = None
        #: The server's id of this subscription (``wire.shm.subscriber_of``)
        self.subscriber: int | None = None
        self._socket = transport.make_socket(context, zmq.SUB, options)
        try:
            self._socket.setsockopt(zmq.SUBSCRIBE, b"")
            self._socket.connect(url)
            self._fdwatch = FdWatch(self._socket, self._on_readable)
        except BaseException:
            transport.close_quietly(self._socket)
            raise

    def follow(self, url: str) -> None:
        """Receive from ``url`` from now on (the server restarted and bound
        a new signal socket)."""
        if url == self.url or self.closed:
            return
        _log.info("server restarted: signals now from %s", url)
        try:
            self._socket.disconnect(self.url)
        except zmq.ZMQError:
            pass  # not connected any more
        self._socket.connect(url)
        self.url = url

    def expect_token(self, token: str) -> asyncio.Event:
        """Event set when the handshake ``token`` is received."""
        return self._tokens.setdefault(token, asyncio.Event())

    def forget_token(self, token: str) -> None:
        self._tokens.pop(token, None)

    def _on_readable(self) -> None:
        # _BATCH emissions a turn, the rest next turn (FdWatch.read_each)
        self._fdwatch.read_each(self._on_message, _BATCH)

    def _on_message(self, frames: list) -> None:
        shm = self.shm
        try:
            if shm is None:
                self._dispatch(protocol.decode_signal(frames), frames)
            else:  # arrays may come as references into shared memory
                self._dispatch(shm.decode(frames), frames)
        except ProtocolError as exc:
            _log.warning("malformed emission from %s: %s", self.url, exc)
        if shm is not None:  # the arrays the callbacks let go
            shm.flush()

    def _dispatch(
        self, emission: protocol.SignalEmission, frames: list | None = None
    ) -> None:
        name, args = emission.name, emission.args
        if name == protocol.SYNC_SIGNAL:
            if frames is not None:  # its prefix names this subscription
                self.subscriber = wire_shm.subscriber_of(frames[0].buffer)
            if args and type(args[0]) is bytes and self.shm is not None:
                self.shm.nonce(args[0])  # a claim's proof (aio._shm_signals)
            if args and type(args[0]) is str:
                seen = self._tokens.get(args[0])  # other clients' come too
                if seen is not None:
                    seen.set()
            return
        state = self.sequences.get(name)  # sigseq: check the number
        if state is None:
            state = self.sequences.setdefault(name, _sigseq.SequenceState())
        if not self._seq.accept(state, name, emission.seq, emission.epoch):
            return
        signal = self.types.get(name)
        if signal is not None:
            try:
                args = list(signal.validate_args(*args, coerce=True))
            except (TypeError, RuntimeError) as exc:
                _log.warning(
                    "signal %s: %s; passing the arguments as received", name, exc
                )
        values = tuple(args)
        for iterator in list(self._iterators.get(name, ())):
            iterator._put(values)
        for callback in list(self._callbacks.get(name, ())):
            try:
                result = callback(*values)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._callback_done)
            except Exception:
                _log.exception("a callback of signal %s raised", name)

    def _callback_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error(
                "a callback of a signal of %s raised",
                self.url,
                exc_info=task.exception(),
            )

    async def aclose(self) -> None:
        """Stop the reader and callback tasks, end the iterators, close;
        then, if the proxy stays open, tell its server which signal arrays
        it still holds (``aio._shm_signals``)."""
        if self.closed:
            return
        tasks = list(self._tasks)
        await self._fdwatch.aclose()  # its polling task ends first
        self.close_now()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.shm is not None:  # the client's word on what it holds
            word = self.shm.ended()
            if word is not None:
                await word

    def close_now(self, linger: int | None = None) -> None:
        """``aclose`` without waiting for the callback tasks to end (for
        ``Context.destroy()``); in the loop's thread."""
        if self.closed:
            return
        self.closed = True
        self._fdwatch.close_now()  # before the socket closes
        for task in list(self._tasks):
            task.cancel()
        for iterators in self._iterators.values():
            for iterator in list(iterators):
                iterator.close()
        _lifecycle.close_socket(self._socket, linger)
