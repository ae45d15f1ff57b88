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
    # the word on 9 takes back the older 7's reference too (it stayed
    # held until the client went when the release came first)
    assert holders.ended(9, A, Counter()) == 1 and freed == [1]
    assert holders.held == {}


def test_the_word_takes_back_an_older_subscription_s_whatever_the_order() -> None:
    # 7 vanished unnoticed (its SUB connection dropped), 9 is the one the
    # client read; slot 1 went to both, slot 2 to 7 alone
    for release_first in (True, False):
        holders, freed = _holders()
        claims = {7: A, 8: B, 9: A}
        holders.give([_slot(holders, 1)], [(7, A), (8, B), (9, A)])
        holders.give([_slot(holders, 2)], [(7, A)])
        if release_first:
            assert holders.release(A, 1, 10)
        keep = Counter() if release_first else Counter({(1, 10): 1})
        assert holders.ended(9, A, keep, claims) == 2
        assert claims == {8: B}  # 7 unbound too: nothing more sent to it
        if not release_first:  # the array the client holds keeps its slot
            assert holders.slots[1].holders == {A: 1, B: 1}
            assert holders.release(A, 1, 10)
        assert holders.slots[1].holders == {B: 1} and freed == [2]
        assert holders.held == {B: 1} and holders.gone == {}


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


def _one_client(seed: int) -> None:
    """One run of the test below: assert as it goes."""
    rnd = random.Random(seed)
    holders, _ = _holders()
    claims: dict[int, bytes] = {7: A}
    sub, is_open, numbers = 7, True, iter(range(1, 10_000))
    unread: list[tuple[int, int]] = []  # sent to the open subscription
    alive: list[tuple[int, int]] = []  # arrays the client holds
    sent: list[tuple] = []  # to the server, in flight
    word_read = [False]

    def read_one() -> None:
        message = rnd.choice(
            [m for m in sent if m[0] == "ended" or not m[2] or word_read[0]]
        )
        sent.remove(message)
        if message[0] == "release":
            holders.release(A, *message[1])
        else:
            holders.ended(message[1], A, message[2], claims)
            word_read[0] = True

    for _ in range(80):
        roll = rnd.random()
        if roll < 0.3 and claims:  # an emission to the bound ones
            number = next(numbers)
            holders.give([_slot(holders, number)], list(claims.items()))
            if is_open and sub in claims:
                unread.append((number, number * 10))
        elif roll < 0.45 and unread:  # received
            alive.append(unread.pop(0))
        elif roll < 0.6 and alive:  # let go: its release goes out
            pair = alive.pop(rnd.randrange(len(alive)))
            sent.append(("release", pair, not is_open))
        elif roll < 0.65 and is_open:  # the connection drops, comes back
            sub += 1  # what it queued before may still be read
            claims[sub] = A  # claimed again; the old one may stay bound
        elif roll < 0.7 and len(claims) > 1:  # the server sees one go
            old = min(claims)
            holders.left(old, claims.pop(old))
        elif roll < 0.75 and is_open:  # the socket closes: the word
            unread.clear()
            is_open = False
            sent.append(("ended", sub, Counter(alive)))
        if sent and rnd.random() < 0.5:  # the server reads one
            read_one()
        for number, generation in alive:  # never freed under the client
            assert holders.slots[number].generation == generation, seed
    if is_open:
        is_open = False
        sent.append(("ended", sub, Counter(alive)))
    sent += [("release", pair, True) for pair in alive]
    while sent:
        read_one()
    assert holders.slots == {} and holders.held == {}, seed


def test_releases_and_the_word_in_any_order_free_all_and_nothing_early() -> None:
    # one client, one signal socket: its connection may drop and come back
    # (a new subscriber, claimed again, while the server may not have seen
    # the old one depart); its messages reach the server in any order,
    # except that a release sent after the word goes after it (the client
    # lists what it holds and sends the word under its lock)
    for seed in range(400):
        _one_client(seed)
