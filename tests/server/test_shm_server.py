"""The server's shared-memory slots (issue 14, framerpc.server.shm_frames),
without sockets: the handshake's probe check, handouts owned by one client
with a generation, per-client and arena bounds, reclaiming the slots of an
ended process, and the general path's releases."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import zmq

from framerpc import FramePool
from framerpc.server.shm_frames import ShmServer
from framerpc.transport import DEFAULT_OPTIONS
from framerpc.transport import shm as segments
from framerpc.wire import framing, messages
from framerpc.wire import shm as wire_shm

pytestmark = pytest.mark.skipif(not segments.AVAILABLE, reason="needs /dev/shm")

NONCE = b"0123456789abcdef"


def _server(**changes) -> ShmServer:
    return ShmServer(dataclasses.replace(DEFAULT_OPTIONS, **changes))


def _probe(nonce: bytes = NONCE) -> segments.Segment:
    probe = segments.Segment(len(nonce))
    probe.map[: len(nonce)] = nonce
    return probe


def _hello(server: ShmServer, identity: bytes) -> bool:
    probe = _probe()
    try:
        return server.hello(identity, probe.name, NONCE)[wire_shm.REF_KEY]
    finally:
        probe.close()


def _ref(frames: list) -> wire_shm.ShmRef | None:
    value = messages.decode_reply(frames).value
    return wire_shm.parse_ref(value) if wire_shm.is_ref(value) else None


def test_the_handshake_needs_the_probes_nonce() -> None:
    server = _server()
    probe = _probe()
    try:
        assert not server.hello(b"a", probe.name, b"wrong nonce 0000")["shm"]
        assert not server.hello(b"a", "framerpc-0-1-2-" + "0" * 32, NONCE)["shm"]
        assert not server.hello(b"a", "../../etc/passwd", NONCE)["shm"]
        assert not server.clients
        os.chmod(os.path.join(segments.SHM_DIR, probe.name), 0o644)
        assert not server.hello(b"a", probe.name, NONCE)["shm"]
        os.chmod(os.path.join(segments.SHM_DIR, probe.name), 0o600)
        assert server.hello(b"a", probe.name, NONCE)["shm"]
        assert list(server.clients) == [b"a"]
    finally:
        probe.close()
        server.close()


def test_a_handshake_with_the_same_token_moves_the_clients_slots() -> None:
    server = _server(shm_threshold=1)
    token, other = b"T" * 16, b"U" * 16

    def hello(identity: bytes, secret: bytes) -> bool:
        probe = _probe(secret)
        try:
            return server.hello(identity, probe.name, secret)["shm"]
        finally:
            probe.close()

    try:
        assert hello(b"first", NONCE + token)
        ref = _ref(server.reply(b"first", 1, (np.ones(10, np.uint8), {})))
        assert hello(b"second", NONCE + token)  # reconnected: same token
        assert list(server.clients) == [b"second"]
        assert hello(b"third", NONCE + other)  # another client of this process
        assert set(server.clients) == {b"second", b"third"}
        server.release(b"first", [[ref.slot, ref.generation]])  # the old id
        assert server.stats()["shm_bogus_releases"] == 1
        server.release(b"second", [[ref.slot, ref.generation]])
        assert server.stats()["shm_slots_held"] == 0
    finally:
        server.close()


def test_shm_off_answers_false() -> None:
    server = _server(shm=False)
    assert not _hello(server, b"a")
    assert not server.clients


def test_a_reply_to_an_unknown_client_is_todays_frame() -> None:
    server = _server()
    frames = server.reply(b"x", 1, (np.ones(1 << 20, np.uint8), {}))
    assert _ref(frames) is None
    assert isinstance(messages.decode_reply(frames).value, np.ndarray)


def test_handouts_belong_to_their_client_and_generation() -> None:
    server = _server(shm_threshold=1)
    try:
        assert _hello(server, b"a") and _hello(server, b"b")
        value = np.arange(1000, dtype=np.int32)
        first = _ref(server.reply(b"a", 1, (value, {})))
        second = _ref(server.reply(b"a", 2, (value, {})))
        assert first is not None and second is not None
        assert first.slot != second.slot and first.generation != second.generation
        mapped = segments.attach(first.segment)
        copy = np.frombuffer(mapped.map, np.int32, 1000)
        assert np.array_equal(copy, value)  # one copy, in the arena
        server.release(b"b", [[first.slot, first.generation]])  # not b's
        server.release(b"a", [[first.slot, first.generation + 5]])  # old
        server.release(b"a", "junk")
        assert server.stats()["shm_bogus_releases"] == 3
        assert server.stats()["shm_slots_held"] == 2
        server.release(b"a", [[first.slot, first.generation]])
        assert server.stats()["shm_slots_held"] == 1
        # a slot number comes back with a new generation
        third = _ref(server.reply(b"a", 3, (value, {})))
        assert third.slot == first.slot and third.generation > second.generation
        server.release(b"a", [[first.slot, first.generation]])  # stale now
        assert server.stats()["shm_slots_held"] == 2
    finally:
        server.close()


def test_a_pool_frame_is_held_until_released() -> None:
    server = _server()
    pool = FramePool((256, 1024), np.uint8, 2)
    try:
        assert pool.shared and _hello(server, b"a")
        frame = pool.acquire()
        frame[...] = 3
        ref = _ref(server.reply(b"a", 1, (frame, {})))
        assert ref.segment == pool._segment.name
        assert ref.offset == frame.ctypes.data - pool._segment.address
        del frame
        assert pool.available == 1  # the server holds it for the client
        assert server.stats()["shm_copies"] == 0
        server.release(b"a", [[ref.slot, ref.generation]])
        assert pool.available == 2
    finally:
        server.close()


def test_a_non_contiguous_array_is_copied() -> None:
    server = _server(shm_threshold=1)
    try:
        assert _hello(server, b"a")
        value = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)[:, ::2]
        ref = _ref(server.reply(b"a", 1, (value, {})))
        mapped = segments.attach(ref.segment)
        copy = np.frombuffer(mapped.map, np.uint16, value.size).reshape(ref.shape)
        assert np.array_equal(copy, value)
    finally:
        server.close()


def test_bounds_send_over_the_socket_and_count() -> None:
    value = np.ones(5000, np.uint8)  # two pages in the arena
    capped = _server(shm_threshold=1, shm_max_slots=1)
    small = _server(shm_threshold=1, shm_max_bytes=8192)
    try:
        assert _hello(capped, b"a") and _hello(capped, b"b")
        assert _ref(capped.reply(b"a", 1, (value, {}))) is not None
        assert _ref(capped.reply(b"a", 2, (value, {}))) is None  # slot cap
        assert _ref(capped.reply(b"b", 3, (value, {}))) is not None  # b's own
        assert capped.stats()["shm_fallbacks"] == 1
        assert _hello(small, b"a")
        first = _ref(small.reply(b"a", 1, (value, {})))
        assert _ref(small.reply(b"a", 2, (value, {}))) is None  # arena full
        assert small.stats()["shm_fallbacks"] == 1
        small.release(b"a", [[first.slot, first.generation]])
        again = _ref(small.reply(b"a", 3, (value, {})))
        assert again is not None and again.segment == first.segment  # reused
    finally:
        capped.close()
        small.close()


def test_the_slots_of_an_ended_process_are_reclaimed() -> None:
    server = _server(shm_threshold=1)
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(ended.stdout)
    try:
        assert _hello(server, b"alive")
        server.clients[b"gone"] = type(server.clients[b"alive"])(pid, 12345)
        server._next_sweep = float("inf")  # no sweep before both hold a slot
        for identity in (b"alive", b"gone"):
            server.reply(identity, 1, (np.ones(100, np.uint8), {}))
        server._next_sweep = 0.0  # due now (a reply may have swept just before)
        server.tick()
        stats = server.stats()
        assert stats["shm_reclaimed"] == 1 and stats["shm_slots_held"] == 1
        assert list(server.clients) == [b"alive"]
    finally:
        server.close()


def test_reclaimed_slots_are_counted_once_they_are_free(monkeypatch) -> None:
    # stats are read from other threads: one that sees shm_reclaimed grow
    # must see those slots out of shm_slots_held (test_shm_frozen saw 1 held
    # after 2 reclaimed under load)
    server = _server(shm_threshold=1)
    seen = []
    free = server._free

    def watched(slot: int) -> None:
        free(slot)
        stats = server.stats()
        seen.append((stats["shm_reclaimed"], stats["shm_slots_held"]))

    try:
        assert _hello(server, b"alive")
        for request_id in (1, 2):
            server.reply(b"alive", request_id, (np.ones(100, np.uint8), {}))
        monkeypatch.setattr(server, "_free", watched)
        server.forget(b"alive")
        # never a count of reclaimed slots while they are still held
        assert all(reclaimed + held <= 2 for reclaimed, held in seen), seen
        stats = server.stats()
        assert stats["shm_reclaimed"] == 2 and stats["shm_slots_held"] == 0
    finally:
        server.close()


def _foreign_probe(pid: int) -> str:
    """A probe holding NONCE, named as one made by process ``pid`` of
    another pid namespace (a container sharing /dev/shm)."""
    other = (segments.pid_namespace() + 1) & 0xFFFFFFFF
    name = f"framerpc-{os.getuid()}-{pid}-12345-{other:08x}{os.urandom(12).hex()}"
    fd = os.open(os.path.join(segments.SHM_DIR, name), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.write(fd, NONCE)
    finally:
        os.close(fd)
    return name


def _ended_pid() -> int:
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(ended.stdout)


def test_a_client_of_another_pid_namespace_keeps_its_slots() -> None:
    """Its pid means nothing here: that no such process is seen is no sign
    that it ended."""
    server = _server(shm_threshold=1)
    probe = _foreign_probe(_ended_pid())
    try:
        assert server.hello(b"foreign", probe, NONCE)["shm"]
        assert _ref(server.reply(b"foreign", 1, (np.ones(100, np.uint8), {})))
        server._next_sweep = 0.0
        server.tick()
        assert list(server.clients) == [b"foreign"]
        assert server.stats()["shm_slots_held"] == 1
    finally:
        os.unlink(os.path.join(segments.SHM_DIR, probe))
        server.close()


def test_a_client_of_another_pid_namespace_is_forgotten_when_unreachable() -> None:
    """Probed even without slots (its process cannot be checked); gone
    once unreachable for the grace (here 0)."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    options = dataclasses.replace(DEFAULT_OPTIONS, shm_threshold=1)
    server = ShmServer(options, router)
    server._grace = 0.0
    probe = _foreign_probe(_ended_pid())
    try:
        assert server.hello(b"foreign", probe, NONCE)["shm"]
        assert _hello(server, b"local")  # ours, alive: neither probed nor lost
        for _ in range(2):  # the first probe marks it, the second forgets
            server._next_sweep = 0.0
            server.tick()
        assert server.probes == 2
        assert list(server.clients) == [b"local"]
    finally:
        os.unlink(os.path.join(segments.SHM_DIR, probe))
        server.close()
        router.close(0)
        ctx.term()


