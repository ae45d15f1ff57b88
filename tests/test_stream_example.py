"""examples/stream_viewers.py runs and prints each subscriber's figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "stream_viewers.py"


@pytest.mark.skipif(not EXAMPLE.exists(), reason="not a source checkout")
def test_the_stream_example_prints_both_subscribers():
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--seconds", "1", "--fps", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "published about 20 frames at 20 fps"
    figures = r"\d+ frames, \d+\.\d frames/s, \d+ dropped"
    assert re.fullmatch(f"viewer: {figures}", lines[1]), lines
    assert re.fullmatch(f"slow writer: {figures}", lines[2]), lines
