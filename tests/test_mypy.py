"""examples/ and the README's Python blocks type-check under ``mypy --strict``;
``mypy src/framerpc`` finds no error outside the files known to have some."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from engines import once_per_suite
from readme_blocks import README, ROOT, python_blocks, run_mypy_strict

pytest.importorskip("mypy")
#: Source files (below src/framerpc) where ``mypy src/framerpc`` reports
#: errors today: none (the server's mixins declare what RPCServer sets).
#: Keep it empty; add to it never.
MYPY_ERRORS_TODAY: set[str] = set()
_ERROR_LINE = re.compile(r"^src/framerpc/(\S+?\.py):\d+: error:", re.MULTILINE)

pytestmark = [
    once_per_suite,
    pytest.mark.skipif(not README.exists(), reason="not a source checkout"),
]


@pytest.mark.timeout(300)
def test_examples_and_readme_blocks_type_check(tmp_path):
    blocks = python_blocks()
    assert blocks, "no python block found in the README"
    # one folder per block: each block stands alone, and two blocks may
    # define the same names
    paths = [str(ROOT / "examples")]
    for line, source in blocks:
        folder = tmp_path / f"line{line}"
        folder.mkdir()
        (folder / f"readme_line{line}.py").write_text(source)
        paths.append(str(folder / f"readme_line{line}.py"))
    result = run_mypy_strict(*paths, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout


@pytest.mark.timeout(300)
def test_mypy_catches_a_wrong_type_through_a_typed_proxy(tmp_path):
    # The check above could pass because everything is Any: this one must fail.
    (tmp_path / "wrong.py").write_text(
        "import zmq\n"
        "import framerpc\n\n\n"
        "class Lamp:\n"
        "    def switch_on(self, level: int) -> bool:\n"
        "        raise NotImplementedError\n\n\n"
        "@framerpc.RPCClient.register_interface(Lamp)\n"
        "class LampProxy(Lamp, framerpc.RPCClient):\n"
        "    pass\n\n\n"
        "def use(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:\n"
        "    lamp = framerpc.connect(Lamp, ctx, 'tcp://127.0.0.1:1')\n"
        "    text: str = lamp.switch_on(1)\n"
        "    with LampProxy(ctx, 'tcp://127.0.0.1:1') as proxy:\n"
        "        proxy.switch_on('high')\n"
    )
    result = run_mypy_strict("wrong.py", cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert 'Incompatible types in assignment (expression has type "bool"' in (
        result.stdout
    )
    assert 'incompatible type "str"; expected "int"' in result.stdout


@pytest.mark.timeout(300)
def test_mypy_finds_no_error_in_the_package_outside_the_known_files():
    # the project's own settings (pyproject.toml), as `mypy src/framerpc`
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--cache-dir",
            "/dev/null",
            "src/framerpc",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    assert " source files" in result.stdout, result.stdout[-2000:]  # it ran
    new = [
        line
        for line in result.stdout.splitlines()
        if (match := _ERROR_LINE.match(line)) and match[1] not in MYPY_ERRORS_TODAY
    ]
    assert not new, "\n".join(new)
