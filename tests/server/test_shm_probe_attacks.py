"""A peer's ``SHM_HELLO`` names the probe file the server opens: whatever
lies under that name (a FIFO, a directory, a symlink, a name too long)
must give a plain "no shared memory" answer at once, never block the
serve loop (issue 11: a hostile peer cannot stall the server; issue 14's
handshake). The client's ``attach`` opens names the server sends: same.

A FIFO was opened without ``O_NONBLOCK``: ``open`` waited for a writer,
so one message stopped the server for good (even once the FIFO was
unlinked). Each case below that could block runs in a thread; a writer
opened on the FIFO afterwards lets a blocked ``open`` return, so the
threads are always joined.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator

import pytest
import zmq
from devices import CameraProxy, CameraServer

from framerpc.server.shm_frames import ShmServer
from framerpc.transport import DEFAULT_OPTIONS
from framerpc.transport import shm as segments
from framerpc.wire import messages
from framerpc.wire import shm as wire_shm

pytestmark = pytest.mark.skipif(not segments.AVAILABLE, reason="needs /dev/shm")

NONCE = b"0123456789abcdef"
#: Generous bound (s) for an answer that must come: catches a hang only.
WAIT_S = 20.0


def _name() -> str:
    """A segment name of this user and this (live) process: the stale
    sweep of other framerpc processes leaves it alone."""
    pid = os.getpid()
    start = segments.process_start(pid) or 0
    return f"framerpc-{os.getuid()}-{pid}-{start}-{secrets.token_hex(16)}"


@pytest.fixture
def fifo() -> Iterator[str]:
    name = _name()
    path = os.path.join(segments.SHM_DIR, name)
    os.mkfifo(path, 0o600)
    yield name
    os.unlink(path)


def _unblock(name: str) -> None:
    """Open a writer on FIFO ``name``: a reader blocked in ``open`` returns."""
    try:
        os.close(
            os.open(os.path.join(segments.SHM_DIR, name), os.O_WRONLY | os.O_NONBLOCK)
        )
    except OSError:  # no reader waits (ENXIO): nothing was blocked
        pass


def _in_thread(run: Callable[[], object], fifo_name: str) -> list:
    """``run()``'s outcome, [value] or [exception]; [] if it blocked."""
    outcome: list = []

    def target() -> None:
        try:
            outcome.append(run())
        except Exception as exc:  # the caller checks which
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(WAIT_S)
    blocked = thread.is_alive()
    if blocked:
        _unblock(fifo_name)
        thread.join(WAIT_S)
    return [] if blocked else outcome


def test_a_fifo_named_as_probe_is_refused_without_blocking(fifo: str) -> None:
    server = ShmServer(DEFAULT_OPTIONS)
    try:
        outcome = _in_thread(lambda: server.hello(b"x", fifo, NONCE), fifo)
        assert outcome, "the handshake blocked opening a FIFO"
        assert outcome == [{wire_shm.REF_KEY: False}]
        assert not server.clients
    finally:
        server.close()


def test_a_fifo_named_in_a_reference_is_refused_without_blocking(fifo: str) -> None:
    outcome = _in_thread(lambda: segments.attach(fifo), fifo)
    assert outcome, "attach blocked opening a FIFO"
    assert isinstance(outcome[0], OSError)


def test_other_files_named_as_probe_are_refused(tmp_path) -> None:
    server = ShmServer(DEFAULT_OPTIONS)
    made: list[str] = []
    try:
        directory = _name()
        os.mkdir(os.path.join(segments.SHM_DIR, directory), 0o700)
        made.append(directory)
        real = segments.Segment(len(NONCE))  # a good probe, reached by a link
        real.map[: len(NONCE)] = NONCE
        link = _name()
        os.symlink(
            os.path.join(segments.SHM_DIR, real.name),
            os.path.join(segments.SHM_DIR, link),
        )
        made.append(link)
        try:
            for name in (
                directory,
                link,
                "framerpc-" + "9" * 300,
                "framerpc-" + "9" * 5000 + "-1-1-" + "a" * 32,  # int() refuses it
                "../" * 10 + "dev/zero",
            ):
                assert server.hello(b"x", name, NONCE) == {wire_shm.REF_KEY: False}, (
                    name
                )
            assert not server.clients
            assert server.hello(b"x", real.name, NONCE)[wire_shm.REF_KEY]  # control
        finally:
            real.close()
    finally:
        for name in made:
            path = os.path.join(segments.SHM_DIR, name)
            os.rmdir(path) if os.path.isdir(path) and not os.path.islink(
                path
            ) else os.unlink(path)
        server.close()


def test_a_hello_naming_a_fifo_does_not_stop_the_server(
    ctx: zmq.Context, fifo: str
) -> None:
    server = CameraServer(ctx, "tcp://127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hostile = ctx.socket(zmq.DEALER)
    hostile.setsockopt(zmq.LINGER, 0)
    proxy = CameraProxy(ctx, server.url)
    try:
        hostile.connect(server.url)
        hostile.send_multipart([b"", *wire_shm.encode_hello(7, fifo, NONCE)])
        answered = hostile.poll(int(WAIT_S * 1000))
        if not answered:
            _unblock(fifo)  # let the serve loop go on so the server stops
        assert answered, "no answer to a handshake naming a FIFO"
        _, *body = hostile.recv_multipart()
        reply = messages.decode_reply(body)
        assert (reply.ok, reply.request_id, reply.value) == (True, 7, {"shm": False})
        assert proxy.echo("after") == "after"
    finally:
        _unblock(fifo)
        proxy.close()
        hostile.close()
        server.stop_server()
        thread.join(WAIT_S)
    assert not thread.is_alive()
