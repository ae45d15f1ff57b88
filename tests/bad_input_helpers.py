"""Helpers shared by tests/test_bad_input*.py: raw frames and exchanges."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
import zmq

from framerpc import protocol
from framerpc.protocol import (
    Request,
    RPCEvents,
)

#: Generous bound (ms) for an answer that must come: catches a hang only.
REPLY_WAIT_MS = 5000
#: How long (ms) to wait for an answer that must not come.
SILENCE_MS = 500
#: Ext codes of the framing layer (wire ids, see framerpc.wire._framing_py).
EXT_BUFFER, EXT_ARRAY, EXT_INLINE_ARRAY = 1, 2, 3


def _pack(**fields: Any) -> bytes:
    """A msgpack map header with exactly ``fields`` (no validation at all)."""
    return msgpack.packb(fields, use_bin_type=True)


def _ext(code: int, payload: Any) -> msgpack.ExtType:
    return msgpack.ExtType(code, msgpack.packb(payload, use_bin_type=True))


def _echo_frames(rid: int, value: Any) -> list:
    return protocol.encode_request(
        Request(RPCEvents.METHOD_CALL, rid, "echo", [value], {})
    )


def _dealer_exchange(sock: zmq.Socket, frames: list, wait_ms: int = REPLY_WAIT_MS):
    """Send ``[b"", *frames]``; the reply body after the delimiter, or None."""
    sock.send_multipart([b"", *frames], copy=False)
    if not sock.poll(wait_ms):
        return None
    delimiter, *body = sock.recv_multipart()
    assert delimiter == b"", "the reply must keep the delimiter"
    return body


def _req_exchange(sock: zmq.Socket, frames: list) -> list[bytes]:
    sock.send_multipart(frames, copy=False)
    assert sock.poll(REPLY_WAIT_MS), "no reply on the REQ socket"
    return sock.recv_multipart()


def _logged(caplog: pytest.LogCaptureFixture, logger: str, *parts: str) -> bool:
    return any(
        (record.name == logger or record.name.startswith(logger + "."))
        and record.levelno >= logging.WARNING
        and all(part in record.getMessage() for part in parts)
        for record in caplog.records
    )


# -- fixtures shared by the test files of this subject (tests/conftest.py
# loads this module as a plugin) ---------------------------------------


@pytest.fixture
def raw(ctx: zmq.Context) -> Iterator[Callable[..., zmq.Socket]]:
    """Make raw sockets connected to a URL; all closed at the end."""
    made: list[zmq.Socket] = []

    def make(url: str, kind: int = zmq.DEALER) -> zmq.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        made.append(sock)
        sock.connect(url)
        return sock

    yield make
    for sock in made:
        sock.close()
