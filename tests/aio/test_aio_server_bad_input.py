"""Bad input against a loop-served device (``await server.serve()``): the
malformed-request corpus of tests/test_bad_input.py, amplification
shapes, a handshake naming a FIFO and mutated messages each get an error
reply (or are dropped), the loop's serve task goes on, and a well-formed
call is answered afterwards (issue 11 for the asyncio server).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets

import msgpack
import pytest
import zmq
from aio_helpers import run
from bad_input_helpers import REPLY_WAIT_MS, _echo_frames
from devices import CameraServer
from test_bad_input import SERVER_CASES

from framerpc import protocol
from framerpc.transport import shm as segments
from framerpc.wire import shm as wire_shm

MIB = 1024 * 1024


def _exchange(sock: zmq.Socket, frames: list) -> list[bytes] | None:
    sock.send_multipart([b"", *frames])
    if not sock.poll(REPLY_WAIT_MS):
        return None
    delimiter, *body = sock.recv_multipart()
    assert delimiter == b""
    return body


def _amplifiers() -> list[bytes]:
    """Headers of 4 MiB that build one object per byte if decoded naively."""
    count = 4 * MIB

    def array32(item: bytes) -> bytes:
        return b"\xdd" + count.to_bytes(4, "big") + item * count

    head = msgpack.packb({"v": 1, "e": "METHOD_CALL", "i": 5, "m": "echo"})
    return [
        array32(b"\x90"),
        b"\x86" + head[1:] + b"\xa1a\x91" + array32(b"\x80") + b"\xa1k\x80",
        b"\x86" + head[1:] + b"\xa1a" + b"\x91" * count + b"\xc0\xa1k\x80",
    ]


def _serve_and(ctx: zmq.Context, attack) -> None:
    """Serve a device on the loop; run ``attack(sock)`` in a thread with a
    raw DEALER; then a well-formed call must be answered."""

    async def main() -> None:
        server = CameraServer(ctx, "tcp://127.0.0.1")
        serving = asyncio.create_task(server.serve())
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(server.url)
        try:
            await asyncio.to_thread(attack, sock)
            assert not serving.done(), "serve() ended"
            good = await asyncio.to_thread(_exchange, sock, _echo_frames(77, "ok?"))
            assert good is not None, "no answer after the attack"
            reply = protocol.decode_reply(good)
            assert (reply.ok, reply.request_id, reply.value) == (True, 77, "ok?")
        finally:
            sock.close()
            server.stop_server()
            await serving

    run(main())


def test_every_malformed_request_gets_an_error_reply(ctx: zmq.Context) -> None:
    def attack(sock: zmq.Socket) -> None:
        for name, (frames, rid, text) in SERVER_CASES.items():
            body = _exchange(sock, frames)
            assert body is not None, f"no reply to {name}"
            reply = protocol.decode_reply(body)
            assert (reply.ok, reply.request_id) == (False, rid), name
            assert text in reply.error, name

    _serve_and(ctx, attack)


def test_amplifying_headers_are_refused(ctx: zmq.Context) -> None:
    def attack(sock: zmq.Socket) -> None:
        for frame in _amplifiers():
            body = _exchange(sock, [frame])
            assert body is not None, "no reply to an amplifying header"
            assert not protocol.decode_reply(body).ok

    _serve_and(ctx, attack)


def test_mutated_messages_do_not_stop_serving(ctx: zmq.Context) -> None:
    rng = random.Random(11)
    seeds = [_echo_frames(1, [1, "x", {"k": [2.5]}])[0]]
    seeds += [frames[0] for frames, _, _ in SERVER_CASES.values()]

    def attack(sock: zmq.Socket) -> None:
        for _ in range(300):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            sock.send_multipart([b"", bytes(data)])
        while sock.poll(500):  # whatever was answered
            sock.recv_multipart()

    _serve_and(ctx, attack)


@pytest.mark.skipif(not segments.AVAILABLE, reason="needs /dev/shm")
def test_a_handshake_naming_a_fifo_is_answered(ctx: zmq.Context) -> None:
    pid = os.getpid()
    start = segments.process_start(pid) or 0
    name = f"framerpc-{os.getuid()}-{pid}-{start}-{secrets.token_hex(16)}"
    path = os.path.join(segments.SHM_DIR, name)
    os.mkfifo(path, 0o600)

    def attack(sock: zmq.Socket) -> None:
        body = _exchange(sock, wire_shm.encode_hello(3, name, b"0123456789abcdef"))
        if body is None:  # blocked in open(): a writer lets it go on
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        assert body is not None, "the handshake blocked the loop"
        assert protocol.decode_reply(body).value == {"shm": False}

    try:
        _serve_and(ctx, attack)
    finally:
        os.unlink(path)
