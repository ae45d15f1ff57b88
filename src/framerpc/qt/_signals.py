"""A proxy's remote signals as a Qt signal in the GUI thread."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from qtpy import QtCore

from ._compat import emit

__all__ = ["QtSignals"]

_log = logging.getLogger(__name__)
_QUEUED = QtCore.Qt.ConnectionType.QueuedConnection


class QtSignals(QtCore.QObject):
    """Re-emit a proxy's remote signals in the GUI thread.

    framerpc calls signal listeners on the proxy's receiver thread, where
    no widget may be touched. A ``QtSignals`` listens there and hands each
    emission to the thread it was created in (the GUI thread), through a
    queued Qt connection.

    Parameters
    ----------
    proxy : RPCClient
        A connected proxy (a ``framerpc.connect`` result or an
        ``RPCClient`` subclass instance).
    names : iterable of str, optional
        The signals to forward; all of the proxy's signals by default.
    parent : QObject, optional
        Qt parent.

    Raises
    ------
    KeyError
        A name in ``names`` is not a signal of the proxy.

    Attributes
    ----------
    received : Qt signal (str, tuple)
        Emitted in the GUI thread with the signal's name and its arguments.

    Notes
    -----
    Call ``close()`` (in the GUI thread) before closing the proxy: it
    disconnects from the proxy's signals. Emissions already on their way
    are dropped once closed.
    """

    received = QtCore.Signal(str, object)
    _relay = QtCore.Signal(str, object)

    def __init__(
        self,
        proxy: Any,
        names: Iterable[str] | None = None,
        parent: QtCore.QObject | None = None,
    ) -> None:
        super().__init__(parent)
        available: dict[str, Any] = dict(getattr(proxy, "_signals", {}))
        wanted = list(available) if names is None else list(names)
        unknown = [name for name in wanted if name not in available]
        if unknown:
            raise KeyError(
                f"not signals of {proxy!r}: {unknown}; it has {sorted(available)}"
            )
        self._names = wanted
        self._closed = threading.Event()
        self._forward_lock = threading.Lock()
        self._slots: dict[str, list[Callable[..., object]]] = {}
        self._relay.connect(self._deliver, _QUEUED)
        self._listeners: list[tuple[Any, Callable[..., None]]] = []
        for name in wanted:
            listener = self._make_listener(name)
            available[name].connect(listener)
            self._listeners.append((available[name], listener))

    @property
    def names(self) -> list[str]:
        """The names of the forwarded signals."""
        return list(self._names)

    def _make_listener(self, name: str) -> Callable[..., None]:
        # The listener runs on the proxy's receiver thread. It holds this
        # object only weakly, and strongly only under the lock that close()
        # takes: a QObject must not be freed outside its own thread, as a
        # receiver thread dropping the last reference would.
        owner_ref = weakref.ref(self)
        closed, lock = self._closed, self._forward_lock

        def forward(*args: object) -> None:
            with lock:
                if closed.is_set():
                    return
                owner = owner_ref()
                if owner is None:
                    return
                try:
                    emit(owner._relay, name, args)
                except RuntimeError:  # the Qt object is gone: nobody to tell
                    pass
                del owner

        return forward

    def connect_slot(self, name: str, slot: Callable[..., object]) -> None:
        """Call ``slot(*args)`` in the GUI thread at each emission of ``name``.

        Parameters
        ----------
        name : str
            A forwarded signal.
        slot : callable
            Called with the emission's arguments. An exception it raises is
            logged and does not stop the other slots.

        Raises
        ------
        KeyError
            ``name`` is not forwarded.
        TypeError
            ``slot`` is not callable.
        """
        if name not in self._names:
            raise KeyError(f"signal {name!r} is not forwarded")
        if not callable(slot):
            raise TypeError(f"slot must be callable, got {slot!r}")
        self._slots.setdefault(name, []).append(slot)

    def disconnect_slot(self, name: str, slot: Callable[..., object]) -> None:
        """Remove a slot given to ``connect_slot``; ``ValueError`` if not there."""
        slots = self._slots.get(name, [])
        if slot not in slots:
            raise ValueError(f"{slot!r} is not connected to {name!r}")
        slots.remove(slot)

    @QtCore.Slot(str, object)
    def _deliver(self, name: str, args: tuple[object, ...]) -> None:  # GUI thread
        if self._closed.is_set():
            return
        emit(self.received, name, args)
        for slot in list(self._slots.get(name, ())):
            try:
                slot(*args)
            except Exception:
                _log.exception("a slot of signal %s raised", name)

    def close(self) -> None:
        """Stop forwarding and disconnect from the proxy's signals; idempotent."""
        with self._forward_lock:  # no emission in progress from here on
            self._closed.set()
        listeners, self._listeners = self._listeners, []
        for signal, listener in listeners:
            try:
                signal.disconnect(listener)
            except ValueError:  # disconnected by someone else
                pass
        self._slots.clear()
