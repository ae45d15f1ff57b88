"""``framerpc bench`` reports the path and the copies of each frame, from
the framerpc server's stats (framerpc.tools.bench.report), and runs
framerpc with shared memory off ("framerpc-socket") in the same run."""

from __future__ import annotations

import json

import pytest

from framerpc.tools.bench import report, run
from framerpc.tools.bench.workloads import BY_NAME
from framerpc.transport import shm as segments


@pytest.mark.skipif(not segments.AVAILABLE, reason="no /dev/shm")
def test_one_run_shows_the_shared_memory_and_the_socket_path(tmp_path, capsys):
    out = tmp_path / "out.json"
    argv = ["--quick", "--pairs", "1", "--workloads", "echo,5.76MB"]
    argv += ["--transports", "ipc", "--stream-seconds", "0", "--json", str(out)]
    argv += ["--systems", "framerpc,framerpc-socket,framerpc-pool"]
    assert run.main(argv) == 0
    document = json.loads(out.read_text())
    assert document["errors"] == []
    rows = {(r["system"], r["workload"]): r for r in document["latency"]}
    quick = BY_NAME["5.76MB"].quick
    frames = quick + max(3, quick // 10)  # warm-up calls are counted too
    plain = rows[("framerpc", "5.76MB")]["paths"]
    assert plain == {
        "frames": frames,
        "shm_replies": frames,
        "shm_copies": frames,
        "shm_fallbacks": 0,
        "socket": 0,
        "copies_per_frame": 1.0,
    }
    socket = rows[("framerpc-socket", "5.76MB")]["paths"]
    assert socket["socket"] == frames and socket["shm_replies"] == 0
    assert socket["copies_per_frame"] == 0.0
    pool = rows[("framerpc-pool", "5.76MB")]["paths"]
    assert pool["shm_replies"] == frames and pool["shm_copies"] == 0
    assert rows[("framerpc", "echo")]["paths"] is None  # no frames
    text = capsys.readouterr().out
    # the system column (after "5.76MB   ipc    "), whatever the engine
    lines = {
        line[16:35].strip(): line
        for line in text.splitlines()
        if line.startswith("5.76MB ")
    }
    assert "   shm   1.00" in lines["framerpc"]
    assert "socket   0.00" in lines["framerpc socket"]
    assert "   shm   0.00" in lines["framerpc pool"]
    assert "\npath and copies: from the framerpc server's stats" in text
    same_host = next(e for e in document["shm_ratios"] if e["workload"] == "5.76MB")
    assert same_host["ratio_to_socket"] == pytest.approx(
        rows[("framerpc", "5.76MB")]["median_ns"]
        / rows[("framerpc-socket", "5.76MB")]["median_ns"]
    )


def test_the_counts_are_the_growth_of_the_server_counters():
    before = {"shm_replies": 10, "shm_copies": 4, "shm_fallbacks": 1}
    after = {"shm_replies": 16, "shm_copies": 7, "shm_fallbacks": 3, "other": 9}
    assert report.path_counts(before, after) == (6, 3, 2)
    # a server without shared memory (an older checkout): all socket
    assert report.path_counts({"dropped_replies": 0}, {"dropped_replies": 0}) == (
        0,
        0,
        0,
    )


@pytest.mark.parametrize(
    ("counts", "cells"),
    [
        ([10, 10, 10, 0], ("shm", "1.00")),
        ([10, 10, 0, 0], ("shm", "0.00")),
        ([10, 0, 0, 0], ("socket", "0.00")),
        ([8, 6, 2, 2], ("shm 75%", "0.25")),  # some fell back to the socket
        (None, ("-", "-")),
    ],
)
def test_the_path_and_copies_cells(counts, cells):
    assert report.path_text(report._paths(counts)) == cells