def test_close_unlinks_the_arena() -> None:
    server = _server(shm_threshold=1)
    assert _hello(server, b"a")
    ref = _ref(server.reply(b"a", 1, (np.ones(100, np.uint8), {})))
    path = os.path.join(segments.SHM_DIR, ref.segment)
    assert os.path.exists(path)
    server.close()
    assert not os.path.exists(path)
    assert server.stats()["shm_slots_held"] == 0


def test_the_general_path_reads_a_calls_releases(tmp_path) -> None:
    from shm_helpers import ShmCamera

    ctx = zmq.Context()
    camera = ShmCamera(ctx, f"ipc://{tmp_path}/general.sock")
    try:
        shm = camera._shm
        assert _hello(shm, b"peer")
        frame = camera.pool.acquire()
        ref = _ref(shm.reply(b"peer", 1, (frame, {})))
        del frame
        header = framing.decode(
            wire_shm.encode_call_releasing(
                2, "ping", [], {}, [(ref.slot, ref.generation)]
            )
        )
        # not through the Responder: as a request behind a backlog would go
        camera._handle_body([b"peer", b""], [], header)
        assert shm.stats()["shm_slots_held"] == 0
        assert camera.pool.available == camera.pool.depth
    finally:
        camera.close()
        ctx.term()


