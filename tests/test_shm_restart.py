"""Shared memory across a server restarted on the same address (issue 14):
the client's signal subscription is claimed again (a signal's array is
mapped on the new server's segment instead of coming as a frame), and the
release of an array of the old server cannot free a slot of the new one."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import wait_until
from devices import bind_again
from shm_helpers import SHAPE, ShmCamera, ShmCameraProxy, in_shared_memory, needs_shm
from shm_retry_helpers import TIMEOUT_MS, hold_first_hello_until_given_up
from shm_signal_helpers import SignalCamera, SignalCameraProxy, bound

from framerpc.client import shm_retry

pytestmark = needs_shm


def test_a_restarted_server_gets_the_subscription_claimed_again(
    ctx, tmp_path, serve
) -> None:
    url = f"ipc://{tmp_path}/cam.sock"
    first = serve(SignalCamera(ctx, url))
    with SignalCameraProxy(ctx, first.url) as proxy:
        assert bound(proxy) and first.stats["shm_signal_bound"] == 1
        first.emit_plain(1)
        kept, seq = proxy.next()
        assert seq == 1 and in_shared_memory(kept)
        first.close()
        second = serve(bind_again(lambda: SignalCamera(ctx, url)))
        # the client shakes hands again, learns its new subscriber id and
        # claims it
        assert wait_until(lambda: second.stats["shm_signal_bound"] == 1)
        second.emit_plain(2)
        frame, seq = proxy.next()
        assert seq == 2 and frame.shape == SHAPE and np.all(frame == 2)
        assert in_shared_memory(frame)  # not a frame: the new server's segment
        assert frame.base._map.name != kept.base._map.name
        stats = second.stats
        assert stats["shm_signal_refs"] == 1 and stats["shm_signal_fallbacks"] == 0
        assert np.all(kept == 1)  # the old mapping lives on
        del frame, kept
        assert wait_until(lambda: second.stats["shm_signal_slots_held"] == 0)


def test_a_restarted_server_busy_at_the_new_handshake_gets_it_claimed_too(
    ctx, tmp_path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new handshake times out, a retry gets the yes: the retry's own
    claim declines (it would name the old id), the claims after a yes
    again bind the subscription."""
    monkeypatch.setattr(shm_retry, "FIRST_S", 0.05)
    url = f"ipc://{tmp_path}/cam.sock"
    first = serve(SignalCamera(ctx, url))
    with SignalCameraProxy(ctx, first.url, timeout=TIMEOUT_MS) as proxy:
        assert first.stats["shm_signal_bound"] == 1
        first.close()
        second = bind_again(lambda: SignalCamera(ctx, url))
        hold_first_hello_until_given_up(second)
        serve(second)
        assert wait_until(lambda: second.stats["shm_signal_bound"] == 1)
        link = proxy._shm
        assert link is not None
        assert wait_until(lambda: link.retry.claims_due == 0)  # bound: no more
        second.emit_plain(4)
        frame, seq = proxy.next()
        assert seq == 4 and np.all(frame == 4) and in_shared_memory(frame)
        del frame


def test_releasing_an_old_servers_array_leaves_the_new_servers_slot(
    ctx, tmp_path, serve
) -> None:
    """Both servers numbered their first handout slot 0, generation 1: the
    release of the old array freed the new server's slot while the client
    read the new one (its memory could be refilled under it)."""
    url = f"ipc://{tmp_path}/cam.sock"
    first = serve(ShmCamera(ctx, url))
    with ShmCameraProxy(ctx, first.url) as proxy:
        kept, _ = proxy.plain(1)
        assert in_shared_memory(kept)
        first.close()
        second = serve(bind_again(lambda: ShmCamera(ctx, url)))
        assert wait_until(lambda: len(second._shm.clients) == 1)
        frame, _ = proxy.plain(2)
        assert in_shared_memory(frame) and np.all(frame == 2)
        del kept  # its release goes to the new server
        assert proxy.ping() == 1  # with this call at the latest
        stats = second.stats
        assert stats["shm_slots_held"] == 1 and stats["shm_bogus_releases"] == 1
        assert np.all(frame == 2)
        del frame
        assert wait_until(lambda: second.stats["shm_slots_held"] == 0)
