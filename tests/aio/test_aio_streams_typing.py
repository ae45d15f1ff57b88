"""Typed asyncio streams: with ``framerpc.aio.mypy_plugin``, mypy sees a
proxy's ``RPCStream`` as an ``AsyncStream``: ``subscribe`` gives an
``AsyncSubscription`` whose ``get`` is awaited, and a misuse is caught."""

from __future__ import annotations

import pytest
from engines import once_per_suite
from test_aio_typing import _mypy

pytest.importorskip("mypy")
pytestmark = once_per_suite

SOURCE = """\
from typing import Any

import framerpc
import framerpc.aio


class Cam:
    frames = framerpc.RPCStream(doc="images")


async def use() -> None:
    async with framerpc.aio.connect(Cam, "tcp://127.0.0.1:1") as cam:
        reveal_type(cam.frames)
        async with cam.frames.subscribe(policy="queue", queue=4) as sub:
            reveal_type(sub)
            frame, info = await sub.get(1.0)
            seq: int = info["seq"]
            async for frame, info in sub:
                pass
        latest: tuple[Any, dict[str, Any]] = await cam.frames.latest()
        {wrong}
"""
WRONG = "cam.frames.subscribe(policy=3)"


@pytest.mark.timeout(300)
def test_the_plugin_types_a_proxy_stream_as_an_async_stream(tmp_path) -> None:
    out = _mypy(tmp_path, SOURCE.replace("{wrong}", WRONG), plugin=True)
    assert 'Revealed type is "framerpc.aio._streams.AsyncStream"' in out, out
    assert 'Revealed type is "framerpc.aio._subscription.AsyncSubscription"' in out, out
    assert 'Argument "policy" to "subscribe" of "AsyncStream"' in out, out
    assert "Found 1 error" in out, out  # and none in the correct lines
