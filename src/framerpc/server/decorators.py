"""Marking a server's methods for remote calls: ``register_method_json``
and ``register_method_buffer`` (static methods of ``RPCServer``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

__all__ = ["DEFAULT_METHOD_TIMEOUT", "DecoratorsMixin"]

F = TypeVar("F", bound=Callable[..., Any])

#: Default time (ms) a client waits for a method, as in the older API.
DEFAULT_METHOD_TIMEOUT = 10000


def _method_decorator(kind: str, timeout: Any) -> Any:
    def mark(func: F, timeout: int | None) -> F:
        func.__rpc_kind__ = kind  # type: ignore[attr-defined]
        func.__rpc_timeout__ = timeout  # type: ignore[attr-defined]
        return func

    if callable(timeout):  # used bare: @RPCServer.register_method_json
        return mark(timeout, DEFAULT_METHOD_TIMEOUT)
    return functools.partial(mark, timeout=timeout)


class DecoratorsMixin:
    """RPCServer's method decorators (see ``RPCServer``)."""

    @overload
    @staticmethod
    def register_method_json(timeout: F) -> F: ...
    @overload
    @staticmethod
    def register_method_json(
        timeout: int | None = DEFAULT_METHOD_TIMEOUT,
    ) -> Callable[[F], F]: ...
    @staticmethod
    def register_method_json(timeout: Any = DEFAULT_METHOD_TIMEOUT) -> Any:
        """Expose a method whose result travels in the message header.

        Usable bare (``@RPCServer.register_method_json``) or called
        (``@RPCServer.register_method_json(timeout=500)``).

        Parameters
        ----------
        timeout : int or None
            How long (ms) a client waits for the result; None waits
            without limit.
        """
        return _method_decorator("json", timeout)

    @overload
    @staticmethod
    def register_method_buffer(timeout: F) -> F: ...
    @overload
    @staticmethod
    def register_method_buffer(
        timeout: int | None = DEFAULT_METHOD_TIMEOUT,
    ) -> Callable[[F], F]: ...
    @staticmethod
    def register_method_buffer(timeout: Any = DEFAULT_METHOD_TIMEOUT) -> Any:
        """Expose a method returning ``(buffer, info_dict)``.

        The buffer (bytes, bytearray, memoryview or numpy array) travels as
        its own frame without a copy, sent after the method returns: the
        server must not modify it once returned (over inproc:// the client
        reads it in place), or clients get torn frames; return a new array
        or a ``framerpc.FramePool`` frame. The client receives a read-only
        memoryview over the received frame (a read-only numpy array when
        the method returned an array) and the info dict.

        Parameters
        ----------
        timeout : int or None
            How long (ms) a client waits for the result; None waits
            without limit.
        """
        return _method_decorator("buffer", timeout)
