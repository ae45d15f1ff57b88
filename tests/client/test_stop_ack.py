"""``RPCClient.stop_server()`` returns True when the server acknowledged
and stopped, however late the client reads the acknowledgement (see
tests/stop_ack_helpers.py for how the late read is made certain)."""

from __future__ import annotations

import logging
import threading

from devices import CameraProxy
from stop_ack_helpers import (
    HoldOnLateReply,
    SilentStopCamera,
    linux_only,
    serve_without_grace,
)


@linux_only
def test_stop_server_true_when_the_ack_is_read_after_the_server_closed(
    ctx, monkeypatch, caplog
):
    server, thread, made = serve_without_grace(monkeypatch, ctx)
    proxy = CameraProxy(ctx, server.url)
    handler = HoldOnLateReply(server, thread, made)
    logger = logging.getLogger("framerpc.rpc.callpath")  # both engines'
    caplog.set_level(logging.DEBUG, logger=logger.name)
    logger.addHandler(handler)
    try:
        assert proxy.stop_server() is True
        assert handler.held
    finally:
        logger.removeHandler(handler)
        proxy.close()
        server.stop_server()
        thread.join(5)


def test_close_ends_a_stop_server_in_progress(ctx, serve, caplog):
    """stop_server() waits on a socket of its own: close() from another
    thread still ends it as a call in flight (not by its timeout)."""
    server = serve(SilentStopCamera(ctx, "tcp://127.0.0.1"))
    proxy = CameraProxy(ctx, server.url)
    outcome: list[bool] = []
    stopper = threading.Thread(target=lambda: outcome.append(proxy.stop_server()))
    stopper.start()
    try:
        assert server.asked.wait(10)
        proxy.close()
    finally:
        stopper.join(10)
    assert outcome == [False]
    warnings = [
        r.getMessage() for r in caplog.records if "stop_server" in r.getMessage()
    ]
    assert len(warnings) == 1 and "closed during a call" in warnings[0], warnings