def test_a_release_routes_reply_and_signal_slots_to_their_tables(tmp_path) -> None:
    # one release names a reply's slot, a signal slot nobody holds and one
    # of each that no table has: each table frees or refuses its own
    from shm_helpers import ShmCamera

    ctx = zmq.Context()
    camera = ShmCamera(ctx, f"ipc://{tmp_path}/split.sock")
    plain = _server(shm_threshold=1)  # no signals: their slots are bogus
    try:
        shm = camera._shm
        assert shm.signals is not None and _hello(shm, b"peer")
        ref = _ref(shm.reply(b"peer", 1, (np.ones(shm.threshold, np.uint8), {})))
        signal = wire_shm.SIGNAL_SLOT_BASE + 7
        shm.release(
            b"peer",
            [[signal, 1], [ref.slot, ref.generation], [ref.slot + 9, 1], "junk"],
        )
        stats = shm.stats()
        assert stats["shm_slots_held"] == 0
        assert stats["shm_bogus_releases"] == 2  # the unknown reply slot, junk
        assert stats["shm_signal_bogus"] == 1
        assert _hello(plain, b"peer")
        mine = _ref(plain.reply(b"peer", 1, (np.ones(1 << 16, np.uint8), {})))
        plain.release(b"peer", [[signal, 1], [mine.slot, mine.generation]])
        assert plain.stats()["shm_slots_held"] == 0
        assert plain.stats()["shm_bogus_releases"] == 1
    finally:
        plain.close()
        camera.close()
        ctx.term()
