"""A buffer reply that cannot go through shared memory loses nothing
(issue 14, framerpc.server.shm_frames): an info dict msgpack refuses
frees the slot it was given and the arena segment, an array of Python
objects never has its pointers copied into a segment, and the copy of a
plain array lands whole before its reference is returned."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from framerpc.server.shm_frames import ShmServer
from framerpc.transport import DEFAULT_OPTIONS
from framerpc.transport import shm as segments
from framerpc.wire import messages
from framerpc.wire import shm as wire_shm

pytestmark = pytest.mark.skipif(not segments.AVAILABLE, reason="needs /dev/shm")

NONCE = b"0123456789abcdef"


@pytest.fixture
def server():
    shm = ShmServer(dataclasses.replace(DEFAULT_OPTIONS, shm_threshold=1))
    probe = segments.Segment(len(NONCE))
    probe.map[: len(NONCE)] = NONCE
    try:
        assert shm.hello(b"a", probe.name, NONCE)[wire_shm.REF_KEY]
    finally:
        probe.close()
    yield shm
    shm.close()


def test_an_unencodable_info_frees_the_slot_and_the_segment(server) -> None:
    value = np.arange(4096, dtype=np.uint16)
    with pytest.raises(TypeError):
        server.reply(b"a", 1, (value, {"bad": object()}))
    stats = server.stats()
    assert stats["shm_slots_held"] == 0 and stats["shm_replies"] == 0
    assert not server.clients[b"a"].slots
    # the arena segment came back: the next reply reuses it, no new bytes
    held = server._arena.bytes
    frames = server.reply(b"a", 2, (value, {}))
    ref = wire_shm.parse_ref(messages.decode_reply(frames).value)
    assert server._arena.bytes == held and server.stats()["shm_slots_held"] == 1
    mapped = segments.attach(ref.segment)
    assert np.array_equal(np.frombuffer(mapped.map, np.uint16, 4096), value)


def test_an_object_array_takes_the_socket_path(server) -> None:
    value = np.array([object()] * 64, dtype=object)
    with pytest.raises(TypeError):  # as over the socket: msgpack refuses it
        server.reply(b"a", 1, (value, {}))
    stats = server.stats()
    assert stats["shm_slots_held"] == 0 and stats["shm_copies"] == 0
    assert server._arena.bytes == 0  # no segment taken, none lost
