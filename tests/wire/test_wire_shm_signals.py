"""The signal side of the shared-memory wire (issue 14, ``wire.shm``): an
emission's ``x`` map of arguments and references, checked on decoding."""

from __future__ import annotations

import numpy as np
import pytest

from framerpc.errors import ProtocolError
from framerpc.server import fanout
from framerpc.wire import framing
from framerpc.wire import shm as wire_shm
from framerpc.wire.messages import SignalEmission

_REF = wire_shm.make_ref(
    "framerpc-x", 0, 64, wire_shm.SIGNAL_SLOT_BASE, 3, np.dtype("<u2"), (4, 8)
)


def _frames(x: object, name: str = "frame_ready") -> list:
    frames = fanout.encode_native(SignalEmission(name, [], 5, 9))
    header = framing.decode(frames)
    header["x"] = x
    return framing.encode(header)


def test_arguments_and_references_round_trip() -> None:
    x = wire_shm.make_signal_args([None, 7, "a"], {0: _REF})
    emission, refs = wire_shm.decode_signal(_frames(x))
    assert emission == SignalEmission("frame_ready", [None, 7, "a"], 5, 9)
    assert refs == [(0, _REF)]
    parsed = wire_shm.parse_ref(refs[0][1])
    assert parsed.slot == wire_shm.SIGNAL_SLOT_BASE and parsed.shape == (4, 8)


def test_a_plain_emission_has_no_references() -> None:
    emission, refs = wire_shm.decode_signal(_frames([1, 2]))
    assert emission.args == [1, 2] and refs == []


@pytest.mark.parametrize(
    "x",
    [
        {"a": [None]},  # no references
        {"shm": []},  # no arguments
        {"a": [None], "shm": [[1, *_REF["shm"]]]},  # index out of range
        {"a": [5], "shm": [[0, *_REF["shm"]]]},  # the argument is not nil
        {"a": [None], "shm": [["0", *_REF["shm"]]]},  # index not an int
        {"a": [None], "shm": [[]]},
        "args",
    ],
)
def test_a_malformed_map_is_refused(x: object) -> None:
    with pytest.raises(ProtocolError):
        wire_shm.decode_signal(_frames(x))


def test_not_an_emission_is_refused() -> None:
    frames = _frames([1])
    header = framing.decode(frames)
    header["e"] = "METHOD_CALL"
    with pytest.raises(ProtocolError):
        wire_shm.decode_signal(framing.encode(header))


def test_the_subscriber_id_is_read_from_the_prefix() -> None:
    frame = fanout.native_prefix(0x01020304) + b"rest"
    assert wire_shm.subscriber_of(memoryview(frame)) == 0x01020304
    assert wire_shm.subscriber_of(b"\x82\xa1v\x01") is None
    assert wire_shm.subscriber_of(fanout.native_prefix(1)[:7]) is None
