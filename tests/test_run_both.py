"""tests/run_both.py, the README's test command: both engines, always.

Each case runs the script on a small planted test file in a temporary
folder (two short pytest runs).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from engines import once_per_suite

pytestmark = once_per_suite

SCRIPT = Path(__file__).resolve().parent / "run_both.py"

PLANTED = """
import os

def test_engine_is_the_expected_one():
    assert os.environ.get("FRAMERPC_PURE") in (None, "1")

def test_fails_with_the_{engine}_engine():
    assert (os.environ.get("FRAMERPC_PURE") == "1") != ({engine!r} == "pure")

def test_skipped():
    import pytest
    pytest.skip("planted")
"""


def _run(folder: Path, *args: str, pure_in_env: bool = False):
    env = {"PATH": "/usr/bin:/bin"}
    if pure_in_env:
        env["FRAMERPC_PURE"] = "1"  # must not leak into the compiled run
    return subprocess.run(
        [sys.executable, str(SCRIPT), "-p", "no:cacheprovider", "-q", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("failing", ["compiled", "pure"])
def test_a_failure_in_either_run_fails_and_both_runs_happen(tmp_path, failing):
    (tmp_path / "test_planted.py").write_text(PLANTED.format(engine=failing))
    done = _run(tmp_path, "test_planted.py", pure_in_env=True)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "the compiled engine" in out and "the pure engine" in out
    other = {"compiled": "pure", "pure": "compiled"}[failing]
    assert f"run_both: the {failing} engine FAILED (pytest exit status 1)" in out
    assert f"run_both: the {other} engine passed" in out
    assert out.rstrip().splitlines()[-1] == "run_both: 3 passed, 1 failed, 2 skipped"


def test_both_passing_exits_zero(tmp_path):
    (tmp_path / "test_planted.py").write_text("def test_ok():\n    pass\n")
    done = _run(tmp_path, "test_planted.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("run_both: 2 passed, 0 failed, 0 skipped")


def test_no_test_collected_is_a_failure(tmp_path):
    (tmp_path / "test_planted.py").write_text("def test_ok():\n    pass\n")
    done = _run(tmp_path, "test_planted.py", "-k", "no_such_test")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the compiled engine FAILED: no test ran" in done.stdout
    assert "the pure engine FAILED: no test ran" in done.stdout


def _load_run_both():
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_both_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_workers_are_added_unless_the_arguments_or_the_environment_choose(
    monkeypatch,
):
    run_both = _load_run_both()
    monkeypatch.delenv("FRAMERPC_TEST_WORKERS", raising=False)
    monkeypatch.setattr(run_both.importlib.util, "find_spec", lambda name: object())
    assert run_both._worker_args(["-q"]) == ["-n", str(run_both.WORKERS)]
    for chosen in (["-n", "2"], ["-n2"], ["--numprocesses=4"], ["-p", "no:xdist"]):
        assert run_both._worker_args(chosen) == [], chosen
    monkeypatch.setenv("FRAMERPC_TEST_WORKERS", "0")
    assert run_both._worker_args(["-q"]) == []
    monkeypatch.setenv("FRAMERPC_TEST_WORKERS", "5")
    assert run_both._worker_args(["-q"]) == ["-n", "5"]
    monkeypatch.setenv("FRAMERPC_TEST_WORKERS", "many")
    with pytest.raises(SystemExit):
        run_both._worker_args(["-q"])
    monkeypatch.setattr(run_both.importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv("FRAMERPC_TEST_WORKERS")
    assert run_both._worker_args(["-q"]) == []  # without pytest-xdist
