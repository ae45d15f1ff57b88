"""Where the call path lives and how the compiled sources are laid out.

The message I/O twins only move frames: the checks and headers of a call
live in framerpc.rpc. No compiled source (.pyx or included .pxi) grows
past 450 lines, and an sdist ships every one of them (and the .pxd the
call path cimports), so that it builds.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from engines import once_per_suite

ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "ext"

pytestmark = [
    once_per_suite,
    pytest.mark.skipif(not EXT.is_dir(), reason="not a source checkout"),
]

MAX_LINES = 450
# the message I/O twins: the pure one, and the compiled one with its include
MESSAGE_IO = [
    ROOT / "src" / "framerpc" / "transport" / "_zmqio_py.py",
    EXT / "_zmqio.pyx",
    EXT / "_libzmq.pxi",
]
# from X import (a, b) / from X cimport a / import X / cimport X, in Cython
_CYTHON_IMPORT = re.compile(
    r"^(?:from\s+(\S+)\s+c?import\s+(\([^)]*\)|[^\n]+)|c?import\s+(\S+))",
    re.MULTILINE,
)


def _imported(path: Path) -> set[str]:
    """Modules a .py/.pyx/.pxi file imports or cimports, and for
    ``from X import a`` also ``X.a`` (relative imports made absolute)."""
    text = path.read_text()
    names = set()
    if path.suffix == ".py":
        package = ".".join(path.relative_to(ROOT / "src").parent.parts)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")
                base = base[: len(base) - node.level + 1] if node.level else []
                module = ".".join([*base, *filter(None, [node.module])])
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in node.names)
        return names
    for module, what, plain in _CYTHON_IMPORT.findall(text):
        names.add(module or plain)
        for name in re.split(r"[\s,()]+", what):
            if name and name != "as":
                names.add(f"{module}.{name}")
    return names


def test_no_compiled_source_is_over_450_lines():
    sources = sorted(EXT.glob("*.pyx")) + sorted(EXT.glob("*.pxi"))
    assert len(sources) >= 6, sources  # the split files are there
    for path in sources:
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.name}: {lines} lines"


def test_framing_includes_its_writer_and_reader():
    text = (EXT / "_framing.pyx").read_text()
    for include in ("_packer.pxi", "_unpacker.pxi"):
        assert f'include "{include}"' in text
        # setup.py lists them, so that editing one rebuilds the extension
        assert f"ext/{include}" in (ROOT / "setup.py").read_text()


@pytest.mark.parametrize("path", MESSAGE_IO, ids=lambda p: p.name)
def test_message_io_twins_only_move_frames(path):
    imported = _imported(path)
    if re.search(r"^(from|import|cimport) ", path.read_text(), re.MULTILINE):
        assert imported, "no import found: is the pattern stale?"
    for module in imported:
        assert not module.startswith(
            ("framerpc.protocol", "framerpc.wire", "framerpc.rpc")
        ), module
    text = path.read_text()
    for word in ("METHOD_CALL", "class Channel", "class Responder"):
        assert word not in text, f"{path.name} has {word!r}"


def test_the_call_path_pair_takes_its_keys_from_the_wire_layer():
    pure = ROOT / "src" / "framerpc" / "rpc" / "_callpath_py.py"
    compiled = EXT / "_callpath.pyx"
    for path in (pure, compiled):
        assert "framerpc.wire.messages.KEY_VERSION" in _imported(path), path.name
        # no header written with literal keys
        assert not re.search(r"""\{\s*["']v["']\s*:""", path.read_text()), path.name
    # the compiled twin reaches the compiled I/O from C, not through Python
    assert "framerpc.transport._zmqio._send_frames" in _imported(compiled)


@pytest.mark.timeout(120)
def test_sdist_ships_the_cython_sources(tmp_path):
    env = {**os.environ, "FRAMERPC_PURE": "1"}  # no compiler needed to pack
    done = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "egg_info",
            "--egg-base",
            str(tmp_path),
            "sdist",
            "-d",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (archive,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        shipped = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    wanted = {
        str(path.relative_to(ROOT))
        for pattern in ("ext/*.pyx", "ext/*.pxi", "src/**/*.pxd")
        for path in ROOT.glob(pattern)
    }
    assert "src/framerpc/transport/_zmqio.pxd" in wanted
    assert wanted <= shipped, sorted(wanted - shipped)
    assert not any(name.startswith("ext/") and name.endswith(".c") for name in shipped)
