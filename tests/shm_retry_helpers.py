"""Helpers of the handshake retry tests (tests/client/test_shm_retry.py,
tests/aio/test_aio_shm_retry.py): a server whose first SHM_HELLO is held
past the client's timeout, as a busy server's would be."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from shm_helpers import ShmCamera

from framerpc.client import shm_retry
from framerpc.transport import shm as segments
from framerpc.wire import shm as wire_shm

#: The client's timeout (ms), hence its handshake's: the server's first
#: SHM_HELLO is held until the client has given up on it.
TIMEOUT_MS = 1000


def serve_held(
    serve: Callable,
    camera: ShmCamera,
    monkeypatch: pytest.MonkeyPatch,
    answer: Callable[[Any], dict] | None = None,
    first_s: float = 0.05,
) -> tuple[threading.Event, list[int]]:
    """Serve ``camera`` (the ``serve`` fixture) with its first SHM_HELLO
    held (``hold_first_hello``, ``answer`` for the later ones), a client's
    first retry due ``first_s`` after it gave up. Returns the event that
    releases the held hello and the one-item hello count."""
    monkeypatch.setattr(shm_retry, "FIRST_S", first_s)
    serve(camera)
    return hold_first_hello(camera, answer)


def say_no(_identity: Any) -> dict:
    """An ``answer`` for ``serve_held``: a final no (``shm=False``, an
    older server)."""
    return wire_shm.hello_reply(False)


def hold_first_hello(
    camera: ShmCamera, answer: Callable[[Any], dict] | None = None
) -> tuple[threading.Event, list[int]]:
    """Make the server hold its first SHM_HELLO (the serve loop is busy)
    until the returned event is set; ``answer`` (default: the real one)
    answers the later ones. Returns the event and a one-item hello count."""
    release, count = threading.Event(), [0]
    real = camera._shm.hello

    def hello(identity: bytes, probe: str, nonce: bytes) -> dict:
        count[0] += 1
        if count[0] == 1:
            assert release.wait(30), "the test never released the first hello"
            return real(identity, probe, nonce)  # its probe is gone: no
        if answer is not None:
            return answer(identity)
        return real(identity, probe, nonce)

    camera._shm.hello = hello
    return release, count


def hold_first_hello_until_given_up(camera: ShmCamera) -> None:
    """Make the server hold its first SHM_HELLO until the client gave up on
    it (its probe segment is gone), for clients whose constructor needs the
    server again before the test could release it (an asyncio proxy with
    signals asks for them right after the handshake)."""
    first = [True]
    real = camera._shm.hello

    def hello(identity: bytes, probe: str, nonce: bytes) -> dict:
        if first[0]:
            first[0] = False
            path = os.path.join(segments.SHM_DIR, probe)
            deadline = time.monotonic() + 30
            while os.path.exists(path):
                assert time.monotonic() < deadline, "the client never gave up"
                time.sleep(0.01)
        return real(identity, probe, nonce)

    camera._shm.hello = hello
