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
from conftest import sees_the_term, wait_until
from dead_peer_device import ProbeProxy, ProbeServer

#: Bound (s) of each wait below; generous, as CI machines are shared.
WAIT_S = 20


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


def test_socket_reset_on_a_terminating_context_closes_the_old_socket(tcp_camera):
    # A call that timed out replaces its socket (_reset_socket). Once the
    # socket has seen term() begin, setsockopt(LINGER) fails with ETERM: the
    # reset raised it before closing, and term() waited for that socket
    # forever (the registry link's bug, fixed there before).
    from devices import CameraProxy

    context = zmq.Context()
    proxy = CameraProxy(context, tcp_camera.url)
    sock = proxy.socket
    terminating = threading.Thread(target=context.term)
    terminating.start()
    try:
        assert wait_until(lambda: sees_the_term(sock), WAIT_S)
        with pytest.raises(zmq.ZMQError):  # no new socket on a dying context
            proxy._reset_socket()
        terminating.join(WAIT_S)
        assert sock.closed and not terminating.is_alive()
    finally:
        sock.close(linger=0)  # lets term() return if the reset did not
        terminating.join(WAIT_S)
        proxy.close()
