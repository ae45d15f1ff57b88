"""Shared-memory messages (sans-I/O): the same-host handshake, the
reference a buffer reply carries instead of its frame, and the release.

Handshake
    The client creates a ``0600`` probe segment holding a random nonce
    and sends ``SHM_HELLO`` (``p``: the probe's name, ``x``: the nonce,
    bytes). ``x`` may end with a 16-byte client token (the client's
    does: 16 random bytes, then the token): after a reconnection (a new
    routing id), a handshake with the same token from the same process
    moves the slots the client holds to the new connection. A server
    that can open the probe and read the nonce runs on the same host
    as the same user; it replies ``ok`` with ``x`` a map
    ``{"shm": true}`` (``false`` when it has shared memory turned off or
    cannot read the probe). An older server replies with an error
    (unknown event): the client then uses the socket, as it does for any
    reply that is not ``{"shm": true}``.
Reference
    The reply to a buffer method, for a client that shook hands, may hold
    in ``x`` (where a buffer reply's frame marker is otherwise) the map
    ``{"shm": [segment, offset, nbytes, slot, generation, dtype, shape]}``;
    ``in`` is the method's info dict as usual. ``segment`` names a
    segment of ``/dev/shm`` (``framerpc.transport.shm``), ``dtype`` is a
    numpy dtype string (``"<u2"``), ``shape`` a list of ints. A buffer
    reply's ``x`` is never a map otherwise, so the two cannot be mixed up.
Release
    The client's next ``METHOD_CALL`` carries the slots it is done with
    under the header key ``rl`` (a list of ``[slot, generation]`` pairs,
    at most ``MAX_RELEASES``); when it makes no call, ``SHM_RELEASE``
    (``x``: the same list) carries them, one-way: the server sends no
    reply. A pair that does not name a slot the sender holds is ignored
    and counted. An empty ``SHM_RELEASE`` says goodbye: the client closed
    and holds no array any more; the server forgets it. Only a server
    that answered the handshake with ``true`` receives any of these.
Probe
    About once a second the server sends each client that holds slots a
    reply to request ``PROBE_ID`` (-2, an id no request has; ``ok``, no
    value), which clients drop as a late reply: a ROUTER refuses it when
    the client's connection is gone (``EHOSTUNREACH``), so the server
    learns that the client vanished or froze (its heartbeats timed out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ProtocolError
from . import framing
from .messages import (
    KEY_ARGS,
    KEY_EVENT,
    KEY_ID,
    KEY_KWARGS,
    KEY_METHOD,
    KEY_VERSION,
    PROTOCOL_VERSION,
    Request,
    RPCEvents,
    encode_request,
    encode_result,
)

__all__ = [
    "MAX_RELEASES",
    "PROBE_ID",
    "REF_KEY",
    "ShmRef",
    "KEY_RELEASES",
    "encode_call_releasing",
    "encode_hello",
    "encode_probe",
    "encode_release",
    "hello_reply",
    "is_ref",
    "make_ref",
    "parse_ref",
    "parse_releases",
]

#: The key of a reference map (and of the handshake's answer).
REF_KEY = "shm"
#: The header key of the releases a METHOD_CALL carries.
KEY_RELEASES = "rl"
#: Most pairs in one release message (a client sends several if need be).
MAX_RELEASES = 1024
#: The request id of the server's probe: -1 means "unreadable request",
#: and clients number their requests from 0 up, so no call matches it.
PROBE_ID = -2
_MAX_DIMS = 32


@dataclass(frozen=True, slots=True)
class ShmRef:
    """Where a reply's array lies in shared memory, and its slot."""

    segment: str
    offset: int
    nbytes: int
    slot: int
    generation: int
    dtype: np.dtype
    shape: tuple[int, ...]


def encode_hello(request_id: int, probe: str, nonce: bytes) -> list:
    """Frames of the handshake request."""
    return encode_request(
        Request(RPCEvents.SHM_HELLO, request_id, name=probe, value=bytes(nonce))
    )


