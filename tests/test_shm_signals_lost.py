"""Signal references sent to a subscription that vanished while its client
stayed connected, before the server found it departed (issue 14,
``server.shm_share.unheld``; once found, ``test_shm_signals_dropped``):
the client's claim of its new subscription lists the signal slots it
holds, and the server takes back the references that never reached it,
leaving those it holds; an emission that names another subscriber id
than the bound one asks for that claim."""

from __future__ import annotations

import numpy as np
import zmq
from conftest import wait_until
from shm_helpers import in_shared_memory, needs_shm
from shm_signal_helpers import SignalCamera, SignalCameraProxy, bound

from framerpc import protocol
from framerpc.client import shm_retry
from framerpc.client import shm_signals as client_shm_signals
from framerpc.server import fanout
from framerpc.wire import framing
from framerpc.wire import shm as wire_shm
from framerpc.wire.messages import PROTOCOL_VERSION

pytestmark = needs_shm

_SMALL = 200  # the seq of the small emissions that look for the ghost


def _ghost_of(proxy: SignalCameraProxy, camera: SignalCamera) -> tuple:
    """A second subscription, bound to ``proxy``'s connection as a claim
    of its own would bind it (its nonce read here): the references sent
    to it are held by ``proxy``'s connection but never reach its leases.
    Returns the SUB socket and its subscriber id."""
    ghost = proxy.context.socket(zmq.SUB)
    ghost.setsockopt(zmq.SUBSCRIBE, b"")
    ghost.setsockopt(zmq.LINGER, 0)
    try:
        return ghost, _bind(ghost, proxy, camera)
    except BaseException:
        ghost.close()
        raise


def _bind(ghost: zmq.Socket, proxy: SignalCameraProxy, camera: SignalCamera) -> int:
    ghost.connect(proxy._signal_receiver.url)
    ident = None

    def subscribed() -> bool:
        nonlocal ident
        camera.emit_small(_SMALL)
        if ghost.poll(50):
            ident = wire_shm.subscriber_of(ghost.recv_multipart()[0])
        return ident is not None

    assert wait_until(subscribed)
    assert client_shm_signals._ask(proxy, [ident])  # the nonce goes to ghost

    def nonce() -> bytes | None:
        while ghost.poll(20000):  # a ceiling: the nonce is on its way
            emission = protocol.decode_signal(ghost.recv_multipart(copy=False))
            if emission.name == protocol.SYNC_SIGNAL:
                return emission.args[0]
        return None

    assert client_shm_signals._ask(proxy, [nonce()])
    assert ident is not None
    return ident


def test_references_lost_with_a_vanished_subscription_come_back_at_the_claim(
    ctx, shm_url, serve
) -> None:
    camera = serve(SignalCamera(ctx, shm_url))
    with SignalCameraProxy(ctx, camera.url) as proxy:
        assert bound(proxy)
        # the ghost stays open until the claim: the server has not found
        # it departed (that would take its references back at once)
        ghost, _ = _ghost_of(proxy, camera)
        try:
            assert camera.stats["shm_signal_bound"] == 2
            held = []
            for seq in range(3):  # each slot: one reference per subscription
                camera.emit_plain(seq)
                frame, got = proxy.next()
                while got == _SMALL:  # those that found the ghost's subscription
                    frame, got = proxy.next()
                held.append(frame)
            assert all(
                in_shared_memory(f) and np.all(f == i) for i, f in enumerate(held)
            )
            stats = camera.stats
            assert stats["shm_signal_slots_held"] == 3
            assert stats["shm_signal_lost"] == 0
            proxy._shm.retry.claim_again()  # as a new subscriber id would
            assert wait_until(lambda: camera.stats["shm_signal_lost"] == 3)
            assert wait_until(lambda: proxy._shm.retry.claims_due == 0)
        finally:
            ghost.close()  # its references never reached the client
        # its departure finds nothing left to take back
        assert wait_until(lambda: camera.stats["shm_signal_bound"] == 1)
        assert camera.stats["shm_signal_reclaimed"] == 0
        # the references the client holds stay until it lets them go
        assert camera.stats["shm_signal_slots_held"] == 3
        assert all(np.all(f == i) for i, f in enumerate(held))
        del held, frame
        assert wait_until(lambda: camera.stats["shm_signal_slots_held"] == 0)
        camera.emit_plain(7)  # and it is bound still
        frame, seq = proxy.next()
        while seq == _SMALL:
            frame, seq = proxy.next()
        assert seq == 7 and in_shared_memory(frame)
        del frame


class _Leases:
    def __init__(self) -> None:
        self.retry = shm_retry.HandshakeRetry()
        self.woken = 0
        self.retry.on_again = self._wake

    def _wake(self) -> None:
        self.woken += 1


def _emission(ident: int) -> list:
    header = {
        "_": ident.to_bytes(4, "big"),
        "v": PROTOCOL_VERSION,
        "e": "EMIT_SIGNAL",
        "s": "frame_ready",
        "x": [1, 2],
        "q": None,
        "ep": None,
    }
    return [zmq.Frame(bytes(f)) for f in framing.encode(header)]


def test_an_emission_naming_another_subscriber_asks_for_a_claim() -> None:
    leases = _Leases()
    shm = client_shm_signals.SignalShm(leases)
    assert fanout.native_prefix(7) == bytes(_emission(7)[0].buffer[:9])
    shm.decode(_emission(7))  # not bound yet: nothing to compare
    assert leases.retry.claims_due == 0
    shm.claimed = 7
    assert shm.decode(_emission(7)).args == [1, 2]
    assert leases.retry.claims_due == 0 and leases.woken == 0
    shm.decode(_emission(8))  # the signal socket reconnected: a new id
    assert leases.retry.claims_due == shm_retry.CLAIM_TRIES
    assert leases.woken == 1 and shm.claimed is None
    shm.decode(_emission(9))  # asked once
    assert leases.woken == 1
