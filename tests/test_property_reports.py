"""A failing property test reports in a few KB, whatever its values weigh.

The profile registered in conftest.py and the helpers in short_repr.py are
what keep a failure of a frames property test readable (it once printed
100 MB of ``b"xxxx..."``). Checked on a planted failure, run by a separate
pytest with ``CI=true`` (where pytest does not cut assertion messages).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engines import once_per_suite
from short_repr import LONG, assert_same, describe

HERE = Path(__file__).resolve().parent

pytestmark = once_per_suite

PLANTED = """
from hypothesis import given, settings, strategies as st
from short_repr import assert_same

BIG = 1 << 20

@settings(max_examples=50)
@given(st.lists(st.sampled_from([b"x" * BIG, bytes(range(256)) * 4096]), min_size=1))
def test_planted_failure_on_megabyte_frames(frames):
    again = [bytes(f[:-1]) + b"?" for f in frames]  # always differs
    assert_same(frames, again, "frames")
"""


def test_a_planted_failure_reports_in_a_few_kb(tmp_path):
    # conftest.py (the hypothesis profile) and the helper modules it imports
    for helper in HERE.glob("*.py"):
        if not helper.name.startswith("test_"):
            shutil.copy(helper, tmp_path / helper.name)
    (tmp_path / "test_planted.py").write_text(PLANTED)
    env = {**os.environ, "CI": "true"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-p",
            "no:randomly",
            "test_planted.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-4000:]
    assert "1 failed" in output, output[-4000:]
    assert "frames differ" in output, output[-4000:]
    assert "b'x' * 1048576" in output  # the falsifying example, summarised
    assert len(output) < 16_000, f"{len(output)} characters of report"


def test_describe_summarises_long_values():
    assert describe(b"x" * 100_000) == "b'x' * 100000"
    assert describe("ab") == "'ab'"
    text = describe({"frame": bytes(range(256)) * 100, "n": [1, 2]})
    assert "len=25600" in text and "sha1=" in text and "[1, 2]" in text
    assert len(text) < 200
    array = describe(np.zeros((1000, 1000), np.uint8))
    assert "shape=(1000, 1000)" in array and len(array) < 120
    assert describe(bytearray(b"ab")) == "bytearray(b'ab')"
    assert len(describe([b"y" * (LONG + 1)] * 10_000)) <= 2000


def test_assert_same_names_the_first_difference():
    assert_same([b"a" * 70_000], [b"a" * 70_000])
    with pytest.raises(AssertionError) as info:
        assert_same([b"a", b"b" * 70_000], [b"a", b"c" * 70_000], "frames")
    message = str(info.value)
    assert message.startswith("frames differ; first difference at [1]")
    assert "b'b' * 70000" in message and "b'c' * 70000" in message
    assert len(message) < 1000
