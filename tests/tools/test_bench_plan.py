"""The benchmark runner's plan: every pair goes through the same phases."""

from __future__ import annotations

import pytest

from framerpc.tools.bench import run
from framerpc.tools.bench.systems import SYSTEMS
from framerpc.tools.bench.workloads import WORKLOADS


@pytest.mark.parametrize("quick", [False, True])
def test_every_system_runs_the_same_phases_in_the_same_order(quick):
    phases = {
        system: [(name, n + warmup) for name, n, warmup in run._plan(system, quick)]
        for system in SYSTEMS
    }
    assert [name for name, _ in phases["raw"]] == [w.name for w in WORKLOADS]
    for system in SYSTEMS:
        assert phases[system] == phases["raw"], system


def test_a_workload_without_a_version_to_report_runs_untimed():
    imagezmq = {name: (n, warmup) for name, n, warmup in run._plan("imagezmq", False)}
    raw = {name: (n, warmup) for name, n, warmup in run._plan("raw", False)}
    assert imagezmq["echo"] == (0, sum(raw["echo"]))
    assert imagezmq["64KiB"] == raw["64KiB"]


def test_a_subset_of_workloads_keeps_their_order():
    plan = run._plan("framerpc", True, ["1MiB", "echo"])
    assert [name for name, _, _ in plan] == ["echo", "1MiB"]
