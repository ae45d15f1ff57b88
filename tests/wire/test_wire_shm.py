"""Shared-memory messages (issue 14, framerpc.wire.shm): the handshake and
release requests, the reference a reply carries, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest

from framerpc.errors import ProtocolError
from framerpc.wire import messages
from framerpc.wire import shm as wire_shm
from framerpc.wire.messages import RPCEvents


def _request(header: dict) -> messages.Request:
    """wire's own parse of a request other than METHOD_CALL."""
    return messages.request_from_fields(header, messages.request_event(header))


def _decode(frames: list) -> messages.Request:
    return _request(messages.framing.decode(frames))


def test_hello_and_release_decode_as_requests() -> None:
    hello = _decode(wire_shm.encode_hello(7, "probe", b"n" * 16))
    assert hello.event is RPCEvents.SHM_HELLO
    assert (hello.request_id, hello.name, hello.value) == (7, "probe", b"n" * 16)
    release = _decode(wire_shm.encode_release([(1, 2), (3, 4)]))
    assert release.event is RPCEvents.SHM_RELEASE
    assert wire_shm.parse_releases(release.value) == ([(1, 2), (3, 4)], 0)


def test_a_hello_without_a_bytes_nonce_is_refused() -> None:
    frames = messages.encode_request(
        messages.Request(RPCEvents.SHM_HELLO, 1, name="probe", value=b"x")
    )
    header = messages.framing.decode(frames)
    header["x"] = "not bytes"
    with pytest.raises(ProtocolError, match="bytes"):
        _request(header)


def test_malformed_release_items_are_counted_not_used() -> None:
    value = [[1, 2], [1], "x", [1, "2"], [True, 2], [5, 6]]
    pairs, bad = wire_shm.parse_releases(value)
    assert pairs == [(1, 2), (5, 6)]
    assert bad == 4
    many = [[i, i] for i in range(wire_shm.MAX_RELEASES + 3)]
    pairs, bad = wire_shm.parse_releases(many)
    assert len(pairs) == wire_shm.MAX_RELEASES and bad == 3
    with pytest.raises(ValueError):
        wire_shm.encode_release([(0, 0)] * (wire_shm.MAX_RELEASES + 1))


def test_a_reference_round_trips_through_a_reply() -> None:
    ref = wire_shm.make_ref("seg", 4096, 24, 3, 9, np.dtype("<u2"), (3, 4))
    reply = messages.decode_reply(messages.encode_result(5, ref, {"seq": 1}))
    assert wire_shm.is_ref(reply.value) and reply.info == {"seq": 1}
    parsed = wire_shm.parse_ref(reply.value)
    assert parsed == wire_shm.ShmRef("seg", 4096, 24, 3, 9, np.dtype("<u2"), (3, 4))


@pytest.mark.parametrize(
    "fields",
    [
        ["seg", 0, 24, 0, 1, "<u2"],  # six fields
        [b"seg", 0, 24, 0, 1, "<u2", [12]],  # name not a str
        ["seg", -1, 24, 0, 1, "<u2", [12]],  # negative offset
        ["seg", 0, 24, 0, 1.0, "<u2", [12]],  # float generation
        ["seg", 0, 24, 0, 1, "O", [3]],  # object dtype
        ["seg", 0, 24, 0, 1, "not a dtype", [12]],
        ["seg", 0, 24, 0, 1, "<u2", [13]],  # shape * itemsize != nbytes
        ["seg", 0, 24, 0, 1, "<u2", "12"],
        ["seg", 0, 0, 0, 1, "<u2", [1] * 33 + [0]],  # too many dimensions
    ],
)
def test_a_bad_reference_raises_protocol_error(fields: list) -> None:
    with pytest.raises(ProtocolError):
        wire_shm.parse_ref({wire_shm.REF_KEY: fields})


def test_a_buffer_reply_value_is_a_reference_only_as_a_map() -> None:
    assert not wire_shm.is_ref(memoryview(b"abc"))
    assert not wire_shm.is_ref(np.zeros(3))
    assert wire_shm.is_ref({"shm": []})
