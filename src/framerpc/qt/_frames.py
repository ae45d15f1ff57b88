"""A frame pump: grab on a thread of its own, show the latest in the GUI thread."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from qtpy import QtCore

from .. import NoResult, RemoteError
from ._compat import emit, strip_frames

__all__ = ["FramePump"]

_log = logging.getLogger(__name__)
_QUEUED = QtCore.Qt.ConnectionType.QueuedConnection


class FramePump(QtCore.QObject):
    """Call ``grab()`` in a loop on a thread and deliver results in the GUI thread.

    One result at a time is in the GUI's hands: the pump grabs the next
    frame while the GUI shows the current one, and waits for the GUI to
    take a delivered frame before handing over another. A GUI slower than
    the camera therefore sees fewer frames, never older ones piling up,
    and nothing is queued beyond one frame.

    Parameters
    ----------
    grab : callable
        Called with no arguments on the pump's thread, e.g.
        ``functools.partial(camera.grab, "uint16")``. Use a proxy of its
        own for it, so that other calls do not wait behind grabs.
    retry_interval : float
        Seconds to wait after a failed grab before the next attempt.
    parent : QObject, optional
        Qt parent.

    Attributes
    ----------
    frame : Qt signal (object)
        What ``grab()`` returned, in the GUI thread.
    error : Qt signal (object)
        What a failed ``grab()`` raised (a returned ``NoResult`` as
        ``framerpc.RemoteError``), in the GUI thread.

    Notes
    -----
    ``stop()`` (in the GUI thread) before closing the grab's proxy; it
    waits for a grab in flight, which ends within the method's timeout.
    """

    frame = QtCore.Signal(object)
    error = QtCore.Signal(object)
    _relay = QtCore.Signal()

    def __init__(
        self,
        grab: Callable[[], Any],
        retry_interval: float = 0.5,
        parent: QtCore.QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._grab = grab
        self._retry_interval = retry_interval
        self._stop = threading.Event()
        self._taken = threading.Event()  # the GUI took the last item
        self._taken.set()
        self._lock = threading.Lock()
        self._item: tuple[bool, Any] | None = None  # (ok, frame or error)
        self._thread: threading.Thread | None = None
        self._times: collections.deque[float] = collections.deque()
        self._count = 0
        self._relay.connect(self._deliver, _QUEUED)

    @property
    def count(self) -> int:
        """Frames delivered so far."""
        return self._count

    @property
    def rate(self) -> float:
        """Frames delivered per second over about the last second (0 at first)."""
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    @property
    def running(self) -> bool:
        """Whether the pump's thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start grabbing; ``RuntimeError`` if started before."""
        if self._thread is not None:
            raise RuntimeError("a FramePump starts once")
        self._thread = threading.Thread(
            target=self._run, name="framerpc-qt-frame-pump", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop grabbing and join the thread; idempotent.

        Parameters
        ----------
        timeout : float, optional
            Longest wait (s) for a grab in flight; None waits for it.
        """
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:  # the pump's thread
        while not self._stop.is_set():
            try:
                value = self._grab()
                if type(value) is NoResult:
                    raise RemoteError(value.error, value.traceback)
                item: tuple[bool, Any] = (True, value)
            except Exception as exc:
                item = (False, strip_frames(exc))
            while not self._taken.wait(0.05):  # the GUI has the last one
                if self._stop.is_set():
                    return
            if self._stop.is_set():
                return
            self._taken.clear()
            with self._lock:
                self._item = item
            try:
                emit(self._relay)
            except RuntimeError:  # the Qt object is gone
                return
            if not item[0]:
                self._stop.wait(self._retry_interval)

    @QtCore.Slot()
    def _deliver(self) -> None:  # GUI thread
        with self._lock:
            item, self._item = self._item, None
        self._taken.set()  # let the pump hand over the next while we show this
        if item is None or self._stop.is_set():
            return
        ok, value = item
        if not ok:
            emit(self.error, value)
            return
        now = time.monotonic()
        self._times.append(now)
        while now - self._times[0] > 1.0:
            self._times.popleft()
        self._count += 1
        emit(self.frame, value)
