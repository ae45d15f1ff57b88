"""Qt stays optional: only framerpc.qt imports a Qt binding or qtpy.

Checks the source of every module (so it holds for modules that are not
imported here, and for the compiled layer's .pyx) and a fresh interpreter
importing framerpc and its command-line tool. Needs no Qt installed.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from engines import once_per_suite

import framerpc

pytestmark = once_per_suite

PACKAGE = Path(framerpc.__file__).resolve().parent
EXT = PACKAGE.parent.parent / "ext"
QT_MODULES = ("qtpy", "PySide2", "PySide6", "PyQt5", "PyQt6", "shiboken2", "shiboken6")


def is_qt(module: str) -> bool:
    return module.split(".")[0] in QT_MODULES


def qt_imports(source: str) -> list[str]:
    """Qt modules a Python source imports (any form, at any depth)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if is_qt(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if is_qt(node.module):
                found.append(node.module)
        elif isinstance(node, ast.Call):  # importlib.import_module("PySide6")
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    if is_qt(arg.value) and "import" in ast.unparse(node.func):
                        found.append(arg.value)
    return found


_PYX_IMPORT = re.compile(r"^\s*(?:c?import|from)\s+([\w.]+)", re.MULTILINE)


def test_the_checker_finds_qt_imports():
    source = (
        "import os, PySide6.QtCore\n"
        "from qtpy import QtCore\n"
        "def f():\n"
        "    import PyQt6\n"
        "    return importlib.import_module('shiboken6')\n"
        "from .qt import x\n"
        "import qtpyish\n"
    )
    assert qt_imports(source) == ["PySide6.QtCore", "qtpy", "PyQt6", "shiboken6"]


def test_only_framerpc_qt_imports_qt():
    modules = [
        p for p in PACKAGE.rglob("*.py") if "qt" not in p.relative_to(PACKAGE).parts[:1]
    ]
    assert len(modules) > 20
    offenders = {
        str(path.relative_to(PACKAGE)): found
        for path in modules
        if (found := qt_imports(path.read_text()))
    }
    pyx = sorted(EXT.glob("*.pyx")) + sorted(EXT.glob("*.pxd"))
    for path in pyx:
        found = [m for m in _PYX_IMPORT.findall(path.read_text()) if is_qt(m)]
        if found:
            offenders[path.name] = found
    assert not offenders, f"Qt imported outside framerpc.qt: {offenders}"
    # and framerpc.qt does import it: the scan sees the package
    assert qt_imports((PACKAGE / "qt" / "_calls.py").read_text()) == ["qtpy"]


def test_importing_framerpc_loads_no_qt():
    code = (
        "import sys, framerpc, framerpc.cli, framerpc.demo, framerpc.legacy\n"
        f"qt = {QT_MODULES!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in qt))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_framerpc_qt_is_not_part_of_the_top_level_namespace():
    assert "qt" not in framerpc.__all__
    with pytest.raises(AttributeError):
        framerpc.__getattribute__("QtSignals")
