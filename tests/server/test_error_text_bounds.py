"""A request cannot make its error reply or the server's log quote it whole.

An exception's text may contain the request's own bytes: an unknown
event, method or property name, a keyword argument's name. With a name of
4 MiB the reply carried 4 MiB back (8 MiB for a keyword: text and
traceback) and the server logged a 4 MiB line. Error texts are now cut.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator

import msgpack
import pytest
import zmq
from devices import CameraServer

BIG = "x" * (4 << 20)
WAIT_MS = 20000  # catches a hang only
#: Generous ceilings: far below the 4 MiB quoted, above any useful text.
MAX_REPLY = 100_000
MAX_LOG_LINE = 10_000

REQUESTS = {
    "event name": msgpack.packb({"v": 1, "e": BIG, "i": 1}),
    "version": msgpack.packb({"v": BIG, "e": "METHOD_CALL", "i": 1}),
    "method name": msgpack.packb(
        {"v": 1, "e": "METHOD_CALL", "i": 1, "m": BIG, "a": [], "k": {}}
    ),
    "keyword name": msgpack.packb(
        {"v": 1, "e": "METHOD_CALL", "i": 1, "m": "echo", "a": [], "k": {BIG: 1}}
    ),
    "property name": msgpack.packb(
        {"v": 1, "e": "PROPERTY_SET", "i": 1, "p": BIG, "x": 1}
    ),
    "JSON event": json.dumps({"event": BIG}).encode(),
    "JSON method": json.dumps(
        {"event": "METHOD_CALL", "method": BIG, "params": {"args": [], "kwargs": {}}}
    ).encode(),
}


@pytest.fixture
def server_url() -> Iterator[tuple[zmq.Context, str]]:
    context = zmq.Context()
    server = CameraServer(context, "tcp://127.0.0.1")
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield context, server.url
    finally:
        server.stop_server()
        thread.join(30)
        context.term()


@pytest.mark.parametrize("what", list(REQUESTS))
def test_error_reply_and_log_do_not_quote_a_huge_request(
    server_url: tuple[zmq.Context, str], what: str, caplog: pytest.LogCaptureFixture
) -> None:
    context, url = server_url
    caplog.set_level(logging.INFO, logger="framerpc")
    sock = context.socket(zmq.DEALER)
    try:
        sock.connect(url)
        sock.send_multipart([b"", REQUESTS[what]])
        assert sock.poll(WAIT_MS)
        body = sock.recv_multipart()[1:]
    finally:
        sock.close(linger=0)
    assert len(body) == 1
    assert len(body[0]) < MAX_REPLY
    assert b"characters cut" in body[0]
    assert all(len(r.getMessage()) < MAX_LOG_LINE for r in caplog.records)
