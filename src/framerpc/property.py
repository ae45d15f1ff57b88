"""A ``property`` that can announce its changes through an ``RPCSignal``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._sigseq import notify_lock  # sigseq
from .signal import RPCSignal, bound_signal

__all__ = ["RPCProperty"]

_MISSING = object()


def _equal(old: Any, new: Any) -> bool:
    """Return whether `old` and `new` are known to be equal.

    Comparisons that cannot decide (e.g. the ambiguous truth value of an array,
    mismatching shapes) count as unequal, so a change is never missed.
    """
    try:
        return bool(old == new)
    except (TypeError, ValueError):
        return False


class RPCProperty(property):
    """A property exposed over RPC, optionally tied to a change signal.

    Parameters
    ----------
    fget, fset, fdel : callable, optional
        Getter, setter and deleter, as for ``property``.
    doc : str, optional
        Docstring; defaults to the getter's docstring.
    notify : RPCSignal, optional
        Signal announcing changes of the value (the class-level signal; the
        emission goes to the instance's own signal).
    auto_notify : bool, optional
        If True, setting the property emits `notify` with the new value read
        back through the getter, but only when it differs from the old one.
        If False the setter is responsible for emitting.

    Examples
    --------
    >>> class Camera:
    ...     exposure_changed = RPCSignal(float)
    ...
    ...     @RPCProperty(notify=exposure_changed, auto_notify=True)
    ...     def exposure(self) -> float:
    ...         return self._exposure
    ...
    ...     @exposure.setter
    ...     def exposure(self, value: float) -> None:
    ...         self._exposure = value

    Notes
    -----
    ``RPCProperty(notify=...)`` without a getter is a decorator factory:
    calling it with a function returns a new property using that getter.
    """

    def __init__(
        self,
        fget: Callable[[Any], Any] | None = None,
        fset: Callable[[Any, Any], None] | None = None,
        fdel: Callable[[Any], None] | None = None,
        doc: str | None = None,
        notify: RPCSignal | None = None,
        auto_notify: bool = False,
    ) -> None:
        super().__init__(fget, fset, fdel, doc)
        # Set explicitly: for subclasses CPython 3.11 drops an explicit doc and
        # would otherwise show the RPCProperty class docstring.
        self.__doc__ = doc if doc is not None else getattr(fget, "__doc__", None)
        # Kept apart from __doc__ so copies re-derive the doc from a new getter.
        self._doc = doc
        self._notifier = notify
        self._auto_notify = auto_notify

    @property
    def notify(self) -> RPCSignal | None:
        """The change signal, or None."""
        return self._notifier

    @property
    def auto_notify(self) -> bool:
        """Whether setting the property emits `notify` on change."""
        return self._auto_notify

    def __call__(self, fget: Callable[[Any], Any]) -> RPCProperty:
        """Use `fget` as getter (decorator-factory form), keeping the options."""
        if self.fget is not None:
            raise TypeError("RPCProperty already has a getter; use .getter()")
        return self._copy(fget=fget)

    def getter(self, fget: Callable[[Any], Any]) -> RPCProperty:
        """Return a copy of the property with a different getter."""
        return self._copy(fget=fget)

    def setter(self, fset: Callable[[Any, Any], None]) -> RPCProperty:
        """Return a copy of the property with a different setter."""
        return self._copy(fset=fset)

    def deleter(self, fdel: Callable[[Any], None]) -> RPCProperty:
        """Return a copy of the property with a different deleter."""
        return self._copy(fdel=fdel)

    def _copy(self, **changes: Any) -> RPCProperty:
        # property's own getter/setter/deleter would drop notify/auto_notify.
        kwargs: dict[str, Any] = {
            "fget": self.fget,
            "fset": self.fset,
            "fdel": self.fdel,
            "doc": self._doc,
            "notify": self._notifier,
            "auto_notify": self._auto_notify,
        }
        kwargs.update(changes)
        return type(self)(**kwargs)

    def __set__(self, obj: Any, value: Any) -> None:
        if self._notifier is None:
            super().__set__(obj, value)
            return
        # sigseq: set and emit as one step for snapshot reads (_sigseq)
        with notify_lock(obj):
            self._set_notifying(obj, value)

    def _set_notifying(self, obj: Any, value: Any) -> None:
        if not self._auto_notify or self._notifier is None:
            super().__set__(obj, value)
            return
        try:
            old = self.fget(obj) if self.fget is not None else _MISSING
        except AttributeError:  # typically the first set, from __init__
            old = _MISSING
        super().__set__(obj, value)
        new = self.fget(obj) if self.fget is not None else value
        if old is _MISSING or (old is not new and not _equal(old, new)):
            bound_signal(self._notifier, obj).emit(new)
