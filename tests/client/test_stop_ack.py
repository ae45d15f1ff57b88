"""``RPCClient.stop_server()`` returns True when the server acknowledged
and stopped, however late the client reads the acknowledgement (see
tests/stop_ack_helpers.py for how the late read is made certain)."""

from __future__ import annotations

import logging

from devices import CameraProxy
from stop_ack_helpers import HoldOnLateReply, linux_only, serve_without_grace


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
