"""Blocking proxy calls on worker threads, completed in the GUI thread."""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from qtpy import QtCore

from .. import NoResult, RemoteError
from ._compat import emit, strip_frames

__all__ = ["CallRunner", "QtFuture"]

_log = logging.getLogger(__name__)
_QUEUED = QtCore.Qt.ConnectionType.QueuedConnection


def _run(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[bool, Any]:
    """Run on a worker thread: ``(True, value)`` or ``(False, exception)``.

    A ``NoResult`` becomes a ``RemoteError``. An exception is returned, not
    raised, with the locals of its traceback's frames cleared: a frame
    holding ``func`` (a method of a window, say) would otherwise put the
    caller's QObjects in a reference cycle, which Python's garbage
    collector may then free on any thread.
    """
    try:
        result = func(*args, **kwargs)
        if type(result) is NoResult:
            raise RemoteError(result.error, result.traceback)
    except Exception as exc:
        return False, strip_frames(exc)
    return True, result


class QtFuture(QtCore.QObject):
    """The outcome of a call made through ``CallRunner.submit``.

    Its Qt signals fire once, in the thread of the ``CallRunner`` that
    made it (the GUI thread), always after ``submit`` returned, so slots
    connected right after ``submit`` are never late.

    Attributes
    ----------
    succeeded : Qt signal (object)
        The call returned this value.
    failed : Qt signal (object)
        The call raised this exception (a remote failure as
        ``framerpc.RemoteError``, also from a proxy that returns
        ``NoResult``; a call cancelled before it ran as
        ``concurrent.futures.CancelledError``).
    finished : Qt signal ()
        After ``succeeded`` or ``failed``.
    """

    succeeded = QtCore.Signal(object)
    failed = QtCore.Signal(object)
    finished = QtCore.Signal()

    def __init__(self) -> None:
        super().__init__()
        self._future: concurrent.futures.Future[Any] | None = None
        self._callbacks: list[Callable[[QtFuture], object]] = []
        self._delivered = False

    def _deliver(self) -> None:  # the runner's (GUI) thread
        if self._delivered or self._future is None:
            return
        self._delivered = True
        error = self.exception(timeout=0)
        if error is None:
            emit(self.succeeded, self.result(timeout=0))
        else:
            emit(self.failed, error)
        emit(self.finished)
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                _log.exception("a done callback raised")

    def delivered(self) -> bool:
        """Whether the outcome has been delivered (signals emitted)."""
        return self._delivered

    def done(self) -> bool:
        """Whether the call has finished (returned, raised or was cancelled)."""
        return self._future is not None and self._future.done()

    def cancel(self) -> bool:
        """Cancel the call if it has not started; returns whether it was."""
        return self._future is not None and self._future.cancel()

    def result(self, timeout: float | None = None) -> Any:
        """The call's value, waiting up to ``timeout`` s; raises what it raised.

        Blocks: in the GUI thread use the signals or ``add_done_callback``
        instead (or ``timeout=0`` once ``done()``).
        """
        assert self._future is not None
        ok, value = self._future.result(timeout)
        if ok:
            return value
        try:
            raise value
        finally:  # the traceback keeps this frame: not self (a cycle)
            self = value = None  # type: ignore[assignment]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """What the call raised (None if it returned), waiting up to ``timeout`` s."""
        assert self._future is not None
        try:
            ok, value = self._future.result(timeout)
        except concurrent.futures.CancelledError as exc:
            return exc
        return None if ok else value

    def add_done_callback(self, callback: Callable[[QtFuture], object]) -> None:
        """Call ``callback(future)`` in the GUI thread once the outcome is there.

        Called at once (in the calling thread) when it was already delivered.
        """
        if self._delivered:
            callback(self)
        else:
            self._callbacks.append(callback)


def _post_done(runner_ref: weakref.ref[CallRunner], key: int, _work: object) -> None:
    """A call ended (on a worker thread, or cancelled): tell the runner's thread."""
    runner = runner_ref()
    if runner is None:  # dropped without close(): nobody to tell
        return
    try:
        emit(runner._done, key)
    except RuntimeError:  # the Qt object is gone
        pass


class CallRunner(QtCore.QObject):
    """Run blocking calls (proxy methods, property access) off the GUI thread.

    Each call runs on one of ``max_workers`` worker threads; its outcome
    comes back as a ``QtFuture`` whose signals fire in the thread this
    runner was created in (the GUI thread, which must run a Qt event loop).
    A proxy serialises its calls, so more workers only help with several
    proxies or with calls that are not framerpc calls.

    Parameters
    ----------
    max_workers : int
        Worker threads, started on demand.
    parent : QObject, optional
        Qt parent.

    Examples
    --------
    >>> runner = CallRunner()                                    # doctest: +SKIP
    >>> future = runner.submit(camera.grab, "uint16")            # doctest: +SKIP
    >>> future.succeeded.connect(show)                           # doctest: +SKIP
    >>> future.failed.connect(report)                            # doctest: +SKIP
    """

    _done = QtCore.Signal(int)

    def __init__(
        self, max_workers: int = 2, parent: QtCore.QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers, thread_name_prefix="framerpc-qt-call"
        )
        # Futures by key until delivered. Worker threads know only the key
        # and a weak reference to this runner: a QObject must not be freed
        # (by a last reference or a garbage cycle) outside its own thread.
        self._pending: dict[int, QtFuture] = {}
        self._keys = itertools.count()
        self._lock = threading.Lock()
        self._closed = False
        self._done.connect(self._on_done, _QUEUED)

    def submit(
        self, func: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> QtFuture:
        """Run ``func(*args, **kwargs)`` on a worker thread.

        Returns
        -------
        QtFuture
            Completed in this runner's thread. A ``NoResult`` returned by
            ``func`` completes it with ``failed(RemoteError)``.

        Raises
        ------
        RuntimeError
            The runner is closed.
        """
        future = QtFuture()
        if future.thread() != self.thread():  # submitted from another thread
            future.moveToThread(self.thread())
        with self._lock:
            if self._closed:
                raise RuntimeError("CallRunner is closed")
            key = next(self._keys)
            self._pending[key] = future
            work = self._pool.submit(_run, func, args, kwargs)
            future._future = work
        work.add_done_callback(functools.partial(_post_done, weakref.ref(self), key))
        return future

    def get_property(self, proxy: Any, name: str) -> QtFuture:
        """Read the remote property ``name`` of ``proxy`` on a worker thread."""
        return self.submit(getattr, proxy, name)

    def set_property(self, proxy: Any, name: str, value: Any) -> QtFuture:
        """Set the remote property ``name`` of ``proxy`` on a worker thread."""
        return self.submit(setattr, proxy, name, value)

    @QtCore.Slot(int)
    def _on_done(self, key: int) -> None:  # GUI thread
        with self._lock:
            future = self._pending.pop(key, None)
        if future is not None:
            future._deliver()

    @property
    def pending(self) -> int:
        """Calls whose outcome has not been delivered yet."""
        with self._lock:
            return len(self._pending)

    def close(self, cancel_pending: bool = True) -> None:
        """Stop taking calls and join the worker threads; idempotent.

        Waits for the calls already running (each ends within its method's
        timeout). Calls not started yet are cancelled (their futures fail
        with ``CancelledError`` once the event loop runs), or run first when
        ``cancel_pending`` is False.
        """
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=cancel_pending)
