"""The general request parser: a native request of any event, from its
frames or its decoded header.

A METHOD_CALL's fields are checked by the call path's one check
(``callpath.call_fields``, the live engine's, which the ``Responder``
uses too); the version, the event and the other events' fields by
``framerpc.wire.messages``. The server's general path and
``framerpc.aio``'s server read requests here; ``framerpc.protocol``
re-exports both names (their old path).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..wire import framing, messages
from ..wire.messages import Request, RPCEvents
from .callpath import call_fields

__all__ = ["decode_request", "request_from_header"]


def decode_request(
    frames: Sequence,
    max_frames: int = framing.MAX_FRAMES,
    max_header: int = framing.MAX_HEADER_SIZE,
    max_objects: int = framing.MAX_OBJECTS,
    max_depth: int = framing.MAX_DEPTH,
) -> Request:
    """Parse the frames of a request (after the routing envelope).

    The limits are those of ``framerpc.wire.framing.decode``.

    Raises
    ------
    ProtocolError
        The message is malformed; the text says which field is wrong.
    MessageTooLargeError
        The message exceeds a limit (a subclass of ProtocolError).
    """
    return request_from_header(
        framing.decode(frames, max_frames, max_header, max_objects, max_depth)
    )


def request_from_header(header: dict) -> Request:
    """The request in a decoded header (see ``decode_request``), for a
    caller that decoded the frames already: the header is decoded once.

    Raises
    ------
    ProtocolError
        A wrong version or event, or a missing or mistyped field.
    """
    event = messages.request_event(header)
    if event is RPCEvents.METHOD_CALL:
        request_id, method, args, kwargs = call_fields(header)
        return Request(event, request_id, method, args, kwargs)
    return messages.request_from_fields(header, event)
