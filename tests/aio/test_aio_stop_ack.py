"""``AsyncClient.stop_server()`` returns True when the server acknowledged
and stopped, however late the client reads the acknowledgement (see
tests/stop_ack_helpers.py for how the late read is made certain)."""

from __future__ import annotations

import asyncio
import logging
import threading

from aio_helpers import run, until
from stop_ack_helpers import (
    HoldOnLateReply,
    SilentStopCamera,
    linux_only,
    serve_without_grace,
)

from framerpc.aio import AsyncClient


@linux_only
def test_aio_stop_server_true_when_the_ack_is_read_after_the_server_closed(
    ctx, monkeypatch, caplog
):
    server, thread, made = serve_without_grace(monkeypatch, ctx)
    handler = HoldOnLateReply(server, thread, made)
    logger = logging.getLogger("framerpc.aio._link")
    caplog.set_level(logging.DEBUG, logger=logger.name)

    async def main() -> None:
        client = await AsyncClient.open(server.url, context=ctx)
        logger.addHandler(handler)
        try:
            assert await client.stop_server() is True
            assert handler.held
        finally:
            logger.removeHandler(handler)
            await client.aclose()

    try:
        run(main())
    finally:
        server.stop_server()
        thread.join(5)


def test_aclose_ends_a_stop_server_in_progress(ctx, caplog):
    """stop_server() waits on a link of its own: aclose() from another
    task still ends it as a call in flight (not by its timeout)."""
    server = SilentStopCamera(ctx, "tcp://127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    async def main() -> None:
        client = await AsyncClient.open(server.url, context=ctx)
        stopping = asyncio.create_task(client.stop_server())
        await until(server.asked.is_set)
        await client.aclose()
        assert await stopping is False

    try:
        run(main())
    finally:
        server.stop_server()
        thread.join(5)
    warnings = [
        r.getMessage() for r in caplog.records if "stop_server" in r.getMessage()
    ]
    assert len(warnings) == 1 and "closed during a call" in warnings[0], warnings
