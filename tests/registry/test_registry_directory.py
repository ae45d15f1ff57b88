"""Tests of framerpc.registry: DeviceDirectory's rules, caps and cost.

No test depends on a wall-clock deadline being met: registries and links
run on a :class:`ManualClock` moved by hand, waits poll a condition with
generous bounds, and "nothing arrived" is shown with a sentinel request.
Helpers shared by tests/registry/test_registry*.py are in registry_helpers.py.
"""

from __future__ import annotations

import heapq

import pytest
from manual_clock import ManualClock
from registry_helpers import inproc_url

from framerpc.registry import (
    AliveCheckState,
    DeviceDirectory,
    DeviceRegistry,
    list_devices,
    register_device,
    send_alive_check,
)

# -- DeviceDirectory: rules, caps and cost, without sockets --------------------


def directory(**kwargs) -> tuple[DeviceDirectory, ManualClock]:
    clock = ManualClock()
    return DeviceDirectory(clock=clock, **kwargs), clock


def test_directory_naming_reuses_the_smallest_free_index():
    table, _ = directory()
    uuids = [table.register("cam", f"tcp://h:{i}")[1] for i in range(4)]
    assert list(table.devices()) == ["cam-0", "cam-1", "cam-2", "cam-3"]
    assert table.unregister(uuids[2]) and table.unregister(uuids[1])
    assert table.register("cam", "tcp://h:8")[0] == "cam-1"
    assert table.register("cam", "tcp://h:9")[0] == "cam-2"
    assert table.register("cam", "tcp://h:10")[0] == "cam-4"
    # a name taken by hand is skipped, and reused once free
    _, manual = table.register("cam", "tcp://h:11", "cam-5")
    assert table.register("cam", "tcp://h:12")[0] == "cam-6"
    assert table.unregister(manual)
    assert table.register("cam", "tcp://h:13")[0] == "cam-5"
    # collisions count from 1 and share the names with the type's sequence
    assert table.register("x", "tcp://h:20", "cam")[0] == "cam"
    assert table.register("x", "tcp://h:21", "cam")[0] == "cam-7"


def test_directory_expiry_and_check_ins():
    removed: list[str] = []
    table, clock = directory(on_removed=lambda entry: removed.append(entry.name))
    _, keep = table.register("cam", "tcp://h:1", "keep", alive_timeout=1.0)
    _, lose = table.register("cam", "tcp://h:2", "lose", alive_timeout=1.0)
    clock.advance(0.9)
    assert table.check_in(keep) and table.prune() == 0
    clock.advance(0.2)  # past lose's deadline, not keep's
    assert table.prune() == 1 and removed == ["lose"]
    assert not table.check_in(lose)
    # a shorter timeout in a check-in brings the deadline forward
    assert table.check_in(keep, alive_timeout=0.1)
    clock.advance(0.11)
    assert table.prune() == 1 and removed == ["lose", "keep"]
    assert table.devices() == {}
    # an expired name is free again
    assert table.register("cam", "tcp://h:3", "keep")[0] == "keep"


def test_directory_caps():
    table, _ = directory(max_devices=2, max_alive_timeout=5.0, default_alive_timeout=5)
    table.register("cam", "tcp://h:1", "a")
    table.register("cam", "tcp://h:2", "b")
    with pytest.raises(ValueError, match="full"):
        table.register("cam", "tcp://h:3", "c")
    # replacing an entry (same address, or overwrite) is allowed when full
    assert table.register("cam", "tcp://h:1", "a2")[0] == "a2"
    assert table.register("cam", "tcp://h:9", "b", overwrite=True)[0] == "b"
    assert table.devices() == {"a2": ("cam", "tcp://h:1"), "b": ("cam", "tcp://h:9")}
    with pytest.raises(ValueError, match="max_alive_timeout"):
        table.register("cam", "tcp://h:1", alive_timeout=5.5)
    _, dev_uuid = table.register("cam", "tcp://h:1", alive_timeout=5.0)
    with pytest.raises(ValueError, match="at most 5 s"):
        table.check_in(dev_uuid, alive_timeout=6.0)
    with pytest.raises(ValueError, match="default_alive_timeout"):
        DeviceDirectory(default_alive_timeout=30, max_alive_timeout=10)
    with pytest.raises(ValueError, match="max_devices"):
        DeviceDirectory(max_devices=0)


def test_directory_owners():
    table, clock = directory()
    alice, mallory = "alice-key", "mallory-key"
    name, token = table.register("cam", "tcp://alice:1", "cam", owner=alice)
    assert name == "cam" and table.entry("cam").owner == alice
    # another owner: no takeover, no eviction, no check-in, no unregister
    assert table.register("x", "tcp://m:1", "cam", True, owner=mallory)[0] == "cam-1"
    assert table.register("x", "tcp://alice:1", "evil", owner=mallory)[0] == "evil"
    assert not table.unregister(token, owner=mallory)
    assert not table.check_in(token, owner=mallory)
    assert not table.unregister(token)  # no owner is not alice either
    assert table.devices()["cam"] == ("cam", "tcp://alice:1")
    # the same owner, restarted: same address takes the entry back at once
    _, token2 = table.register("cam", "tcp://alice:1", "cam", False, owner=alice)
    assert table.entry("cam").address == "tcp://alice:1" and token2 != token
    assert not table.check_in(token, owner=alice)  # the old token is gone
    assert table.entry("evil").address == "tcp://alice:1"  # mallory's own entry
    # ... or another address with overwrite
    assert table.register("cam", "tcp://alice:2", "cam", True, owner=alice)[0] == "cam"
    assert table.devices()["cam"] == ("cam", "tcp://alice:2")
    # once alice's entry expired, anyone may take the name
    clock.advance(DeviceDirectory().default_alive_timeout + 1)
    assert table.register("x", "tcp://m:2", "cam", owner=mallory)[0] == "cam"
    assert table.entry("cam").owner == mallory


