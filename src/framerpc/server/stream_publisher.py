"""StreamPublisher: the server-side object of an ``RPCStream``.

``publish`` checks and encodes a frame once (copying it first unless told
not to) and hands it to the server's ``StreamHub``, which queues it for
each subscriber (see ``framerpc.server.streams``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import transport
from ..stream import RPCStream
from ..wire import framing
from ..wire._framing_common import OutOfBand

if TYPE_CHECKING:
    from .streams import StreamHub

__all__ = ["StreamPublisher"]


class StreamPublisher(RPCStream):
    """The server-side object of an ``RPCStream``: ``publish`` from any thread."""

    def __init__(self, hub: StreamHub, declared: RPCStream, name: str) -> None:
        super().__init__(declared.doc)
        self.name = name
        self._hub = hub
        self._seq = 0
        self.published = 0
        self.dropped = 0  # summed over subscribers, also forgotten ones

    def publish(
        self, frame: Any, info: dict[str, Any] | None = None, *, copy: bool = True
    ) -> None:
        """Send ``frame`` with ``info`` to every subscriber; never waits.

        Parameters
        ----------
        frame : numpy.ndarray or bytes-like
            The frame. Subscribers receive a read-only array of the same
            dtype and shape (a memoryview for bytes-like frames).
        info : dict, optional
            Small values travelling with the frame (msgpack types; keys
            ``seq``, ``t``, ``dropped`` and ``epoch`` are set by framerpc).
        copy : bool
            Copy the frame first (default), so that the caller may reuse
            or modify its buffer right after. ``copy=False`` sends the
            caller's buffer itself, without a copy: it must then not be
            modified until subscribers have it (publish a fresh array per
            frame, or take frames from a pool that is not recycled until
            long after). ``bytes`` are never copied (immutable).

        Raises
        ------
        TypeError
            ``frame`` is not an array or bytes-like, or ``info`` not a dict.
        SerializationError
            ``info`` holds a value msgpack cannot carry.
        """
        if not isinstance(frame, transport.BUFFER_TYPES):
            raise TypeError(
                f"stream {self.name} frames must be numpy arrays or bytes-like, "
                f"got {type(frame).__name__}"
            )
        if info is None:
            info = {}
        elif type(info) is not dict:
            raise TypeError(f"stream info must be a dict, got {type(info).__name__}")
        # Nobody subscribed (a racy read: a subscriber arriving now is one
        # that subscribed a moment later): no copy, only checks and a seq.
        wanted = bool(self._hub._by_stream.get(self.name or ""))
        if wanted and copy and type(frame) is not bytes:
            if isinstance(frame, np.ndarray):
                frame = np.array(frame, order="C", copy=True)
            else:
                frame = memoryview(frame).tobytes()
        header, buffer = framing.encode(
            {"t": time.time(), "in": info, "x": OutOfBand(frame)}
        )
        if wanted:
            self._hub.publish(self, header, buffer)
        else:
            self._hub.count(self)

    @property
    def stats(self) -> dict[str, int]:
        """Counters of this stream.

        Returns
        -------
        dict
            ``published``: frames published; ``subscribers``: current
            subscriptions; ``dropped``: frames dropped for subscribers
            (summed over them); ``pending``: frames waiting for their
            subscribers' credit now (summed over subscribers);
            ``held_frames``: distinct frames those hold.
        """
        return self._hub.stream_stats(self)
