"""Typed, thread-safe signals whose listeners are called on emit.

An ``RPCSignal`` declared as a class attribute is a non-data descriptor:
each instance (server object, client proxy) lazily gets its own signal with
its own connections, stored in the instance ``__dict__`` under the same name.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from . import _sigseq  # sigseq
from .types import coerce_to_generic, is_instance_of_generic, type_name

__all__ = ["RPCSignal", "bound_signal"]


def _target(conn: Any) -> Any:
    """Return the callable behind `conn`, or None if it is a dead weak reference."""
    return conn() if isinstance(conn, weakref.ref) else conn


class RPCSignal:
    """A signal carrying arguments of declared types to connected callables.

    Parameters
    ----------
    *arg_types : Any
        Annotations of the emitted arguments (classes or typing constructs).

    Attributes
    ----------
    arg_types : tuple
        The declared argument annotations.
    connections : list
        Connected callables or weak references (e.g. ``weakref.WeakMethod``),
        in connection order.
    name : str or None
        Attribute name, set by ``__set_name__`` for class attributes.
    sequence : SequenceState
        On a client proxy: what the emissions' sequence numbers showed
        (last number, epoch, gaps, missed, restarts, rejected).
    snapshot_reader : callable or None
        On a client proxy, for the notify signal of a property: reads the
        property for ``connect(..., snapshot=True)``.

    Notes
    -----
    Accessing the signal on an instance returns that instance's own signal
    (see ``bound_signal``); accessing it on the class returns the
    class-level signal. Signals not assigned in a class body (no name) and
    instances without a ``__dict__`` share the class-level signal.
    """

    def __init__(self, *arg_types: Any) -> None:
        self.arg_types: tuple[Any, ...] = arg_types
        self.connections: list[Callable[..., Any]] = []
        self.name: str | None = None
        self._lock = threading.Lock()
        # sigseq: sequence numbers seen by a client (see SequenceState), and
        # the reader of the property this signal notifies (client proxies)
        self.sequence = _sigseq.SequenceState()
        self.snapshot_reader: Callable[[], tuple[Any, Any]] | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> RPCSignal:
        if obj is None or self.name is None:
            return self
        namespace = getattr(obj, "__dict__", None)
        if not isinstance(namespace, dict):  # __slots__ or a read-only mapping
            return self
        signal = namespace.get(self.name)
        if signal is None:
            fresh = type(self)(*self.arg_types)
            fresh.name = self.name
            # setdefault is atomic, so racing threads all get the same signal.
            signal = namespace.setdefault(self.name, fresh)
        return signal

    def connect(self, conn: Callable[..., Any], snapshot: bool = False) -> None:
        """Connect a callable, or a weak reference to one, to this signal.

        Weak references (``weakref.WeakMethod``, ``weakref.ref``) are stored as
        given and dereferenced at emit; dead ones are dropped. Connecting a
        callable equal to an already connected one (directly or through a weak
        reference) does nothing.

        Parameters
        ----------
        conn : callable or weak reference
            The listener.
        snapshot : bool, optional
            Only for the notify signal of a property on a client proxy:
            first call `conn` with the property's current value (read from
            the server, in the calling thread), then with each later change,
            none lost or repeated in between (see the signals guide).

        Raises
        ------
        TypeError
            If `conn` is not callable, or `snapshot` is asked of a signal
            that notifies no remote property.
        """
        if not callable(conn):
            raise TypeError(f"cannot connect non-callable {conn!r} to {self!r}")
        if snapshot:  # sigseq
            _sigseq.connect_snapshot(self, conn)
            return
        target = _target(conn)
        with self._lock:
            if not any(c == conn or _target(c) == target for c in self.connections):
                self.connections.append(conn)

    def disconnect(self, conn: Callable[..., Any] | None = None) -> None:
        """Disconnect `conn`, or every connection if `conn` is None.

        A weak reference whose referent equals `conn` also matches.

        Raises
        ------
        ValueError
            If `conn` is not connected.
        """
        with self._lock:
            if conn is None:
                self.connections.clear()
                return
            target = _target(conn)
            for index, connected in enumerate(self.connections):
                if connected == conn or (
                    target is not None and _target(connected) == target
                ):
                    del self.connections[index]
                    return
        raise ValueError(f"{conn!r} is not connected to {self!r}")

    def emit(self, *args: Any) -> None:
        """Call every connection, in connection order, with `args`.

        Listener exceptions propagate (later listeners are then not called).
        Listeners may connect or disconnect during emit; that takes effect
        from the next emit.
        """
        # Snapshot, dereferencing up front so dead weak references are pruned
        # even if a listener raises.
        with self._lock:
            targets = [(conn, _target(conn)) for conn in self.connections]
        dead = [conn for conn, target in targets if target is None]
        if dead:
            with self._lock:
                self.connections[:] = [
                    c for c in self.connections if not any(c is d for d in dead)
                ]
        for _, target in targets:
            if target is not None:
                target(*args)

    @property
    def gaps(self) -> int:
        """Gaps a client saw in this signal's sequence numbers: times one
        or more emissions were lost (``sequence.missed`` counts them)."""
        return self.sequence.gaps  # sigseq

    def validate_args(self, *args: Any, coerce: bool = False) -> tuple[Any, ...]:
        """Check `args` against `arg_types`, optionally coercing them.

        Parameters
        ----------
        *args : Any
            Candidate emit arguments.
        coerce : bool, optional
            Convert mismatching arguments with
            ``coerce_to_generic`` instead of failing.

        Returns
        -------
        tuple
            The arguments, coerced where needed.

        Raises
        ------
        RuntimeError
            If the number of arguments is wrong.
        TypeError
            If an argument does not match (and cannot be coerced).
        """
        label = self.name or "<unnamed>"
        if len(args) != len(self.arg_types):
            raise RuntimeError(
                f"signal {label} expects {len(self.arg_types)} argument(s), "
                f"got {len(args)}"
            )
        result = []
        for index, (arg, expected) in enumerate(zip(args, self.arg_types, strict=True)):
            if is_instance_of_generic(arg, expected):
                result.append(arg)
            elif coerce:
                try:
                    result.append(coerce_to_generic(arg, expected))
                except TypeError as exc:
                    raise TypeError(f"signal {label} argument {index}: {exc}") from exc
            else:
                raise TypeError(
                    f"signal {label} argument {index}: expected "
                    f"{type_name(expected)}, got {type(arg).__qualname__}"
                )
        return tuple(result)

    def __repr__(self) -> str:
        types = ", ".join(type_name(t) for t in self.arg_types)
        count = len(self.connections)
        plural = "" if count == 1 else "s"
        return f"<RPCSignal {self.name or ''}({types}) with {count} connection{plural}>"


def bound_signal(signal: RPCSignal, obj: Any) -> RPCSignal:
    """Return the per-instance signal of `obj` for the class-level `signal`.

    Equivalent to ``signal.__get__(obj, type(obj))``: created on first use.
    """
    return signal.__get__(obj, type(obj))


class UntypedSignal(RPCSignal):
    """A remote signal known only from a server's inventory.

    A proxy whose interface does not declare the signal has no argument
    types to check against: emissions are passed on as they arrive, instead
    of being reported as mismatched on each one.
    """

    def validate_args(self, *args: Any, coerce: bool = False) -> tuple[Any, ...]:
        """Return ``args`` unchanged (no declared types to check)."""
        return args
