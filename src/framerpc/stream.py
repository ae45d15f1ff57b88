"""RPCStream: a stream of frames (camera images) with per-subscriber flow control.

Declared on an interface like ``RPCSignal``::

    class Camera:
        frames = framerpc.RPCStream(doc="raw sensor images")

On a server object the attribute is a publisher (``self.frames.publish(
array, info)``, see ``framerpc._streampub``); on a client proxy it is a
subscription point (``proxy.frames.subscribe(...)``, ``proxy.frames.latest
()``, see ``framerpc.client.streams``). This module is the model only: no
sockets, no zmq. Accessed on an object that is neither (a plain instance
of the interface), the methods raise ``RuntimeError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal, Protocol

__all__ = [
    "DEFAULT_QUEUE",
    "MAX_QUEUE",
    "PREFETCH",
    "POLICIES",
    "Policy",
    "RPCStream",
    "StreamSubscription",
    "check_policy",
    "credit_window",
]

Policy = Literal["latest", "queue"]
#: The flow-control policies a subscriber may choose.
POLICIES = ("latest", "queue")
#: Queue length of ``policy="queue"`` when none is given.
DEFAULT_QUEUE = 8
#: Longest queue a subscriber may ask for: the server holds up to this many
#: frames for it (shared with the other subscribers, not copied).
MAX_QUEUE = 256
#: Frames a ``queue`` subscriber lets the server send ahead of its
#: consumer (its credit window): two keep the link busy while the consumer
#: works on one. A ``latest`` subscriber lets one.
PREFETCH = 2


def credit_window(policy: str, queue: int) -> int:
    """How many frames a subscriber of ``policy`` and ``queue`` length holds
    at most on its side (what its credit lets the server send ahead)."""
    return 1 if policy == "latest" else min(queue, PREFETCH)


def check_policy(policy: object, queue: object) -> int:
    """The window (frames a subscriber may hold) of ``policy`` and ``queue``.

    Parameters
    ----------
    policy : {"latest", "queue"}
        ``latest``: only the newest frame; ``queue``: up to ``queue``.
    queue : int or None
        Queue length for ``policy="queue"`` (``DEFAULT_QUEUE`` when None);
        must be None (or 1) for ``latest``.

    Returns
    -------
    int
        1 for ``latest``, the queue length for ``queue``.

    Raises
    ------
    ValueError
        An unknown policy, or a queue length out of 1..``MAX_QUEUE``.
    """
    if policy not in POLICIES:
        raise ValueError(f"stream policy must be 'latest' or 'queue', got {policy!r}")
    if policy == "latest":
        if queue not in (None, 1):
            raise ValueError("policy='latest' holds one frame: leave queue out")
        return 1
    if queue is None:
        return DEFAULT_QUEUE
    if type(queue) is not int or not 1 <= queue <= MAX_QUEUE:
        raise ValueError(f"queue must be an int in 1..{MAX_QUEUE}, got {queue!r}")
    return queue


class StreamSubscription(Protocol):
    """What ``RPCStream.subscribe`` returns: an iterator of ``(frame,
    info)`` with ``get(timeout)`` and ``close()``, usable in ``with``.

    ``get`` raises ``TimeoutError`` after ``timeout`` seconds without a
    frame and ``EOFError`` once closed; iteration ends at ``close``
    (from any thread). ``dropped`` and ``received`` count frames so far.
    """

    dropped: int
    received: int

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Any]]]: ...
    def __next__(self) -> tuple[Any, dict[str, Any]]: ...
    def get(self, timeout: float | None = None) -> tuple[Any, dict[str, Any]]: ...
    def close(self) -> None: ...
    def __enter__(self) -> StreamSubscription: ...
    def __exit__(self, *exc_info: object) -> None: ...


class RPCStream:
    """A stream of frames (numpy arrays or bytes-like) plus an info dict.

    Parameters
    ----------
    doc : str
        One line shown by ``framerpc inspect``.

    Attributes
    ----------
    name : str or None
        Attribute name, set by ``__set_name__`` for class attributes.

    Notes
    -----
    A non-data descriptor: the server (publisher) and the proxy
    (subscription point) put their own object in the instance's
    ``__dict__`` under the same name, which takes precedence. Those objects
    are subclasses of this one, so ``self.frames.publish`` and
    ``proxy.frames.subscribe`` type-check against the interface.
    """

    def __init__(self, doc: str = "") -> None:
        self.doc = doc
        self.name: str | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> RPCStream:
        return self

    def publish(
        self, frame: Any, info: dict[str, Any] | None = None, *, copy: bool = True
    ) -> None:
        """Send ``frame`` and ``info`` to every subscriber (server side).

        Callable from any thread; never waits for a subscriber. Each
        subscriber gets it as its policy allows (see ``subscribe``).

        Parameters
        ----------
        frame : numpy.ndarray or bytes-like
            The frame. Subscribers receive a read-only array of the same
            dtype and shape (a read-only memoryview for bytes-like frames).
        info : dict, optional
            Small msgpack values travelling with the frame. framerpc adds
            ``seq``, ``t``, ``dropped`` and ``epoch`` on receipt.
        copy : bool
            Copy the frame first (default), so that the caller may reuse
            or modify its buffer as soon as this returns (a camera writing
            the next image into the same array). ``copy=False`` lends the
            buffer itself: it must not be modified until every subscriber
            has it (publish a fresh array per frame, or recycle buffers
            only long after). ``bytes`` are never copied (immutable).

        Raises
        ------
        TypeError
            ``frame`` is not an array or bytes-like, or ``info`` not a dict.
        SerializationError
            ``info`` holds a value msgpack cannot carry.
        RuntimeError
            On an object that is not a running ``RPCServer``.
        """
        raise RuntimeError(f"stream {self.name!r} is not served by an RPCServer")

    def subscribe(
        self,
        callback: Callable[[Any, dict[str, Any]], object] | None = None,
        *,
        policy: Policy = "latest",
        queue: int | None = None,
    ) -> StreamSubscription:
        """Receive the stream's frames, with flow control (client side).

        Parameters
        ----------
        callback : callable, optional
            Called as ``callback(frame, info)`` in the subscription's
            thread for each frame; the next frame is asked for when it
            returns. Without it, iterate the returned subscription.
        policy : {"latest", "queue"}
            ``latest``: only the newest frame; frames published while the
            consumer was busy are dropped for it alone. ``queue``: up to
            ``queue`` frames wait in the server for it, then the oldest
            waiting one is dropped. Either way drops are counted in
            ``info["dropped"]``.
        queue : int, optional
            Queue length for ``policy="queue"`` (default 8, at most 256).

        Returns
        -------
        StreamSubscription
            Iterable of ``(frame, info)``, with ``get(timeout)`` and
            ``close()``; a context manager. ``frame`` is a read-only
            numpy array (memoryview for bytes-like frames) over the
            received buffer, not a copy; ``info`` holds the publisher's
            keys plus ``seq``, ``t``, ``dropped`` and ``epoch``.

        Raises
        ------
        ValueError
            A bad policy or queue length.
        RemoteError
            The server refused the subscription.
        RuntimeError
            The proxy is closed, speaks the older JSON protocol, or the
            server has no such stream.
        """
        raise RuntimeError(f"stream {self.name!r} is not a proxy's stream")

    def latest(self, timeout: float | None = 10.0) -> tuple[Any, dict[str, Any]]:
        """One frame: the next one published (client side).

        Raises
        ------
        TimeoutError
            No frame within ``timeout`` seconds.
        """
        raise RuntimeError(f"stream {self.name!r} is not a proxy's stream")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name or ''}>"


def declared_streams(klass: type) -> dict[str, RPCStream]:
    """The ``RPCStream`` class attributes of ``klass`` and its bases, by name."""
    found: dict[str, RPCStream] = {}
    for base in reversed(klass.__mro__):
        for name, attr in vars(base).items():
            if isinstance(attr, RPCStream):
                found[name] = attr
    return found
