"""Small functions of the asyncio link (``_link``) that other modules use
too: the private shadow of a user's context, a request's name in errors.
(Moved out of ``_link`` to keep it under the line limit.)"""

from __future__ import annotations

import zmq
import zmq.asyncio

from .. import _lifecycle
from ..wire.messages import Request, RPCEvents

__all__ = ["describe", "private_context"]


def private_context(context: zmq.Context) -> zmq.Context:
    """framerpc's shadow of ``context`` (see ``_lifecycle``), plain even
    when ``context`` is a ``zmq.asyncio`` one."""
    if isinstance(context, zmq.asyncio.Context):
        context = zmq.Context.shadow(context.underlying)
    return _lifecycle.private_context(context)


def describe(request: Request) -> str:
    if request.method:
        return repr(request.method)
    if request.event in (RPCEvents.PROPERTY_GET, RPCEvents.PROPERTY_SET):
        return f"property {request.name!r}"
    return f"the {request.event} request"
