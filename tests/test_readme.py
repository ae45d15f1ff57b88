"""The README's set-up commands stay true: CI runs the same test command."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _commands(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip().startswith("python -m pip install")
    ]


@pytest.mark.skipif(not (ROOT / ".ci" / "run").exists(), reason="not a source checkout")
def test_ci_runs_the_readme_test_command():
    readme_test = [c for c in _commands(ROOT / "README.md") if "run_both" in c]
    assert len(readme_test) == 1
    assert readme_test[0] in _commands(ROOT / ".ci" / "run")


@pytest.mark.skipif(not (ROOT / "README.md").exists(), reason="not a source checkout")
def test_readme_has_exactly_two_setup_commands():
    commands = _commands(ROOT / "README.md")
    assert len(commands) == 2
    assert any("framerpc demo" in c for c in commands)
    assert any("tests/run_both.py" in c for c in commands)


@pytest.mark.skipif(not (ROOT / ".ci" / "run").exists(), reason="not a source checkout")
def test_ci_builds_the_docs_strictly():
    ci = (ROOT / ".ci" / "run").read_text()
    assert '".[docs]"' in ci and "mkdocs build --strict" in ci
