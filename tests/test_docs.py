"""The documentation site stays complete and docstrings read cleanly.

``mkdocs build --strict`` runs in .ci/run (it needs the docs extra); these
checks need nothing beyond the package itself.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
from readme_blocks import run_mypy_strict

import framerpc

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"
MKDOCS = ROOT / "mkdocs.yml"

#: reST roles that help() would show raw; docstrings use plain ``literals``.
ROLE = re.compile(r":(?:py:)?(?:mod|class|func|meth|attr|data|exc|obj|const):`")

needs_docs = pytest.mark.skipif(
    not REFERENCE.exists(), reason="not a source checkout (no docs/)"
)


@needs_docs
def test_every_public_name_has_an_api_reference_entry():
    text = REFERENCE.read_text()
    entries = set(re.findall(r"^::: framerpc\.(\w+)\s*$", text, re.MULTILINE))
    missing = sorted(set(framerpc.__all__) - entries)
    assert not missing, f"add '::: framerpc.NAME' to docs/reference.md for {missing}"


@needs_docs
def test_every_page_in_the_nav_exists():
    pages = re.findall(r":\s*([\w/.-]+\.md)\s*$", MKDOCS.read_text(), re.MULTILINE)
    assert "reference.md" in pages and "protocol.md" in pages
    missing = [p for p in pages if not (ROOT / "docs" / p).is_file()]
    assert not missing, missing


#: A complete program in the docs: a ```python block right after this
#: marker. When a ```text block follows it (after at most a line of
#: prose), that is its output: each line must match (fnmatch, so "..."
#: may be written "*").
RUNNABLE = re.compile(
    r"^<!-- runnable -->\n```python\n(?P<code>.*?)^```\n"
    r"(?:\n(?:[^`\n][^\n]*\n)?\n?```text\n(?P<out>.*?)^```)?",
    re.MULTILINE | re.DOTALL,
)


def _runnable_examples() -> list:
    if not REFERENCE.exists():
        return []
    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for n, match in enumerate(RUNNABLE.finditer(page.read_text())):
            name = f"{page.relative_to(ROOT / 'docs')}#{n}"
            found.append(pytest.param(match["code"], match["out"], id=name))
    return found


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "example.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_docs
@pytest.mark.parametrize(("code", "output"), _runnable_examples())
def test_every_complete_example_in_the_docs_runs(code, output, tmp_path):
    """Each marked program, run in a fresh interpreter (in a temporary
    folder), exits 0 without a word on stderr (no thread left, the context
    terminated) and prints the output the page shows."""
    done = _run(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""
    if output is not None:
        want = output.splitlines()
        got = done.stdout.splitlines()
        assert len(got) == len(want), (got, want)
        for line, pattern in zip(got, want, strict=True):
            assert fnmatch.fnmatchcase(line, pattern.replace("...", "*")), (
                line,
                pattern,
            )


@needs_docs
def test_the_docs_have_complete_examples():
    pages = {p.id.split("#")[0] for p in _runnable_examples()}
    assert "quickstart.md" in pages
    assert len(_runnable_examples()) >= 5


def test_the_runnable_pattern_reads_code_and_output():
    page = (
        "<!-- runnable -->\n```python\nprint(1)\n```\n\nIt prints:\n\n"
        "```text\n1\n```\n<!-- runnable -->\n```python\npass\n```\n"
    )
    found = [(m["code"], m["out"]) for m in RUNNABLE.finditer(page)]
    assert found == [("print(1)\n", "1\n"), ("pass\n", None)]


@needs_docs
@pytest.mark.timeout(300)
def test_complete_examples_in_the_docs_type_check(tmp_path):
    """``mypy --strict`` accepts every marked program, as it does the
    README's blocks (tests/test_mypy.py)."""
    pytest.importorskip("mypy")
    paths = []
    for n, param in enumerate(_runnable_examples()):
        folder = tmp_path / f"block{n}"  # each stands alone; names may repeat
        folder.mkdir()
        (folder / f"docs_block{n}.py").write_text(param.values[0])
        paths.append(str(folder / f"docs_block{n}.py"))
    done = run_mypy_strict(*paths, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


@needs_docs
def test_the_quick_start_example_runs_as_written(tmp_path):
    """The quick start's first program prints what its comments say."""
    text = (ROOT / "docs" / "quickstart.md").read_text()
    blocks = [m["code"] for m in RUNNABLE.finditer(text)]
    assert blocks, "no runnable python block in docs/quickstart.md"
    done = _run(blocks[0], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "True"
    assert lines[1].startswith("(1200, 800, 3) uint16 {")
    assert lines[3] == "hdr"
    assert done.stderr == ""


def _modules() -> list:
    names = ["framerpc"] + [
        info.name
        for info in pkgutil.walk_packages(framerpc.__path__, "framerpc.")
        if info.name != "framerpc.__main__"
    ]
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:  # the compiled twins when not built
            continue
    return modules


def _docstrings(module) -> list[tuple[str, str]]:
    """(qualified name, docstring) of the module and of what it defines."""
    found = [(module.__name__, inspect.getdoc(module) or "")]
    seen: set[int] = set()

    def visit(prefix: str, namespace: dict) -> None:
        for name, value in namespace.items():
            if id(value) in seen:
                continue
            if isinstance(value, staticmethod | classmethod):
                value = value.__func__
            owner = getattr(value, "__module__", None)
            if owner != module.__name__ and not isinstance(value, property):
                continue
            if not (
                inspect.isclass(value) or callable(value) or isinstance(value, property)
            ):
                continue
            seen.add(id(value))
            found.append((f"{prefix}.{name}", value.__doc__ or ""))
            if inspect.isclass(value):
                visit(f"{prefix}.{name}", dict(vars(value)))

    visit(module.__name__, dict(vars(module)))
    return found


def test_docstrings_have_no_rest_roles():
    modules = _modules()
    assert len(modules) > 10
    offenders = [
        f"{name}: {ROLE.search(doc).group(0)}"
        for module in modules
        for name, doc in _docstrings(module)
        if ROLE.search(doc)
    ]
    assert not offenders, "use plain `backticks` in docstrings:\n" + "\n".join(
        offenders
    )


def test_the_role_check_can_fail():
    def documented():
        """See :class:`framerpc.RPCServer`."""

    assert ROLE.search(documented.__doc__)
