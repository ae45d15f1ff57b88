"""tests/ mirrors the packages, and stays importable the way pytest runs it.

The subfolders have no ``__init__.py``: pytest's default ("prepend") import
mode then imports each test file by its base name, with ``tests/`` on
``sys.path`` through ``tests/conftest.py``, so the shared helpers
(``engines``, ``devices``...) import by name from every folder. Two test
files with one base name would then collide, and an ``__init__.py`` in one
folder would hide the helpers from it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import framerpc

TESTS = Path(__file__).resolve().parent
PACKAGE = Path(framerpc.__file__).resolve().parent


def _test_files() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def test_test_file_names_are_unique_across_folders():
    names = Counter(path.name for path in _test_files())
    assert [name for name, n in names.items() if n > 1] == []


def test_no_folder_of_tests_is_a_package():
    packages = [p.relative_to(TESTS).as_posix() for p in TESTS.rglob("__init__.py")]
    assert packages == []


def test_each_folder_of_tests_mirrors_a_framerpc_package():
    folders = {
        path.parent.relative_to(TESTS).as_posix()
        for path in _test_files()
        if path.parent != TESTS
    }
    assert folders, "the tests are meant to be in folders per package"
    missing = sorted(f for f in folders if not (PACKAGE / f / "__init__.py").is_file())
    assert missing == []


def test_only_one_conftest():
    # Under the prepend import mode a second conftest.py is imported as the
    # module ``conftest`` too, and ``from conftest import wait_until`` in a
    # test could then get the wrong one: shared helpers of a folder go in a
    # plain module beside its tests (tests/registry/registry_helpers.py).
    found = [p.relative_to(TESTS).as_posix() for p in TESTS.rglob("conftest.py")]
    assert found == ["conftest.py"]


def test_helper_module_names_are_unique_across_folders():
    # every folder of tests ends up on sys.path: a helper module name used
    # twice would import whichever folder came first
    names = Counter(
        path.name
        for path in TESTS.rglob("*.py")
        if not path.name.startswith("test_")
        and "fuzz" not in path.relative_to(TESTS).parts
    )
    assert [name for name, n in names.items() if n > 1] == []
