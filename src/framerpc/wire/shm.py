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
Signals
    A subscriber of the signal socket that shook hands on its RPC
    connection may claim its fan-out subscriber (``framerpc.server.fanout``:
    every native emission's header starts with ``"_"``, the subscriber's
    id, 4 bytes big-endian). ``SHM_SUBSCRIBER`` with ``x = [id]`` (an int)
    makes the server send that subscriber alone a ``""`` emission whose
    ``x`` is ``[nonce]`` (16 random bytes: only the owner of the
    subscription sees it) and reply ``{"shm": true}``; ``SHM_SUBSCRIBER``
    with ``x = [nonce]`` (bytes) from the same connection then binds the
    subscriber to it (reply ``{"shm": true}``, else ``false``). From then
    on an emission whose top-level arguments hold arrays of
    ``shm_threshold`` bytes or more reaches that subscriber with ``x`` a
    map ``{"a": args, "shm": [[index, segment, offset, nbytes, slot,
    generation, dtype, shape], ...]}``: ``args`` holds nil at each
    ``index``, whose array is the reference's (the fields of a reply's
    reference). Every other emission's ``x`` is a list. Signal slots are
    numbered from ``SIGNAL_SLOT_BASE``; several subscribers may hold the
    same slot, and each releases it like a reply's (``rl``,
    ``SHM_RELEASE``) on its RPC connection. A subscriber that departs is
    unbound and nothing more: its client may still hold the arrays sent
    to it, whose slots are never taken back under it. A client whose
    subscription ended while it stays connected sends ``SHM_SUBSCRIBER``
    with ``x = [SUBSCRIPTION_ENDED, id, held]`` (``held``: ``[slot,
    generation]`` once per signal array it holds, nil if over
    ``MAX_RELEASES``): the server unbinds subscriber ``id`` if it is (or
    was) bound to that connection and takes back the references sent to
    it beyond ``held`` (sent, never received; none if ``held`` is nil),
    with those of the connection's older subscribers (lower ids: a
    client has one signal socket, whose earlier connections dropped),
    replying ``{"shm": true}``; a malformed word, or one naming another
    connection's subscriber, changes nothing (``false``). A server
    without it answers ``false`` (3 items are no claim) or ``ok=false``.
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
    SignalEmission,
    check_version,
    encode_request,
    encode_result,
)

__all__ = [
    "MAX_RELEASES",
    "PROBE_ID",
    "SIGNAL_SLOT_BASE",
    "SUBSCRIPTION_ENDED",
    "decode_signal",
    "make_signal_args",
    "subscriber_of",
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
#: Bound of the bytes of a shape's nonzero dimensions: a zero dimension
#: makes nbytes 0 whatever the others are, but numpy refuses huge ones.
_MAX_SPAN = 1 << 62
#: The first slot number of signal references (replies' are below).
SIGNAL_SLOT_BASE = 1 << 32
#: The first item of ``SHM_SUBSCRIBER``'s ``x`` when a subscription ended
#: (``[SUBSCRIPTION_ENDED, id, held]``, see "Signals").
SUBSCRIPTION_ENDED = "ended"
#: How a native emission's header starts: a map of 7 keys, "_": bin 4.
_SIGNAL_HEAD = b"\x87\xa1_\xc4\x04"
#: The key of a signal's arguments when ``x`` is a map (see above).
_ARGS_KEY = "a"


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
    if (
        kind is None
        or kind.hasobject
        or kind.fields is not None
        or kind.subdtype is not None  # "(2,)<i4": an array's dtype never is
        or kind.itemsize == 0
    ):
        raise ProtocolError(f"bad dtype in a shared-memory reference: {dtype!r}")
    count = span = 1
    for d in shape:
        count *= d
        span *= d or 1
    if span * kind.itemsize > _MAX_SPAN:
        raise ProtocolError("a shared-memory reference needs a shape of ints")
    if count * kind.itemsize != nbytes:
        raise ProtocolError("shared-memory reference: shape and dtype != nbytes")
    return ShmRef(segment, offset, nbytes, slot, generation, kind, tuple(shape))


def subscriber_of(first: Any) -> int | None:
    """The fan-out subscriber id a native emission's first frame starts
    with (a buffer), or None."""
    if first[:5] != _SIGNAL_HEAD or len(first) < 9:
        return None
    return int.from_bytes(first[5:9], "big")


def make_signal_args(args: list, refs: dict[int, dict]) -> dict:
    """The ``x`` of an emission whose arguments at the keys of ``refs``
    (reference maps, ``make_ref``) travel through shared memory."""
    return {
        _ARGS_KEY: [None if i in refs else a for i, a in enumerate(args)],
        REF_KEY: [[i, *ref[REF_KEY]] for i, ref in refs.items()],
    }


def decode_signal(
    frames: Any,
    max_frames: int = framing.MAX_FRAMES,
    max_header: int = framing.MAX_HEADER_SIZE,
) -> tuple[SignalEmission, list[tuple[int, dict]]]:
    """Parse an emission that may carry references (see the module): the
    emission (nil where a reference goes) and ``(index, reference map)``
    pairs for ``parse_ref``.

    Raises
    ------
    ProtocolError
        Not a signal emission, or a malformed map ``x``.
    """
    header = check_version(framing.decode(frames, max_frames, max_header))
    name, args = header.get("s"), header.get("x")
    if header.get("e") != "EMIT_SIGNAL" or type(name) is not str:
        raise ProtocolError("expected a signal emission")
    refs: list[tuple[int, dict]] = []
    if type(args) is dict:
        xmap: dict = args
        args, fields = xmap.get(_ARGS_KEY), xmap.get(REF_KEY)
        if type(args) is not list or type(fields) is not list:
            raise ProtocolError("a signal's shared-memory map needs a and shm")
        for item in fields:
            if (
                type(item) is not list
                or not item
                or type(item[0]) is not int
                or not 0 <= item[0] < len(args)
                or args[item[0]] is not None
            ):
                raise ProtocolError("bad argument index in a signal reference")
            refs.append((item[0], {REF_KEY: item[1:]}))
    elif type(args) is not list:
        raise ProtocolError("signal emission needs a name and an args list")
    return SignalEmission(name, args, header.get("q"), header.get("ep")), refs
