"""Every ```python block of the README runs as written and exits with status 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from readme_blocks import README, python_blocks

pytestmark = pytest.mark.skipif(not README.exists(), reason="not a source checkout")

BLOCKS = python_blocks() if README.exists() else []


def test_the_readme_has_python_blocks():
    # the extraction itself can fail: three blocks are documented today
    assert len(BLOCKS) >= 3
    assert any("CameraServer" in source for _, source in BLOCKS)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "line, source", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS]
)
def test_block_runs_and_exits_0(line: int, source: str, tmp_path):
    script = tmp_path / f"readme_line{line}.py"
    script.write_text(source)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )
    assert result.returncode == 0, (
        f"README block at line {line} failed:\n{result.stdout[-2000:]}"
        f"\n{result.stderr[-4000:]}"
    )
    assert result.stderr == "", result.stderr[-4000:]


def test_the_device_example_prints_what_it_says(tmp_path):
    _, source = next(b for b in BLOCKS if "CameraServer" in b[1])
    script = tmp_path / "device.py"
    script.write_text(source)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    # each print's comment in the README states its output
    expected = [
        comment.split("#", 1)[1].strip()
        for comment in source.splitlines()
        if comment.lstrip().startswith("print(") and "#" in comment
    ]
    assert result.stdout.splitlines() == expected
