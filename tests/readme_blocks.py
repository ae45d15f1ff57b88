"""The ```python blocks of README.md, for the tests that run and type-check them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[tuple[int, str]]:
    """``(first line number, source)`` of each ```python block of the README."""
    text = README.read_text()
    return [
        (text.count("\n", 0, match.start()) + 2, match.group(1))
        for match in _BLOCK.finditer(text)
    ]


def run_mypy_strict(*paths: str, cwd: Path | str) -> subprocess.CompletedProcess:
    """``mypy --strict`` over ``paths`` (no cache), as a child process."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            "/dev/null",
            *paths,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=280,
    )
