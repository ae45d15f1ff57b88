"""``server.shm_signal_holders``: who holds a signal slot, per client and
per subscriber it was sent to (issue 14), without sockets."""

from __future__ import annotations

from types import SimpleNamespace

from framerpc.server.shm_signal_holders import Holders, Slot

A, B = b"client-a", b"client-b"


def _holders() -> tuple[Holders, list[int]]:
    freed: list[int] = []
    holders: Holders

    def free(number: int) -> None:
        freed.append(number)
        del holders.slots[number]

    holders = Holders(free)
    return holders, freed


def _slot(holders: Holders, number: int, size: int = 0) -> tuple[int, Slot]:
    arena = SimpleNamespace(size=size) if size else None
    slot = holders.slots[number] = Slot(number * 10, None, arena)
    return number, slot


def test_a_departed_subscriber_gives_back_its_own_references_only() -> None:
    holders, freed = _holders()
    slots = [_slot(holders, 1, 4096), _slot(holders, 2)]
    holders.give(slots, [(7, A), (8, B)])
    assert holders.held == {A: 2, B: 2} and holders.bytes == {A: 4096, B: 4096}
    assert holders.departed(7, A) == 2
    assert holders.reclaimed == 2 and freed == []
    assert holders.held == {B: 2} and holders.bytes == {B: 4096}
    assert all(slot.holders == {B: 1} and slot.subs == {8: B} for _, slot in slots)
    assert not holders.release(A, 1, 10)  # stale: B keeps it
    assert holders.slots[1].holders == {B: 1}
    assert holders.release(B, 1, 10) and holders.release(B, 2, 20)
    assert freed == [1, 2] and holders.held == {} and holders.bytes == {}
    assert holders.departed(8, B) == 0


def test_a_release_takes_the_newest_subscription_of_its_client() -> None:
    # a subscription that vanished unnoticed (7) and the one read (9)
    holders, freed = _holders()
    holders.give([_slot(holders, 1)], [(7, A), (9, A)])
    assert holders.held == {A: 2}
    assert holders.release(A, 1, 10)
    assert holders.slots[1].subs == {7: A}
    assert holders.departed(9, A) == 0  # its one reference was released
    assert holders.departed(7, A) == 1 and freed == [1]


def test_a_claim_again_takes_back_the_other_subscriptions_first() -> None:
    holders, freed = _holders()
    holders.give([_slot(holders, 1)], [(7, A), (9, A)])
    holders.take_back(1, A, 1, keep=9)  # what the claim of 9 says is lost
    assert holders.slots[1].subs == {9: A} and holders.held == {A: 1}
    assert holders.departed(7, A) == 0 and freed == []


def test_a_refused_send_is_withdrawn_once_whatever_happened_meanwhile() -> None:
    holders, freed = _holders()
    number, slot = _slot(holders, 1)
    holders.give([(number, slot)], [(7, A), (8, B)])
    holders.rename(A, b"client-a2")  # a reconnection in the serving thread
    holders.withdraw(number, slot, 7)
    assert slot.holders == {B: 1} and holders.held == {B: 1}
    holders.withdraw(number, slot, 7)  # nothing left for it
    holders.forget(B)
    assert freed == [1] and holders.reclaimed == 1
    holders.withdraw(number, slot, 8)  # the slot is gone: nothing
    assert holders.held == {} and holders.slots == {}
