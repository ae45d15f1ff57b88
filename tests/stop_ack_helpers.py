"""Helpers of the stop acknowledgement tests (tests/client/test_stop_ack.py,
tests/aio/test_aio_stop_ack.py): ``stop_server()`` must return True when
the server acknowledged and stopped, however late the client reads the
acknowledgement.

The server answers STOP_SERVER and closes its socket soon after (a grace
of 0.2 s). On a socket with ``ZMQ_IMMEDIATE``, libzmq ends the pipe of a
connection that drops (``session_base_t::reconnect``): a reply received
but not read yet is gone as soon as the socket handles its pending
commands, which a thread that was not scheduled meanwhile does before it
reads. On a loaded machine stop_server() then returned False for a
server that had stopped.

The tests make that order certain: the server (``LateReplyCamera``, its
grace set to 0) sends a late reply to an older request before its
acknowledgement; the client's thread reads the late reply and, while it
logs it (``HoldOnLateReply``), waits until the server has closed and the
client's end of every connection to it is closed too (libzmq's I/O
thread has handled the disconnect), then lets its sockets to the server
handle their commands, as a thread waking late does.
"""

from __future__ import annotations

import logging
import sys
import threading

import pytest
import zmq
from conftest import wait_until
from devices import CameraServer

from framerpc import transport
from framerpc.server import serve_loop
from framerpc.wire import messages
from framerpc.wire.messages import KEY_EVENT, KEY_ID, Reply, RPCEvents

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="reads the connection states in /proc/net/tcp",
)

_ESTABLISHED, _CLOSE_WAIT = "01", "08"
_STOP = RPCEvents.STOP_SERVER.value


class LateReplyCamera(CameraServer):
    """Sends a late reply (to an older request id) before its answer to
    STOP_SERVER, on the same connection."""

    def _handle_body(self, envelope: list, body: list, decoded: object) -> None:
        if type(decoded) is dict and decoded.get(KEY_EVENT) == _STOP:
            late = Reply(decoded[KEY_ID] - 1, True, value=None)
            self._send(envelope, messages.encode_reply(late))
        super()._handle_body(envelope, body, decoded)


class SilentStopCamera(CameraServer):
    """Never answers STOP_SERVER; ``asked`` is set when one arrives."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked = threading.Event()

    def _handle_body(self, envelope: list, body: list, decoded: object) -> None:
        if type(decoded) is dict and decoded.get(KEY_EVENT) == _STOP:
            self.asked.set()
            return
        super()._handle_body(envelope, body, decoded)


def open_client_ends(port: int) -> int:
    """Connections to 127.0.0.1:``port`` whose client end is still open
    (ESTABLISHED, or CLOSE_WAIT: the peer closed, this end not yet)."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)  # the header line
        for line in table:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if int(remote.split(":")[1], 16) == port and state in (
                _ESTABLISHED,
                _CLOSE_WAIT,
            ):
                count += 1
    return count


def serve_without_grace(monkeypatch: pytest.MonkeyPatch, ctx: zmq.Context):
    """A serving ``LateReplyCamera`` on loopback TCP that stops at once
    after acknowledging, its serving thread, and the list of every socket
    ``transport.make_socket`` makes from now on."""
    monkeypatch.setattr(serve_loop, "_STOP_GRACE_S", 0.0)
    made: list[zmq.Socket] = []
    make_socket = transport.make_socket

    def recording(*args, **kwargs) -> zmq.Socket:
        sock = make_socket(*args, **kwargs)
        made.append(sock)
        return sock

    monkeypatch.setattr(transport, "make_socket", recording)
    server = LateReplyCamera(ctx, "tcp://127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread, made


class HoldOnLateReply(logging.Handler):
    """At the first late reply logged, in the thread that logs it: wait
    until ``server`` stopped (``thread`` ended) and the client's ends of
    its connections closed, then let the client's DEALER sockets to the
    server (in ``made``) handle their pending commands."""

    def __init__(
        self, server: CameraServer, thread: threading.Thread, made: list
    ) -> None:
        super().__init__(logging.DEBUG)
        self._server, self._thread, self._made = server, thread, made
        self.held = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.held or not record.getMessage().startswith("dropped a late reply"):
            return
        self.held = True
        self._thread.join(10)
        assert not self._thread.is_alive(), "serve_forever did not return"
        port = int(self._server.url.rsplit(":", 1)[1])
        assert wait_until(lambda: open_client_ends(port) == 0)
        for sock in self._made:
            if (
                not sock.closed
                and sock.type == zmq.DEALER
                and sock.getsockopt_string(zmq.LAST_ENDPOINT) == self._server.url
            ):
                sock.poll(0)  # handles its pending commands
