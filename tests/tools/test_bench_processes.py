"""The benchmark's processes run the framerpc checkout they are given.

A server process loads the harness by path and then framerpc from the
folder it is told (what ``framerpc bench --baseline`` relies on), reports
that folder, answers both buffer idioms and a ``FramePool`` frame, and
stops cleanly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from framerpc.tools.bench import processes, run, systems
from framerpc.tools.bench.workloads import BY_NAME


@pytest.mark.parametrize("system", ["framerpc", "framerpc-mv", "framerpc-pool"])
def test_a_server_process_runs_the_given_checkout(tmp_path, system):
    library = processes.own_library()
    server = processes.start_server(system, "ipc", str(tmp_path), library=library)
    client = None
    try:
        assert server.library == library
        before = processes.cpu_ns(server.process)
        client = systems.make_client(system, server.url)
        for name in ("echo", "64KiB", "5.76MB"):
            client.call(BY_NAME[name])  # raises unless the reply checks out
        after = processes.cpu_ns(server.process)
        if before is not None:  # Linux with schedstat: the server's CPU time
            assert after is not None and after > before
    finally:
        if client is not None:
            client.close()
        assert processes.stop_server(server), "the server needed terminate()"


def _checkout(folder: Path) -> Path:
    """A checkout's layout (src/framerpc): the suite may run an installed
    framerpc, whose folder is site-packages, not a checkout."""
    package = folder / "src" / "framerpc"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    return folder


def test_baseline_names_the_src_folder_of_a_checkout(tmp_path):
    checkout = _checkout(tmp_path / "checkout")
    args = run._parse(["--baseline", str(checkout)])
    assert args.baseline == str((checkout / "src").resolve())
    # a folder holding the package itself is taken as it is
    args = run._parse(["--baseline", str(checkout / "src")])
    assert args.baseline == str((checkout / "src").resolve())
    with pytest.raises(SystemExit):
        run._parse(["--baseline", str(tmp_path)])  # no framerpc there


def test_a_baseline_twin_follows_each_framerpc_system(tmp_path):
    checkout = str(_checkout(tmp_path / "checkout"))
    args = run._parse(["--systems", "raw,framerpc,framerpc-mv", "--baseline", checkout])
    order = run._systems(args, [])
    assert order == [
        "raw",
        "framerpc",
        "framerpc@baseline",
        "framerpc-mv",
        "framerpc-mv@baseline",
    ]
