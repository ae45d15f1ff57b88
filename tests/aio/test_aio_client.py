"""framerpc.aio client: an asyncio proxy of a (thread-served) RPCServer;
calls, buffers, errors and properties. Signals are in
test_aio_client_signals.py, timeouts, cancellation, closing and lost
servers in test_aio_client_failures.py.

Each test runs its coroutine with ``run`` (tests/aio_helpers.py), which
also checks that no task is left on the loop at the end; the ``ctx``
fixture's term() checks that no socket is left, and
``no_leftover_threads`` that no thread is.
"""

from __future__ import annotations

import asyncio
import inspect

import numpy as np
import pytest
import zmq
import zmq.asyncio
from aio_helpers import run
from devices import Camera, make_array

import framerpc.aio
from framerpc import NoResult, RemoteError
from framerpc.aio import AsyncClient


def test_calls_and_signatures(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            assert await cam.set_exposure(5) is True
            assert server.exposure == 5
            assert await cam.add(2, 3, scale=4) == 20
            assert await cam.echo({"a": [1, "x", None]}) == {"a": [1, "x", None]}
            assert await cam.call("add", 1, b=1) == 2
            assert await cam.execute("add", {"args": [1, 2]}) == (True, 3)
            assert cam.name == ""
            assert inspect.iscoroutinefunction(type(cam).add)
            assert inspect.signature(type(cam).add) == inspect.signature(Camera.add)
            assert type(cam).add.__doc__ == Camera.add.__doc__

    run(main())


def test_buffers_arrive_zero_copy(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            frame, info = await cam.grab([600, 400], "uint16")
            assert info == {"shape": [600, 400], "dtype": "uint16"}
            np.testing.assert_array_equal(frame, make_array([600, 400], "uint16"))
            assert not frame.flags.writeable and not frame.flags.owndata
            data, info = await cam.read_buffer(100_000, "bytearray")
            assert type(data) is memoryview and data.readonly
            assert len(data) == 100_000 and info["kind"] == "bytearray"
            array = make_array([1000, 100], "float32")
            assert np.array_equal(await cam.echo(array), array)

    run(main())


def test_remote_errors_as_noresult_or_raised(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(
            Camera, server.url, context=ctx, raise_errors=False
        ) as cam:
            result = await cam.fail("boom")
            assert type(result) is NoResult and not result
            assert result.error == "ValueError: boom"
            assert "raise ValueError(message)" in result.traceback
            missing = await cam.call("no_such_method")
            assert type(missing) is NoResult and "not implemented" in missing.error
            ok, (error, _) = await cam.execute("fail", {"args": ["x"]})
            assert not ok and error == "ValueError: x"
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            with pytest.raises(RemoteError) as caught:
                await cam.fail("boom")
            assert caught.value.remote_type == "ValueError"
            assert caught.value.message == "boom"
            # execute reports, whatever raise_errors says
            assert (await cam.execute("fail", {"args": ["y"]}))[0] is False
            # the client is still fine
            assert await cam.echo(7) == 7

    run(main())


def test_unsendable_argument_is_a_type_error(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            with pytest.raises(TypeError):
                await cam.echo({1, 2})
            assert await cam.echo(1) == 1
            assert not cam._pending

    run(main())


def test_properties_are_awaitables(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            assert await cam.gain == 1
            await cam.gain.set(4)
            assert server.gain == 4
            assert await cam.gain.get() == 4
            with pytest.raises(RemoteError, match="gain must be >= 0"):
                await cam.gain.set(-1)
            with pytest.raises(AttributeError, match=r"await proxy\.gain\.set"):
                cam.gain = 3
            # the notify signal of a property
            changes = cam.mode.notify.subscribe()
            await cam.mode.set("hdr")
            assert await changes.__anext__() == ("hdr",)
            assert await cam.mode == "hdr"
            assert cam.mode.notify.name == "mode_changed"
            assert cam.gain.notify is None

    run(main())


def test_property_errors_follow_raise_errors(ctx, server) -> None:
    from devices import ExtendedCamera

    async def main() -> None:
        async with framerpc.aio.connect(
            ExtendedCamera, server.url, context=ctx, raise_errors=False
        ) as cam:
            zoom = await cam.zoom
            assert type(zoom) is NoResult and "not found" in zoom.error
        async with framerpc.aio.connect(ExtendedCamera, server.url, context=ctx) as cam:
            with pytest.raises(RemoteError, match="not found"):
                await cam.zoom

    run(main())


def test_a_thousand_concurrent_calls_get_their_own_replies(ctx, server) -> None:
    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=ctx) as cam:
            # echo, not add: add's 0.5 s timeout counts from submission, and
            # the last of 1,000 calls waits longer than that on a loaded machine
            results = await asyncio.gather(*(cam.echo(i) for i in range(1000)))
            assert results == list(range(1000))
            frames = await asyncio.gather(
                *(cam.grab([10 + i, 3], "uint8") for i in range(20))
            )
            for i, (frame, info) in enumerate(frames):
                assert frame.shape == (10 + i, 3) and info["shape"] == [10 + i, 3]
            assert not cam._pending

    run(main())


def test_an_asyncio_context_works_too(server) -> None:
    actx = zmq.asyncio.Context()

    async def main() -> None:
        async with framerpc.aio.connect(Camera, server.url, context=actx) as cam:
            assert await cam.echo("x") == "x"

    run(main())
    actx.term()


def test_untyped_client_and_clashes(ctx, server) -> None:
    async def main() -> None:
        async with await AsyncClient.open(server.url, context=ctx) as client:
            assert await client.call("add", 1, 2) == 3
            assert await client.get_property("gain") == 1
            assert "grab" in client._buffer_methods
            with pytest.raises(RuntimeError, match="no signals"):
                AsyncClient("tcp://127.0.0.1:1").signal_hub  # noqa: B018

    class Clashing:
        def call(self) -> None: ...

    with pytest.raises(TypeError, match="would replace"):
        framerpc.aio.connect(Clashing, server.url)
    with pytest.raises(TypeError, match="interface class"):
        framerpc.aio.connect(object(), server.url)  # type: ignore[arg-type]
    run(main())
