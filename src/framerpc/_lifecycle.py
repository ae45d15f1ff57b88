"""Who may close a framerpc socket, and how ``Context.destroy()`` is made safe.

A ZeroMQ socket must only be used by one thread at a time, and closing is a
use. pyzmq's ``Context.destroy()`` closes every socket listed in the
context's ``_sockets`` from the calling thread, and then terminates the
context: called while a server thread polls its socket, that aborted the
process (``Assertion failed: pfd.revents & POLLIN (src/signaler.cpp:238)``).

framerpc therefore creates its sockets from a *shadow* of the user's
context (``private_context``): the same libzmq context, so
``term()`` still interrupts them with ETERM, but with its own socket list,
so ``destroy()`` never closes them behind their owner's back. Each framerpc
object that owns sockets instead puts a ``DestroyHook`` in the user's
context's list. ``destroy()`` "closes" the hook, which asks the owner to
stop: sockets nobody is using are closed at once by the hook, under the
lock that makes it their owner; a thread that is using its sockets closes
them itself when it notices the request or the ETERM of ``term()``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import zmq

from . import transport

__all__ = ["DestroyHook", "close_socket", "is_context_terminated", "private_context"]

_log = logging.getLogger(__name__)

# id(user context) -> (user context, its shadow), both weakly held: the
# shadow keeps its user context alive, so a strong mapping would leak it.
_shadows: dict[int, tuple[weakref.ref, weakref.ref]] = {}
_shadows_lock = threading.Lock()


class _Shadow(zmq.Context):
    """A shadow that is closed when the context it shadows is: a shadow's
    own ``closed`` stays False, and a socket made after ``term()`` would
    use the freed libzmq context.

    Its sockets are made under a lock that ``destroy()`` takes too (through
    the first ``DestroyHook`` it closes) before it terminates the context,
    and none is made after: ``closed`` is only set once ``zmq_ctx_term``
    has returned, and a socket made in between, in another thread, used the
    freed context (``Invalid argument (src/mutex.hpp:125)``, an abort, about
    once in 1,000 proxies made while ``destroy()`` ran).
    """

    # annotated: pyzmq's setattr allows them
    _framerpc_user: zmq.Context
    _framerpc_lock: threading.Lock
    _framerpc_shut: bool  # destroy() began: no socket any more

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return bool(self._framerpc_user.closed)

    def socket(self, *args: Any, **kwargs: Any) -> Any:
        """``zmq.Context.socket``, or ETERM once ``destroy()`` began."""
        with self._framerpc_lock:
            if self._framerpc_shut:
                raise zmq.ZMQError(zmq.ETERM)
            return super().socket(*args, **kwargs)

    def shut(self) -> None:
        """No socket from now on; one being made is finished first."""
        with self._framerpc_lock:
            self._framerpc_shut = True


def private_context(context: zmq.Context) -> zmq.Context:
    """A shadow of ``context`` whose sockets ``context.destroy()`` leaves alone.

    One shadow per context while it is in use, so that per-context state
    keyed by the context object (the CURVE authenticator) is shared by all
    framerpc sockets of that context. The shadow holds ``context``, as a
    socket would, so the context outlives every framerpc socket.
    """
    if getattr(context, "_shadow", False):
        # Already a shadow (framerpc's, or the user's own): its socket list
        # is separate from the context the user destroys, or it is theirs.
        return context
    with _shadows_lock:
        key = id(context)
        live = _live_shadow(context)
        if live is not None:
            return live
        shadow = _Shadow(shadow=context)
        shadow._framerpc_user = context
        shadow._framerpc_lock = threading.Lock()
        shadow._framerpc_shut = False
        # default socket options set on the context apply to ours as before
        user_options = getattr(context, "sockopts", None)
        if isinstance(user_options, dict):
            shadow.sockopts = user_options
        _shadows[key] = (weakref.ref(context), weakref.ref(shadow))
        # forget entries of shadows that are gone (their sockets are closed)
        for stale in [k for k, (_, s) in _shadows.items() if s() is None]:
            del _shadows[stale]
        return shadow


def _live_shadow(context: zmq.Context | None) -> _Shadow | None:
    """The shadow ``private_context`` made of ``context``, if alive (the
    caller holds ``_shadows_lock``)."""
    entry = _shadows.get(id(context))
    if entry is None or entry[0]() is not context:
        return None
    return entry[1]()


def close_socket(sock: zmq.Socket | None, linger: int | None = None) -> None:
    """Close ``sock`` (if open) with ``linger`` ms, or its own linger if None.

    Only the socket's owner may call it: the thread using it, or a thread
    holding the lock that makes it the only user.
    """
    if sock is None or sock.closed:
        return
    if linger is not None:
        try:
            sock.setsockopt(zmq.LINGER, linger)
        except zmq.ZMQError:
            pass
    transport.close_quietly(sock)


def is_context_terminated(exc: BaseException) -> bool:
    """Whether ``exc`` is the ETERM of a context being terminated."""
    return isinstance(exc, zmq.ZMQError) and exc.errno == zmq.ETERM


class DestroyHook:
    """Stands in a context's socket list for the sockets of one object.

    ``Context.destroy()`` calls ``close`` (after ``setsockopt(LINGER)``
    when given a linger) before it terminates the context; ``on_destroy``
    then asks the owner to stop. It runs in the destroying thread, must
    return quickly and must not touch a socket another thread may be using.

    Parameters
    ----------
    context : zmq.Context
        The user's context (the one whose ``destroy()`` is to be safe).
    owner : str
        What owns the sockets, for ``repr`` (pyzmq's warnings name it).
    on_destroy : callable
        Called once, with the linger given to ``destroy()`` (ms) or None.
    """

    def __init__(
        self,
        context: zmq.Context,
        owner: str,
        on_destroy: Callable[[int | None], None],
    ) -> None:
        self.closed = False
        self._owner = owner
        self._on_destroy = on_destroy
        self._linger: int | None = None
        self._context = weakref.ref(context)
        add = getattr(context, "_add_socket", None)
        if add is not None and not getattr(context, "_shadow", False):
            add(self)

    # -- what Context.destroy() calls ---------------------------------------
    def setsockopt(self, option: int, value: int) -> None:
        """Remember destroy()'s linger for the owner's sockets."""
        if option == zmq.LINGER:
            self._linger = value

    def close(self, linger: int | None = None) -> None:
        """Ask the owner to stop and close its sockets (idempotent)."""
        if self.closed:
            return
        self.release()
        with _shadows_lock:
            shadow = _live_shadow(self._context())
        if shadow is not None:  # before term(): see _Shadow
            shadow.shut()
        try:
            self._on_destroy(self._linger if linger is None else linger)
        except Exception:  # destroy() must go on to term() whatever happens
            _log.exception("stopping %s for Context.destroy() failed", self._owner)

    # -- the owner's side ----------------------------------------------------
    def release(self) -> None:
        """The owner closed its sockets: leave the context's list."""
        self.closed = True
        context = self._context()
        remove = getattr(context, "_rm_socket", None)
        if remove is not None:
            remove(self)

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<framerpc sockets of {self._owner}{state}>"
