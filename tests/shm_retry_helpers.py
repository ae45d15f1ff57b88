"""Helpers of the handshake retry tests (tests/client/test_shm_retry.py,
tests/aio/test_aio_shm_retry.py): a server whose first SHM_HELLO is held
past the client's timeout, as a busy server's would be."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from shm_helpers import ShmCamera

#: The client's timeout (ms), hence its handshake's: the server's first
#: SHM_HELLO is held until the client has given up on it.
TIMEOUT_MS = 1000


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
