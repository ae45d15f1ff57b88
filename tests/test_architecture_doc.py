"""docs/architecture.md lists every module of src/framerpc and every
compiled source in ext/, so the page cannot fall behind the code again."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "framerpc"
EXT = ROOT / "ext"
DOC = ROOT / "docs" / "architecture.md"

_HEADING = re.compile(r"^###\s+(.*)$", re.MULTILINE)
_PACKAGE_HEADING = re.compile(r"`framerpc\.([\w.]+)`")
_TICKED = re.compile(r"`([^`\n]+)`")


def _sections(doc: str) -> dict[str, set[str]]:
    """Backticked names per ``### `framerpc.PKG``` section; other ``###``
    sections (model modules, old paths) count as the top level, ``""``."""
    found: dict[str, set[str]] = {"": set()}
    marks = list(_HEADING.finditer(doc))
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        body = doc[mark.end() : following.start() if following else len(doc)]
        package = _PACKAGE_HEADING.match(mark.group(1))
        key = package.group(1) if package else ""
        found.setdefault(key, set()).update(_TICKED.findall(body))
    return found


def missing_modules(doc: str, modules: list[str]) -> list[str]:
    """The module paths (relative to src/framerpc, like ``wire/peek.py``)
    that ``doc`` does not list.

    A module is listed by its file name in its package's section
    (``### `framerpc.wire` ...``; top-level modules in any other ``###``
    section, by file name or, for old import paths, by bare name), or by
    its relative path or dotted name (``framerpc.wire.peek``) anywhere in
    backticks. A package's ``__init__.py``
    is listed by the package's section or by the package's name.
    """
    sections = _sections(doc)
    everywhere = set().union(*sections.values())
    absent = []
    for module in modules:
        path = Path(module)
        package = ".".join(path.parent.parts)
        names = sections.get(package, set())
        dotted = ".".join(["framerpc", *path.with_suffix("").parts])
        if module in everywhere or dotted.removesuffix(".__init__") in everywhere:
            continue
        if path.name == "__init__.py" and package:
            if package in sections or package in sections[""]:
                continue
        elif path.name in names or (not package and path.stem in names):
            continue
        absent.append(module)
    return absent


def _modules() -> list[str]:
    return sorted(
        str(path.relative_to(PACKAGE))
        for pattern in ("*.py", "*.pxd")
        for path in PACKAGE.rglob(pattern)
        if "__pycache__" not in path.parts
    )


pytestmark = pytest.mark.skipif(not DOC.exists(), reason="not a source checkout")


def test_every_module_under_src_framerpc_is_in_the_architecture_page():
    modules = _modules()
    assert "rpc/callpath.py" in modules and "transport/_zmqio.pxd" in modules
    assert missing_modules(DOC.read_text(), modules) == []


def test_every_compiled_source_in_ext_is_in_the_architecture_page():
    doc = DOC.read_text()
    sources = sorted(
        p.name for p in [*EXT.glob("*.pyx"), *EXT.glob("*.pxi"), *EXT.glob("*.h")]
    )
    assert "_callpath.pyx" in sources
    assert [name for name in sources if f"ext/{name}" not in doc] == []


def test_the_check_finds_a_module_left_out():
    doc = (
        "### `framerpc.wire`: bytes\n\n| `peek.py` | reads ids |\n\n"
        "### Model and support modules\n\n| `signal.py` | signals |\n"
        "`protocol` re-exports.\n"
    )
    listed = ["wire/__init__.py", "wire/peek.py", "signal.py", "protocol.py"]
    assert missing_modules(doc, listed) == []
    left_out = ["wire/streams.py", "stream.py", "rpc/__init__.py", "rpc/callpath.py"]
    assert missing_modules(doc, listed + left_out) == left_out
    # A file name in another package's section does not count.
    assert missing_modules(doc, ["transport/peek.py"]) == ["transport/peek.py"]
