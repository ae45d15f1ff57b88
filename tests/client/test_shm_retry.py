"""A sync client whose shared-memory handshake got no answer in time tries
again later (issue 14, framerpc.client.shm_retry): a server busy at
connect no longer costs the client shared memory for its whole life; a
final no (``shm=False``, an older server) is never asked again."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import wait_until
from shm_helpers import ShmCamera, ShmCameraProxy, in_shared_memory, needs_shm
from shm_retry_helpers import TIMEOUT_MS, say_no, serve_held
from shm_signal_helpers import SignalCamera, SignalCameraProxy

from framerpc.client import shm_retry


def test_the_back_off_doubles_up_to_its_cap_and_an_answer_resets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(shm_retry.time, "monotonic", lambda: now[0])
    retry = shm_retry.HandshakeRetry()
    assert retry.wait() is None and not retry.accepted
    waits = []
    for _ in range(8):
        retry.answered(None)
        waits.append(retry.wait())
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert retry.tries == 8
    now[0] += 31.0
    assert retry.wait() == 0  # due
    retry.answered(True)
    assert retry.accepted and retry.wait() is None and retry.tries == 0
    retry.answered(None)  # e.g. a restarted server busy at the new handshake
    assert not retry.accepted and retry.wait() == 1.0
    retry.answered(False)  # final: nothing more is scheduled
    assert not retry.accepted and retry.wait() is None


def test_a_yes_after_an_earlier_yes_asks_for_the_signal_claims_again() -> None:
    retry = shm_retry.HandshakeRetry()
    again: list[int] = []
    retry.on_again = lambda: again.append(retry.claims_due)
    retry.answered(None)  # busy at connect
    retry.answered(True)  # a late first yes: the client claims as usual
    assert retry.claims_due == 0 and again == []
    retry.answered(None)  # restarted, busy at the new handshake
    retry.answered(True)  # a yes again: a new subscription to claim
    assert retry.claims_due == shm_retry.CLAIM_TRIES
    assert again == [shm_retry.CLAIM_TRIES]
    retry.claims_due = 0  # claimed
    retry.answered(False)  # a no asks for nothing
    assert retry.claims_due == 0 and len(again) == 1


@needs_shm
def test_a_client_whose_handshake_timed_out_ends_up_on_shared_memory(
    ctx, shm_url, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = ShmCamera(ctx, shm_url)
    release, hellos = serve_held(serve, camera, monkeypatch)
    with ShmCameraProxy(ctx, camera.url, timeout=TIMEOUT_MS) as proxy:
        release.set()  # the constructor has given up on its handshake
        link = proxy._shm
        assert link is not None and not link.retry.accepted
        # on the socket meanwhile: calls work as they did
        frame, _ = proxy.plain(5)
        assert np.all(frame == 5)
        assert wait_until(lambda: link.retry.accepted)
        assert hellos[0] >= 2 and proxy._shm is link
        frame, _ = proxy.grab_pool(3)
        assert in_shared_memory(frame) and np.all(frame == 3)
        assert camera.stats["shm_replies"] >= 1
        del frame
    assert wait_until(lambda: not camera._shm.clients)  # goodbye


@needs_shm
def test_a_final_no_after_a_timeout_is_never_asked_again(
    ctx, shm_url, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = ShmCamera(ctx, shm_url)
    release, hellos = serve_held(serve, camera, monkeypatch, answer=say_no)
    with ShmCameraProxy(ctx, camera.url, timeout=TIMEOUT_MS) as proxy:
        release.set()
        link = proxy._shm
        assert link is not None
        assert wait_until(lambda: proxy._shm is None)  # the retry heard no
        timer = link._timer
        assert timer is not None
        timer.join(10)  # the link's thread ends: no retry can follow
        assert not timer.is_alive()
        asked = hellos[0]
        assert asked >= 2  # more when a retry timed out under load
        assert proxy.ping() == 1  # a call after: still no new handshake
        frame, _ = proxy.plain(4)
        assert np.all(frame == 4) and not in_shared_memory(frame)
        assert hellos[0] == asked
        del frame


@needs_shm
def test_closing_while_a_retry_waits_ends_the_links_thread(
    ctx, shm_url, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = ShmCamera(ctx, shm_url)
    # the retry is never due here
    release, hellos = serve_held(serve, camera, monkeypatch, first_s=3600.0)
    proxy = ShmCameraProxy(ctx, camera.url, timeout=TIMEOUT_MS)
    try:
        release.set()
        link = proxy._shm
        assert link is not None and link.retry.wait() is not None
        timer = link._timer
        assert timer is not None and timer.is_alive()  # it will try again
    finally:
        proxy.close()
    assert not timer.is_alive()  # joined by close
    assert hellos[0] == 1


@needs_shm
def test_a_late_yes_brings_the_signal_arrays_to_shared_memory_too(
    ctx, shm_url, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found at the merge of the retry and signal claims: a client accepted
    only by a retry kept its signals' arrays on the socket."""
    camera = SignalCamera(ctx, shm_url)
    release, _ = serve_held(serve, camera, monkeypatch)
    with SignalCameraProxy(ctx, camera.url, timeout=TIMEOUT_MS) as proxy:
        release.set()
        assert camera.stats["shm_signal_bound"] == 0
        assert wait_until(lambda: camera.stats["shm_signal_bound"] == 1)
        camera.emit_plain(7)
        frame, seq = proxy.next()
        assert seq == 7 and np.all(frame == 7) and in_shared_memory(frame)
        del frame
