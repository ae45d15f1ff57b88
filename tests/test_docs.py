"""The documentation site stays complete.

``mkdocs build --strict`` runs in .ci/run (it needs the docs extra); these
checks need nothing beyond the package itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import framerpc

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"
MKDOCS = ROOT / "mkdocs.yml"

pytestmark = pytest.mark.skipif(
    not REFERENCE.exists(), reason="not a source checkout (no docs/)"
)


def test_every_public_name_has_an_api_reference_entry():
    text = REFERENCE.read_text()
    entries = set(re.findall(r"^::: framerpc\.(\w+)\s*$", text, re.MULTILINE))
    missing = sorted(set(framerpc.__all__) - entries)
    assert not missing, f"add '::: framerpc.NAME' to docs/reference.md for {missing}"


def test_every_page_in_the_nav_exists():
    pages = re.findall(r":\s*([\w/.-]+\.md)\s*$", MKDOCS.read_text(), re.MULTILINE)
    assert "reference.md" in pages and "protocol.md" in pages
    missing = [p for p in pages if not (ROOT / "docs" / p).is_file()]
    assert not missing, missing


def test_the_quick_start_example_runs_as_written(tmp_path):
    """The quick start's program, run in a fresh interpreter: it prints what
    its comments say and exits 0 (no thread left, the context terminated)."""
    text = (ROOT / "docs" / "quickstart.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert blocks, "no python block in docs/quickstart.md"
    script = tmp_path / "quickstart.py"
    script.write_text(blocks[0])
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "True"
    assert lines[1].startswith("(1200, 800, 3) uint16 {")
    assert lines[2] == "hdr"
    assert done.stderr == ""