def hello_reply(capable: bool) -> dict:
    """The value of the server's handshake reply."""
    return {REF_KEY: bool(capable)}


def encode_probe() -> list:
    """Frames of the server's probe (a reply clients drop, see above)."""
    return encode_result(PROBE_ID, None)


def encode_release(pairs: list[tuple[int, int]]) -> list:
    """Frames of one release message (``len(pairs) <= MAX_RELEASES``)."""
    if len(pairs) > MAX_RELEASES:
        raise ValueError(f"at most {MAX_RELEASES} slots per release message")
    return encode_request(
        Request(RPCEvents.SHM_RELEASE, 0, value=[[s, g] for s, g in pairs])
    )


def encode_call_releasing(
    request_id: int, method: str, args: list, kwargs: dict, pairs: list
) -> list:
    """Frames of a METHOD_CALL (``messages.encode_call``) that also
    releases ``pairs`` (at most ``MAX_RELEASES``)."""
    if len(pairs) > MAX_RELEASES:
        raise ValueError(f"at most {MAX_RELEASES} slots per request")
    return framing.encode(
        {
            KEY_VERSION: PROTOCOL_VERSION,
            KEY_EVENT: "METHOD_CALL",
            KEY_ID: request_id,
            KEY_METHOD: method,
            KEY_ARGS: args,
            KEY_KWARGS: kwargs,
            KEY_RELEASES: [[s, g] for s, g in pairs],
        }
    )


def parse_releases(value: list) -> tuple[list[tuple[int, int]], int]:
    """The ``(slot, generation)`` pairs of a release and how many items
    were malformed (or beyond ``MAX_RELEASES``)."""
    if type(value) is not list:
        return [], 1
    pairs, bad = [], max(0, len(value) - MAX_RELEASES)
    for item in value[:MAX_RELEASES]:
        if (
            type(item) is list
            and len(item) == 2
            and type(item[0]) is int
            and type(item[1]) is int
        ):
            pairs.append((item[0], item[1]))
        else:
            bad += 1
    return pairs, bad


def make_ref(
    segment: str,
    offset: int,
    nbytes: int,
    slot: int,
    generation: int,
    dtype: np.dtype,
    shape: tuple[int, ...],
) -> dict:
    """The reply value naming an array in a segment."""
    return {
        REF_KEY: [segment, offset, nbytes, slot, generation, dtype.str, list(shape)]
    }


def is_ref(value: Any) -> bool:
    """Whether a buffer reply's value is a reference (see the module)."""
    return type(value) is dict and REF_KEY in value


def parse_ref(value: dict) -> ShmRef:
    """Check a reference map.

    Raises
    ------
    ProtocolError
        A field is missing, mistyped, negative, or the dtype and shape do
        not make ``nbytes``.
    """
    fields = value.get(REF_KEY)
    if type(fields) is not list or len(fields) != 7:
        raise ProtocolError("a shared-memory reference needs 7 fields")
    segment, offset, nbytes, slot, generation, dtype, shape = fields
    if type(segment) is not str or len(segment) > 255:
        raise ProtocolError("a shared-memory reference needs a segment name")
    for number in (offset, nbytes, slot, generation):
        if type(number) is not int or number < 0:
            raise ProtocolError("shared-memory offsets and slots are ints >= 0")
    if (
        type(shape) is not list
        or len(shape) > _MAX_DIMS
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise ProtocolError("a shared-memory reference needs a shape of ints")
    try:
        kind = np.dtype(dtype) if type(dtype) is str and len(dtype) < 16 else None
    except TypeError:
        kind = None
    if kind is None or kind.hasobject or kind.fields is not None:
        raise ProtocolError(f"bad dtype in a shared-memory reference: {dtype!r}")
    count = 1
    for d in shape:
        count *= d
    if count * kind.itemsize != nbytes:
        raise ProtocolError("shared-memory reference: shape and dtype != nbytes")
    return ShmRef(segment, offset, nbytes, slot, generation, kind, tuple(shape))
