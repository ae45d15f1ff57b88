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
    """The server answered with an error where no NoResult can be returned
    (a property set). ``error`` and ``traceback`` hold the remote details."""

    def __init__(self, error: str, traceback: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.traceback = traceback


class PeerLostError(FramerpcError, ConnectionError, TimeoutError):
    """The server of a call in flight went away (killed, host gone, restarted),
    or has been unreachable for longer than the dead-peer bound: its reply
    will never come.

    A :class:`ConnectionError`; also a :class:`TimeoutError`, so that code
    written for the documented "no reply in time" keeps catching it. The
    proxy stays usable and reconnects when the server comes back.
    """
