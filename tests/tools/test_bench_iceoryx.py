"""The benchmark's iceoryx2 system (issue 14's shared-memory reference) and
issue 14's same-host figures (``same_host``).

The runner runs iceoryx2 on its own transport ("shm"), compares it with
raw pyzmq over ipc, prints issue 14's ratios, and skips it with a note
when iceoryx2 is not installed (the ``test`` extra does not install it:
only the first test needs it).
"""

from __future__ import annotations

import importlib.util
import json
import types
from pathlib import Path

import pytest

from framerpc.tools.bench import processes, report, run, same_host, systems
from framerpc.tools.bench.workloads import BY_NAME, make_frame


def _mapping_of(address: int) -> str | None:
    """The file mapped at ``address`` in this process (/proc/self/maps)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) == 6 else ""
    return None


def test_a_server_process_answers_and_leaves_no_service(tmp_path):
    pytest.importorskip("iceoryx2")
    from framerpc.tools.bench import iceoryx

    server = processes.start_server("iceoryx2", "shm", str(tmp_path))
    client = None
    try:
        assert server.url.startswith(iceoryx.SCHEME)
        assert server.implementation.startswith("iceoryx2 ")
        client = systems.make_client("iceoryx2", server.url)
        for name in ("echo", "5.76MB"):
            client.call(BY_NAME[name])  # raises unless the reply checks out
        frame = client.fetch(BY_NAME["24.9MB"])
        assert (frame == make_frame(BY_NAME["24.9MB"])).all()
        if Path("/proc/self/maps").is_file():  # the array is on the slot
            assert "/dev/shm/iox2_" in (_mapping_of(frame.ctypes.data) or "")
        del frame  # gives the slot back
        client.call(BY_NAME["echo"])
        assert iceoryx.service_exists(server.url)
    finally:
        if client is not None:
            client.close()
        assert processes.stop_server(server), "the server needed terminate()"
    assert not iceoryx.service_exists(server.url)
    # every server has a service of its own
    assert iceoryx.new_url() != iceoryx.new_url()


def test_the_runner_measures_iceoryx2_next_to_raw_ipc(tmp_path, capsys):
    pytest.importorskip("iceoryx2")
    out = tmp_path / "out.json"
    argv = ["--quick", "--pairs", "1", "--workloads", "echo", "--transports", "ipc"]
    argv += ["--systems", "raw,iceoryx2", "--stream-seconds", "0", "--json", str(out)]
    assert run.main(argv) == 0
    document = json.loads(out.read_text())
    assert document["errors"] == []
    cells = {(r["system"], r["transport"]): r for r in document["latency"]}
    assert set(cells) == {("raw", "ipc"), ("iceoryx2", "shm")}
    row = cells[("iceoryx2", "shm")]
    assert row["n"] == BY_NAME["echo"].quick
    assert row["ratio_to_raw"] == pytest.approx(
        row["median_ns"] / cells[("raw", "ipc")]["median_ns"]
    )
    assert "iceoryx2 req-resp" in capsys.readouterr().out


def test_without_iceoryx2_the_runner_skips_it_with_a_note(monkeypatch):
    find_spec = importlib.util.find_spec

    def missing(name: str, *args: object) -> object:
        return None if name == "iceoryx2" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    notes: list[str] = []
    args = run._parse(["--systems", "raw,framerpc,iceoryx2"])
    assert run._systems(args, notes) == ["raw", "framerpc"]
    assert notes == ["iceoryx2 is not importable (pip install iceoryx2): skipped"]


def test_iceoryx2_runs_once_per_pair_on_its_own_transport():
    order = ["iceoryx2", "raw", "framerpc"]
    assert run._cells(order, ["tcp", "ipc"]) == [
        ("tcp", "raw"),
        ("tcp", "framerpc"),
        ("ipc", "raw"),
        ("ipc", "framerpc"),
        ("shm", "iceoryx2"),
    ]
    assert run._cells(order, ["ipc"])[-1] == ("shm", "iceoryx2")
    assert run._cells(["raw"], ["ipc"]) == [("ipc", "raw")]


def _results(medians_us: dict[tuple[str, str, str], float]) -> report.Results:
    results = report.Results()
    for key, median in medians_us.items():
        results.samples[key] = [int(median * 1e3)] * 3
        results.pair_medians[key] = [median * 1e3]
        # CPU time per call of both processes: a quarter of the latency each,
        # except iceoryx2's, a half each
        share = 2 if key[0] == "iceoryx2" else 4
        results.cpu[key] = [int(median * 1e3 / share)] * 2 + [1]
    return results


def test_the_report_gives_issue_14s_two_ratios(capsys):
    results = _results(
        {
            ("raw", "ipc", "24.9MB"): 10000.0,
            ("raw", "tcp", "24.9MB"): 16000.0,
            ("framerpc", "ipc", "24.9MB"): 5000.0,
            ("framerpc", "tcp", "24.9MB"): 8000.0,
            ("iceoryx2", "shm", "24.9MB"): 4000.0,
            ("framerpc", "ipc", "5.76MB"): 1000.0,
            ("framerpc", "ipc", "echo"): 50.0,
        }
    )
    rows = report.latency_rows(results)
    shm = next(r for r in rows if r["system"] == "iceoryx2")
    assert shm["ratio_to_raw"] == pytest.approx(0.4)  # against raw over ipc
    tcp = next(r for r in rows if r["system"] == "framerpc" and r["transport"] == "tcp")
    assert tcp["ratio_to_raw"] == pytest.approx(0.5)
    assert tcp["ratio_to_raw_ipc"] == pytest.approx(0.8)
    found = {(e["workload"], e["transport"]): e for e in same_host.shm_ratios(rows)}
    assert set(found) == {("24.9MB", "ipc"), ("24.9MB", "tcp"), ("5.76MB", "ipc")}
    ipc = found[("24.9MB", "ipc")]
    assert ipc["ratio_to_raw ipc"] == pytest.approx(0.5)
    assert ipc["meets_raw ipc"] is True
    assert ipc["ratio_to_iceoryx2"] == pytest.approx(1.25)
    assert ipc["meets_iceoryx2"] is False
    assert ipc["cpu_ratio_to_raw ipc"] == pytest.approx(0.5)
    assert ipc["cpu_ratio_to_iceoryx2"] == pytest.approx(0.625)
    assert found[("24.9MB", "tcp")]["meets_raw ipc"] is False  # 0.8x > 0.6x
    small = found[("5.76MB", "ipc")]  # neither reference measured
    assert small["ratio_to_raw ipc"] is None and small["meets_iceoryx2"] is None

    args = types.SimpleNamespace(
        pairs=1,
        pin=False,
        baseline=None,
        transports=["tcp", "ipc"],
        systems=["raw", "framerpc", "iceoryx2"],
        stream_seconds=0,
        stream_workload="24.9MB",
    )
    report.print_tables(rows, results, args)
    same_host.print_same_host(rows)
    out = capsys.readouterr().out
    assert (
        "raw ipc 10.00 ms: 0.50x ok (cpu 0.50x)   "
        "iceoryx2 4.00 ms: 1.25x MISSED (cpu 0.62x)"
    ) in out
    assert "raw ipc not measured   iceoryx2 not measured" in out


def test_the_pool_frame_is_compared_with_its_own_echo(capsys):
    results = _results(
        {
            ("framerpc-pool", "ipc", "echo"): 100.0,
            ("framerpc-pool", "ipc", "24.9MB"): 150.0,
            ("framerpc-pool", "tcp", "echo"): 100.0,
            ("framerpc-pool", "tcp", "24.9MB"): 900.0,
            ("framerpc", "tcp", "24.9MB"): 9000.0,
            ("framerpc-pool", "tcp", "5.76MB"): 100.0,
        }
    )
    found = {
        e["transport"]: e for e in same_host.pool_ratios(report.latency_rows(results))
    }
    assert set(found) == {"ipc", "tcp"}
    assert found["ipc"]["ratio_to_echo"] == pytest.approx(1.5)
    assert found["ipc"]["meets_echo"] is True and found["ipc"]["meets_ms"] is True
    assert found["ipc"]["ratio_to_plain"] is None
    tcp = found["tcp"]
    assert tcp["meets_echo"] is False and tcp["meets_ms"] is False  # 9x, 0.9 ms
    assert tcp["ratio_to_plain"] == pytest.approx(0.1)
    assert tcp["cpu_ratio_to_echo"] == pytest.approx(9.0)
    same_host.print_same_host(report.latency_rows(results))
    out = capsys.readouterr().out
    assert "ipc   150.0 us: 1.5x its echo 100.0 us ok (cpu 1.50x), ok in time" in out
    assert "pool / plain 0.10x" in out
