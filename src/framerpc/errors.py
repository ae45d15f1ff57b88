"""Exception types of framerpc: one root, each also the builtin it resembles."""

from __future__ import annotations

__all__ = [
    "FramerpcError",
    "ProtocolError",
    "MessageTooLargeError",
    "SerializationError",
    "RemoteError",
    "PeerLostError",
]


class FramerpcError(Exception):
    """Root of every error framerpc raises on purpose."""


class ProtocolError(FramerpcError, ValueError):
    """A message received from a peer does not follow the wire format."""


class MessageTooLargeError(ProtocolError):
    """A message, a frame or a declared size exceeds a configured limit."""


class SerializationError(FramerpcError, TypeError):
    """A value given to send cannot travel on the wire (names the value's type)."""


class RemoteError(FramerpcError, RuntimeError):
    """The server answered a call with an error.

    Raised where no ``NoResult`` can be returned (a property
    set), and by proxies made with ``raise_errors=True`` (the default of
    ``framerpc.connect``) instead of returning one.

    Parameters
    ----------
    error : str
        The remote error, ``"Type: message"`` for a remote exception.
    traceback : str
        The remote traceback, or "".

    Attributes
    ----------
    error, traceback : str
        As given.
    remote_type : str
        Name of the remote exception's type (``"ValueError"``), or "" when
        the server sent an error of its own (an unknown method).
    message : str
        The remote exception's message (``error`` without the type).
    """

    def __init__(self, error: str, traceback: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.traceback = traceback
        head, sep, tail = error.partition(": ")
        if sep and head.replace(".", "").isidentifier():
            self.remote_type, self.message = head, tail
        else:
            self.remote_type, self.message = "", error


class PeerLostError(FramerpcError, ConnectionError, TimeoutError):
    """The server of a call in flight went away (killed, host gone, restarted),
    or has been unreachable for longer than the dead-peer bound: its reply
    will never come.

    A ``ConnectionError``; also a ``TimeoutError``, so that code
    written for the documented "no reply in time" keeps catching it. The
    proxy stays usable and reconnects when the server comes back.
    """
