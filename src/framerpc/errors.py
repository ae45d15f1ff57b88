"""Exception types of framerpc: one root, each also the builtin it resembles."""

from __future__ import annotations

__all__ = [
    "FramerpcError",
    "ProtocolError",
    "MessageTooLargeError",
    "SerializationError",
    "RemoteError",
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
    """The server answered with an error where no NoResult can be returned
    (a property set). ``error`` and ``traceback`` hold the remote details."""

    def __init__(self, error: str, traceback: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.traceback = traceback