def test_directory_many_owners_at_one_address():
    # Under CURVE anyone may make keys: each gets its own entry at a shared
    # address, and replacing one touches only that owner's entry.
    table, _ = directory()
    tokens = {
        f"key-{i}": table.register("cam", "tcp://shared:1", "cam", owner=f"key-{i}")[1]
        for i in range(500)
    }
    assert len(table) == 500 and table.entry("cam").owner == "key-0"
    _, new_token = table.register("cam", "tcp://shared:1", "x", owner="key-7")
    assert len(table) == 500 and table.entry("x").owner == "key-7"
    assert not table.check_in(tokens["key-7"], owner="key-7")
    assert table.check_in(new_token, owner="key-7")
    assert all(table.check_in(tokens[f"key-{i}"], owner=f"key-{i}") for i in (0, 499))


class CountingDict(dict):
    """A dict that counts whole-table walks and membership tests."""

    walks = 0
    lookups = 0

    def __iter__(self):
        CountingDict.walks += 1
        return super().__iter__()

    def values(self):
        CountingDict.walks += 1
        return super().values()

    def items(self):
        CountingDict.walks += 1
        return super().items()

    def keys(self):
        CountingDict.walks += 1
        return super().keys()

    def __contains__(self, key):
        CountingDict.lookups += 1
        return super().__contains__(key)


def test_requests_do_not_walk_the_table(monkeypatch):
    """REGISTER, CHECK_ALIVE, UNREGISTER and pruning touch a few entries,
    never all of them: O(1) or O(log n) each, whatever the table's size."""
    table, clock = directory(max_devices=5000)
    table._by_uuid = CountingDict()
    table._by_name = CountingDict()
    table._by_address = CountingDict()
    monkeypatch.setattr(CountingDict, "walks", 0)
    monkeypatch.setattr(CountingDict, "lookups", 0)
    n = 3000
    # unnamed devices of one type: the old code tried type-0, type-1... each time
    tokens = [table.register("cam", f"tcp://h:{i}")[1] for i in range(n)]
    named = [table.register("cam", f"tcp://n:{i}", "dev")[1] for i in range(n // 3)]
    for i, token in enumerate(tokens):
        clock.advance(0.001)
        assert table.check_in(token, alive_timeout=10.0 if i % 2 else 5.0)
    for token in tokens[::2] + named[::2]:
        assert table.unregister(token)
    clock.advance(7.0)  # the 5 s entries left expire
    assert table.prune() == 0
    requests = n + n // 3 + n + (n + n // 3 + 1) // 2 + 1
    # the only walks are the heap's rare rebuilds: O(n) once per n removals
    assert CountingDict.walks * n <= 2 * requests
    assert CountingDict.lookups <= 3 * requests  # a few per request, not n
    # stale heap items are dropped, so the heap stays proportional to the table
    assert len(table._expiry) <= 2 * len(table) + 64
    assert len(table) == n // 2 + n // 3 - (n // 3 + 1) // 2


def test_expiry_costs_only_what_is_due(monkeypatch):
    table, clock = directory(max_devices=50_000)
    for i in range(20_000):
        table.register("cam", f"tcp://h:{i}", alive_timeout=1.0 + i % 7)
    pops = 0
    real_pop = heapq.heappop

    def counting_pop(heap):
        nonlocal pops
        pops += 1
        return real_pop(heap)

    monkeypatch.setattr(heapq, "heappop", counting_pop)
    for _ in range(100):
        clock.advance(0.001)
        assert table.prune() == 0
    assert pops == 0  # nothing due: nothing looked at
    clock.advance(1.0)  # the 1 s group is due
    assert table.prune() == len(range(0, 20_000, 7))
    assert pops == len(range(0, 20_000, 7))


def test_registry_caps_are_error_replies(ctx, start_registry):
    reg = start_registry(max_devices=2, max_alive_timeout=5.0, default_alive_timeout=5)
    _, first = register_device(ctx, reg.url, "cam", "tcp://h:1", "a", alive_timeout=5)
    register_device(ctx, reg.url, "cam", "tcp://h:2", "b", alive_timeout=5)
    with pytest.raises(RuntimeError, match="full"):
        register_device(ctx, reg.url, "cam", "tcp://h:3", "c", alive_timeout=5)
    with pytest.raises(RuntimeError, match="max_alive_timeout"):
        register_device(ctx, reg.url, "cam", "tcp://h:1", "a", alive_timeout=60)
    with pytest.raises(RuntimeError, match="max_alive_timeout"):
        send_alive_check(ctx, reg.url, first, alive_timeout=60)
    assert send_alive_check(ctx, reg.url, first, alive_timeout=5) is AliveCheckState.ok
    assert list_devices(ctx, reg.url) == {
        "a": ("cam", "tcp://h:1"),
        "b": ("cam", "tcp://h:2"),
    }
    with pytest.raises(ValueError, match="default_alive_timeout"):
        DeviceRegistry(ctx, inproc_url(), default_alive_timeout=700)
