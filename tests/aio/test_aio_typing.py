"""Typed asyncio proxies: with ``framerpc.aio.mypy_plugin``, mypy sees the
methods of ``framerpc.aio.connect(Lamp, url)`` as coroutines of the
interface's return types, its properties as ``RemoteProperty`` and its
signals as ``AsyncSignal``; without the plugin the same code still
type-checks (the interface's members are ``Any``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from engines import once_per_suite
from readme_blocks import run_mypy_strict

pytest.importorskip("mypy")
pytestmark = once_per_suite

SOURCE = """\
import framerpc.aio
from framerpc import RPCProperty, RPCSignal


class Lamp:
    level = RPCProperty(doc="brightness")
    switched = RPCSignal(bool)

    def switch_on(self, level: int) -> bool:
        raise NotImplementedError


async def use() -> None:
    async with framerpc.aio.connect(Lamp, "tcp://127.0.0.1:1") as lamp:
        ok: bool = await lamp.switch_on(1)
        reveal_type(lamp.switch_on)
        reveal_type(lamp.level)
        reveal_type(lamp.switched)
        await lamp.aclose()
        {wrong}
    other = await framerpc.aio.connect(Lamp, "tcp://127.0.0.1:1")
    reveal_type(other)
"""
WRONG = (
    "text: str = await lamp.switch_on(2)\n"
    '        await lamp.switch_on("high")\n'
    "        lamp.no_such_thing\n"
    "        not_awaited: bool = lamp.switch_on(3)"
)


def _mypy(tmp_path: Path, source: str, plugin: bool) -> str:
    (tmp_path / "lamp.py").write_text(source)
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\n" + ("plugins = framerpc.aio.mypy_plugin\n" if plugin else "")
    )
    result = run_mypy_strict("--config-file", str(config), "lamp.py", cwd=tmp_path)
    assert "INTERNAL ERROR" not in result.stdout + result.stderr, result.stderr
    return result.stdout


@pytest.mark.timeout(300)
def test_the_plugin_types_proxy_members_as_coroutines(tmp_path) -> None:
    out = _mypy(tmp_path, SOURCE.replace("{wrong}", WRONG), plugin=True)
    assert (
        'Revealed type is "def (level: int) -> typing.Coroutine[Any, Any, bool]"' in out
    ), out
    assert 'Revealed type is "framerpc.aio._proxy.RemoteProperty"' in out
    assert 'Revealed type is "framerpc.aio._signals.AsyncSignal"' in out
    assert 'Revealed type is "framerpc.aio._proxy.AsyncProxy[lamp.Lamp]"' in out
    assert 'expression has type "bool", variable has type "str"' in out
    assert 'has incompatible type "str"; expected "int"' in out
    assert '"Lamp" has no attribute "no_such_thing"' in out
    assert 'expression has type "Coroutine[Any, Any, bool]"' in out
    assert "Found 4 errors" in out, out  # and none in the correct lines


@pytest.mark.timeout(300)
def test_without_the_plugin_members_are_any(tmp_path) -> None:
    out = _mypy(tmp_path, SOURCE.replace("{wrong}", "pass"), plugin=False)
    assert 'Revealed type is "Any"' in out
    assert "error" not in out, out
