"""``server.shm_signal_holders``: who holds a signal slot, per client and
per subscriber it was sent to (issue 14), without sockets."""

from __future__ import annotations

import random
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


def test_any_order_of_releases_and_the_word_frees_all_and_nothing_early() -> None:
    # one client, one subscription at a time: its releases and its word
    # (what it holds, read at any moment after its socket closed) reach
    # the server in any order
    for seed in range(300):
        rnd = random.Random(seed)
        holders, _ = _holders()
        sub, is_open, bound, numbers = 7, True, True, iter(range(1, 10_000))
        unread: list[tuple[int, int]] = []  # sent to the open subscription
        alive: list[tuple[int, int]] = []  # arrays the client holds
        sent: list[tuple] = []  # to the server, in flight, in any order
        for _ in range(80):
            roll = rnd.random()
            if roll < 0.3 and bound:  # an emission to the subscription
                number = next(numbers)
                holders.give([_slot(holders, number)], [(sub, A)])
                if is_open:
                    unread.append((number, number * 10))
            elif roll < 0.5 and unread:  # received
                alive.append(unread.pop(0))
            elif roll < 0.7 and alive:  # let go: its release goes out
                sent.append(("release", alive.pop(rnd.randrange(len(alive)))))
            elif roll < 0.8 and is_open:  # the socket closes: the word
                unread.clear()
                is_open = False
                sent.append(("ended", sub, Counter(alive)))
            elif roll < 0.85 and not bound:  # a new subscription, claimed
                sub, is_open, bound = sub + 1, True, True
            if sent and rnd.random() < 0.5:  # the server reads one
                message = sent.pop(rnd.randrange(len(sent)))
                if message[0] == "release":
                    holders.release(A, *message[1])
                else:
                    bound = False
                    holders.ended(message[1], A, message[2])
            for number, generation in alive:  # never freed under the client
                assert holders.slots[number].generation == generation, seed
        for number, generation in alive + [m[1] for m in sent if m[0] == "release"]:
            holders.release(A, number, generation)
        for message in sent:
            if message[0] == "ended":
                holders.ended(message[1], A, message[2])
        if is_open:
            holders.ended(sub, A, Counter())
        assert holders.slots == {} and holders.held == {}, seed
