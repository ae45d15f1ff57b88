"""The documentation site stays complete.

``mkdocs build --strict`` runs in .ci/run (it needs the docs extra); these
checks need nothing beyond the package itself.
"""

from __future__ import annotations

import re
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
