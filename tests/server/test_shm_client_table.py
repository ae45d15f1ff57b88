"""The server's table of shared-memory clients cannot fill up for good
(issue 11: one client must not affect the others; issue 14's handshake).

A client that shook hands and left without its goodbye (closed its
socket, dropped, crashed in a process that lives on), holding no slot,
was never probed: its entry stayed until its process ended. Once
``_MAX_CLIENTS`` such entries had piled up (a long-lived process opening
proxies, or a hostile one), no client got shared memory again. Now a
handshake at a full table forgets the entries whose connection is gone.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import zmq
from devices import CameraServer

from framerpc import protocol
from framerpc.server import shm_frames
from framerpc.transport import shm as segments
from framerpc.wire import shm as wire_shm

pytestmark = pytest.mark.skipif(not segments.AVAILABLE, reason="needs /dev/shm")

#: Ceiling (s) of a wait that must end: catches a hang only.
WAIT_S = 20.0
TABLE = 3


def _hello(sock: zmq.Socket, rid: int) -> bool:
    """One handshake with a fresh token; whether shared memory was granted."""
    nonce = os.urandom(32)  # 16 random bytes, then the client's token
    probe = segments.Segment(len(nonce))
    probe.map[: len(nonce)] = nonce
    try:
        sock.send_multipart([b"", *wire_shm.encode_hello(rid, probe.name, nonce)])
        while True:  # the server's probes (id -2) come in between
            assert sock.poll(int(WAIT_S * 1000)), "no answer to SHM_HELLO"
            reply = protocol.decode_reply(sock.recv_multipart()[1:])
            if reply.request_id != wire_shm.PROBE_ID:
                break
        assert (reply.ok, reply.request_id) == (True, rid)
        return reply.value.get("shm") is True  # with a lane offer (server.lane)
    finally:
        probe.close()


def test_clients_that_left_do_not_fill_the_table(ctx, monkeypatch) -> None:
    monkeypatch.setattr(shm_frames, "_MAX_CLIENTS", TABLE)
    server = CameraServer(ctx, "tcp://127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    made: list[zmq.Socket] = []

    def dealer() -> zmq.Socket:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(server.url)
        made.append(sock)
        return sock

    try:
        staying = dealer()
        assert _hello(staying, 1)
        for rid in range(2, TABLE + 1):  # the table fills; these leave
            leaving = dealer()
            assert _hello(leaving, rid)
            leaving.close()
        newcomer = dealer()
        deadline = time.monotonic() + WAIT_S
        granted = False
        rid = 100
        while not granted and time.monotonic() < deadline:
            rid += 1
            granted = _hello(newcomer, rid)  # refused until the leavers go
            if not granted:
                time.sleep(0.1)
        assert granted, "clients that left kept the table full"
        # the client still connected kept its entry: no slot was needed
        assert _hello(staying, 999)
        # the bound itself still holds for clients that are connected: the
        # two above hold places, so at most TABLE - 2 more get one (fewer
        # while a leaver's disconnect is still on its way to the server)
        granted_to = [_hello(dealer(), 1000 + n) for n in range(TABLE)]
        assert granted_to.count(True) <= TABLE - 2 and not granted_to[-1]
    finally:
        for sock in made:
            sock.close()
        server.stop_server()
        thread.join(WAIT_S)
    assert not thread.is_alive()
