"""Closing a proxy while its restart watcher reads the inventory is quiet.

The watcher of a proxy without signals calls ``_reload_inventory`` in its
own thread once a restarted server is back; when ``close()`` came first,
that read fails with "client ... is closed", which was logged as a
warning at every such close.
"""

from __future__ import annotations

import logging
import threading

import pytest
import zmq
from dead_peer_device import ProbeProxy, ProbeServer


def test_inventory_read_after_close_logs_nothing(caplog: pytest.LogCaptureFixture):
    context = zmq.Context()
    server = ProbeServer(context, "tcp://127.0.0.1")
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        proxy = ProbeProxy(context, server.url)
        assert proxy.echo(1) == 1
        proxy.close()
        caplog.set_level(logging.WARNING, logger="framerpc")
        assert proxy._reload_inventory() is None  # what the watcher calls
        assert [r.getMessage() for r in caplog.records] == []
    finally:
        server.stop_server()
        thread.join(30)
        context.term()
