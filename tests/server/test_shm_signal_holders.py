"""``server.shm_signal_holders``: who holds a signal slot, per client and
per subscriber it was sent to (issue 14), without sockets."""

from __future__ import annotations

from collections import Counter
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


def test_a_departed_subscriber_gives_back_nothing_by_itself() -> None:
    holders, freed = _holders()
    slots = [_slot(holders, 1, 4096), _slot(holders, 2)]
    holders.give(slots, [(7, A), (8, B)])
    assert holders.held == {A: 2, B: 2} and holders.bytes == {A: 4096, B: 4096}
    holders.left(7, A)
    assert holders.gone == {7: A} and holders.held == {A: 2, B: 2}
    assert holders.reclaimed == 0 and freed == []
    assert holders.release(A, 1, 10)  # its client's releases still count
    assert holders.slots[1].holders == {B: 1} and holders.held == {A: 1, B: 2}
    holders.forget(A)  # the client went: the rest comes back, gone too
    assert holders.gone == {} and holders.reclaimed == 1
    assert holders.held == {B: 2} and holders.bytes == {B: 4096}
    assert holders.release(B, 1, 10) and holders.release(B, 2, 20)
    assert freed == [1, 2] and holders.held == {} and holders.bytes == {}


def test_the_word_takes_back_what_was_sent_and_not_held() -> None:
    holders, freed = _holders()
    slots = [_slot(holders, 1, 4096), _slot(holders, 2), _slot(holders, 3)]
    holders.give(slots[:2], [(7, A), (8, B)])
    holders.give(slots[2:], [(7, A)])
    holders.left(7, A)
    assert holders.ended(7, A, None) == 0  # it did not say: nothing
    assert holders.gone == {} and freed == []
    # it holds slot 2 only: 1 (B keeps it) and 3 come back
    assert holders.ended(7, A, Counter({(2, 20): 1})) == 2
    assert freed == [3] and holders.reclaimed == 2
    assert holders.held == {A: 1, B: 2} and holders.bytes == {B: 4096}
    assert holders.slots[1].holders == {B: 1}
    assert holders.slots[2].holders == {A: 1, B: 1}
    assert holders.ended(7, A, Counter()) == 1  # it let go of 2 too
    assert holders.ended(8, A, Counter()) == 0  # B's subscriber: not A's
    assert holders.slots[2].holders == {B: 1}


def test_a_release_takes_the_newest_subscription_of_its_client() -> None:
    # a subscription that vanished unnoticed (7) and the one read (9)
    holders, freed = _holders()
    holders.give([_slot(holders, 1)], [(7, A), (9, A)])
    assert holders.held == {A: 2}
    assert holders.release(A, 1, 10)
    assert holders.slots[1].subs == {7: A}
    assert holders.ended(9, A, Counter()) == 0  # its one reference was released
    assert holders.ended(7, A, Counter()) == 1 and freed == [1]


def test_a_claim_again_takes_back_the_other_subscriptions_first() -> None:
    holders, freed = _holders()
    holders.give([_slot(holders, 1)], [(7, A), (9, A)])
    holders.take_back(1, A, 1, keep=9)  # what the claim of 9 says is lost
    assert holders.slots[1].subs == {9: A} and holders.held == {A: 1}
    assert holders.ended(7, A, Counter()) == 0 and freed == []


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
